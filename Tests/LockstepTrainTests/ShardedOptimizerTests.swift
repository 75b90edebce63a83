import Foundation
import XCTest
import LockstepComm
import LockstepCore
import LockstepData
import LockstepNN
@testable import LockstepTrain

/// `distributed.shard_optimizer` in one process (one slice: the whole trainable range); the multi-rank behaviour is
/// in MultiRankTests/ZeroShardingTests.
final class ShardedOptimizerTests: XCTestCase {
    private func makeTrainer(options: TrainingOptions, optimizerCount: ((Sequential) throws -> Int)? = nil) throws -> Trainer {
        let model = try Sequential.blobsClassifier()
        var options = options
        options.distributed.timeoutSeconds = 0
        let count = try optimizerCount?(model)
            ?? Trainer.optimizerParameterCount(of: model, options: options, worldSize: 1, rank: 0)
        return try Trainer(model: model, loss: SoftmaxCrossEntropy(), optimizer: Adam(parameterCount: count),
                           schedule: ConstantSchedule(learningRate: 0.01),
                           data: TrainingData(train: Dataset.blobs(512, seed: 1), test: Dataset.blobs(256, seed: 2)), options: options,
                           communicator: SingleProcessCommunicator(), log: { _ in })
    }

    /// One rank sharded takes the same steps as unsharded, bit for bit, with clipping and a frozen first layer.
    func testOneRankShardedEqualsUnsharded() throws {
        var options = TrainingOptions()
        options.batchSize = 32
        options.clipGradientNorm = 0.5
        options.frozenLayers = 1
        var sharded = options
        sharded.distributed.shardOptimizer = true
        var results: [[Float]] = []
        for o in [options, sharded] {
            let trainer = try makeTrainer(options: o)
            _ = try trainer.fit(epochs: 2)
            results.append(trainer.model.parameters.values.array)
            XCTAssertEqual(trainer.optimizerStateBytes, 2 * (16 * 2 + 2) * 4, "Adam state of the trainable layer only")
        }
        XCTAssertEqual(results[0], results[1])
    }

    /// The optimizer-count helper gives the slice on several ranks, and the trainer refuses a full-size optimizer.
    func testOptimizerMustCoverTheSliceOnly() throws {
        var options = TrainingOptions()
        options.distributed.shardOptimizer = true
        let model = try Sequential(inputShape: [4]) { Linear(inputDimensions: 4, outputDimensions: 100) }
        let counts = try (0..<3).map { try Trainer.optimizerParameterCount(of: model, options: options, worldSize: 3, rank: $0) }
        XCTAssertEqual(counts, [160, 160, 180])
        XCTAssertThrowsError(try makeTrainer(options: options, optimizerCount: { $0.parameters.count + 1 })) { error in
            XCTAssertTrue("\(error)".contains("key 'distributed.shard_optimizer'") && "\(error)".contains("Trainer.optimizerParameterCount"), "\(error)")
        }
    }

    func testStartupDescriptionNamesTheSharding() throws {
        var options = TrainingOptions()
        options.distributed.shardOptimizer = true
        let trainer = try makeTrainer(options: options)
        XCTAssertEqual(trainer.optimizerStateDescription, "optimizer state 912 bytes per rank (sharded over 1 rank; 912 unsharded)")
    }
}
