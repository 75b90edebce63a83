import Foundation
import XCTest
import LockstepComm
import LockstepCore
import LockstepData
import LockstepNN
@testable import LockstepTrain

/// The Swift training API in one process (`SingleProcessCommunicator`, no mpirun): a model written in Swift,
/// `fit`, `trainStep`, `evaluate`, `predict`, accumulation and observers.
final class TrainerTests: XCTestCase {
    private func makeTrainer(options: TrainingOptions = TrainingOptions(), observer: StepObserver? = nil) throws -> Trainer {
        let model = try Sequential.blobsClassifier()
        var options = options
        options.distributed.timeoutSeconds = 0
        let trainer = try Trainer(model: model, loss: SoftmaxCrossEntropy(),
                                  optimizer: SGD(parameterCount: model.parameters.count, momentum: 0.9),
                                  schedule: ConstantSchedule(learningRate: 0.05),
                                  data: TrainingData(train: Dataset.blobs(512, seed: 1), test: Dataset.blobs(256, seed: 2)), options: options,
                                  communicator: SingleProcessCommunicator(), log: { _ in })
        trainer.observer = observer
        return trainer
    }

    func testFitTrainsASwiftModelAndReportsEveryEpoch() throws {
        var options = TrainingOptions()
        options.batchSize = 32
        let trainer = try makeTrainer(options: options)
        let before = try trainer.evaluate()
        var epochs: [EpochMetrics] = []
        let summary = try trainer.fit(epochs: 3, onEpoch: { epochs.append($0) })
        XCTAssertEqual(epochs.map(\.epoch), [1, 2, 3])
        XCTAssertEqual(summary.steps, 3 * 16)
        XCTAssertEqual(trainer.stepsPerEpoch, 16)
        XCTAssertGreaterThan(try XCTUnwrap(summary.testAccuracy), 0.95)
        XCTAssertLessThan(summary.testLoss, before.loss / 4)
        XCTAssertTrue(epochs[0].line.hasPrefix("epoch 1 step 16: train loss"), epochs[0].line)
        XCTAssertTrue(summary.line.hasPrefix("done: test accuracy"), summary.line)
    }

    func testTrainStepWalksOneEpochThenReportsItsEnd() throws {
        var options = TrainingOptions()
        options.batchSize = 100
        let trainer = try makeTrainer(options: options)
        var losses: [Float] = []
        while let loss = try trainer.trainStep() { losses.append(loss) }
        // 512 samples in batches of 100: five full steps and one of 12.
        XCTAssertEqual(losses.count, 6)
        XCTAssertEqual(trainer.step, 6)
        XCTAssertTrue(losses.allSatisfy(\.isFinite))
    }

    func testPredictGivesOneRowOfScoresPerSample() throws {
        let trainer = try makeTrainer()
        _ = try trainer.fit(epochs: 2)
        let test = Dataset.blobs(10, seed: 3)
        let scores = test.features.withUnsafeBufferPointer { trainer.predict($0.baseAddress!, count: 10) }
        XCTAssertEqual(scores.count, 10 * 2)
        let predicted = (0..<10).map { scores[2 * $0 + 1] > scores[2 * $0] ? 1 : 0 }
        XCTAssertEqual(predicted, (0..<10).map { $0 % 2 })
    }

    /// Deterministic accumulation of 4 micro-batches of 8 is the reducer's job: bit-identical to the same step
    /// computed by summing the four micro-batch gradients in order, whatever the batch size of the run.
    func testDeterministicAccumulationEqualsInPlaceAccumulationWithinRounding() throws {
        var inPlace = TrainingOptions(), ordered = TrainingOptions()
        inPlace.batchSize = 8; inPlace.accumulationSteps = 4
        ordered = inPlace; ordered.distributed.deterministic = true
        let big = { () -> TrainingOptions in var o = TrainingOptions(); o.batchSize = 32; return o }()
        var results: [[Float]] = []
        for options in [inPlace, ordered, big] {
            let trainer = try makeTrainer(options: options)
            _ = try trainer.fit(epochs: 1)
            XCTAssertEqual(trainer.step, 16)
            results.append(trainer.model.parameters.values.array)
        }
        for other in results.dropFirst() {
            let difference = zip(results[0], other).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(difference, 1e-4, "micro-batches summed in place, in order, or as one batch agree up to rounding")
        }
    }

    func testObserverSeesEveryPhaseOfEveryStep() throws {
        final class Counter: StepObserver {
            var steps = 0, laps: [StepPhase: Int] = [:], layers = 0, prepared = false
            func prepare(layerKinds: [String], bucketDescriptions: [String]) { prepared = layerKinds == ["linear", "relu", "linear"] }
            func beginStep() { steps += 1 }
            func lap(_ phase: StepPhase) { laps[phase, default: 0] += 1 }
            func layerBackwardDone(_ layer: Int) { layers += 1 }
            func endStep() {}
        }
        let counter = Counter()
        var options = TrainingOptions()
        options.batchSize = 64
        let trainer = try makeTrainer(options: options, observer: counter)
        _ = try trainer.fit(epochs: 1)
        XCTAssertTrue(counter.prepared)
        XCTAssertEqual(counter.steps, 8)
        XCTAssertEqual(counter.laps, [.data: 8, .forward: 8, .backward: 8, .allreduceWait: 8, .optimizer: 8])
        XCTAssertEqual(counter.layers, 8 * 3)
    }

    func testModelThatDoesNotFitTheDataIsRejectedNamingBothWidths() throws {
        let model = try Sequential(inputShape: [3]) { Linear(inputDimensions: 3, outputDimensions: 2) }
        XCTAssertThrowsError(try Trainer(model: model, loss: SoftmaxCrossEntropy(), optimizer: SGD(parameterCount: model.parameters.count),
                                         schedule: ConstantSchedule(learningRate: 0.1),
                                         data: TrainingData(train: Dataset.blobs(8, seed: 1), test: Dataset.blobs(8, seed: 2)),
                                         communicator: SingleProcessCommunicator(), log: { _ in })) { error in
            XCTAssertTrue("\(error)".contains("takes 3 features") && "\(error)".contains("has 4"), "\(error)")
        }
    }
}
