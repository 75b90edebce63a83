import Foundation
import XCTest
import LockstepComm
import LockstepData
import LockstepNN
@testable import LockstepTrain
@testable import LockstepConfig
@testable import LockstepBench
@testable import LockstepCLI

/// The issue-14 optimizers and L1 wired through the config and the trainer, checkpoints of their state, and
/// accuracy for bce_with_logits.
final class OptimizerTrainingTests: XCTestCase {
    private let regression = """
    seed: 3
    data: {dataset: linear-synthetic, samples: 256, features: 4}
    model: {layers: [{type: linear, out: 8}, {type: tanh}, {type: linear, out: 1}]}
    loss: mse
    optimizer: {type: sgd, lr: 0.1}
    training: {batch_size: 16, epochs: 2}
    """

    private func trainer(_ yaml: String, overrides: [String] = [], checkpoints: CheckpointSettings = CheckpointSettings(),
                         datasets: (Dataset, Dataset)? = nil) throws -> Trainer {
        let config = try TrainingConfig.parse(yaml: yaml, source: "t", overrides: overrides)
        return try config.makeTrainer(communicator: SingleProcessCommunicator(), checkpoints: checkpoints,
                                      data: datasets.map { TrainingData(train: $0.0, test: $0.1) }, log: { _ in })
    }

    func testFactoryBuildsTheConfiguredOptimizer() throws {
        let rmsprop = try TrainingConfig.parse(yaml: regression, source: "t", overrides: [
            "optimizer.type=rmsprop", "optimizer.alpha=0.9", "optimizer.centered=true", "optimizer.momentum=0.5", "optimizer.weight_decay=0.01"])
        let r = try XCTUnwrap(TrainingConfig.makeOptimizer(rmsprop.optimizer, parameterCount: 5) as? RMSprop)
        XCTAssertEqual(r.alpha, 0.9)
        XCTAssertEqual(r.epsilon, 1e-8)
        XCTAssertEqual(r.momentum, 0.5)
        XCTAssertEqual(r.weightDecay, 0.01)
        XCTAssertTrue(r.centered)
        let adagrad = try TrainingConfig.parse(yaml: regression, source: "t", overrides: [
            "optimizer.type=adagrad", "optimizer.lr_decay=0.01", "optimizer.initial_accumulator_value=0.1"])
        let a = try XCTUnwrap(TrainingConfig.makeOptimizer(adagrad.optimizer, parameterCount: 5) as? Adagrad)
        XCTAssertEqual(a.learningRateDecay, 0.01)
        XCTAssertEqual(a.initialAccumulatorValue, 0.1)
        XCTAssertEqual(a.epsilon, 1e-10)
        XCTAssertEqual(a.stateBuffers[0].buffer.array, [Float](repeating: 0.1, count: 5))
    }

    /// Stopping at step 6 and resuming from its checkpoint ends bit-identical to an uninterrupted run, so every state
    /// buffer (square_avg, momentum_buffer, grad_avg; Adagrad's sum) and the step count went through the file.
    func testCheckpointOfNewOptimizersResumesBitIdentically() throws {
        let optimizers = [["optimizer.type=rmsprop", "optimizer.lr=0.01", "optimizer.momentum=0.5", "optimizer.centered=true", "optimizer.l1=0.001"],
                          ["optimizer.type=adagrad", "optimizer.lr=0.1", "optimizer.lr_decay=0.1", "optimizer.initial_accumulator_value=0.1"]]
        for overrides in optimizers {
            let directory = NSTemporaryDirectory() + "lockstep-optimizer-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let full = try trainer(regression, overrides: overrides + ["training.max_steps=12"],
                                   checkpoints: CheckpointSettings(directory: directory, everySteps: 6, everyEpoch: false))
            _ = try full.run()
            let checkpoint = directory + "/step-00000006.safetensors"
            XCTAssertTrue(FileManager.default.fileExists(atPath: checkpoint), overrides[0])

            let resumed = try trainer(regression, overrides: overrides + ["training.max_steps=12"],
                                      checkpoints: CheckpointSettings(resume: checkpoint))
            XCTAssertEqual(resumed.optimizer.stepCount, 6, overrides[0])
            XCTAssertEqual(resumed.optimizer.stateBuffers.map(\.name), full.optimizer.stateBuffers.map(\.name))
            _ = try resumed.run()
            XCTAssertEqual(resumed.step, 12)
            XCTAssertEqual(resumed.model.parameters.values.array, full.model.parameters.values.array, overrides[0])
            for (a, b) in zip(resumed.optimizer.stateBuffers, full.optimizer.stateBuffers) {
                XCTAssertEqual(a.buffer.array, b.buffer.array, "\(overrides[0]) \(a.name)")
            }
        }
    }

    /// optimizer.l1 reaches the update: one plain SGD step with λ moves every parameter by a further -lr·λ·sign(p0).
    func testL1ConfigAddsSignTermToTheStep() throws {
        let overrides = ["training.max_steps=1", "optimizer.lr=0.1"]
        let plain = try trainer(regression, overrides: overrides)
        let initial = plain.model.parameters.values.array
        _ = try plain.run()
        let regularized = try trainer(regression, overrides: overrides + ["optimizer.l1=0.5"])
        XCTAssertEqual(regularized.model.parameters.values.array, initial, "same start")
        _ = try regularized.run()
        let (a, b) = (plain.model.parameters.values.array, regularized.model.parameters.values.array)
        XCTAssertTrue(initial.contains(0), "the zero biases check sign(0) = 0")
        for i in initial.indices {
            let sign: Float = initial[i] > 0 ? 1 : (initial[i] < 0 ? -1 : 0)
            XCTAssertEqual(b[i], a[i] - 0.1 * 0.5 * sign, accuracy: 1e-6, "parameter \(i)")
        }
    }

    /// Two labels per sample, target = (feature > 0); eval batches of 3 over 8 samples.
    func testBCEWithLogitsReportsBinaryAccuracy() throws {
        let features: [Float] = [0.5, -1, -2, 0.25, 1, 1, -0.5, -0.5, 3, -3, -1, 2, 0.1, 0.2, -0.1, -0.2]
        let data = Dataset(features: features, targets: features.map { $0 > 0 ? 1 : 0 }, sampleShape: [2], targetWidth: 2)
        let yaml = """
        data: {dataset: linear-synthetic}
        model: {layers: [{type: linear, out: 2}]}
        loss: bce_with_logits
        optimizer: {type: sgd, lr: 0.1}
        training: {batch_size: 4, eval_batch_size: 3}
        """
        let trainer = try trainer(yaml, datasets: (data, data))
        let weights = try XCTUnwrap(trainer.model.parameters.slots.first { $0.name.hasSuffix("weight") })
        let values = trainer.model.parameters.values.pointer
        values.update(repeating: 0, count: trainer.model.parameters.count)
        // Identity weights, zero bias: every logit has its target's side of 0.
        values[weights.offset] = 1; values[weights.offset + 3] = 1
        XCTAssertEqual(try XCTUnwrap(trainer.evaluate().accuracy), 1, accuracy: 1e-12)
        // The second label's logit flipped: half of the decisions are wrong.
        values[weights.offset + 3] = -1
        XCTAssertEqual(try XCTUnwrap(trainer.evaluate().accuracy), 0.5, accuracy: 1e-12)
    }
}
