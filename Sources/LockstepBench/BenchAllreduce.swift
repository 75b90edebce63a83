import Foundation
import LockstepComm
import LockstepConfig
import LockstepCore
import LockstepTrain

/// Allreduce latency and bandwidth sweep (`lockstep bench allreduce`).
///
/// Besides the `Communicator` path (flight recorder, error checks) it times bare `MPI_Allreduce` calls
/// (`MPICommunicator.rawAllreduceSum`): the difference is the Communicator's overhead. When every rank is on one
/// node it also times the reducer's node-shared-memory path (`ReductionMode.sharedMemory`), which training uses there;
/// across nodes with the same number of ranks on each, the reducer's `.hierarchical` path.
public enum AllreduceBench {
    /// One message size's result.
    public struct Row: Sendable {
        /// Message size in bytes (float32 elements × 4).
        public var bytes: Int
        /// Allreduces per timed trial (small messages repeat so a trial is long enough to time).
        public var repetitions: Int
        /// Median over trials of the slowest rank's seconds per allreduce, through the Communicator.
        public var communicatorSeconds: Double
        /// The same for the raw MPI loop (nil without MPI).
        public var rawSeconds: Double?
        /// The same for `GradientReducer` in `.sharedMemory` mode (nil unless every rank is on one node).
        public var sharedMemorySeconds: Double?
        /// The same for `GradientReducer` in `.hierarchical` mode (nil unless ranks span nodes, several on each).
        public var hierarchicalSeconds: Double? = nil
    }

    /// Sizes from `minimumBytes` to `maximumBytes` multiplying by `factor`, each rounded down to whole floats.
    public static func sizes(minimumBytes: Int, maximumBytes: Int, factor: Int = 4) -> [Int] {
        var result: [Int] = []
        var bytes = max(4, minimumBytes)
        while bytes <= maximumBytes {
            let rounded = bytes / 4 * 4
            if result.last != rounded { result.append(rounded) }
            bytes *= max(2, factor)
        }
        return result
    }

    /// Bus bandwidth in bytes/s: 2(n−1)/n × bytes / time, the per-link traffic of a ring allreduce, comparable
    /// across world sizes (nccl-tests' definition). 0 for one rank, which moves nothing.
    public static func busBandwidth(bytes: Int, seconds: Double, ranks: Int) -> Double {
        guard ranks > 1, seconds > 0 else { return 0 }
        return 2 * Double(ranks - 1) / Double(ranks) * Double(bytes) / seconds
    }

    /// Parses "64MiB", "1M", "4096", "16KiB" (K/M/G are powers of 1024).
    public static func parseBytes(_ text: String) throws -> Int {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let digits = trimmed.prefix { $0.isNumber }
        let unit = trimmed.dropFirst(digits.count).lowercased()
        let multipliers: [String: Int] = ["": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
                                          "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30]
        guard let value = Int(digits), let multiplier = multipliers[unit] else {
            throw ConfigError("'\(text)' is not a byte count; use e.g. 4, 16KiB, 64MiB")
        }
        return value * multiplier
    }

    /// Repetitions per trial: enough small messages that a trial moves about 4 MiB, at most 1000.
    public static func repetitions(bytes: Int) -> Int { max(1, min(1000, (4 << 20) / max(bytes, 1))) }

    /// Runs the sweep (collective: every rank calls it with the same arguments).
    public static func run(communicator: any Communicator, sizes: [Int], trials: Int, warmupTrials: Int = 2) throws -> [Row] {
        let largest = sizes.max() ?? 4
        let buffer = FloatBuffer(count: largest / 4)
        buffer.zero()  // zeros stay zeros under summation: no overflow, no denormals
        let mpi = communicator as? MPICommunicator
        let shared = try communicator.allocateNodeShared(floatCount: largest / 4)
        // Collective answer, so every rank times the hierarchical path or none does.
        let perNode = communicator.size > 1 ? try GradientReducer.ranksPerNode(communicator: communicator) : nil
        let nodeCount = perNode.map { communicator.size / $0 } ?? 1
        let withinNode = shared == nil && perNode != nil && nodeCount > 1
            ? try communicator.allocateSharedWithinNode(floatCount: GradientReducer.hierarchicalSharedCount(
                gradientCount: largest / 4, localSize: perNode!, nodeCount: nodeCount))
            : nil
        var rows: [Row] = []
        for bytes in sizes {
            let slice = UnsafeMutableBufferPointer(start: buffer.pointer, count: bytes / 4)
            let repetitions = repetitions(bytes: bytes)
            let viaCommunicator = try communicator.timeCollective(trials: trials, warmup: warmupTrials, repetitions: repetitions) {
                try communicator.allreduceSum(slice)
            }
            var raw: Double?
            if let mpi {
                raw = try communicator.timeCollective(trials: trials, warmup: warmupTrials, repetitions: repetitions) {
                    let code = mpi.rawAllreduceSum(slice)
                    if code != 0 {
                        throw CommunicationError(operation: "raw MPI_Allreduce(float32 × \(slice.count))", rank: communicator.rank,
                                                 mpiErrorCode: code, message: CommunicationError.mpiErrorString(code))
                    }
                }
            }
            var viaSharedMemory: Double?
            if let shared {
                let reducer = try GradientReducer(communicator: communicator, gradients: UnsafeMutableBufferPointer(start: shared.local, count: bytes / 4),
                                                  layerStartOffsets: [0], mode: .sharedMemory, shared: shared)
                viaSharedMemory = try communicator.timeCollective(trials: trials, warmup: warmupTrials, repetitions: repetitions) {
                    try reducer.finish()
                }
            }
            var viaHierarchy: Double?
            if let withinNode {
                withinNode.local.update(repeating: 0, count: withinNode.count)
                let reducer = try GradientReducer(communicator: communicator, gradients: UnsafeMutableBufferPointer(start: withinNode.local, count: bytes / 4),
                                                  layerStartOffsets: [0], mode: .hierarchical, shared: withinNode)
                viaHierarchy = try communicator.timeCollective(trials: trials, warmup: warmupTrials, repetitions: repetitions) {
                    try reducer.finish()
                }
            }
            rows.append(Row(bytes: bytes, repetitions: repetitions, communicatorSeconds: viaCommunicator, rawSeconds: raw,
                            sharedMemorySeconds: viaSharedMemory, hierarchicalSeconds: viaHierarchy))
        }
        return rows
    }


    /// Fixed-width table (bytes, µs and GB/s busbw per path).
    public static func table(_ rows: [Row], ranks: Int) -> String {
        var lines = ["       bytes  reps   comm µs  comm busbw GB/s    raw µs  raw busbw GB/s    shm µs  shm busbw GB/s"
                     + (rows.contains { $0.hierarchicalSeconds != nil } ? "   hier µs hier busbw GB/s" : "")]
        for row in rows {
            // µs and busbw of one optional path, or dashes where it was not measured.
            func column(_ seconds: Double?) -> String {
                guard let seconds else { return "         -               -" }
                return String(format: " %9.2f %15.3f", seconds * 1e6, busBandwidth(bytes: row.bytes, seconds: seconds, ranks: ranks) / 1e9)
            }
            let busbw = busBandwidth(bytes: row.bytes, seconds: row.communicatorSeconds, ranks: ranks) / 1e9
            lines.append(String(format: "%12d %5d %9.2f %16.3f", row.bytes, row.repetitions, row.communicatorSeconds * 1e6, busbw)
                         + column(row.rawSeconds) + column(row.sharedMemorySeconds)
                         + (row.hierarchicalSeconds == nil ? "" : column(row.hierarchicalSeconds)))
        }
        return lines.joined(separator: "\n")
    }

    /// JSON object with the world size and one entry per row (seconds and bytes/s).
    public static func json(_ rows: [Row], ranks: Int) -> [String: Any] {
        [
            "benchmark": "allreduce",
            "world_size": ranks,
            "busbw_definition": "2(n-1)/n * bytes / seconds",
            "rows": rows.map { row -> [String: Any] in
                var entry: [String: Any] = ["bytes": row.bytes, "repetitions": row.repetitions]
                let paths = [("communicator", row.communicatorSeconds), ("raw", row.rawSeconds), ("shared_memory", row.sharedMemorySeconds),
                             ("hierarchical", row.hierarchicalSeconds)]
                for case let (name, seconds?) in paths {
                    entry[name + "_seconds"] = seconds
                    entry[name + "_busbw"] = busBandwidth(bytes: row.bytes, seconds: seconds, ranks: ranks)
                }
                return entry
            },
        ]
    }
}

/// Writes `object` as pretty JSON to `path`, naming the option in errors.
func writeJSON(_ object: Any, to path: String, option: String = "--json") throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    let directory = (path as NSString).deletingLastPathComponent
    if !directory.isEmpty { try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
    guard FileManager.default.createFile(atPath: path, contents: data + Data("\n".utf8)) else {
        throw ConfigError("\(option) \(path): cannot write the file (check the directory is writable)")
    }
}

extension Session {
    /// `lockstep bench allreduce`: latency and bus bandwidth from `minimumBytes` to `maximumBytes`; table on rank 0.
    public func benchAllreduce(minimumBytes: Int, maximumBytes: Int, factor: Int, trials: Int, jsonPath: String?) throws {
        guard minimumBytes >= 4, maximumBytes >= minimumBytes else {
            throw ConfigError("bench allreduce: need 4 <= --min-bytes <= --max-bytes, got \(minimumBytes) and \(maximumBytes)")
        }
        let sizes = AllreduceBench.sizes(minimumBytes: minimumBytes, maximumBytes: maximumBytes, factor: factor)
        let world = communicator.size
        say("bench allreduce: \(world) rank\(world == 1 ? "" : "s"), \(sizes.count) sizes, median of \(trials) trials (slowest rank per trial)"
            + (communicator is MPICommunicator ? "" : "; not under mpirun, so no raw MPI column"))
        let rows = try AllreduceBench.run(communicator: communicator, sizes: sizes, trials: trials)
        say(AllreduceBench.table(rows, ranks: world))
        if let jsonPath, isLeader { try writeJSON(AllreduceBench.json(rows, ranks: world), to: jsonPath) }
    }
}
