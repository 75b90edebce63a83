import LockstepCore

/// A self-test mismatch: names the check, the rank and the first wrong value.
public struct CommunicatorSelfTestError: Error, CustomStringConvertible, Sendable {
    /// What failed.
    public var description: String
    /// Creates an error with a message.
    public init(_ description: String) { self.description = description }
}

/// Runs every collective and every reducer mode on `comm` with values whose results are known, on all ranks
/// together; throws on the first mismatch (on every rank, so none is left hanging) and returns a summary line.
public func runCommunicatorSelfTest(_ comm: any Communicator) throws -> String {
    let test = CommunicatorSelfTest(comm)
    try test.run()
    return test.summary
}

private final class CommunicatorSelfTest {
    let comm: any Communicator
    var checks = 0
    var failure: String?
    var notes: [String] = []
    var bucketCounts: [Int] = []

    init(_ comm: any Communicator) { self.comm = comm }

    var rank: Int { comm.rank }
    var size: Int { comm.size }

    var summary: String {
        "comm selftest passed on rank \(rank) of \(size) (local \(comm.localRank) of \(comm.localSize), \(comm.threadLevel)): "
            + "\(checks) checks; allreduce float32/float64/int64 sum-min-max, broadcast, allgather, barrier, nonblocking; "
            + "reducer \(ReductionMode.allCases.map(\.rawValue).joined(separator: "/")) over \(bucketCounts.max() ?? 0) buckets; "
            + "\(comm.sequenceNumber) collectives in lockstep" + (notes.isEmpty ? "" : "; " + notes.joined(separator: "; "))
    }

    func run() throws {
        try checkTopology()
        try checkFloatSum(count: 1000)
        try checkFloatSum(count: 300_000)  // large enough for MPI's segmented/ring algorithms
        try checkDoubleSum()
        try checkInt64()
        try checkBroadcast()
        try comm.barrier()
        try checkNonblocking()
        for mode in ReductionMode.allCases { try checkReducer(mode) }
        try checkHierarchicalMatchesSharedMemory()
        try checkRecorder()
    }

    // MARK: Agreement

    /// Records a local mismatch (first one wins).
    func expect(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
        checks += 1
        if failure == nil && !condition() { failure = "rank \(rank): \(message())" }
    }

    /// Every rank learns whether any rank failed, so all throw together instead of deadlocking in the next collective.
    func agree(_ section: String) throws {
        let anyFailed = try comm.allreduce(failure == nil ? 0 : 1, operation: .max)
        if anyFailed != 0 {
            throw CommunicatorSelfTestError("comm selftest failed in \(section): "
                                            + (failure ?? "rank \(rank) passed, another rank failed (see its message)"))
        }
    }

    // MARK: Sections

    func checkTopology() throws {
        expect(size >= 1 && (0..<size).contains(rank), "rank \(rank) not in 0..<\(size)")
        expect(comm.localSize >= 1 && comm.localSize <= size && (0..<comm.localSize).contains(comm.localRank),
               "local rank \(comm.localRank) of \(comm.localSize) inconsistent with world size \(size)")
        // Allgather order: slot r must hold rank r's triple.
        let mine: [Int64] = [Int64(rank), Int64(comm.localRank), Int64(comm.localSize)]
        var all = [Int64](repeating: -1, count: 3 * size)
        try mine.withUnsafeBytes { send in
            try all.withUnsafeMutableBytes { try comm.allgather(send: send, receive: $0) }
        }
        for source in 0..<size { expect(all[3 * source] == Int64(source), "allgather slot \(source) holds rank \(all[3 * source])") }
        if all.enumerated().allSatisfy({ $0.offset % 3 != 2 || $0.element == Int64(size) }) {
            // Everyone on one node: local ranks must be a permutation of 0..<size.
            let localRanks = Set((0..<size).map { all[3 * $0 + 1] })
            expect(localRanks == Set((0..<size).map(Int64.init)), "local ranks \(localRanks.sorted()) on one node are not 0..<\(size)")
        }
        // A wrong receive size must be refused before MPI sees it (locally, so no rank is left waiting).
        var short = [UInt8](repeating: 0, count: 3 * size * 8 - 1)
        var refused = false
        do {
            try mine.withUnsafeBytes { send in
                try short.withUnsafeMutableBytes { try comm.allgather(send: send, receive: $0) }
            }
        } catch is CommunicationError { refused = true }
        expect(refused, "allgather into a too-small receive buffer was not refused")
        try agree("topology/allgather")
    }

    func checkFloatSum(count: Int) throws {
        // Small integers and halves: every summation order gives the exact result.
        let buffer = FloatBuffer(count: count)
        for index in 0..<count { buffer.pointer[index] = Float(index % 251) + Float(rank) * 0.5 }
        try comm.allreduceSum(buffer.buffer)
        let rankSum = Float(size * (size - 1)) * 0.25
        for index in 0..<count {
            let expected = Float(size * (index % 251)) + rankSum
            if buffer.pointer[index] != expected {
                expect(false, "allreduceSum float32 × \(count) [\(index)] = \(buffer.pointer[index]), expected \(expected)")
                break
            }
        }
        checks += 1
        try agree("allreduceSum float32 × \(count)")
    }

    func checkDoubleSum() throws {
        let count = 777
        var values = (0..<count).map { Double($0) * 0.25 + Double(rank + 1) * 1e6 }
        try values.withUnsafeMutableBufferPointer { try comm.allreduceSum($0) }
        let rankTerm = Double(size * (size + 1) / 2) * 1e6
        for index in 0..<count {
            let expected = Double(size) * Double(index) * 0.25 + rankTerm
            expect(values[index] == expected, "allreduceSum float64 [\(index)] = \(values[index]), expected \(expected)")
        }
        try agree("allreduceSum float64")
    }

    func checkInt64() throws {
        let count = 33
        let big: Int64 = 1 << 58  // beyond Double's exact range once summed: catches a float path
        var sums = (0..<count).map { big + Int64(rank * $0) }
        var minimums = (0..<count).map { Int64(1000 - rank * 7 + $0) }
        var maximums = (0..<count).map { Int64(-5 + rank * ($0 + 1)) - (1 << 62) }
        try sums.withUnsafeMutableBufferPointer { try comm.allreduce($0, operation: .sum) }
        try minimums.withUnsafeMutableBufferPointer { try comm.allreduce($0, operation: .min) }
        try maximums.withUnsafeMutableBufferPointer { try comm.allreduce($0, operation: .max) }
        let triangle = Int64(size * (size - 1) / 2)
        for index in 0..<count {
            let i = Int64(index)
            expect(sums[index] == Int64(size) * big + triangle * i, "allreduce int64 sum [\(index)] = \(sums[index])")
            expect(minimums[index] == 1000 - Int64(size - 1) * 7 + i, "allreduce int64 min [\(index)] = \(minimums[index])")
            expect(maximums[index] == -5 + Int64(size - 1) * (i + 1) - (1 << 62), "allreduce int64 max [\(index)] = \(maximums[index])")
        }
        try agree("allreduce int64 sum/min/max")
    }

    func checkBroadcast() throws {
        for root in Set([0, size - 1]).sorted() {
            var bytes = [UInt8](repeating: 0xEE, count: 257)
            if rank == root { for index in 0..<bytes.count { bytes[index] = UInt8((index * 31 + 7 + root) & 255) } }
            try bytes.withUnsafeMutableBytes { try comm.broadcast($0, root: root) }
            for index in 0..<bytes.count {
                expect(bytes[index] == UInt8((index * 31 + 7 + root) & 255), "broadcast from root \(root) byte \(index) = \(bytes[index])")
            }
            try agree("broadcast from root \(root)")
        }
    }

    func checkNonblocking() throws {
        let first = FloatBuffer(count: 4096), second = FloatBuffer(count: 100)
        for index in 0..<first.count { first.pointer[index] = Float(index % 17 + rank) }
        for index in 0..<second.count { second.pointer[index] = Float(rank * 2) }
        let a = try comm.startAllreduceSum(first.buffer)
        let b = try comm.startAllreduceSum(second.buffer)
        var polls = 0
        while try !b.test() && polls < 1_000_000 { polls += 1 }
        try b.wait()
        try a.wait()
        try a.wait()  // completing twice must be harmless
        let bothComplete = try a.test() && b.test()
        expect(bothComplete, "completed reductions must test as complete")
        let rankSum = Float(size * (size - 1) / 2)
        for index in 0..<first.count {
            expect(first.pointer[index] == Float(size * (index % 17)) + rankSum, "startAllreduceSum [\(index)] = \(first.pointer[index])")
        }
        expect(second.pointer[0] == 2 * rankSum, "second startAllreduceSum = \(second.pointer[0])")
        try agree("nonblocking allreduce")
    }

    /// Layers sized like a tiny MLP with parameter-free activations between, small cap so there are several buckets.
    func checkReducer(_ mode: ReductionMode) throws {
        if mode == .overlapThread && comm.threadLevel < .serialized {
            notes.append("overlapThread skipped (\(comm.threadLevel))")
            return
        }
        let layerSizes = [3000, 0, 520, 0, 44, 0]
        let offsets = layerSizes.indices.map { layerSizes[..<$0].reduce(0, +) }
        let count = layerSizes.reduce(0, +)
        var shared: NodeSharedFloats?
        if mode == .sharedMemory {
            shared = try comm.allocateNodeShared(floatCount: count)
            if shared == nil { notes.append("sharedMemory skipped (not every rank on one node)"); return }
        }
        if mode == .hierarchical {
            // Collective answer, so every rank skips or runs alike.
            guard let perNode = try GradientReducer.ranksPerNode(communicator: comm), size > 1 else {
                notes.append("hierarchical skipped (\(size == 1 ? "one process" : "nodes hold different numbers of ranks"))")
                return
            }
            shared = try comm.allocateSharedWithinNode(
                floatCount: GradientReducer.hierarchicalSharedCount(gradientCount: count, localSize: perNode, nodeCount: size / perNode))
            if shared == nil { notes.append("hierarchical skipped (no node-shared memory)"); return }
            notes.append("hierarchical over \(size / perNode) node\(size / perNode == 1 ? "" : "s") × \(perNode) rank\(perNode == 1 ? "" : "s")")
        }
        let gradients = shared.map { FloatBuffer(borrowing: $0.local, count: count, owner: $0) } ?? FloatBuffer(count: count)
        let reducer = try GradientReducer(communicator: comm, gradients: gradients.buffer, layerStartOffsets: offsets,
                                          bucketCapacityBytes: 160, mode: mode, shared: shared)
        bucketCounts.append(reducer.buckets.count)
        let scale = 1 / Float(size)
        // Hierarchical sums over nodes in MPI's order: integer values (exact in any order) give known sums.
        for step in 0..<3 {
            let expected: [Float]
            if mode == .deterministic || mode == .sharedMemory {
                // Values of mixed magnitude, where the order of float additions changes the result.
                for index in 0..<count { gradients.pointer[index] = Self.irregular(rank: rank, index: index, step: step) }
                expected = (0..<count).map { index in
                    var total = Self.irregular(rank: 0, index: index, step: step)
                    for source in 1..<max(size, 1) { total += Self.irregular(rank: source, index: index, step: step) }
                    return size > 1 ? total * scale : total
                }
            } else {
                for index in 0..<count { gradients.pointer[index] = Float((index * 7 + rank * 13 + step) % 64) - 20 }
                expected = (0..<count).map { index in
                    let total = (0..<size).reduce(0) { $0 + (index * 7 + $1 * 13 + step) % 64 - 20 }
                    return size > 1 ? Float(total) * scale : Float(total)
                }
            }
            if step < 2 {
                for layer in stride(from: layerSizes.count - 1, through: 0, by: -1) { try reducer.layerReady(layer) }
            }  // step 2 reports no layers: finish() must still reduce everything
            try reducer.finish()
            for index in 0..<count where gradients.pointer[index].bitPattern != expected[index].bitPattern {
                expect(false, "reducer \(mode.rawValue) step \(step) [\(index)] = \(gradients.pointer[index]), expected \(expected[index])")
                break
            }
            checks += 1
            // Every rank must hold the very same bits.
            let digest = Int64(bitPattern: Kernels.fnv1a(UnsafeRawBufferPointer(gradients.buffer)))
            let minimum = try comm.allreduce(digest, operation: .min)
            let maximum = try comm.allreduce(digest, operation: .max)
            expect(minimum == maximum, "reducer \(mode.rawValue) step \(step): ranks hold different gradients")
            try agree("reducer \(mode.rawValue) step \(step)")
        }
    }

    /// On one node `.hierarchical` must give exactly `.sharedMemory`'s bits (same sums in the same order, same scale),
    /// on values where the order of float additions matters.
    func checkHierarchicalMatchesSharedMemory() throws {
        let count = 5000
        guard let shared = try comm.allocateNodeShared(floatCount: count) else { return }
        let hierarchical = try comm.allocateSharedWithinNode(
            floatCount: GradientReducer.hierarchicalSharedCount(gradientCount: count, localSize: comm.localSize, nodeCount: 1))!
        let reducers = try [(shared, ReductionMode.sharedMemory), (hierarchical, .hierarchical)].map { segment, mode in
            try GradientReducer(communicator: comm, gradients: UnsafeMutableBufferPointer(start: segment.local, count: count),
                                layerStartOffsets: [0], mode: mode, shared: segment)
        }
        for index in 0..<count {
            let value = Self.irregular(rank: rank, index: index, step: 7)
            shared.local[index] = value
            hierarchical.local[index] = value
        }
        for reducer in reducers { try reducer.finish() }
        for index in 0..<count where shared.local[index].bitPattern != hierarchical.local[index].bitPattern {
            expect(false, "hierarchical on one node [\(index)] = \(hierarchical.local[index]), shared memory gives \(shared.local[index])")
            break
        }
        checks += 1
        notes.append("hierarchical bit-identical to sharedMemory on one node")
        try agree("hierarchical against sharedMemory on one node")
    }

    static func irregular(rank: Int, index: Int, step: Int) -> Float {
        var rng = RNG(seed: UInt64(step) << 40 ^ UInt64(rank) << 24 ^ UInt64(index))
        let magnitude = Float(1 << rng.int(below: 20)) / 1024
        return rng.normal() * magnitude
    }

    func checkRecorder() throws {
        let lines = comm.recentCollectives(limit: 3)
        expect(lines.count == 3 && lines[2].contains("#\(comm.sequenceNumber) "),
               "flight recorder's last line \(lines.last ?? "none") does not carry sequence \(comm.sequenceNumber)")
        // The sequence number taken before this allreduce must match everywhere.
        let sequence = Int64(comm.sequenceNumber)
        let smallest = try comm.allreduce(sequence, operation: .min)
        expect(smallest == sequence, "collective counts differ: this rank issued \(sequence), another \(smallest)")
        try agree("flight recorder sequence")
    }
}
