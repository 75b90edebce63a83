import XCTest
import LockstepCore
import LockstepNN

/// Finite-difference checks of every layer's input and parameter gradients.
final class LayerGradientTests: XCTestCase {
    func testLinear() throws {
        let harness = try LayerHarness(Linear(inputDimensions: 4, outputDimensions: 3), inputShape: [4], batch: 3, randomParameters: true)
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 1))
    }

    func testLinearWithoutBias() throws {
        let harness = try LayerHarness(Linear(inputDimensions: 5, outputDimensions: 2, bias: false), inputShape: [5], batch: 2)
        XCTAssertEqual(harness.parameters.slots.map(\.name), ["layers.0.weight"])
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 2))
    }

    func testReLU() throws {
        let harness = try LayerHarness(ReLU(), inputShape: [2, 3], batch: 3)
        GradientCheck.checkLayer(harness, input: TestData.awayFromZero(harness.inputCount, seed: 3))
    }

    func testLeakyReLU() throws {
        let harness = try LayerHarness(LeakyReLU(slope: 0.1), inputShape: [7], batch: 3)
        let input = TestData.awayFromZero(harness.inputCount, seed: 4)
        GradientCheck.checkLayer(harness, input: input)
        let output = harness.forward(input, context: LayerContext(training: false))
        for (x, y) in zip(input, output) { XCTAssertEqual(y, x > 0 ? x : 0.1 * x) }
    }

    func testSigmoid() throws {
        let harness = try LayerHarness(Sigmoid(), inputShape: [6], batch: 2)
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 5, scale: 2))
        // Large magnitudes must saturate, not overflow to NaN.
        let extreme = harness.forward([-100, -20, 0, 20, 100, 3, 0, 0, 0, 0, 0, 0], context: LayerContext(training: false))
        for (value, expected) in zip(extreme[0..<6], [0, 2.0611537e-09, 0.5, 1, 1, 0.95257413] as [Float]) {
            XCTAssertEqual(value, expected, accuracy: 1e-7, "sigmoid values \(extreme)")
        }
    }

    func testTanh() throws {
        let harness = try LayerHarness(Tanh(), inputShape: [6], batch: 2)
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 6))
    }

    func testSoftmaxAlongLastDimension() throws {
        let harness = try LayerHarness(Softmax(), inputShape: [2, 4], batch: 2)
        let input = TestData.normal(harness.inputCount, seed: 7, scale: 2)
        GradientCheck.checkLayer(harness, input: input)
        let output = harness.forward(input, context: LayerContext(training: false))
        for row in 0..<4 {
            let slice = output[(row * 4)..<(row * 4 + 4)]
            XCTAssertEqual(slice.reduce(0, +), 1, accuracy: 1e-6, "row \(row) sums to 1")
            let logits = input[(row * 4)..<(row * 4 + 4)]
            let total = logits.map { exp(Double($0)) }.reduce(0, +)
            for (y, x) in zip(slice, logits) { XCTAssertEqual(Double(y), exp(Double(x)) / total, accuracy: 1e-6) }
        }
    }

    func testConv2DStrideTwoPaddingOne() throws {
        let layer = Conv2D(inputChannels: 2, outputChannels: 3, kernelSize: 3, stride: 2, padding: 1)
        let harness = try LayerHarness(layer, inputShape: [2, 5, 6], batch: 2, randomParameters: true)
        XCTAssertEqual(harness.outputShape, [3, 3, 3])
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 8))
    }

    func testConv2DRectangularKernelWithoutBias() throws {
        let layer = Conv2D(inputChannels: 2, outputChannels: 2, kernelSize: (2, 3), stride: (1, 2), padding: (0, 2), bias: false)
        let harness = try LayerHarness(layer, inputShape: [2, 4, 5], batch: 2, randomParameters: true)
        XCTAssertEqual(harness.outputShape, [2, 3, 4])
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 9))
    }

    func testConv2DSeveralChannelsNoPaddingWideRows() throws {
        // Output rows of 17: one whole 16-float vector plus a one-float tail in the stride-1 im2col/col2im.
        // Convolution is linear, so a large difference step costs no accuracy and keeps Float rounding of the many
        // outputs each input touches below the tolerance.
        let layer = Conv2D(inputChannels: 3, outputChannels: 4, kernelSize: 3)
        let harness = try LayerHarness(layer, inputShape: [3, 5, 19], batch: 3, randomParameters: true)
        XCTAssertEqual(harness.outputShape, [4, 3, 17])
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 15), step: 0.1)
    }

    func testConv2DOneInputChannelPaddingTwo() throws {
        // fashion-cnn's first layer on a smaller image: 5x5 kernel, padding 2, rows of 20 (16 + 4).
        let layer = Conv2D(inputChannels: 1, outputChannels: 3, kernelSize: 5, padding: 2)
        let harness = try LayerHarness(layer, inputShape: [1, 6, 20], batch: 2, randomParameters: true)
        XCTAssertEqual(harness.outputShape, [3, 6, 20])
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 16), step: 0.1)
    }

    func testConv2DWithoutInputGradientGivesTheSameParameterGradients() throws {
        // Sequential's layer 0 gets no input gradient; its parameter gradients must not depend on that (both algorithms).
        for algorithm in [ConvolutionAlgorithm.im2col, .winograd] {
            let layer = Conv2D(inputChannels: 2, outputChannels: 3, kernelSize: 3, padding: 1, algorithm: algorithm)
            let harness = try LayerHarness(layer, inputShape: [2, 4, 18], batch: 2, randomParameters: true)
            let input = TestData.normal(harness.inputCount, seed: 17), outputGradient = TestData.normal(harness.outputCount, seed: 18)
            let expected = harness.gradients(input: input, outputGradient: outputGradient, context: LayerContext(training: true)).parameters
            harness.parameters.gradients!.zero()
            let output = harness.forward(input, context: LayerContext(training: true))
            input.withUnsafeBufferPointer { x in
                output.withUnsafeBufferPointer { y in
                    outputGradient.withUnsafeBufferPointer { dy in
                        layer.backward(input: x.baseAddress!, output: y.baseAddress!, outputGradient: dy.baseAddress!, inputGradient: nil, batch: 2)
                    }
                }
            }
            XCTAssertEqual(harness.parameters.gradients!.array, expected, "\(algorithm)")
        }
    }

    func testMaxPool2D() throws {
        let harness = try LayerHarness(MaxPool2D(kernelSize: 2), inputShape: [2, 4, 6], batch: 2)
        XCTAssertEqual(harness.outputShape, [2, 2, 3])
        GradientCheck.checkLayer(harness, input: TestData.distinct(harness.inputCount, seed: 10))
        // The 2x2 fast path: ascending input puts every window's maximum at its bottom-right corner.
        let output = harness.forward((0..<96).map(Float.init), context: LayerContext(training: false))
        XCTAssertEqual(Array(output[0..<6]), [7, 9, 11, 19, 21, 23])
        XCTAssertEqual(Array(output[18..<24]), [79, 81, 83, 91, 93, 95])
    }

    func testMaxPool2DOverlappingWindows() throws {
        // Kernel 3 stride 2: an input can win two windows, so backward must accumulate.
        let harness = try LayerHarness(MaxPool2D(kernelSize: 3, stride: 2), inputShape: [1, 5, 5], batch: 2)
        XCTAssertEqual(harness.outputShape, [1, 2, 2])
        GradientCheck.checkLayer(harness, input: TestData.distinct(harness.inputCount, seed: 11))
        let output = harness.forward((0..<50).map(Float.init), context: LayerContext(training: false))
        XCTAssertEqual(output, [12, 14, 22, 24, 37, 39, 47, 49])
    }

    func testAvgPool2D() throws {
        let harness = try LayerHarness(AvgPool2D(kernelSize: (2, 3), stride: (2, 1)), inputShape: [2, 4, 5], batch: 2)
        XCTAssertEqual(harness.outputShape, [2, 2, 3])
        let input = TestData.normal(harness.inputCount, seed: 12)
        GradientCheck.checkLayer(harness, input: input)
        let output = harness.forward(input, context: LayerContext(training: false))
        // Second sample, channel 1, window at row 2, column 1.
        let plane = input[(20 * 3)..<(20 * 4)].map { $0 }
        let expected = [11, 12, 13, 16, 17, 18].map { plane[$0] }.reduce(0, +) / 6
        XCTAssertEqual(output[6 * 3 + 3 + 1], expected, accuracy: 1e-6)
    }

    func testFlatten() throws {
        let harness = try LayerHarness(Flatten(), inputShape: [2, 3, 2], batch: 2)
        XCTAssertEqual(harness.outputShape, [12])
        let input = TestData.normal(harness.inputCount, seed: 13)
        XCTAssertEqual(harness.forward(input, context: LayerContext(training: false)), input)
        GradientCheck.checkLayer(harness, input: input)
    }

    func testDropoutTrainingWithFixedStream() throws {
        let harness = try LayerHarness(Dropout(probability: 0.4), inputShape: [10], batch: 3)
        let context = LayerContext(training: true, rng: RNG(seed: 5))
        let input = TestData.normal(harness.inputCount, seed: 14)
        let output = harness.forward(input, context: context)
        XCTAssertTrue(output.contains(0) && output.contains { $0 != 0 }, "some elements dropped and some kept")
        GradientCheck.checkLayer(harness, input: input, context: context)
    }

    func testBatchNorm1DTraining() throws {
        let harness = try LayerHarness(BatchNorm(features: 3), inputShape: [3], batch: 5, randomParameters: true)
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 15, scale: 2))
    }

    func testBatchNorm2DTraining() throws {
        let harness = try LayerHarness(BatchNorm(features: 2, spatial: 6), inputShape: [2, 2, 3], batch: 2, randomParameters: true)
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 16, scale: 3).map { $0 + 1 })
    }

    func testBatchNormEvaluationGradient() throws {
        let harness = try LayerHarness(BatchNorm(features: 2, spatial: 4), inputShape: [2, 2, 2], batch: 2, randomParameters: true)
        _ = harness.state.values.buffer.update(from: [0.5, -1, 2, 0.25])
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 17), context: LayerContext(training: false))
    }
}
