import XCTest
import LockstepNN
@testable import LockstepTrain
@testable import LockstepConfig
@testable import LockstepBench
@testable import LockstepCLI
import LockstepComm

final class ScalingModelTests: XCTestCase {
    /// Measured-looking sizes: 4 B … 64 MiB in powers of 4.
    private let sizes: [Double] = (0..<13).map { 4 * pow(4, Double($0)) }

    func testFitRecoversAlphaAndBetaFromNoiseFreeSamples() throws {
        let truth = AlphaBeta(alpha: 2.5e-6, beta: 1 / 6e9)
        var samples: [AllreduceSample] = []
        for ranks in [2, 4, 8] {
            for bytes in sizes { samples.append(AllreduceSample(ranks: ranks, bytes: bytes, seconds: truth.allreduceSeconds(ranks: ranks, bytes: bytes))) }
        }
        let fit = try AlphaBeta.fit(samples)
        XCTAssertEqual(fit.alpha, truth.alpha, accuracy: truth.alpha * 1e-9)
        XCTAssertEqual(fit.beta, truth.beta, accuracy: truth.beta * 1e-9)
        XCTAssertLessThan(fit.maximumRelativeError(samples), 1e-9)
    }

    func testFitFromTwoRanksAloneSeparatesLatencyFromBandwidth() throws {
        // With n = 2 only, T = 2α + bytes·β: small sizes pin α, large ones β.
        let truth = AlphaBeta(alpha: 0.3e-6, beta: 1 / 10e9)
        let samples = sizes.map { AllreduceSample(ranks: 2, bytes: $0, seconds: truth.allreduceSeconds(ranks: 2, bytes: $0)) }
        let fit = try AlphaBeta.fit(samples)
        XCTAssertEqual(fit.alpha, truth.alpha, accuracy: truth.alpha * 1e-6)
        XCTAssertEqual(fit.beta, truth.beta, accuracy: truth.beta * 1e-6)
    }

    func testFitWithMultiplicativeNoiseStaysClose() throws {
        let truth = AlphaBeta(alpha: 5e-6, beta: 1 / 3e9)
        var samples: [AllreduceSample] = []
        // Deterministic ±10% wiggle, alternating in sign so it cannot all push one way.
        for (index, bytes) in sizes.enumerated() {
            for ranks in [2, 4] {
                let noise = 1 + 0.1 * (index % 2 == 0 ? 1.0 : -1.0) * (ranks == 2 ? 1 : -1)
                samples.append(AllreduceSample(ranks: ranks, bytes: bytes, seconds: truth.allreduceSeconds(ranks: ranks, bytes: bytes) * noise))
            }
        }
        let fit = try AlphaBeta.fit(samples)
        XCTAssertEqual(fit.alpha / truth.alpha, 1, accuracy: 0.15)
        XCTAssertEqual(fit.beta / truth.beta, 1, accuracy: 0.15)
    }

    func testFitClampsNegativeLatencyToZero() throws {
        // Pure bandwidth data with a size-independent deficit would give α < 0 in a free fit.
        let samples = [1e3, 1e5, 1e7].map { AllreduceSample(ranks: 2, bytes: $0, seconds: $0 * 1e-9 - 1e-7) }
        let fit = try AlphaBeta.fit(samples)
        XCTAssertEqual(fit.alpha, 0)
        XCTAssertGreaterThan(fit.beta, 0)
    }

    func testFitRejectsSingleRankOrSingleSize() {
        XCTAssertThrowsError(try AlphaBeta.fit([AllreduceSample(ranks: 1, bytes: 4, seconds: 1e-6),
                                                AllreduceSample(ranks: 1, bytes: 400, seconds: 2e-6)]))
        XCTAssertThrowsError(try AlphaBeta.fit([AllreduceSample(ranks: 2, bytes: 4, seconds: 1e-6),
                                                AllreduceSample(ranks: 4, bytes: 4, seconds: 2e-6)]))
    }

    func testRingFormulaAndBucketSuggestion() {
        let link = AlphaBeta(alpha: 10e-6, gigabitsPerSecond: 10)
        XCTAssertEqual(link.beta, 0.8e-9, accuracy: 1e-15)
        // n = 4: 6α + 1.5·bytes·β.
        XCTAssertEqual(link.allreduceSeconds(ranks: 4, bytes: 1e6), 6 * 10e-6 + 1.5 * 1e6 * 0.8e-9, accuracy: 1e-12)
        XCTAssertEqual(link.allreduceSeconds(ranks: 1, bytes: 1e6), 0)
        let bucket = link.suggestedBucketBytes(ranks: 8, ratio: 10)
        // At the suggested size the bandwidth term is exactly 10× the latency term.
        XCTAssertEqual(link.bandwidthSeconds(ranks: 8, bytes: bucket) / link.latencySeconds(ranks: 8), 10, accuracy: 1e-9)
        XCTAssertEqual(link.bucketedAllreduceSeconds(ranks: 8, totalBytes: 1e6, buckets: 3),
                       3 * link.latencySeconds(ranks: 8) + link.bandwidthSeconds(ranks: 8, bytes: 1e6), accuracy: 1e-12)
    }

    func testProjectionEfficiency() {
        let measured = MeasuredStep(name: "m", perRankBatch: 64, otherSeconds: 1e-3, backwardSeconds: 2e-3, gradientBytes: 1e6, bucketCount: 1,
                                    controlMessages: 0)
        let link = AlphaBeta(alpha: 0, beta: 1e-9)  // 1 GB/s, no latency
        let one = ScalingModel.project(measured, ranks: 1, link: link)
        XCTAssertEqual(one.efficiency, 1)
        let two = ScalingModel.project(measured, ranks: 2, link: link)
        XCTAssertEqual(two.communicationSeconds, 1e-3, accuracy: 1e-12)  // 2·1/2·1e6·1e-9
        XCTAssertEqual(two.efficiency, 3.0 / 4.0, accuracy: 1e-12)
        XCTAssertEqual(two.overlappedEfficiency, 1, accuracy: 1e-12)  // 1 ms hides behind 2 ms backward
        // The control vector pays the latency term once per step, after the gradients.
        var withControl = measured
        withControl.controlMessages = 1
        let latencyLink = AlphaBeta(alpha: 1e-4, beta: 1e-9)
        let controlled = ScalingModel.project(withControl, ranks: 2, link: latencyLink)
        XCTAssertEqual(controlled.controlSeconds, 2e-4, accuracy: 1e-15)
        XCTAssertEqual(controlled.stepSeconds, 3e-3 + (2e-4 + 1e-3) + 2e-4, accuracy: 1e-12)
        XCTAssertEqual(controlled.overlappedStepSeconds, 1e-3 + 2e-3 + 2e-4, accuracy: 1e-12)
        let table = ScalingModel.markdownTable(measured, nodes: [8, 16], gigabitsPerSecond: [10, 25], alpha: 1e-5)
        XCTAssertEqual(table.split(separator: "\n").count, 4)
        XCTAssertTrue(table.hasPrefix("| nodes | 10 Gb/s step ms"))
    }

    func testFlopCountOfMLPAndCNN() throws {
        let mlp = try Sequential([Flatten(), Linear(inputDimensions: 784, outputDimensions: 256), ReLU(),
                                  Linear(inputDimensions: 256, outputDimensions: 128), ReLU(),
                                  Linear(inputDimensions: 128, outputDimensions: 10)], inputShape: [1, 28, 28])
        let macs = Double(784 * 256 + 256 * 128 + 128 * 10)
        let flops = FlopCount(model: mlp)
        XCTAssertEqual(flops.forward, 2 * macs)
        // First layer: weight gradient only.
        XCTAssertEqual(flops.backward, 2 * Double(784 * 256) + 4 * Double(256 * 128 + 128 * 10))

        let cnn = try Sequential([Conv2D(inputChannels: 1, outputChannels: 32, kernelSize: 5, padding: 2), ReLU(),
                                  MaxPool2D(kernelSize: 2), Flatten(), Linear(inputDimensions: 32 * 14 * 14, outputDimensions: 10)],
                                 inputShape: [1, 28, 28])
        let convMACs = Double(32 * 28 * 28 * 1 * 25)
        let linearMACs = Double(32 * 14 * 14 * 10)
        let cnnFlops = FlopCount(model: cnn)
        XCTAssertEqual(cnnFlops.forward, 2 * (convMACs + linearMACs))
        XCTAssertEqual(cnnFlops.backward, 2 * convMACs + 4 * linearMACs)
    }

    func testTransformerFlopsMatchTheGEMMsItCalls() throws {
        let (t, d, m, vocabulary, batch) = (16, 32, 64, 50, 4)
        let model = try Sequential([Embedding(vocabularySize: vocabulary, dimensions: d), TransformerBlock(dimensions: d, heads: 4, mlpDimensions: m),
                                    SequenceLinear(inputDimensions: d, outputDimensions: vocabulary)], inputShape: [t])
        let flops = FlopCount(model: model)
        let blockMACs = Double(t * (4 * d * d + 2 * t * d + 2 * d * m)), headMACs = Double(t * d * vocabulary)
        XCTAssertEqual(flops.forward, 2 * (blockMACs + headMACs))
        XCTAssertEqual(flops.backward, 4 * (blockMACs + headMACs))
        // The GEMMs bench train times for the sgemm limit are exactly these FLOPs, here and for the MLP and CNN.
        for model in [model, try Sequential([Flatten(), Linear(inputDimensions: 784, outputDimensions: 64), ReLU(),
                                             Linear(inputDimensions: 64, outputDimensions: 10)], inputShape: [1, 28, 28]),
                      try Sequential([Conv2D(inputChannels: 1, outputChannels: 8, kernelSize: 3, padding: 1), ReLU(), Flatten(),
                                      Linear(inputDimensions: 8 * 28 * 28, outputDimensions: 10)], inputShape: [1, 28, 28])] {
            let gemmFlops = Bench.gemmShapes(model: model, batch: batch).reduce(0) { $0 + $1.flops }
            XCTAssertEqual(gemmFlops, FlopCount(model: model).total * Double(batch), accuracy: 1e-6 * gemmFlops)
        }
    }

    func testProductOrientationsCoverTheWideLinearLayersAndNameTheirChoice() throws {
        let model = try Sequential([Flatten(), Linear(inputDimensions: 784, outputDimensions: 256), ReLU(),
                                    Linear(inputDimensions: 256, outputDimensions: 128), ReLU(),
                                    Linear(inputDimensions: 128, outputDimensions: 10)], inputShape: [1, 28, 28])
        // Only layer 1 is at least 256 wide both ways; at 64 rows the layer takes the transposed product, at 128 not.
        for (rows, transposed) in [(64, true), (128, false)] {
            let checks = Bench.productOrientations(model: model, batch: rows, rounds: 1)
            XCTAssertEqual(checks.map(\.layer), [1])
            let check = try XCTUnwrap(checks.first)
            XCTAssertEqual([check.inputs, check.outputs, check.rows], [784, 256, rows])
            XCTAssertEqual(check.usesTransposed, transposed)
            XCTAssertGreaterThan(check.transposedSeconds, 0)
            XCTAssertGreaterThan(check.directSeconds, 0)
            let chosen = transposed ? check.transposedSeconds : check.directSeconds
            let other = transposed ? check.directSeconds : check.transposedSeconds
            XCTAssertEqual(check.chosenOverOther, chosen / other, accuracy: 1e-12)
        }
    }

    func testByteParsingAndSizes() throws {
        XCTAssertEqual(try AllreduceBench.parseBytes("64MiB"), 64 << 20)
        XCTAssertEqual(try AllreduceBench.parseBytes("16k"), 16 << 10)
        XCTAssertEqual(try AllreduceBench.parseBytes("4"), 4)
        XCTAssertThrowsError(try AllreduceBench.parseBytes("lots"))
        XCTAssertEqual(AllreduceBench.sizes(minimumBytes: 4, maximumBytes: 1024), [4, 16, 64, 256, 1024])
        XCTAssertEqual(AllreduceBench.sizes(minimumBytes: 4, maximumBytes: 32, factor: 2), [4, 8, 16, 32])
        XCTAssertEqual(AllreduceBench.busBandwidth(bytes: 1000, seconds: 1e-6, ranks: 4), 1.5e9, accuracy: 1)
        XCTAssertEqual(AllreduceBench.busBandwidth(bytes: 1000, seconds: 1e-6, ranks: 1), 0)
    }

    func testTwoLevelModelMovesTheBytesEachPathPutsOnTheLink() {
        let network = TwoLevelNetwork(sharedMemory: AlphaBeta(alpha: 0, beta: 0), link: AlphaBeta(alpha: 0, beta: 8e-9))
        let bytes = 10e6
        // 2 nodes × 2 ranks: the flat ring puts 2·3/4 of the gradients on a node's link, hierarchical 2·1/2.
        XCTAssertEqual(network.communicationSeconds(.flat, nodes: 2, ranksPerNode: 2, bytes: bytes), 1.5 * bytes * 8e-9, accuracy: 1e-12)
        XCTAssertEqual(network.communicationSeconds(.hierarchical, nodes: 2, ranksPerNode: 2, bytes: bytes), bytes * 8e-9, accuracy: 1e-12)
        XCTAssertEqual(network.communicationSeconds(.zero1, nodes: 2, ranksPerNode: 2, bytes: bytes),
                       network.communicationSeconds(.flat, nodes: 2, ranksPerNode: 2, bytes: bytes))
        // Latency: 2(P − 1) ring steps flat against 2(N − 1) across nodes.
        let latencyOnly = TwoLevelNetwork(sharedMemory: AlphaBeta(alpha: 0, beta: 0), link: AlphaBeta(alpha: 1e-5, beta: 0))
        XCTAssertEqual(latencyOnly.communicationSeconds(.flat, nodes: 64, ranksPerNode: 4, bytes: bytes), 2 * 255 * 1e-5, accuracy: 1e-12)
        XCTAssertEqual(latencyOnly.communicationSeconds(.hierarchical, nodes: 64, ranksPerNode: 4, bytes: bytes), 2 * 63 * 1e-5, accuracy: 1e-12)
    }

    func testLevelFitRecoversTheLinkAndComputeFromFlatAndHierarchicalSteps() throws {
        let shared = AlphaBeta(alpha: 1e-6, beta: 0.05e-9)
        let truth = LevelFit(network: TwoLevelNetwork(sharedMemory: shared, link: AlphaBeta(alpha: 1e-5, beta: 8e-9)),
                             computeSeconds: 0.04, optimizerSeconds: 0.01)
        let bytes = 10.6e6
        // 4 ranks on 2 cores: the measured steps carry twice the compute.
        let steps: [ReductionPath: Double] = [.flat: truth.stepSeconds(.flat, nodes: 2, ranksPerNode: 2, bytes: bytes, cores: 2),
                                              .hierarchical: truth.stepSeconds(.hierarchical, nodes: 2, ranksPerNode: 2, bytes: bytes, cores: 2)]
        let run = ClusterMeasurement(nodes: 2, ranksPerNode: 2, cores: 2, gradientBytes: bytes, stepSeconds: steps,
                                     optimizerSeconds: 0.02, samplesPerSecond: [:], perRankBatch: 64)
        let fit = try LevelFit.fit(run, sharedMemory: shared, linkAlpha: 1e-5)
        XCTAssertEqual(fit.network.link.beta, 8e-9, accuracy: 1e-15)
        XCTAssertEqual(fit.computeSeconds, 0.04, accuracy: 1e-12)
        XCTAssertEqual(fit.optimizerSeconds, 0.01, accuracy: 1e-12)
        // ZeRO-1 saves all but 1/P of the optimizer, so at P = 4 it beats flat by 3/4 of it.
        XCTAssertEqual(fit.stepSeconds(.flat, nodes: 2, ranksPerNode: 2, bytes: bytes) - fit.stepSeconds(.zero1, nodes: 2, ranksPerNode: 2, bytes: bytes),
                       0.0075, accuracy: 1e-12)
        // One rank per host moves the same bytes on both paths: nothing to fit from.
        let single = ClusterMeasurement(nodes: 2, ranksPerNode: 1, cores: 2, gradientBytes: bytes, stepSeconds: steps,
                                        optimizerSeconds: 0, samplesPerSecond: [:], perRankBatch: 64)
        XCTAssertThrowsError(try LevelFit.fit(single, sharedMemory: shared, linkAlpha: 1e-5))
    }
}
