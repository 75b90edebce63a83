import Foundation
import LockstepComm
import LockstepConfig
import LockstepCore
import LockstepNN
import LockstepTrain

extension Session {
    /// `lockstep bench train`: trains `warmup + steps` steps of a config and reports steady-state throughput,
    /// per-phase medians, the allreduce-wait fraction and achieved FLOP/s against sgemm measured in the same run.
    ///
    /// Adds `training.max_steps` and, unless given, `data.test_subset=512` (the run's final evaluation is not
    /// what is measured). With `tracePath`, rank 0 writes a Chrome trace of all ranks' steps.
    public func benchTrain(configPath: String, overrides: [String], steps: Int, warmup: Int,
                           jsonPath: String?, tracePath: String?) throws {
        guard steps > 0, warmup >= 0 else { throw ConfigError("bench train: --steps must be positive and --warmup not negative") }
        var all = overrides + ["training.max_steps=\(warmup + steps)"]
        if !overrides.contains(where: { $0.hasPrefix("data.test_subset=") }) { all.insert("data.test_subset=512", at: 0) }
        let config = try TrainingConfig.load(file: configPath, overrides: all)
        let trainer = try config.makeTrainer(communicator: communicator, log: { [weak self] in self?.say($0) })
        let world = communicator.size
        let timings = StepTimings(capacity: steps, warmupSteps: warmup)
        let trace = tracePath.map { _ in TrainingTrace(rank: communicator.rank) }
        trainer.observer = trace.map { StepObservers([timings, $0]) } ?? timings
        let totalSteps = warmup + steps
        if totalSteps > trainer.stepsPerEpoch {
            say("bench train: note: \(totalSteps) steps cross an epoch boundary (\(trainer.stepsPerEpoch) steps per epoch); each epoch's evaluation (of data.test_subset samples) falls between two steps: the wall figure includes it, the median step does not")
        }
        say("bench train: \(configPath) on \(world) rank\(world == 1 ? "" : "s"), batch \(trainer.perRankBatch) per rank (global \(trainer.globalBatch)), "
            + "\(warmup) warm-up + \(steps) timed steps, \(trainer.optimizerStateDescription)")

        // Wall clock between the first and last timed step, from onStep; preallocated, no allocation per step.
        var stepClock = [UInt64](repeating: 0, count: totalSteps + 1)
        try communicator.barrier()
        stepClock[0] = DispatchTime.now().uptimeNanoseconds
        _ = try trainer.run(onStep: { step, _, _ in
            if step <= totalSteps { stepClock[step] = DispatchTime.now().uptimeNanoseconds }
        })
        guard timings.count > 0 else { throw ConfigError("bench train: no steps were timed (the run stopped after \(trainer.step) steps)") }

        if let trace, let tracePath { try trace.write(to: tracePath, communicator: communicator) }

        // Per-layer times on the first training batch, every rank at once (same contention as training).
        try communicator.barrier()
        let profileBatch = min(trainer.perRankBatch, trainer.data.train.count)
        let layerTimes = trainer.data.train.features.withUnsafeBufferPointer {
            Bench.layerTimes(model: trainer.model, input: $0.baseAddress!, batch: profileBatch, trials: max(3, min(steps, 10)))
        }

        // sgemm rate now, on every rank at once with the same BLAS threads as training: the attainable rate per rank.
        try communicator.barrier()
        let sgemm = Bench.sgemmRate(size: 512, trials: 10) * 1e9
        // The limit this model can reach: sgemm at its own GEMM shapes (what the %-of-limit figures divide by).
        let gemmShapes = Bench.gemmShapes(model: trainer.model, batch: trainer.perRankBatch)
        let gemmFlops = gemmShapes.reduce(0) { $0 + $1.flops }
        try communicator.barrier()
        let modelSgemm = Bench.sgemmRate(shapes: gemmShapes, trials: gemmFlops < 1e9 ? 30 : 5) * 1e9
        // Both forward orientations of the wide Linear layers, every rank at once: does Linear's rule hold here?
        try communicator.barrier()
        let orientations = Bench.productOrientations(model: trainer.model, batch: trainer.perRankBatch)

        let phases = StepTimings.Phase.allCases
        let phaseMedians = phases.map { timings.median($0) }
        let stepMedian = timings.medianTotal()
        // Per-rank view: gather each rank's phase medians, step median and sgemm rate.
        let mine = phaseMedians + [stepMedian, sgemm, modelSgemm]
        let gathered = try communicator.allgather(mine)
        guard isLeader else { return }

        let timedSteps = min(steps, trainer.step - warmup)
        let wallSeconds = Double(stepClock[warmup + timedSteps] - stepClock[warmup]) * 1e-9
        let samplesPerSecond = Double(trainer.globalBatch * timedSteps) / max(wallSeconds, 1e-12)
        let flops = FlopCount(model: trainer.model)
        let flopsPerStepPerRank = flops.total * Double(trainer.perRankBatch)
        let computeMedian = phaseMedians[StepTimings.Phase.forward.rawValue] + phaseMedians[StepTimings.Phase.backward.rawValue]
        let waitFraction = phaseMedians[StepTimings.Phase.allreduceWait.rawValue] / max(stepMedian, 1e-12)
        let buckets = trainer.gradientBuckets
        let perRank = (0..<world).map { rank -> [String: Any] in
            let row = Array(gathered[(rank * mine.count)..<((rank + 1) * mine.count)])
            var entry: [String: Any] = ["rank": rank, "step_seconds_median": row[phases.count], "sgemm_gflops": row[phases.count + 1] / 1e9,
                                        "sgemm_model_shapes_gflops": row[phases.count + 2] / 1e9]
            for phase in phases { entry[phase.name + "_seconds"] = row[phase.rawValue] }
            entry["allreduce_wait_fraction"] = row[StepTimings.Phase.allreduceWait.rawValue] / max(row[phases.count], 1e-12)
            return entry
        }
        let minimumSgemm = (0..<world).map { gathered[$0 * mine.count + phases.count + 1] }.min() ?? sgemm
        let minimumModelSgemm = (0..<world).map { gathered[$0 * mine.count + phases.count + 2] }.min() ?? modelSgemm
        // Over the wall clock, as the samples/s figure: FLOPs per sample × samples/s per rank.
        let achievedWall = flops.total * samplesPerSecond / Double(world)
        let achieved = flopsPerStepPerRank / max(stepMedian, 1e-12)
        let computeRate = flopsPerStepPerRank / max(computeMedian, 1e-12)

        let storeMethods = trainer.nodeSharedStoreMethods
        var report: [String: Any] = [
            "benchmark": "train", "implementation": "lockstep",
            "config": ((configPath as NSString).lastPathComponent as NSString).deletingPathExtension,
            "overrides": overrides,
            "world_size": world, "per_rank_batch": trainer.perRankBatch, "global_batch": trainer.globalBatch,
            "warmup_steps": warmup, "steps": timedSteps,
            "samples_per_second": samplesPerSecond,
            "samples_per_second_median_step": Double(trainer.globalBatch) / max(stepMedian, 1e-12),
            "step_seconds_median": stepMedian,
            "allreduce_wait_fraction": waitFraction,
            "parameter_count": trainer.model.parameters.count,
            "gradient_bytes": trainer.model.parameters.count * MemoryLayout<Float>.stride,
            "bucket_count": buckets.count, "bucket_mib": Double(trainer.bucketCapacityBytes) / 1_048_576,
            "reduction": trainer.gradientReduction.rawValue,
            "node_shared_stores": Dictionary(uniqueKeysWithValues: storeMethods.map { ($0.write, $0.method.rawValue) }),
            "optimizer_state_bytes_per_rank": trainer.optimizerStateBytes,
            "flops_per_sample_forward": flops.forward, "flops_per_sample_backward": flops.backward,
            "achieved_gflops_per_rank": achieved / 1e9,
            "compute_gflops_per_rank": computeRate / 1e9,
            "sgemm_gflops_per_rank": minimumSgemm / 1e9,
            "fraction_of_sgemm": achieved / max(minimumSgemm, 1),
            "achieved_wall_gflops_per_rank": achievedWall / 1e9,
            "sgemm_model_shapes_gflops_per_rank": minimumModelSgemm / 1e9,
            "fraction_of_model_sgemm": achievedWall / max(minimumModelSgemm, 1),
            "gemm_shapes": gemmShapes.map { "\($0.repeats)x \($0.transposeA ? "T" : "N")\($0.transposeB ? "T" : "N") \($0.m)x\($0.n)x\($0.k)" },
            "linear_product_orientations": orientations.map {
                ["layer": $0.layer, "inputs": $0.inputs, "outputs": $0.outputs, "rows": $0.rows,
                 "transposed_seconds": $0.transposedSeconds, "direct_seconds": $0.directSeconds,
                 "uses_transposed": $0.usesTransposed] as [String: Any]
            },
            "blas_threads": BLAS.threadCount,
            "cpu_model": CPUInfo.description, "openblas_core": BLAS.coreName, "vector_isa": Kernels.vectorISA,
            "layers": layerTimes.map { ["index": $0.index, "kind": $0.kind, "output_shape": $0.outputShape,
                                        "forward_seconds": $0.forwardSeconds, "backward_seconds": $0.backwardSeconds] as [String: Any] },
            "per_rank": perRank,
        ]
        var phaseObject: [String: Any] = [:]
        for phase in phases { phaseObject[phase.name] = phaseMedians[phase.rawValue] }
        report["phase_seconds_median"] = phaseObject

        var lines = [String(format: "samples/s %.0f (wall, %d steps); median step %.3f ms → %.0f samples/s",
                            samplesPerSecond, timedSteps, stepMedian * 1e3, Double(trainer.globalBatch) / max(stepMedian, 1e-12))]
        lines.append("median per step (rank 0): " + phases.map { String(format: "%@ %.3f ms", $0.name, phaseMedians[$0.rawValue] * 1e3) }.joined(separator: ", "))
        lines.append(String(format: "allreduce wait %.1f%% of the step; %d bucket%@ of %@ gradients (%@)", waitFraction * 100, buckets.count,
                            buckets.count == 1 ? "" : "s", formatByteCount(Double(trainer.model.parameters.count * 4)),
                            trainer.gradientReduction.rawValue)
                     + (storeMethods.isEmpty ? "" : "; rank 0's stores into node-shared memory (SliceWriteTuner, timed while training): "
                        + storeMethods.map { "\($0.write) \($0.method.rawValue)" }.joined(separator: ", ")))
        lines.append(String(format: "FLOPs per sample %.3g forward + %.3g backward; achieved %.2f GFLOP/s per rank over the step, %.2f over forward+backward; sgemm 512³ %.1f GFLOP/s per rank (%.0f%% of it)",
                            flops.forward, flops.backward, achieved / 1e9, computeRate / 1e9, minimumSgemm / 1e9, achieved / max(minimumSgemm, 1) * 100))
        lines.append(String(format: "sgemm at this model's GEMM shapes (batch %d) %.1f GFLOP/s per rank; samples/s × FLOPs per sample = %.1f GFLOP/s per rank: %.0f%% of that limit",
                            trainer.perRankBatch, minimumModelSgemm / 1e9, achievedWall / 1e9, achievedWall / max(minimumModelSgemm, 1) * 100))
        for check in orientations {
            let verdict = check.chosenOverOther <= 1 ? "the faster one here"
                : check.chosenOverOther <= 1.05 ? "within 5% of the other"
                : String(format: "the other is %.0f%% faster on this CPU: revisit Linear.usesTransposedProduct", (check.chosenOverOther - 1) * 100)
            lines.append(String(format: "layer %d Linear %d → %d at %d rows, forward product: W·inputᵀ %.1f µs, input·Wᵀ %.1f µs; the layer uses %@ (%@)",
                                check.layer, check.inputs, check.outputs, check.rows, check.transposedSeconds * 1e6, check.directSeconds * 1e6,
                                check.usesTransposed ? "W·inputᵀ" : "input·Wᵀ", verdict))
        }
        lines.append("CPU \(CPUInfo.description), OpenBLAS core \(BLAS.coreName), elementwise kernels \(Kernels.vectorISA), \(BLAS.threadCount) BLAS thread\(BLAS.threadCount == 1 ? "" : "s") per rank")
        let layerTotal = layerTimes.reduce(0) { $0 + $1.forwardSeconds + $1.backwardSeconds }
        lines.append(String(format: "per layer, batch %d, rank 0 (medians of separate passes; total %.3f ms):", profileBatch, layerTotal * 1e3))
        lines.append("  #  layer            output          forward ms  backward ms  share")
        for row in layerTimes {
            let shape = row.outputShape.map(String.init).joined(separator: "x")
            lines.append(String(format: "%3d  ", row.index) + row.kind.padding(toLength: 15, withPad: " ", startingAt: 0) + "  "
                         + shape.padding(toLength: 14, withPad: " ", startingAt: 0)
                         + String(format: " %10.3f %12.3f %5.1f%%", row.forwardSeconds * 1e3, row.backwardSeconds * 1e3,
                                (row.forwardSeconds + row.backwardSeconds) / max(layerTotal, 1e-12) * 100))
        }
        say(lines.joined(separator: "\n"))
        if let jsonPath { try writeJSON(report, to: jsonPath) }
    }

    /// `lockstep bench linear`: Linear layers against the same GEMMs called directly (fashion-mlp shapes).
    public func benchLinear(batch: Int, trials: Int) throws {
        let rows = try Bench.linearVersusSgemm(batch: batch, trials: trials)
        say("shape                 layer GFLOP/s  sgemm GFLOP/s  layer/sgemm")
        for row in rows {
            say(String(format: "%-20@ %14.1f %14.1f %11.0f%%", row.shape as NSString, row.layerGFLOPs, row.sgemmGFLOPs,
                       row.layerGFLOPs / max(row.sgemmGFLOPs, 1e-9) * 100))
        }
        let layerSeconds = rows.reduce(0) { $0 + $1.flops / ($1.layerGFLOPs * 1e9) }
        let sgemmSeconds = rows.reduce(0) { $0 + $1.flops / ($1.sgemmGFLOPs * 1e9) }
        say(String(format: "all three layers: %.0f%% of sgemm (issue 5 target: at least 85%%)", sgemmSeconds / max(layerSeconds, 1e-12) * 100))
    }
}

/// `lockstep bench project`: α–β fit of measured allreduces and weak-scaling projections (no MPI needed).
public enum ScalingProjection {
    /// Reads allreduce sweeps and one-rank `bench train` results and returns the Markdown report.
    ///
    /// `networkAlpha` is the per-message latency assumed for the projected network (the local fit measures shared
    /// memory, which says nothing about a network's latency); `ratio` picks the suggested bucket size.
    /// With `clusterPaths` (`launch/scaling-bench --hosts` directories) it appends the two-level section
    /// (`levelReport`), whose shared-memory level is fitted to the sweeps' shared-memory column.
    public static func report(allreducePaths: [String], trainPaths: [String], nodes: [Int], gigabitsPerSecond: [Double],
                              networkAlpha: Double, ratio: Double = 10, clusterPaths: [String] = [],
                              clusterConfig: String = "fashion-mlp-wide", levelNodes: [Int] = [8, 16, 32, 64, 128, 256],
                              optimizerStatesPerParameter: Int = 1) throws -> String {
        var samples: [AllreduceSample] = [], sharedMemorySamples: [AllreduceSample] = []
        for path in allreducePaths {
            let object = try readJSONObject(path, option: "--allreduce")
            guard let ranks = object["world_size"] as? Int, let rows = object["rows"] as? [[String: Any]] else {
                throw ConfigError("--allreduce \(path): not a `lockstep bench allreduce --json` file (needs world_size and rows)")
            }
            for row in rows {
                guard let bytes = row["bytes"] as? Double ?? (row["bytes"] as? Int).map(Double.init) else { continue }
                // The raw MPI loop is what the network model describes; fall back to the Communicator path.
                if let seconds = row["raw_seconds"] as? Double ?? row["communicator_seconds"] as? Double {
                    samples.append(AllreduceSample(ranks: ranks, bytes: bytes, seconds: seconds))
                }
                if let seconds = row["shared_memory_seconds"] as? Double {
                    sharedMemorySamples.append(AllreduceSample(ranks: ranks, bytes: bytes, seconds: seconds))
                }
            }
        }
        let fit = try AlphaBeta.fit(samples)
        let rankCounts = Set(samples.map(\.ranks)).sorted()
        var out: [String] = []
        out.append("### α–β model of ring allreduce")
        out.append("")
        out.append("T(n, bytes) = 2(n−1)·α + 2(n−1)/n·bytes·β, fitted (least squares on relative error) to \(samples.count) measured allreduces on \(rankCounts.map(String.init).joined(separator: ", ")) ranks of this machine:")
        out.append(String(format: "α = %.2f µs, β = %.4f ns/byte (bus bandwidth %.2f GB/s); largest relative error of the fit %.0f%%.",
                          fit.alpha * 1e6, fit.beta * 1e9, fit.busBandwidth / 1e9, fit.maximumRelativeError(samples) * 100))
        out.append("")
        out.append("Suggested bucket size (smallest message whose bandwidth term is ≥ \(Int(ratio))× its latency term, bytes = \(Int(ratio))·n·α/β):")
        out.append("")
        out.append("| link | α | n = 2 | n = 8 | n = 64 | n = 1024 |")
        out.append("|---|---:|---:|---:|---:|---:|")
        let links = [("this machine (fitted)", fit)] + gigabitsPerSecond.map { ("\(formatRate($0)) Gb/s", AlphaBeta(alpha: networkAlpha, gigabitsPerSecond: $0)) }
        for (label, link) in links {
            let cells = [2, 8, 64, 1024].map { formatByteCount(link.suggestedBucketBytes(ranks: $0, ratio: ratio)) }
            out.append("| \(label) | \(String(format: "%.1f µs", link.alpha * 1e6)) | " + cells.joined(separator: " | ") + " |")
        }
        out.append("")
        out.append("### Projected weak scaling (fixed per-rank batch)")
        out.append("")
        out.append("Assumptions: each node computes what one rank measured here (data + forward + backward + optimizer medians of a 1-rank `lockstep bench train`); "
            + String(format: "gradients go through a ring allreduce per bucket over a link of the given rate with α = %.1f µs per message (a network assumption, not measured here); ", networkAlpha * 1e6)
            + "plus one latency-bound control allreduce per step (the Trainer's control vector); \"eff.\" adds communication after backward (blocking reducer), \"eff. overlapped\" hides the gradient allreduce behind backward as far as backward lasts. "
            + "No congestion, stragglers or hierarchical/tree algorithms; one rank per node.")
        for path in trainPaths {
            let object = try readJSONObject(path, option: "--train")
            guard let phases = object["phase_seconds_median"] as? [String: Any], let backward = phases["backward"] as? Double,
                  let gradientBytes = (object["gradient_bytes"] as? Int).map(Double.init) ?? object["gradient_bytes"] as? Double else {
                throw ConfigError("--train \(path): not a `lockstep bench train --json` file (needs phase_seconds_median and gradient_bytes)")
            }
            let other = ["data", "forward", "optimizer"].compactMap { phases[$0] as? Double }.reduce(0, +)
            let name = object["config"] as? String ?? path
            let ranks = object["world_size"] as? Int ?? 1
            let measured = MeasuredStep(name: name, perRankBatch: object["per_rank_batch"] as? Int ?? 0, otherSeconds: other,
                                        backwardSeconds: backward, gradientBytes: gradientBytes, bucketCount: object["bucket_count"] as? Int ?? 1)
            out.append("")
            out.append(String(format: "**%@** (per-rank batch %d, measured on %d rank%@): compute %.2f ms per step (backward %.2f ms), %@ of gradients in %d bucket%@",
                              name, measured.perRankBatch, ranks, ranks == 1 ? "" : "s", measured.computeSeconds * 1e3, backward * 1e3,
                              formatByteCount(gradientBytes), measured.bucketCount, measured.bucketCount == 1 ? "" : "s"))
            if ranks != 1 { out.append("(measured on more than one rank: the compute times include contention between ranks)") }
            out.append("")
            out.append(ScalingModel.markdownTable(measured, nodes: nodes, gigabitsPerSecond: gigabitsPerSecond, alpha: networkAlpha))
        }
        var text = out.joined(separator: "\n") + "\n"
        if !clusterPaths.isEmpty {
            guard !sharedMemorySamples.isEmpty else {
                throw ConfigError("--cluster needs an --allreduce sweep from one node (its shared_memory column fits the shared-memory level)")
            }
            text += "\n" + (try levelReport(sharedMemorySamples: sharedMemorySamples, clusterPaths: clusterPaths, config: clusterConfig,
                                             nodes: levelNodes, linkAlpha: networkAlpha,
                                             optimizerStatesPerParameter: optimizerStatesPerParameter))
        }
        return text
    }

    static func formatRate(_ rate: Double) -> String { rate.rounded() == rate ? String(Int(rate)) : String(rate) }

    static func readJSONObject(_ path: String, option: String) throws -> [String: Any] {
        guard let data = FileManager.default.contents(atPath: path) else { throw ConfigError("\(option) \(path): cannot read the file") }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ConfigError("\(option) \(path): not a JSON object")
        }
        return object
    }
}
