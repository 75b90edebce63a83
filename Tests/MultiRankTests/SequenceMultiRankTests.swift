import Foundation
import XCTest

/// Data-parallel equivalence for sequence models: 2 ranks × b windows end with the parameters of 1 rank × 2b.
///
/// Shrunk versions of the shipped text configs (short windows, narrow layers, a slice of the corpus) so each run
/// takes seconds; 60 optimizer steps with the configs' own optimizer (Adam/AdamW) and gradient clipping.
final class SequenceMultiRankTests: XCTestCase {
    private let steps = 60

    private func common() -> [String] {
        ["--set", "data.sequence_length=32", "--set", "data.stride=32", "--set", "data.train_subset=4096",
         "--set", "data.test_subset=64", "--set", "training.epochs=1", "--set", "training.max_steps=\(steps)",
         "--set", "training.eval_batch_size=64", "--set", "distributed.check_every=10"]
    }

    private func assertEquivalent(config: String, extra: [String], batch: Int = 8, file: StaticString = #filePath, line: UInt = #line) throws {
        let base = ["train", "--config", MPIRun.config(config)] + common() + extra
        let outcome = try Equivalence.measure(base: base, ranks: 2, batch: batch)
        Equivalence.assertHolds(outcome, ranks: 2, "\(config): 2×\(batch) vs 1×\(2 * batch)", file: file, line: line)
        XCTAssertTrue(outcome.parallel.stdout.contains("\(steps) steps"), "ran \(steps) steps: \(outcome.parallel.stdout)", file: file, line: line)
    }

    func testCharacterLSTMOnTwoRanksMatchesOneBigBatch() throws {
        try assertEquivalent(config: "text-lstm.yaml", extra: ["--set", "model.layers.0.dim=16", "--set", "model.layers.1.hidden=48"])
    }

    func testCharacterTransformerOnTwoRanksMatchesOneBigBatch() throws {
        try assertEquivalent(config: "text-transformer.yaml", extra: [
            "--set", "model.layers.0.dim=32", "--set", "model.layers.2.mlp=64", "--set", "model.layers.3.mlp=64"])
    }
}
