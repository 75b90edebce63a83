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

    /// ReLU then MaxPool2D runs fused (`MaxPool2D.forwardRectified`); LeakyReLU with slope 0 computes the same
    /// function but is not fused, so the two stacks must agree on outputs and every parameter gradient.
    private func checkFusedReLUPool(imageSize: Int, poolKernel: Int, poolStride: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        func stack(fused: Bool) throws -> Sequential {
            let pooled = (imageSize - poolKernel) / poolStride + 1
            let model = try Sequential([
                Conv2D(inputChannels: 2, outputChannels: 3, kernelSize: 3, padding: 1),
                fused ? ReLU() : LeakyReLU(slope: 0),
                MaxPool2D(kernelSize: poolKernel, stride: poolStride),
                Conv2D(inputChannels: 3, outputChannels: 2, kernelSize: 1),
                ReLU(),
                MaxPool2D(kernelSize: 1),
                Flatten(),
                Linear(inputDimensions: 2 * pooled * pooled, outputDimensions: 4),
            ], inputShape: [2, imageSize, imageSize])
            model.initialize(rng: RNG(seed: 21))
            return model
        }
        let fused = try stack(fused: true), reference = try stack(fused: false)
        XCTAssertEqual(fused.fusedIntoNextLayer, [false, true, false, false, true, false, false, false], file: file, line: line)
        XCTAssertEqual(reference.fusedIntoNextLayer, [false, false, false, false, true, false, false, false], file: file, line: line)
        let batch = 3
        // Shifted down so that many windows are entirely negative (their output and gradient are 0).
        let x = FloatBuffer(TestData.normal(batch * fused.inputWidth, seed: 63).map { $0 - 0.5 })
        let outputGradient = FloatBuffer(TestData.normal(batch * fused.outputWidth, seed: 64))
        var results: [(output: [Float], evaluation: [Float], gradients: [Float])] = []
        for model in [fused, reference] {
            model.plan(batchSize: batch)
            model.zeroGradients()
            let evaluation = model.forward(x.pointer, batch: batch, context: LayerContext(training: false))
            let evaluationOutput = Array(UnsafeBufferPointer(start: evaluation, count: batch * model.outputWidth))
            let output = model.forward(x.pointer, batch: batch, context: LayerContext(training: true))
            let trainingOutput = Array(UnsafeBufferPointer(start: output, count: batch * model.outputWidth))
            model.backward(input: x.pointer, outputGradient: outputGradient.pointer, batch: batch)
            results.append((trainingOutput, evaluationOutput, model.parameters.gradients!.array))
        }
        XCTAssertEqual(results[0].output, results[1].output, "training output", file: file, line: line)
        XCTAssertEqual(results[0].evaluation, results[1].evaluation, "evaluation output", file: file, line: line)
        XCTAssertEqual(results[0].output, results[0].evaluation, "evaluation and training agree", file: file, line: line)
        XCTAssertEqual(results[0].gradients, results[1].gradients, "parameter gradients", file: file, line: line)
        XCTAssertTrue(results[0].gradients.contains { $0 != 0 }, file: file, line: line)
    }

    func testFusedReLUMaxPoolMatchesTheUnfusedLayers() throws {
        try checkFusedReLUPool(imageSize: 6, poolKernel: 2, poolStride: 2)  // 2x2 windows tile the plane
        try checkFusedReLUPool(imageSize: 5, poolKernel: 2, poolStride: 2)  // the last row and column are in no window
        try checkFusedReLUPool(imageSize: 7, poolKernel: 3, poolStride: 2)  // overlapping windows
    }

    func testEvaluationBatchLargerThanTheTrainingBatch() throws {
        // Planned for forward batches of 6 and backward batches of 2: gradients are the same as when planned for 2.
        func stack() throws -> Sequential {
            let model = try Sequential([Conv2D(inputChannels: 1, outputChannels: 2, kernelSize: 3, padding: 1), ReLU(),
                                        MaxPool2D(kernelSize: 2), Flatten(), Linear(inputDimensions: 8, outputDimensions: 3)],
                                       inputShape: [1, 4, 4])
            model.initialize(rng: RNG(seed: 22))
            return model
        }
        let wide = try stack(), narrow = try stack()
        wide.plan(batchSize: 6, trainingBatchSize: 2)
        narrow.plan(batchSize: 2)
        let x = FloatBuffer(TestData.normal(6 * 16, seed: 65)), dy = FloatBuffer(TestData.normal(2 * 3, seed: 66))
        let evaluation = wide.forward(x.pointer, batch: 6, context: LayerContext(training: false))
        XCTAssertTrue(UnsafeBufferPointer(start: evaluation, count: 18).allSatisfy(\.isFinite))
        for model in [wide, narrow] {
            model.zeroGradients()
            model.forward(x.pointer, batch: 2, context: LayerContext(training: true))
            model.backward(input: x.pointer, outputGradient: dy.pointer, batch: 2)
        }
        XCTAssertEqual(wide.parameters.gradients!.array, narrow.parameters.gradients!.array)
        XCTAssertTrue(wide.parameters.gradients!.array.contains { $0 != 0 })
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
