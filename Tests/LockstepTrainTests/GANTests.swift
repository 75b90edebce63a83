import Foundation
import XCTest
import LockstepCheckpoint
import LockstepComm
import LockstepCore
import LockstepData
import LockstepNN
@testable import LockstepConfig
@testable import LockstepTrain

/// The GAN trainer in one process (`SingleProcessCommunicator`): it learns a toy image distribution, resumes
/// bit-exactly from its one-file checkpoint, rejects models that do not fit, and its judge counts correctly; the GAN
/// config keys and their errors.
final class GANTests: XCTestCase {
    /// 4×4 "images" whose pixels scatter around 0.5 (in the generator's [−1, 1] range).
    private func images(_ count: Int, seed: UInt64) -> Dataset {
        var rng = RNG(seed: seed)
        let features = (0..<(count * 16)).map { _ in min(max(0.5 + 0.2 * rng.normal(), -1), 1) }
        return Dataset(features: features, targets: [Float](repeating: 0, count: count), sampleShape: [1, 4, 4], classCount: 1)
    }

    private func makeGAN(generatorOutputs: Int = 16, discriminatorOutputs: Int = 1, options: TrainingOptions = TrainingOptions()) throws -> GANTrainer {
        let generator = try Sequential(inputShape: [8]) {
            Linear(inputDimensions: 8, outputDimensions: 32)
            LeakyReLU(slope: 0.2)
            Linear(inputDimensions: 32, outputDimensions: generatorOutputs)
            Tanh()
        }
        let discriminator = try Sequential(inputShape: [1, 4, 4]) {
            Flatten()
            Linear(inputDimensions: 16, outputDimensions: 32)
            LeakyReLU(slope: 0.2)
            Linear(inputDimensions: 32, outputDimensions: discriminatorOutputs)
        }
        var options = options
        options.distributed.timeoutSeconds = 0
        return try GANTrainer(generator: generator, discriminator: discriminator,
                              generatorOptimizer: Adam(parameterCount: generator.parameters.count, beta1: 0.5),
                              discriminatorOptimizer: Adam(parameterCount: discriminator.parameters.count, beta1: 0.5),
                              schedule: ConstantSchedule(learningRate: 0.002),
                              data: TrainingData(train: images(512, seed: 1), test: images(64, seed: 2)), options: options,
                              communicator: SingleProcessCommunicator(), log: { _ in })
    }

    private func mean(_ values: [Float]) -> Double { values.reduce(0.0) { $0 + Double($1) } / Double(values.count) }

    func testGeneratorMovesToTheDataAndEpochsReportFiniteLosses() throws {
        var options = TrainingOptions()
        options.batchSize = 32
        let gan = try makeGAN(options: options)
        let before = mean(gan.generatedSamples(count: 256))
        var epochs: [GANEpochMetrics] = []
        let summary = try gan.fit(epochs: 20, onEpoch: { epochs.append($0) })
        XCTAssertEqual(summary.steps, 20 * 16)
        XCTAssertEqual(epochs.map(\.epoch), Array(1...20))
        for epoch in epochs { XCTAssertTrue(epoch.discriminatorLoss.isFinite && epoch.generatorLoss.isFinite, epoch.line) }
        XCTAssertNotEqual(epochs.first!.discriminatorLoss, epochs.last!.discriminatorLoss)
        let after = mean(gan.generatedSamples(count: 256))
        XCTAssertGreaterThan(abs(before - 0.5), 0.3, "the untrained generator should be far from the data (mean \(before))")
        XCTAssertLessThan(abs(after - 0.5), 0.15, "the trained generator's mean pixel \(after) should approach the data's 0.5")
        XCTAssertTrue(epochs[0].line.hasPrefix("epoch 1 step 16: discriminator loss"), epochs[0].line)
        // Fixed noise: the same samples every time they are asked for.
        XCTAssertEqual(gan.generatedSamples(count: 8), gan.generatedSamples(count: 8))
        let grid = try gan.sampleGrid(count: 9)
        XCTAssertEqual([grid.width, grid.height], [3 * 4 + 4 * 2, 3 * 4 + 4 * 2])
    }

    func testResumeIsBitExactAndTheCheckpointHoldsBothModels() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("gan-resume-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var options = TrainingOptions()
        options.batchSize = 32
        options.epochs = 2
        let straight = try makeGAN(options: options).run()
        XCTAssertEqual(straight.steps, 32)

        options.checkpoints = CheckpointSettings(directory: directory, resume: "auto", everyEpoch: false)
        options.maxSteps = 21  // mid-epoch: the data position must resume too
        XCTAssertEqual(try makeGAN(options: options).run().steps, 21)
        options.maxSteps = 0
        let resumed = try makeGAN(options: options)
        XCTAssertEqual(resumed.step, 21)
        XCTAssertEqual(resumed.epoch, 1)
        let summary = try resumed.run()
        XCTAssertEqual(summary.steps, 32)
        XCTAssertEqual(summary.parameterChecksum, straight.parameterChecksum, "resumed parameters must be bit-identical")

        let file = try SafeTensors.verify(CheckpointStore(directory: directory, keep: 3).path(step: 32))
        for name in ["generator.layers.0.weight", "generator.layers.2.bias", "discriminator.layers.1.weight",
                     "generator.optimizer.layers.0.weight.exp_avg", "discriminator.optimizer.layers.3.bias.exp_avg_sq"] {
            XCTAssertTrue(file.names.contains(name), "\(name) missing from \(file.names)")
        }
        XCTAssertEqual(file.metadata["generator.optimizer_step"], "32")
        XCTAssertEqual(file.metadata["gan"], "1")
    }

    /// A NaN gradient (fault injection at step 3) skips that discriminator update; training goes on finite.
    func testNonFiniteGradientSkipsTheUpdate() throws {
        var options = TrainingOptions()
        options.batchSize = 32
        options.faults.nanStep = 3
        let gan = try makeGAN(options: options)
        let summary = try gan.fit(epochs: 1)
        XCTAssertEqual(summary.skippedSteps, 1)
        XCTAssertEqual(gan.discriminatorOptimizer.stepCount, 15)
        XCTAssertEqual(gan.generatorOptimizer.stepCount, 16)
        XCTAssertTrue(Kernels.allFinite(gan.discriminator.parameters.values.pointer, count: gan.discriminator.parameters.count))
        XCTAssertTrue(summary.discriminatorLoss.isFinite && summary.generatorLoss.isFinite, summary.line)
        options.distributed.nonFinite = .stop
        XCTAssertThrowsError(try makeGAN(options: options).fit(epochs: 1)) { XCTAssertTrue("\($0)".contains("step 3: non-finite discriminator"), "\($0)") }
    }

    func testModelsThatDoNotFitAreRejectedNamingTheKey() {
        for (outputs, key) in [((10, 1), "model.generator"), ((16, 2), "model.discriminator")] {
            XCTAssertThrowsError(try makeGAN(generatorOutputs: outputs.0, discriminatorOutputs: outputs.1)) { error in
                XCTAssertTrue("\(error)".contains("key '\(key)'"), "\(error)")
            }
        }
        var options = TrainingOptions()
        options.accumulationSteps = 2
        XCTAssertThrowsError(try makeGAN(options: options)) { XCTAssertTrue("\($0)".contains("key 'training.accumulation_steps'"), "\($0)") }
        options = TrainingOptions()
        options.distributed.shardOptimizer = true
        XCTAssertThrowsError(try makeGAN(options: options)) { XCTAssertTrue("\($0)".contains("key 'distributed.shard_optimizer'"), "\($0)") }
    }

    func testJudgeCountsClassesEntropyAndConfidence() throws {
        // Logits = the sample's two values: the larger one is the class.
        let classifier = try Sequential([Linear(inputDimensions: 2, outputDimensions: 2, bias: false)], inputShape: [2])
        let weight = classifier.parameters.valuePointer(classifier.parameters.slots[0])
        weight[0] = 1; weight[1] = 0; weight[2] = 0; weight[3] = 1
        // Samples in [−1, 1] map to [0, 10] before the classifier: ×5 + 5.
        let judge = try GANJudge(classifier: classifier, scale: [5], offset: [5])
        let judgement = judge.judge([1, -1, 1, -1, -1, 1, -1, 1])
        XCTAssertEqual(judgement.classCounts, [2, 2])
        XCTAssertEqual(judgement.entropyBits, 1, accuracy: 1e-12)
        XCTAssertEqual(judgement.meanConfidence, 1 / (1 + exp(-10)), accuracy: 1e-6)
        XCTAssertEqual(judge.judge([1, -1, 1, -1]).entropyBits, 0)
        let single = try Sequential([Linear(inputDimensions: 2, outputDimensions: 1)], inputShape: [2])
        XCTAssertThrowsError(try GANJudge(classifier: single, scale: [1], offset: [0])) { XCTAssertTrue("\($0)".contains("key 'gan.judge'"), "\($0)") }
    }

    func testShippedGANConfigBuildsBothModels() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let config = try TrainingConfig.load(file: root.appendingPathComponent("configs/fashion-gan.yaml").path)
        let gan = try XCTUnwrap(config.gan)
        XCTAssertEqual(gan.noiseDimensions, 64)
        let generator = try ModelBuilder.build(gan.generator, inputShape: [64], key: "model.generator")
        let discriminator = try ModelBuilder.build(gan.discriminator, inputShape: [1, 28, 28], key: "model.discriminator")
        XCTAssertEqual(generator.parameters.count, 64 * 256 + 256 + 256 * 512 + 512 + 512 * 784 + 784)
        XCTAssertEqual(generator.outputWidth, 784)
        XCTAssertEqual(discriminator.outputWidth, 1)
        XCTAssertEqual(gan.judge, "runs/fashion-judge")
    }

    func testGANConfigErrorsNameTheKey() {
        let base = """
        model:
          generator: [{type: linear, out: 784}, {type: tanh}]
          discriminator: [{type: flatten}, {type: linear, out: 1}]
        optimizer: {type: adam, lr: 0.0002}
        """
        func assertError(_ yaml: String, _ overrides: [String] = [], _ fragment: String, line: UInt = #line) {
            XCTAssertThrowsError(try TrainingConfig.parse(yaml: yaml, source: "gan.yaml", overrides: overrides), line: line) { error in
                XCTAssertTrue("\(error)".contains(fragment), "'\(error)' lacks '\(fragment)'", line: line)
            }
        }
        XCTAssertNotNil(try? TrainingConfig.parse(yaml: base, source: "gan.yaml").gan)
        assertError(base.replacingOccurrences(of: "  discriminator: [{type: flatten}, {type: linear, out: 1}]\n", with: ""), [], "key 'model.discriminator': required for a GAN")
        assertError(base + "\nloss: mse", [], "key 'loss'")
        assertError(base, ["model.layers=[{type: linear, out: 1}]"], "key 'model.layers'")
        assertError(base, ["training.accumulation_steps=2"], "key 'training.accumulation_steps'")
        assertError(base, ["gan.judge_samples=0"], "key 'gan.judge_samples'")
        assertError(base, ["gan.grid=3"], "key 'gan.grid'")
        // Layer kinds are checked when the model is built, naming the GAN's key.
        let typo = try? TrainingConfig.parse(yaml: base, source: "gan.yaml", overrides: ["model.generator.0.type=lnear"])
        XCTAssertThrowsError(try ModelBuilder.build(typo?.gan?.generator ?? [], inputShape: [64], key: "model.generator")) { error in
            XCTAssertTrue("\(error)".contains("key 'model.generator[0].type'"), "\(error)")
        }
        assertError("""
        model: {layers: [{type: linear, out: 1}]}
        optimizer: {type: sgd, lr: 0.1}
        gan: {judge: x}
        """, [], "key 'gan'")
    }
}
