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
        let single = MPIRun.temporaryPath("single.f32"), parallel = MPIRun.temporaryPath("parallel.f32")
        let initial = MPIRun.temporaryPath("initial.f32")
        defer { for path in [single, parallel, initial] { try? FileManager.default.removeItem(atPath: path) } }
        let base = ["train", "--config", MPIRun.config(config)] + common() + extra
        let one = try MPIRun.run(ranks: 0, base + ["--set", "training.batch_size=\(2 * batch)", "--dump-parameters", single])
        XCTAssertEqual(one.status, 0, "1 rank failed: \(one.stderr)", file: file, line: line)
        XCTAssertTrue(one.stdout.contains("\(steps) steps"), "ran \(steps) steps: \(one.stdout)", file: file, line: line)
        let two = try MPIRun.run(ranks: 2, base + ["--set", "training.batch_size=\(batch)", "--dump-parameters", parallel, "--print-checksum"])
        XCTAssertEqual(two.status, 0, "2 ranks failed: \(two.stderr)", file: file, line: line)
        let a = try MPIRun.floats(parallel), b = try MPIRun.floats(single)
        XCTAssertEqual(a.count, b.count, file: file, line: line)
        XCTAssertGreaterThan(a.count, 0, file: file, line: line)
        let difference = MPIRun.relativeDifference(a, b)
        XCTAssertLessThanOrEqual(difference, 1e-4, "\(config): 2×\(batch) vs 1×\(2 * batch) relative difference \(difference)", file: file, line: line)
        // Parameters must have moved, or equality would prove nothing.
        let start = try MPIRun.run(ranks: 0, base + ["--set", "training.max_steps=1", "--set", "optimizer.lr=1e-12",
                                                     "--set", "training.batch_size=\(2 * batch)", "--dump-parameters", initial])
        XCTAssertEqual(start.status, 0, start.stderr, file: file, line: line)
        XCTAssertGreaterThan(MPIRun.relativeDifference(a, try MPIRun.floats(initial)), 1e-3, "training moved the parameters", file: file, line: line)
        let checksums = Set(two.stdout.split(separator: "\n").filter { $0.contains("parameter checksum") }.map { $0.split(separator: " ").last! })
        XCTAssertEqual(checksums.count, 1, "ranks disagree: \(two.stdout)", file: file, line: line)
    }

    func testCharacterLSTMOnTwoRanksMatchesOneBigBatch() throws {
        try assertEquivalent(config: "text-lstm.yaml", extra: ["--set", "model.layers.0.dim=16", "--set", "model.layers.1.hidden=48"])
    }

    func testCharacterTransformerOnTwoRanksMatchesOneBigBatch() throws {
        try assertEquivalent(config: "text-transformer.yaml", extra: [
            "--set", "model.layers.0.dim=32", "--set", "model.layers.2.mlp=64", "--set", "model.layers.3.mlp=64"])
    }
}
