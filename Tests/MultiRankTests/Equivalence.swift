import Foundation
import XCTest

/// Data-parallel equivalence (W ranks × b against 1 rank × W·b) with a bound the run itself justifies, on any CPU.
///
/// The two runs differ only in how float sums are grouped: the batch is split over ranks and the gradients are
/// reduced in some order. How far that moves the parameters depends on the CPU's BLAS kernels (OpenBLAS picks
/// another one per CPU) and on how much the model amplifies rounding (Adam's normalization, BatchNorm's variance,
/// max-pool ties), so a constant bound tuned on one CPU fails on the next. Each comparison therefore also runs one
/// process with the same sums regrouped and allows `multiple` times how far that run ends from 1 × W·b, never less
/// than `floor`; training must have moved the parameters further than that bound. A wrong reduction (a sum for a
/// mean, a bucket left out) moves the parameters by orders of magnitude more;
/// `testEquivalenceBoundCatchesAWrongReduction` shows that it trips.
enum Equivalence {
    /// Allowed multiple of the measured rounding spread.
    static let multiple = 10.0
    /// Lowest bound: a few float32 roundings (2⁻²³ ≈ 1.2e-7 each), for runs whose spread happens to be ~0.
    static let floor = 1e-6

    /// How the single-process reference run regroups the sums.
    enum Regrouping {
        /// 1 × b accumulating W micro-batches in rank order (deterministic mode): exactly the grouping W ranks use.
        case accumulation
        /// 1 × W·b with every batch's samples in reverse order: for models whose statistics span the whole batch
        /// (sync BatchNorm), where accumulating micro-batches would change the computation itself.
        case reversedBatches
    }

    struct Outcome {
        /// max|parallel − single| / max|single|.
        var difference: Double
        /// The same measure between the regrouped single run and 1 × W·b.
        var spread: Double
        /// `multiple · max(spread, floor)`.
        var bound: Double
        /// How far training moved the parameters from their initial values (relative).
        var moved: Double
        /// Whether the W-rank run ended with the regrouped reference's very bits (the same sums in the same order).
        var matchesRegrouped = false
        /// The W-rank run.
        var parallel: MPIRun.Result

        /// One line for failure messages.
        var summary: String { "relative difference \(difference), regrouping spread \(spread), bound \(bound)" }
    }

    /// Runs 1 × W·b, the regrouped reference, W × b (through `launch`, by default `mpirun -np W`) and the initial
    /// parameters; `base` is the `train` command line without batch size or dump options.
    static func measure(base: [String], ranks: Int, batch: Int, regrouping: Regrouping = .accumulation,
                        launch: (([String]) throws -> MPIRun.Result)? = nil) throws -> Outcome {
        let paths = ["single", "regrouped", "parallel", "initial"].map { MPIRun.temporaryPath("\($0).f32") }
        defer { for path in paths { try? FileManager.default.removeItem(atPath: path) } }
        let big = ["--set", "training.batch_size=\(ranks * batch)"]
        let regroup: [String]
        switch regrouping {
        case .accumulation:
            regroup = ["--set", "training.batch_size=\(batch)", "--set", "training.accumulation_steps=\(ranks)",
                       "--set", "distributed.deterministic=true"]
        case .reversedBatches:
            regroup = big + ["--set", "debug.reverse_batches=true"]
        }
        let references: [(String, [String])] = [
            ("1 × \(ranks * batch)", base + big),
            ("regrouped reference", base + regroup),
            ("initial parameters", base + big + ["--set", "training.max_steps=1", "--set", "optimizer.lr=1e-12"]),
        ]
        for ((name, arguments), path) in zip(references, [paths[0], paths[1], paths[3]]) {
            let result = try MPIRun.run(ranks: 0, arguments + ["--dump-parameters", path])
            guard result.status == 0 else { throw Failure("\(name) failed (exit \(result.status)): \(result.stderr)") }
        }
        let parallelArguments = base + ["--set", "training.batch_size=\(batch)", "--dump-parameters", paths[2], "--print-checksum"]
        let parallel = try launch?(parallelArguments) ?? MPIRun.run(ranks: ranks, parallelArguments)
        let single = try MPIRun.floats(paths[0])
        let spread = MPIRun.relativeDifference(try MPIRun.floats(paths[1]), single)
        let moved = MPIRun.relativeDifference(single, try MPIRun.floats(paths[3]))
        guard parallel.status == 0, let values = try? MPIRun.floats(paths[2]), values.count == single.count else {
            return Outcome(difference: .infinity, spread: spread, bound: multiple * max(spread, floor), moved: moved, parallel: parallel)
        }
        let regrouped = try MPIRun.floats(paths[1])
        return Outcome(difference: MPIRun.relativeDifference(values, single), spread: spread,
                       bound: multiple * max(spread, floor), moved: moved,
                       matchesRegrouped: values.map(\.bitPattern) == regrouped.map(\.bitPattern), parallel: parallel)
    }

    /// The W-rank run succeeded, ended within the bound (or on the regrouped reference's bits), moved the
    /// parameters, and every rank holds the same bits.
    static func assertHolds(_ outcome: Outcome, ranks: Int, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(outcome.parallel.status, 0, "\(label): \(ranks) ranks failed: \(outcome.parallel.stderr)", file: file, line: line)
        if outcome.matchesRegrouped {
            // Bit for bit the independent single-process run with the same sums: stronger than any bound, and it
            // holds where Adam turns a rounding-sized gradient near 0 into a full step, so that the regrouping spread
            // alone exceeds a tenth of what a short run moves (fashion-cnn with Adam: spread 3.3e-4, moved 1.9e-3).
            XCTAssertGreaterThan(outcome.moved, multiple * floor, "\(label): training must move the parameters (moved \(outcome.moved))",
                                 file: file, line: line)
        } else {
            XCTAssertLessThanOrEqual(outcome.difference, outcome.bound, "\(label): \(outcome.summary)", file: file, line: line)
            // Agreement within the bound proves something only if training moved the parameters further than it.
            XCTAssertGreaterThan(outcome.moved, outcome.bound, "\(label): training must move the parameters (moved \(outcome.moved))",
                                 file: file, line: line)
        }
        print("equivalence \(label): \(outcome.summary), moved \(outcome.moved)\(outcome.matchesRegrouped ? ", the regrouped reference's bits" : "")")
        let checksums = outcome.parallel.stdout.split(separator: "\n").filter { $0.contains("parameter checksum") }
        XCTAssertEqual(checksums.count, ranks, "\(label): \(outcome.parallel.stdout)", file: file, line: line)
        XCTAssertEqual(Set(checksums.map { $0.split(separator: " ").last! }).count, 1, "\(label): ranks disagree: \(outcome.parallel.stdout)",
                       file: file, line: line)
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
