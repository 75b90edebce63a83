import Foundation
import XCTest

/// ZeRO-1 (`distributed.shard_optimizer`) on the real binary under mpirun: the same parameters as unsharded training
/// (bit for bit in deterministic mode, within the derived bound otherwise), 1/W of the optimizer state per rank, one
/// checkpoint file with the whole state that resumes on other world sizes, and refused combinations.
final class ZeroShardingTests: ScratchDirectoryTestCase {
    private let shard = ["--set", "distributed.shard_optimizer=true"]
    /// fashion-mlp.yaml says `shard_optimizer: auto`, which shards on one node: unsharded runs say so.
    private let unshard = ["--set", "distributed.shard_optimizer=false"]
    private let adam = ["--set", "optimizer.type=adam", "--set", "optimizer.lr=0.001", "--set", "optimizer.momentum=0"]

    /// Fashion-MLP on 8192 samples, `steps` optimizer steps.
    private func arguments(steps: Int) -> [String] {
        ["train", "--config", MPIRun.config("fashion-mlp.yaml"), "--set", "data.train_subset=8192", "--set", "data.test_subset=1000",
         "--set", "training.epochs=10", "--set", "training.max_steps=\(steps)", "--set", "distributed.check_every=10"]
    }

    /// Runs `ranks` ranks, dumps the parameters and returns them with the run's stdout.
    private func train(ranks: Int, _ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> (Data, String) {
        let dump = MPIRun.temporaryPath("parameters.f32")
        defer { try? FileManager.default.removeItem(atPath: dump) }
        let result = try MPIRun.run(ranks: ranks, arguments + ["--dump-parameters", dump, "--print-checksum"])
        XCTAssertEqual(result.status, 0, "\(ranks) ranks: \(result.stderr)", file: file, line: line)
        return ((try? Data(contentsOf: URL(fileURLWithPath: dump))) ?? Data(), result.stdout)
    }

    /// The tensor bytes of a safetensors file (everything after the JSON header, whose metadata names the config).
    private static func tensorData(_ path: String) throws -> Data {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let headerLength = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        return bytes.subdata(in: (8 + headerLength)..<bytes.count)
    }

    /// `optimizer state N bytes per rank` from a run's output (the start-up line).
    private static func optimizerStateBytes(_ stdout: String) -> Int? {
        guard let line = stdout.split(separator: "\n").first(where: { $0.hasPrefix("lockstep: ") }),
              let range = line.range(of: "optimizer state ") else { return nil }
        return Int(line[range.upperBound...].prefix { $0.isNumber })
    }

    /// Deterministic mode: the sharded path sums every slice in rank order and scales like the unsharded one, so
    /// parameters are bit-identical, on 2 and 4 ranks, with Adam, accumulation, weight decay and L1.
    func testDeterministicShardingIsBitIdenticalToUnsharded() throws {
        let base = arguments(steps: 30) + adam + ["--set", "distributed.deterministic=true", "--set", "training.accumulation_steps=2",
                                                  "--set", "optimizer.weight_decay=0.01", "--set", "optimizer.l1=0.0001"]
        for ranks in [2, 4] {
            let (unsharded, _) = try train(ranks: ranks, base)
            let (sharded, stdout) = try train(ranks: ranks, base + shard)
            XCTAssertFalse(sharded.isEmpty)
            XCTAssertTrue(sharded == unsharded, "\(ranks) ranks: sharded parameters differ from unsharded ones")
            XCTAssertTrue(stdout.contains("(sharded over \(ranks) ranks;"), stdout)
            let checksums = Set(stdout.split(separator: "\n").filter { $0.contains("parameter checksum") }.map { $0.split(separator: " ").last! })
            XCTAssertEqual(checksums.count, 1, "ranks disagree: \(stdout)")
        }
    }

    /// A first layer frozen: the shard covers the trainable suffix only, still bit-identical (3 ranks: unequal slices).
    func testFrozenPrefixShardsTheTrainableParametersOnly() throws {
        let base = arguments(steps: 20) + adam + ["--set", "distributed.deterministic=true", "--set", "model.freeze=[0,1,2]"]
        let (unsharded, _) = try train(ranks: 3, base)
        let (sharded, _) = try train(ranks: 3, base + shard)
        XCTAssertFalse(sharded.isEmpty)
        XCTAssertTrue(sharded == unsharded, "sharded parameters differ from unsharded ones with a frozen prefix")
    }

    /// On one node the sharded update reduces through node-shared memory with the unsharded path's sums (rank order
    /// then × 1/W), so every slice owner computes the very values each rank computes unsharded: bit-identical
    /// parameters, on 2 and 4 ranks, with SGD momentum (the config's) and Adam with weight decay.
    func testShardingThroughSharedMemoryIsBitIdenticalToUnshardedSharedMemory() throws {
        let sgd = arguments(steps: 30)
        let adamDecay = arguments(steps: 30) + adam + ["--set", "optimizer.weight_decay=0.01"]
        for (ranks, base) in [(2, sgd), (4, sgd), (2, adamDecay)] {
            let (unsharded, plain) = try train(ranks: ranks, base + unshard)
            let (sharded, stdout) = try train(ranks: ranks, base + shard)
            XCTAssertFalse(sharded.isEmpty)
            XCTAssertTrue(sharded == unsharded, "\(ranks) ranks: sharded parameters differ from unsharded ones")
            XCTAssertTrue(plain.contains("gradient reduction sharedMemory"), plain)
            XCTAssertTrue(stdout.contains("gradient reduction sharedMemory"), stdout)
            XCTAssertTrue(stdout.contains("(sharded over \(ranks) ranks;"), stdout)
            XCTAssertFalse(plain.contains("(sharded over"), plain)
        }
        // `auto` (the config's word) shards exactly where the reduction runs through node-shared memory.
        let (automatic, automaticOut) = try train(ranks: 2, sgd)
        XCTAssertTrue(automatic == (try unshardedTwoRanks(sgd)), "auto differs from unsharded training")
        XCTAssertTrue(automaticOut.contains("(sharded over 2 ranks;"), automaticOut)
        let (_, throughMPI) = try train(ranks: 2, sgd + ["--set", "distributed.transport=mpi"])
        XCTAssertFalse(throughMPI.contains("(sharded over"), throughMPI)
    }

    /// Parameters larger than a core's L2 (784-2048-128-10: 7.5 MB) train on the node's one shared copy, each owner
    /// updating its slice in place: still bit-identical to unsharded training, on 2 and 4 ranks, and the run's
    /// parameters (dumped after the run, from the private copy the model gets back) agree on every rank.
    func testParametersUpdatedInPlaceInSharedMemoryAreBitIdenticalToUnsharded() throws {
        let wide = arguments(steps: 20) + ["--set", "model.layers.1.out=2048"]
        for ranks in [2, 4] {
            let (unsharded, _) = try train(ranks: ranks, wide + unshard)
            let (sharded, stdout) = try train(ranks: ranks, wide + shard)
            XCTAssertFalse(sharded.isEmpty)
            XCTAssertTrue(stdout.contains("parameters updated in place in node-shared memory"), stdout)
            XCTAssertTrue(sharded == unsharded, "\(ranks) ranks: parameters updated in place differ from unsharded ones")
            let checksums = Set(stdout.split(separator: "\n").filter { $0.contains("parameter checksum") }.map { $0.split(separator: " ").last! })
            XCTAssertEqual(checksums.count, 1, "ranks disagree: \(stdout)")
        }
    }

    /// fashion-mlp's unsharded parameters after `arguments` on 2 ranks.
    private func unshardedTwoRanks(_ arguments: [String]) throws -> Data { try train(ranks: 2, arguments + unshard).0 }

    /// Default mode (through shared memory on one node; `transport mpi`: a reduce-scatter through MPI): W ranks × b
    /// sharded end within the regrouping bound of 1 × W·b.
    func testShardedAdamMatchesOneBigBatchOnTwoAndFourRanks() throws {
        for (ranks, batch, transport) in [(2, 32, "auto"), (4, 16, "auto"), (2, 32, "mpi")] {
            let base = arguments(steps: 60) + adam + shard + ["--set", "distributed.transport=\(transport)"]
            let outcome = try Equivalence.measure(base: base, ranks: ranks, batch: batch)
            Equivalence.assertHolds(outcome, ranks: ranks, "sharded Adam \(ranks)×\(batch) vs 1×\(ranks * batch), transport \(transport)")
        }
    }

    /// The same bound trips when the sharded reduction leaves the sum instead of the mean (`debug.reduction_fault`).
    func testBoundCatchesAWrongShardedReduction() throws {
        let base = arguments(steps: 60) + adam + shard
        let outcome = try Equivalence.measure(base: base, ranks: 2, batch: 32) { parallel in
            try MPIRun.run(ranks: 2, parallel + ["--set", "debug.reduction_fault=sum"])
        }
        XCTAssertEqual(outcome.parallel.status, 0, outcome.parallel.stderr)
        XCTAssertGreaterThan(outcome.difference, outcome.bound, outcome.summary)
    }

    /// On 4 ranks with Adam each rank holds ≤ 30% of the unsharded optimizer state, and accuracy is unchanged.
    func testFourRanksHoldAQuarterOfTheAdamState() throws {
        let base = arguments(steps: 128) + adam
        let (_, unsharded) = try train(ranks: 4, base + unshard)
        let (_, sharded) = try train(ranks: 4, base + shard)
        let full = try XCTUnwrap(Self.optimizerStateBytes(unsharded), unsharded)
        let perRank = try XCTUnwrap(Self.optimizerStateBytes(sharded), sharded)
        // Adam: exp_avg and exp_avg_sq for each of the 235146 parameters.
        XCTAssertEqual(full, 2 * 235_146 * 4)
        XCTAssertLessThanOrEqual(Double(perRank), 0.30 * Double(full), "sharded \(perRank) bytes per rank, unsharded \(full)")
        XCTAssertTrue(sharded.contains("optimizer state \(perRank) bytes per rank (sharded over 4 ranks; \(full) unsharded)"), sharded)
        func accuracy(_ stdout: String) -> Double? {
            guard let done = stdout.split(separator: "\n").first(where: { $0.hasPrefix("done: test accuracy ") }) else { return nil }
            return Double(done.dropFirst("done: test accuracy ".count).prefix { $0 != "," })
        }
        let a = try XCTUnwrap(accuracy(unsharded), unsharded), b = try XCTUnwrap(accuracy(sharded), sharded)
        XCTAssertGreaterThan(a, 0.7)
        XCTAssertEqual(a, b, accuracy: 0.01, "unsharded \(a), sharded \(b)")
    }

    /// A constant schedule: the cosine one's length depends on max_steps, which the interrupted runs change.
    private let constant = ["--set", "schedule.type=constant"]

    /// Interrupted at step 20 and resumed on the same 2 ranks: bit-identical to the uninterrupted run.
    func testResumeOnTheSameWorldSizeIsBitIdentical() throws {
        let adam = self.adam + constant
        let base = arguments(steps: 40) + adam + shard + ["--set", "checkpoint.every_steps=20"]
        let (uninterrupted, _) = try train(ranks: 2, base)
        let first = directory + "/first"
        let stopped = try MPIRun.run(ranks: 2, arguments(steps: 20) + adam + shard + ["--set", "checkpoint.every_steps=20", "--checkpoint-dir", first])
        XCTAssertEqual(stopped.status, 0, stopped.stderr)
        let (resumed, stdout) = try train(ranks: 2, base + ["--checkpoint-dir", first, "--resume", "auto"])
        XCTAssertTrue(stdout.contains("resume: from \(first)/step-00000020.safetensors"), stdout)
        XCTAssertFalse(resumed.isEmpty)
        XCTAssertTrue(resumed == uninterrupted, "resumed parameters differ from the uninterrupted run's")
    }

    /// 4 ranks sharded write the whole optimizer state: the checkpoint's tensors equal unsharded training's bit for
    /// bit. Resumed on 2 ranks, sharded (each rank takes its new slice) and unsharded (rank 0 broadcasts everything)
    /// continue to the very same parameters and optimizer state.
    func testFourRankCheckpointResumesOnTwoRanksExactly() throws {
        let deterministic = adam + constant + ["--set", "distributed.deterministic=true", "--set", "checkpoint.every_steps=20"]
        let shardedDirectory = directory + "/sharded4", unshardedDirectory = directory + "/unsharded4"
        for (path, extra) in [(shardedDirectory, shard), (unshardedDirectory, [])] {
            let run = try MPIRun.run(ranks: 4, arguments(steps: 20) + deterministic + extra + ["--checkpoint-dir", path])
            XCTAssertEqual(run.status, 0, run.stderr)
        }
        let checkpoint = shardedDirectory + "/step-00000020.safetensors"
        let saved = try Self.tensorData(checkpoint)
        XCTAssertTrue(saved == (try Self.tensorData(unshardedDirectory + "/step-00000020.safetensors")),
                      "the sharded checkpoint's tensors differ from unsharded training's")
        let inspection = try MPIRun.run(ranks: 0, ["checkpoint", "inspect", checkpoint])
        XCTAssertTrue(inspection.stdout.contains("optimizer.layers.1.weight.exp_avg_sq"), inspection.stdout)

        var finals: [Data] = []
        for (name, extra) in [("sharded2", shard), ("unsharded2", [])] {
            let target = directory + "/" + name
            let (parameters, stdout) = try train(ranks: 2, arguments(steps: 40) + deterministic + extra
                                                 + ["--checkpoint-dir", target, "--resume", checkpoint])
            XCTAssertTrue(stdout.contains("written on 4 ranks, resuming on 2"), stdout)
            XCTAssertTrue(stdout.contains("40 steps"), stdout)
            XCTAssertFalse(parameters.isEmpty)
            finals.append(try Self.tensorData(target + "/step-00000040.safetensors"))
        }
        XCTAssertTrue(finals[0] == finals[1], "sharded and unsharded resumption on 2 ranks end with different tensors")
        XCTAssertFalse(finals[0] == saved, "training must have continued")
    }

    /// A NaN in one rank's gradients reaches some slice owner through the reduce-scatter: every rank skips the step.
    func testNonFiniteGradientOnOneRankSkipsTheStepEverywhere() throws {
        let (parameters, stdout) = try train(ranks: 2, arguments(steps: 8) + shard + ["--set", "debug.nan_step=3", "--set", "debug.nan_rank=1"])
        XCTAssertTrue(stdout.contains("step 3: non-finite gradients"), stdout)
        XCTAssertTrue(stdout.contains("8 steps (1 skipped)"), stdout)
        XCTAssertFalse(parameters.isEmpty)
        XCTAssertTrue(parameters.withUnsafeBytes { $0.bindMemory(to: Float.self).allSatisfy(\.isFinite) })
        let checksums = Set(stdout.split(separator: "\n").filter { $0.contains("parameter checksum") }.map { $0.split(separator: " ").last! })
        XCTAssertEqual(checksums.count, 1, stdout)
    }

    /// Combinations the sharded update does not support stop at start-up naming the keys.
    func testUnsupportedCombinationsAreRejectedNamingTheKey() throws {
        let base = arguments(steps: 5) + shard
        let overlap = try MPIRun.run(ranks: 2, base + ["--set", "distributed.overlap=polling"])
        XCTAssertNotEqual(overlap.status, 0)
        XCTAssertTrue(overlap.stderr.contains("key 'distributed.shard_optimizer': cannot be combined with distributed.overlap 'polling'"), overlap.stderr)
        let transport = try MPIRun.run(ranks: 2, base + ["--set", "distributed.transport=hierarchical"])
        XCTAssertNotEqual(transport.status, 0)
        XCTAssertTrue(transport.stderr.contains("key 'distributed.shard_optimizer': cannot be combined with distributed.transport 'hierarchical'"), transport.stderr)
    }
}
