import XCTest
import LockstepComm
import LockstepCore
import LockstepData
import LockstepNN
@testable import LockstepTrain

/// The Trainer's fused step (the optimizer clears the gradients as it reads them, Flatten passes its input through)
/// computes exactly what the plain loop does: zero, forward, loss, backward, update.
final class StepFusionTests: XCTestCase {
    private func makeModel() throws -> Sequential {
        try Sequential(inputShape: [2, 2]) {
            Flatten()
            Linear(inputDimensions: 4, outputDimensions: 16)
            ReLU()
            Linear(inputDimensions: 16, outputDimensions: 2)
        }
    }

    private func makeTrainer(_ options: TrainingOptions, data: Dataset) throws -> Trainer {
        let model = try makeModel()
        var options = options
        options.distributed.timeoutSeconds = 0
        return try Trainer(model: model, loss: SoftmaxCrossEntropy(),
                           optimizer: SGD(parameterCount: model.parameters.count, momentum: 0.9, weightDecay: 0.01),
                           schedule: ConstantSchedule(learningRate: 0.05),
                           data: TrainingData(train: data, test: Dataset.blobs(64, seed: 2).reshaped([2, 2])), options: options,
                           communicator: SingleProcessCommunicator(), log: { _ in })
    }

    func testTrainerStepsEqualThePlainLoopBitForBit() throws {
        let data = Dataset.blobs(128, seed: 1).reshaped([2, 2])
        var options = TrainingOptions()
        options.batchSize = 128  // one step per epoch over the samples in order: the plain loop sees the same batch
        options.shuffle = false
        let trainer = try makeTrainer(options, data: data)
        let steps = 5
        _ = try trainer.fit(epochs: steps)
        XCTAssertEqual(trainer.step, steps)

        let model = try makeModel()
        model.initialize(rng: RNG(seed: options.seed).split(1))
        model.plan(batchSize: 128)
        let optimizer = SGD(parameterCount: model.parameters.count, momentum: 0.9, weightDecay: 0.01)
        let loss = SoftmaxCrossEntropy()
        let features = FloatBuffer(data.features), targets = FloatBuffer(data.targets), outputGradient = FloatBuffer(count: 128 * 2)
        for _ in 0..<steps {
            model.zeroGradients()
            let output = model.forward(features.pointer, batch: 128, context: LayerContext(training: true))
            _ = loss.forward(output: output, targets: targets.pointer, batch: 128, width: 2)
            loss.backward(output: output, targets: targets.pointer, gradient: outputGradient.pointer, batch: 128, width: 2, scale: 1)
            model.backward(input: features.pointer, outputGradient: outputGradient.pointer, batch: 128)
            optimizer.step(parameters: model.parameters.values.pointer, gradients: UnsafePointer(model.parameters.gradients!.pointer),
                           count: model.parameters.count, learningRate: 0.05)
        }
        XCTAssertEqual(trainer.model.parameters.values.array.map(\.bitPattern), model.parameters.values.array.map(\.bitPattern))
        XCTAssertEqual(optimizer.stateBuffers[0].buffer.array.map(\.bitPattern),
                       trainer.optimizer.stateBuffers[0].buffer.array.map(\.bitPattern))
    }

    /// A skipped step leaves its (non-finite) gradients uncleared by the optimizer: the next step must zero them,
    /// or every later step would be skipped too.
    func testStepAfterASkippedStepStartsFromZeroGradients() throws {
        var options = TrainingOptions()
        options.batchSize = 32
        options.faults.nanStep = 1
        let trainer = try makeTrainer(options, data: Dataset.blobs(128, seed: 1).reshaped([2, 2]))
        for _ in 0..<4 { XCTAssertNotNil(try trainer.trainStep()) }
        XCTAssertEqual(trainer.skippedSteps, 1)
        XCTAssertTrue(trainer.model.parameters.values.array.allSatisfy(\.isFinite))
    }
}

private extension Dataset {
    /// The same samples with another per-sample shape of the same width.
    func reshaped(_ shape: [Int]) -> Dataset {
        Dataset(features: features, targets: targets, sampleShape: shape, targetWidth: targetWidth, classCount: classCount)
    }
}
