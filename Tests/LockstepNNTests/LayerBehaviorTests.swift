import XCTest
import LockstepCore
import LockstepNN

/// Forward values and mode-dependent behaviour: convolution against a direct loop, BatchNorm statistics and its
/// sync hooks, dropout statistics, shape errors.
final class LayerBehaviorTests: XCTestCase {
    /// Direct convolution in Double: y[b,o,i,j] = bias[o] + Σ w[o,c,p,q] · x[b, c, i·sH − pH + p, j·sW − pW + q].
    private func directConvolution(input: [Float], weight: [Float], bias: [Float]?, batch: Int, inputShape: [Int],
                                   outputChannels: Int, kernel: (Int, Int), stride: (Int, Int), padding: (Int, Int)) -> [Double] {
        let (c, h, w) = (inputShape[0], inputShape[1], inputShape[2])
        let outH = (h + 2 * padding.0 - kernel.0) / stride.0 + 1, outW = (w + 2 * padding.1 - kernel.1) / stride.1 + 1
        var output = [Double](repeating: 0, count: batch * outputChannels * outH * outW)
        for b in 0..<batch {
            for o in 0..<outputChannels {
                for i in 0..<outH {
                    for j in 0..<outW {
                        var sum = Double(bias?[o] ?? 0)
                        for ch in 0..<c {
                            for p in 0..<kernel.0 {
                                for q in 0..<kernel.1 {
                                    let y = i * stride.0 - padding.0 + p, x = j * stride.1 - padding.1 + q
                                    guard y >= 0, y < h, x >= 0, x < w else { continue }
                                    sum += Double(weight[((o * c + ch) * kernel.0 + p) * kernel.1 + q]) * Double(input[((b * c + ch) * h + y) * w + x])
                                }
                            }
                        }
                        output[((b * outputChannels + o) * outH + i) * outW + j] = sum
                    }
                }
            }
        }
        return output
    }

    func testConv2DMatchesDirectConvolution() throws {
        let cases: [(inputShape: [Int], out: Int, kernel: (Int, Int), stride: (Int, Int), padding: (Int, Int), bias: Bool)] = [
            ([1, 7, 7], 4, (5, 5), (1, 1), (2, 2), true),
            ([3, 6, 5], 2, (3, 3), (2, 2), (1, 1), true),
            ([2, 5, 8], 3, (2, 3), (1, 3), (1, 0), false),
            ([2, 4, 4], 5, (1, 1), (1, 1), (0, 0), true),
            ([1, 28, 28], 4, (5, 5), (1, 1), (2, 2), true),
            ([2, 6, 21], 3, (3, 3), (1, 1), (1, 1), false),
        ]
        for (index, test) in cases.enumerated() {
            let layer = Conv2D(inputChannels: test.inputShape[0], outputChannels: test.out, kernelSize: test.kernel,
                               stride: test.stride, padding: test.padding, bias: test.bias)
            let harness = try LayerHarness(layer, inputShape: test.inputShape, batch: 3, seed: UInt64(index), randomParameters: true)
            let input = TestData.normal(harness.inputCount, seed: UInt64(30 + index))
            let values = harness.parameters.values.array
            let weightCount = harness.parameters.slots[0].count
            let expected = directConvolution(input: input, weight: Array(values[0..<weightCount]),
                                             bias: test.bias ? Array(values[weightCount...]) : nil, batch: 3,
                                             inputShape: test.inputShape, outputChannels: test.out,
                                             kernel: test.kernel, stride: test.stride, padding: test.padding)
            let output = harness.forward(input, context: LayerContext(training: true))
            XCTAssertEqual(output.count, expected.count, "case \(index)")
            for (k, (a, e)) in zip(output, expected).enumerated() {
                XCTAssertEqual(Double(a), e, accuracy: 1e-4 * max(1, abs(e)), "case \(index) element \(k)")
            }
        }
    }

    /// Linear against a Double reference on both forward paths: the transposed product (a wide layer at up to
    /// `transposedProductRows` rows) and the plain one (more rows, a narrow layer), with and without bias.
    func testLinearMatchesDoubleReferenceOnBothProductOrientations() throws {
        let cases: [(input: Int, output: Int, batch: Int, bias: Bool, transposed: Bool)] = [
            (300, 260, 64, true, true), (300, 260, 7, false, true), (300, 260, 65, true, false), (40, 30, 64, true, false),
        ]
        for (index, test) in cases.enumerated() {
            let layer = Linear(inputDimensions: test.input, outputDimensions: test.output, bias: test.bias)
            XCTAssertEqual(layer.usesTransposedProduct(rows: test.batch), test.transposed, "case \(index)")
            let harness = try LayerHarness(layer, inputShape: [test.input], batch: test.batch, seed: UInt64(index), randomParameters: true)
            let input = TestData.normal(harness.inputCount, seed: UInt64(50 + index))
            let values = harness.parameters.values.array
            let output = harness.forward(input, context: LayerContext(training: true))
            for row in 0..<test.batch {
                for o in 0..<test.output {
                    var sum = test.bias ? Double(values[test.output * test.input + o]) : 0
                    for i in 0..<test.input { sum += Double(values[o * test.input + i]) * Double(input[row * test.input + i]) }
                    XCTAssertEqual(Double(output[row * test.output + o]), sum, accuracy: 1e-4 * max(1, abs(sum)),
                                   "case \(index) row \(row) output \(o)")
                }
            }
        }
    }

    func testConv2DParameterLayoutAndShapeErrors() throws {
        let layer = Conv2D(inputChannels: 3, outputChannels: 8, kernelSize: (5, 3))
        XCTAssertEqual(layer.parameterSpecs.map(\.shape), [[8, 3, 5, 3], [8]])
        XCTAssertEqual(layer.parameterSpecs[0].initializer, .he(fanIn: 45))
        XCTAssertThrowsError(try layer.outputShape(inputShape: [1, 28, 28])) { error in
            XCTAssertTrue("\(error)".contains("3 input channels"), "\(error)")
        }
        XCTAssertThrowsError(try layer.outputShape(inputShape: [3, 4, 4]))  // 5-high kernel does not fit
        XCTAssertThrowsError(try layer.outputShape(inputShape: [48]))
        XCTAssertThrowsError(try MaxPool2D(kernelSize: 3).outputShape(inputShape: [1, 2, 2]))
        XCTAssertEqual(try MaxPool2D(kernelSize: 2).outputShape(inputShape: [32, 28, 28]), [32, 14, 14])
        XCTAssertThrowsError(try BatchNorm(features: 4, spatial: 9).outputShape(inputShape: [4, 2, 2]))
    }

    func testBatchNormTrainingStatisticsAndRunningUpdate() throws {
        let layer = BatchNorm(features: 2, spatial: 3)
        let harness = try LayerHarness(layer, inputShape: [2, 3], batch: 2)
        let input: [Float] = [1, 2, 3, 10, 20, 30,
                              5, 6, 7, -10, 0, 10]
        let output = harness.forward(input, context: LayerContext(training: true))
        // Channel 0 holds {1,2,3,5,6,7}: mean 4, biased variance 14/3, unbiased 5.6.
        let channel0 = [1, 2, 3, 5, 6, 7].map(Double.init)
        let deviation = (14.0 / 3 + 1e-5).squareRoot()
        for (k, x) in zip([0, 1, 2, 6, 7, 8], channel0) {
            XCTAssertEqual(Double(output[k]), (x - 4) / deviation, accuracy: 1e-5)
        }
        // Channel 1 holds {10,20,30,−10,0,10}: mean 10, biased variance 1000/6, unbiased 200.
        let state = harness.state.values.array  // running_mean[2], running_var[2]
        XCTAssertEqual(state[0], 0.4, accuracy: 1e-6)
        XCTAssertEqual(state[1], 1.0, accuracy: 1e-6)
        XCTAssertEqual(state[2], 0.9 + 0.1 * 5.6, accuracy: 1e-5)
        XCTAssertEqual(state[3], 0.9 + 0.1 * 200, accuracy: 1e-4)
    }

    func testBatchNormEvaluationUsesRunningStatistics() throws {
        let layer = BatchNorm(features: 2, spatial: 2, momentum: 0.1, epsilon: 1e-5)
        let harness = try LayerHarness(layer, inputShape: [2, 1, 2], batch: 2)
        // weight, bias, then running_mean, running_var.
        _ = harness.parameters.values.buffer.update(from: [2, 0.5, 1, -1])
        _ = harness.state.values.buffer.update(from: [3, -2, 4, 0.25])
        let input: [Float] = [1, 5, 0, 2, 7, -3, 8, 9]
        let output = harness.forward(input, context: LayerContext(training: false))
        for (k, x) in input.enumerated() {
            let channel = (k / 2) % 2
            let (mean, variance, gamma, beta): (Float, Float, Float, Float) = channel == 0 ? (3, 4, 2, 1) : (-2, 0.25, 0.5, -1)
            XCTAssertEqual(output[k], (x - mean) / (variance + 1e-5).squareRoot() * gamma + beta, accuracy: 1e-5)
        }
        XCTAssertEqual(harness.state.values.array, [3, -2, 4, 0.25], "evaluation leaves running statistics alone")
    }

    /// Two "ranks" each holding half the batch, joined by the hooks, must match one BatchNorm over the whole batch.
    func testBatchNormSyncHooksMatchFullBatch() throws {
        let shape = [3, 2, 2], channels = 3, half = 2
        let full = try LayerHarness(BatchNorm(features: channels, spatial: 4), inputShape: shape, batch: 2 * half, randomParameters: true)
        let first = try LayerHarness(BatchNorm(features: channels, spatial: 4), inputShape: shape, batch: half, randomParameters: true)
        let second = try LayerHarness(BatchNorm(features: channels, spatial: 4), inputShape: shape, batch: half, randomParameters: true)
        let input = TestData.normal(full.inputCount, seed: 40, scale: 2).map { $0 + 0.5 }
        let outputGradient = TestData.normal(full.outputCount, seed: 41)
        let width = full.inputCount / 2
        let inputA = Array(input[..<width]), inputB = Array(input[width...])
        let context = LayerContext(training: true)

        let expected = full.gradients(input: input, outputGradient: outputGradient, context: context)
        let expectedState = full.state.values.array  // after exactly one training forward
        let expectedOutput = full.forward(input, context: context)

        // The hooks see each rank's local sums; each adds the other rank's, as an allreduce SUM would.
        var localA: [Double] = [], localB: [Double] = []
        let layerA = first.layer as! BatchNorm, layerB = second.layer as! BatchNorm
        layerB.statisticsReducer = { pointer, count in localB = Array(UnsafeBufferPointer(start: pointer, count: count)) }
        _ = second.forward(inputB, context: context)
        XCTAssertEqual(localB.count, 2 * channels + 1)
        XCTAssertEqual(localB.last, Double(half * 4), "element count per channel")
        layerA.statisticsReducer = { pointer, count in
            localA = Array(UnsafeBufferPointer(start: pointer, count: count))
            for i in 0..<count { pointer[i] += localB[i] }
        }
        let outputA = first.forward(inputA, context: context)
        for (a, e) in zip(outputA, expectedOutput[..<width]) { XCTAssertEqual(a, e, accuracy: 1e-5, "synced forward") }
        for (a, e) in zip(first.state.values.array, expectedState) { XCTAssertEqual(a, e, accuracy: 1e-6, "running statistics use the global batch") }

        // Backward: B with global statistics records its local gradient sums; A adds them.
        layerB.statisticsReducer = { pointer, count in for i in 0..<count { pointer[i] += localA[i] } }
        var gradientB: [Double] = []
        layerB.gradientStatisticsReducer = { pointer, count in gradientB = Array(UnsafeBufferPointer(start: pointer, count: count)) }
        _ = second.gradients(input: inputB, outputGradient: Array(outputGradient[width...]), context: context)
        XCTAssertEqual(gradientB.count, 2 * channels)
        layerA.statisticsReducer = { pointer, count in for i in 0..<count { pointer[i] += localB[i] } }
        layerA.gradientStatisticsReducer = { pointer, count in for i in 0..<count { pointer[i] += gradientB[i] } }
        let resultA = first.gradients(input: inputA, outputGradient: Array(outputGradient[..<width]), context: context)
        for (a, e) in zip(resultA.input, expected.input[..<width]) { XCTAssertEqual(a, e, accuracy: 1e-5, "synced input gradient") }
    }

    func testDropoutEvaluationIsIdentity() throws {
        let harness = try LayerHarness(Dropout(probability: 0.5), inputShape: [50], batch: 4)
        let input = TestData.normal(harness.inputCount, seed: 50)
        let context = LayerContext(training: false, rng: RNG(seed: 3))
        XCTAssertEqual(harness.forward(input, context: context), input)
        let gradient = TestData.normal(harness.outputCount, seed: 51)
        XCTAssertEqual(harness.gradients(input: input, outputGradient: gradient, context: context).input, gradient)
    }

    func testDropoutTrainingKeepsExpectedFractionScaled() throws {
        let p: Float = 0.25
        let harness = try LayerHarness(Dropout(probability: p), inputShape: [1000], batch: 40)
        let input = TestData.awayFromZero(harness.inputCount, seed: 52)
        let context = LayerContext(training: true, rng: RNG(seed: 9))
        let output = harness.forward(input, context: context)
        var kept = 0
        for (x, y) in zip(input, output) where y != 0 {
            kept += 1
            XCTAssertEqual(y, x / (1 - p), accuracy: 1e-6)
        }
        // 40 000 Bernoulli(0.75) draws: standard deviation of the fraction ≈ 0.0022.
        XCTAssertEqual(Double(kept) / Double(input.count), 0.75, accuracy: 0.01)
        XCTAssertEqual(harness.forward(input, context: context), output, "same stream, same mask")
        XCTAssertNotEqual(harness.forward(input, context: LayerContext(training: true, rng: RNG(seed: 10))), output,
                          "another stream, another mask")
    }
}
