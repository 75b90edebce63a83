import Foundation
import LockstepComm
import LockstepConfig
import LockstepCore
import LockstepTrain

/// How a data-parallel step's gradients cross the machine, for the per-level projection.
public enum ReductionPath: String, Sendable, CaseIterable {
    /// One ring allreduce over all ranks (`transport: mpi`); ranks of a node are neighbours in the ring, so each
    /// node's link carries one ring edge: 2(P−1)/P of the gradients each way, 2(P−1) latency steps.
    case flat
    /// Reduce-scatter and allgather in node-shared memory, a ring over the nodes per local rank in between: each
    /// node's link carries 2(N−1)/N of the gradients each way, 2(N−1) latency steps.
    case hierarchical
    /// ZeRO-1 optimizer sharding: reduce-scatter of gradients and allgather of parameters over all ranks (the bytes
    /// of the flat ring), each rank updating 1/P of the parameters and keeping 1/P of the optimizer state.
    case zero1 = "zero-1"
}

/// α–β models of the two levels a reduction crosses: node-shared memory and the link between nodes.
public struct TwoLevelNetwork: Sendable, Equatable {
    /// Shared memory within a node (fitted to the reducer's shared-memory path on one node).
    public var sharedMemory: AlphaBeta
    /// The link between nodes (β fitted to the emulated cluster's flat and hierarchical steps).
    public var link: AlphaBeta

    /// Creates a model from its two levels.
    public init(sharedMemory: AlphaBeta, link: AlphaBeta) { self.sharedMemory = sharedMemory; self.link = link }

    /// Seconds one step's gradient communication takes on `nodes` nodes of `ranksPerNode` ranks.
    public func communicationSeconds(_ path: ReductionPath, nodes: Int, ranksPerNode: Int, bytes: Double) -> Double {
        let ranks = nodes * ranksPerNode
        switch path {
        case .flat, .zero1:
            // Every ring step waits for its slowest edge; with several nodes that is a link edge.
            return nodes > 1 ? link.allreduceSeconds(ranks: ranks, bytes: bytes)
                : sharedMemory.allreduceSeconds(ranks: ranks, bytes: bytes)
        case .hierarchical:
            // The node's L ranks each move 1/L of the gradients over the same link, concurrently.
            return sharedMemory.allreduceSeconds(ranks: ranksPerNode, bytes: bytes)
                + link.allreduceSeconds(ranks: nodes, bytes: bytes)
        }
    }
}

/// The medians of one path's runs in a `launch/scaling-bench --hosts` directory.
public struct ClusterMeasurement: Sendable, Equatable {
    /// Emulated hosts.
    public var nodes: Int
    /// Ranks per host.
    public var ranksPerNode: Int
    /// Cores of the machine that emulated them (all ranks share them).
    public var cores: Int
    /// Bytes of gradients per step.
    public var gradientBytes: Double
    /// Median step seconds per path.
    public var stepSeconds: [ReductionPath: Double]
    /// Median optimizer seconds per step of one rank (the part ZeRO-1 shards).
    public var optimizerSeconds: Double
    /// Median samples per second per path.
    public var samplesPerSecond: [ReductionPath: Double]
    /// Per-rank batch.
    public var perRankBatch: Int

    /// Creates a measurement.
    public init(nodes: Int, ranksPerNode: Int, cores: Int, gradientBytes: Double, stepSeconds: [ReductionPath: Double],
                optimizerSeconds: Double, samplesPerSecond: [ReductionPath: Double], perRankBatch: Int) {
        self.nodes = nodes; self.ranksPerNode = ranksPerNode; self.cores = cores; self.gradientBytes = gradientBytes
        self.stepSeconds = stepSeconds; self.optimizerSeconds = optimizerSeconds; self.samplesPerSecond = samplesPerSecond
        self.perRankBatch = perRankBatch
    }

    /// Ranks.
    public var ranks: Int { nodes * ranksPerNode }

    /// Reads `meta.json` and the `cluster-CONFIG-{mpi,hierarchical}-ROUND.json` runs of `config` in `directory`.
    public static func read(directory: String, config: String) throws -> ClusterMeasurement {
        let meta = try ScalingProjection.readJSONObject(directory + "/meta.json", option: "--cluster")
        guard let nodes = meta["hosts"] as? Int, let perNode = meta["ranks_per_host"] as? Int else {
            throw ConfigError("--cluster \(directory): meta.json is not from `launch/scaling-bench --hosts` (needs hosts and ranks_per_host)")
        }
        let machine = meta["machine"] as? String ?? ""
        let cores = Int(machine.split(separator: " ").first ?? "") ?? ProcessInfo.processInfo.activeProcessorCount
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var steps: [ReductionPath: [Double]] = [:], rates: [ReductionPath: [Double]] = [:]
        var optimizer: [Double] = [], bytes = 0.0, batch = 0
        for (transport, path) in [("mpi", ReductionPath.flat), ("hierarchical", .hierarchical)] {
            for file in files.sorted() where file.hasPrefix("cluster-\(config)-\(transport)-") && file.hasSuffix(".json") {
                let run = try ScalingProjection.readJSONObject(directory + "/" + file, option: "--cluster")
                guard let step = run["step_seconds_median"] as? Double, let rate = run["samples_per_second"] as? Double,
                      let phases = run["phase_seconds_median"] as? [String: Any],
                      let gradientBytes = (run["gradient_bytes"] as? Int).map(Double.init) ?? run["gradient_bytes"] as? Double else {
                    throw ConfigError("--cluster \(directory)/\(file): not a `lockstep bench train --json` file")
                }
                steps[path, default: []].append(step)
                rates[path, default: []].append(rate)
                if let seconds = phases["optimizer"] as? Double { optimizer.append(seconds) }
                bytes = gradientBytes
                batch = run["per_rank_batch"] as? Int ?? batch
            }
        }
        guard let flat = steps[.flat], let hierarchical = steps[.hierarchical] else {
            throw ConfigError("--cluster \(directory): needs runs of both paths for \(config) (cluster-\(config)-mpi-*.json and cluster-\(config)-hierarchical-*.json)")
        }
        return ClusterMeasurement(nodes: nodes, ranksPerNode: perNode, cores: cores, gradientBytes: bytes,
                                  stepSeconds: [.flat: Statistics.median(flat), .hierarchical: Statistics.median(hierarchical)],
                                  optimizerSeconds: optimizer.isEmpty ? 0 : Statistics.median(optimizer),
                                  samplesPerSecond: rates.mapValues { Statistics.median($0) }, perRankBatch: batch)
    }
}

/// A two-level fit to an emulated-cluster run, and its projections.
public struct LevelFit: Sendable, Equatable {
    /// The fitted levels.
    public var network: TwoLevelNetwork
    /// Compute seconds per step of one rank with a core of its own (the step minus modelled communication, with the
    /// measured ranks sharing the machine's cores).
    public var computeSeconds: Double
    /// Optimizer seconds per step of one rank with a core of its own (inside `computeSeconds`).
    public var optimizerSeconds: Double

    /// Fits the link's β (and the compute) to `run`: the flat and hierarchical steps differ only in what crosses the
    /// link (2(P−1)/P against 2(N−1)/N of the gradients) and in the shared-memory stage, so their difference gives β
    /// and either step minus its communication gives the compute. `linkAlpha` is assumed (one message per step cannot
    /// separate latency from bandwidth). Ranks beyond the cores share them, so compute per rank with its own core is
    /// the step's compute × cores / ranks.
    public static func fit(_ run: ClusterMeasurement, sharedMemory: AlphaBeta, linkAlpha: Double) throws -> LevelFit {
        guard let flat = run.stepSeconds[.flat], let hierarchical = run.stepSeconds[.hierarchical], run.nodes > 1 else {
            throw MeasurementError("link fit: needs flat and hierarchical steps on more than one host")
        }
        let probe = TwoLevelNetwork(sharedMemory: sharedMemory, link: AlphaBeta(alpha: linkAlpha, beta: 0))
        let fixedFlat = probe.communicationSeconds(.flat, nodes: run.nodes, ranksPerNode: run.ranksPerNode, bytes: run.gradientBytes)
        let fixedHierarchical = probe.communicationSeconds(.hierarchical, nodes: run.nodes, ranksPerNode: run.ranksPerNode,
                                                           bytes: run.gradientBytes)
        let flatShare = 2 * Double(run.ranks - 1) / Double(run.ranks), hierarchicalShare = 2 * Double(run.nodes - 1) / Double(run.nodes)
        guard flatShare > hierarchicalShare else {
            throw MeasurementError("link fit: with \(run.ranksPerNode) rank per host both paths move the same bytes; measure with 2 or more ranks per host")
        }
        let beta = ((flat - fixedFlat) - (hierarchical - fixedHierarchical)) / ((flatShare - hierarchicalShare) * run.gradientBytes)
        guard beta > 0 else {
            throw MeasurementError(String(format: "link fit: the flat step (%.1f ms) is not slower than the hierarchical one (%.1f ms) by more than their fixed costs, so no link bandwidth can be fitted", flat * 1e3, hierarchical * 1e3))
        }
        let network = TwoLevelNetwork(sharedMemory: sharedMemory, link: AlphaBeta(alpha: linkAlpha, beta: beta))
        let sharedCompute = hierarchical - network.communicationSeconds(.hierarchical, nodes: run.nodes,
                                                                         ranksPerNode: run.ranksPerNode, bytes: run.gradientBytes)
        let share = Double(min(run.cores, run.ranks)) / Double(run.ranks)
        return LevelFit(network: network, computeSeconds: max(sharedCompute, 0) * share,
                        optimizerSeconds: run.optimizerSeconds * share)
    }

    /// Step seconds on `nodes` nodes of `ranksPerNode` ranks that each have a core of their own; on the emulating
    /// machine (`cores` given) the ranks share its cores, so compute stretches by ranks / cores.
    public func stepSeconds(_ path: ReductionPath, nodes: Int, ranksPerNode: Int, bytes: Double, cores: Int? = nil) -> Double {
        let ranks = nodes * ranksPerNode
        var compute = computeSeconds
        if path == .zero1 { compute -= optimizerSeconds * (1 - 1 / Double(ranks)) }
        if let cores, ranks > cores { compute *= Double(ranks) / Double(cores) }
        return compute + network.communicationSeconds(path, nodes: nodes, ranksPerNode: ranksPerNode, bytes: bytes)
    }

    /// Weak-scaling efficiency: one rank's compute alone / the step.
    public func efficiency(_ path: ReductionPath, nodes: Int, ranksPerNode: Int, bytes: Double) -> Double {
        computeSeconds / stepSeconds(path, nodes: nodes, ranksPerNode: ranksPerNode, bytes: bytes)
    }
}

extension ScalingProjection {
    /// The per-level section of `bench project`: fits shared memory to the one-node `sharedMemory` samples and the
    /// link to the first cluster run, checks the model against every cluster run, and projects flat, hierarchical
    /// and ZeRO-1 steps to `nodes` nodes.
    public static func levelReport(sharedMemorySamples: [AllreduceSample], clusterPaths: [String], config: String,
                                   nodes: [Int], linkAlpha: Double, optimizerStatesPerParameter: Int) throws -> String {
        let sharedMemory = try AlphaBeta.fit(sharedMemorySamples)
        let runs = try clusterPaths.map { try ClusterMeasurement.read(directory: $0, config: config) }
        guard let first = runs.first else { throw ConfigError("--cluster: give at least one `launch/scaling-bench --hosts` directory") }
        let fit = try LevelFit.fit(first, sharedMemory: sharedMemory, linkAlpha: linkAlpha)
        let bytes = first.gradientBytes, perNode = first.ranksPerNode
        var out: [String] = []
        out.append("### Two-level model: shared memory and link (\(config))")
        out.append("")
        out.append(String(format: "Shared memory (the reducer's node-shared path, %d samples on one node): α = %.2f µs, β = %.4f ns/byte (%.1f GB/s), largest relative error %.0f%%.",
                          sharedMemorySamples.count, sharedMemory.alpha * 1e6, sharedMemory.beta * 1e9, sharedMemory.busBandwidth / 1e9,
                          sharedMemory.maximumRelativeError(sharedMemorySamples) * 100))
        out.append(String(format: "Link (fitted to the flat and hierarchical steps of %d hosts × %d ranks, `%@`): β = %.3f ns/byte (%.2f Gbit/s), α = %.1f µs assumed; compute %.1f ms per step per rank with a core of its own (optimizer %.1f ms).",
                          first.nodes, perNode, clusterPaths[0], fit.network.link.beta * 1e9, 8 / fit.network.link.beta / 1e9,
                          linkAlpha * 1e6, fit.computeSeconds * 1e3, fit.optimizerSeconds * 1e3))
        out.append("")
        out.append("Measured against modelled (emulated hosts share the machine's \(first.cores) cores, so modelled compute stretches by ranks / cores):")
        out.append("")
        out.append("| hosts × ranks | path | measured step ms | modelled step ms | error | measured hierarchical / flat | modelled |")
        out.append("|---|---|---:|---:|---:|---:|---:|")
        for (index, run) in runs.enumerated() {
            // The fitted compute is per step at the first run's batch; other batches would need their own fit.
            guard run.perRankBatch == first.perRankBatch else {
                out.append("| \(run.nodes) × \(run.ranksPerNode) | (batch \(run.perRankBatch) per rank, not the fitted \(first.perRankBatch): fit it on its own) | | | | | |")
                continue
            }
            let modelled = [ReductionPath.flat, .hierarchical].map {
                fit.stepSeconds($0, nodes: run.nodes, ranksPerNode: run.ranksPerNode, bytes: run.gradientBytes, cores: run.cores)
            }
            let measured = [run.stepSeconds[.flat]!, run.stepSeconds[.hierarchical]!]
            for (position, path) in [ReductionPath.flat, .hierarchical].enumerated() {
                let ratio = position == 0 ? "" : String(format: " %.2f× | %.2f× |", measured[0] / measured[1], modelled[0] / modelled[1])
                out.append(String(format: "| %d × %d%@ | %@ | %.1f | %.1f | %+.0f%% |", run.nodes, run.ranksPerNode, index == 0 ? " (fitted)" : "",
                                  path.rawValue, measured[position] * 1e3, modelled[position] * 1e3,
                                  (modelled[position] / measured[position] - 1) * 100) + (ratio.isEmpty ? " | |" : ratio))
            }
        }
        out.append("")
        out.append(String(format: "Projected weak scaling, %d ranks per node each with a core of its own, %@ of gradients, link as fitted; ZeRO-1 optimizer state per rank with %d state float(s) per parameter:",
                          perNode, formatByteCount(bytes), optimizerStatesPerParameter))
        out.append("")
        out.append("| nodes | flat step ms | eff. | hierarchical step ms | eff. | ZeRO-1 step ms | eff. | optimizer state per rank: replicated / ZeRO-1 |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for count in nodes {
            var line = "| \(count) |"
            for path in ReductionPath.allCases {
                line += String(format: " %.1f | %.0f%% |", fit.stepSeconds(path, nodes: count, ranksPerNode: perNode, bytes: bytes) * 1e3,
                               fit.efficiency(path, nodes: count, ranksPerNode: perNode, bytes: bytes) * 100)
            }
            let state = bytes * Double(optimizerStatesPerParameter)
            line += " \(formatByteCount(state)) / \(formatByteCount(state / Double(count * perNode))) |"
            out.append(line)
        }
        return out.joined(separator: "\n") + "\n"
    }
}
