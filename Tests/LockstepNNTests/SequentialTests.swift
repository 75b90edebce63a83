import XCTest
import LockstepCore
import LockstepNN

/// Whole-stack forward/backward through `Sequential`, checked against finite differences of the loss.
final class SequentialTests: XCTestCase {
    /// Checks every parameter gradient of `model` on loss(model(input), targets). The loss comes back as a Float
    /// (~1e-7 relative), so derivatives below 1e-2 are compared absolutely (1e-5).
    private func checkModel(_ model: Sequential, loss: Loss, input: [Float], targets: [Float], batch: Int,
                            context: LayerContext, file: StaticString = #filePath, line: UInt = #line) {
        model.plan(batchSize: batch)
        let width = model.outputWidth
        let x = FloatBuffer(input), t = FloatBuffer(targets)
        let outputGradient = FloatBuffer(count: batch * width)
        func objective() -> Double {
            let output = model.forward(x.pointer, batch: batch, context: context)
            return Double(loss.forward(output: output, targets: t.pointer, batch: batch, width: width))
        }
        model.zeroGradients()
        let output = model.forward(x.pointer, batch: batch, context: context)
        loss.backward(output: output, targets: t.pointer, gradient: outputGradient.pointer, batch: batch, width: width, scale: 1)
        var finished: [Int] = []
        model.backward(input: x.pointer, outputGradient: outputGradient.pointer, batch: batch) { finished.append($0) }
        XCTAssertEqual(finished, Array((0..<model.layers.count).reversed()), "layerDone runs once per layer, last first", file: file, line: line)
        let analytic = model.parameters.gradients!.array
        for slot in model.parameters.slots {
            let values = model.parameters.valuePointer(slot)
            let numeric = (0..<slot.count).map { GradientCheck.numericDerivative(values, index: $0, step: 1e-2, objective: objective) }
            GradientCheck.assertMatch(Array(analytic[slot.offset..<(slot.offset + slot.count)]), numeric, label: slot.name,
                                      tolerance: 1e-3, floor: 1e-2, file: file, line: line)
        }
    }

    func testTinyMLPEndToEnd() throws {
        let model = try Sequential([Linear(inputDimensions: 4, outputDimensions: 6), Tanh(),
                                    Linear(inputDimensions: 6, outputDimensions: 3)], inputShape: [4])
        model.initialize(rng: RNG(seed: 3))
        XCTAssertEqual(model.parameters.slots.map(\.name), ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"])
        checkModel(model, loss: SoftmaxCrossEntropy(), input: TestData.normal(20, seed: 60), targets: [0, 2, 1, 2, 0],
                   batch: 5, context: LayerContext(training: true))
    }

    func testTinyConvolutionalStackEndToEnd() throws {
        // Smooth pieces only (tanh, average pooling), so finite differences never straddle a kink.
        let model = try Sequential([
            // No bias: BatchNorm right after cancels it, so its gradient is exactly zero.
            Conv2D(inputChannels: 1, outputChannels: 2, kernelSize: 3, padding: 1, bias: false),
            BatchNorm(features: 2, spatial: 16),
            Tanh(),
            AvgPool2D(kernelSize: 2),
            Flatten(),
            Dropout(probability: 0.2),
            Linear(inputDimensions: 8, outputDimensions: 3),
            Sigmoid(),
        ], inputShape: [1, 4, 4])
        XCTAssertEqual(model.shapes, [[2, 4, 4], [2, 4, 4], [2, 4, 4], [2, 2, 2], [8], [8], [3], [3]])
        XCTAssertEqual(model.state.slots.map(\.name), ["layers.1.running_mean", "layers.1.running_var"])
        model.initialize(rng: RNG(seed: 4))
        checkModel(model, loss: MSELoss(), input: TestData.normal(48, seed: 61), targets: TestData.normal(9, seed: 62),
                   batch: 3, context: LayerContext(training: true, rng: RNG(seed: 8)))
    }

    func testShapeErrorNamesTheLayer() {
        XCTAssertThrowsError(try Sequential([Flatten(), Conv2D(inputChannels: 1, outputChannels: 2, kernelSize: 3)],
                                            inputShape: [1, 5, 5])) { error in
            XCTAssertTrue("\(error)".contains("layer 1 (conv2d)"), "\(error)")
        }
    }
    /// `backward(inputGradient:)` gives dL/dinput through every layer (the GAN generator's path through its
    /// discriminator), matching finite differences of the loss in the input, with leading parameter-free layers too.
    /// Tanh rather than a GAN's leaky ReLU: finite differences must not straddle a kink.
    func testInputGradientMatchesFiniteDifferences() throws {
        let model = try Sequential([Flatten(), Linear(inputDimensions: 8, outputDimensions: 5), Tanh(),
                                    Linear(inputDimensions: 5, outputDimensions: 1)], inputShape: [2, 4])
        model.initialize(rng: RNG(seed: 5))
        let batch = 3
        model.plan(batchSize: batch)
        let x = FloatBuffer(TestData.normal(batch * 8, seed: 63)), t = FloatBuffer([1, 0, 1])
        let loss = BCEWithLogitsLoss()
        func objective() -> Double {
            Double(loss.forward(output: model.forward(x.pointer, batch: batch, context: LayerContext(training: true)),
                                targets: t.pointer, batch: batch, width: 1))
        }
        let output = model.forward(x.pointer, batch: batch, context: LayerContext(training: true))
        let outputGradient = FloatBuffer(count: batch)
        loss.backward(output: output, targets: t.pointer, gradient: outputGradient.pointer, batch: batch, width: 1, scale: 1)
        let inputGradient = FloatBuffer(count: batch * 8)
        model.zeroGradients()
        var finished: [Int] = []
        model.backward(input: x.pointer, outputGradient: outputGradient.pointer, batch: batch,
                       inputGradient: inputGradient.pointer) { finished.append($0) }
        XCTAssertEqual(finished, [3, 2, 1, 0])
        let numeric = (0..<(batch * 8)).map { GradientCheck.numericDerivative(x.pointer, index: $0, step: 1e-2, objective: objective) }
        GradientCheck.assertMatch(inputGradient.array, numeric, label: "input", tolerance: 1e-3, floor: 1e-2, file: #filePath, line: #line)
        XCTAssertGreaterThan(inputGradient.array.map(abs).max() ?? 0, 1e-3, "the input gradient must not vanish")
    }
}
