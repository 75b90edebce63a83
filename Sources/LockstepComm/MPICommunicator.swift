import CMPIShim
import Foundation

/// The world communicator of an MPI job (one per process); start it once, call `finalize()` before exit.
///
/// Not internally locked: with `.serialized` only one thread may be inside any method at a time.
public final class MPICommunicator: Communicator, PendingReductionOwner, @unchecked Sendable {
    public let rank: Int
    public let size: Int
    public let localRank: Int
    public let localSize: Int
    public let threadLevel: ThreadLevel
    /// Record of recent collectives.
    public let recorder: FlightRecorder
    /// True after `finalize()`.
    public private(set) var isFinalized = false

    // Nonblocking request slots, allocated once: a handle is generation << 32 | slot so a stale
    // PendingReduction copy can never complete a later request that reused its slot.
    private let requestCapacity: Int
    private let requests: UnsafeMutablePointer<lockstep_mpi_request>
    private let generations: UnsafeMutablePointer<UInt32>
    private let slotCounts: UnsafeMutablePointer<Int>
    private let freeSlots: UnsafeMutablePointer<Int>
    private var freeCount: Int
    // Node-shared windows, freed in finalize() (MPI_Win_free is collective, so not in a deinit).
    private var windows: [UnsafeMutablePointer<lockstep_mpi_window>] = []
    // Communicators from splitAcrossNodes(), freed in finalize() (MPI_Comm_free is collective).
    private var groups: [UnsafeMutablePointer<lockstep_mpi_comm>] = []

    /// Initializes MPI requesting `threadLevel`; throws if MPI is already initialized or provides less than
    /// `minimumThreadLevel` (default: whatever it provides is accepted and reported in `threadLevel`).
    public static func start(threadLevel: ThreadLevel = .serialized, minimumThreadLevel: ThreadLevel = .single,
                             requestCapacity: Int = 64, recorderCapacity: Int = 256) throws -> MPICommunicator {
        var flag: Int32 = 0
        _ = lockstep_mpi_initialized(&flag)
        if flag != 0 {
            throw CommunicationError(operation: "MPI start", rank: -1,
                                     message: "MPI is already initialized in this process; create one MPICommunicator and share it")
        }
        var provided: Int32 = 0
        try check(lockstep_mpi_init(threadLevel.mpiValue, &provided), "MPI_Init_thread(\(threadLevel))", rank: -1)
        var rank: Int32 = 0, size: Int32 = 0, localRank: Int32 = 0, localSize: Int32 = 0
        try check(lockstep_mpi_rank(&rank), "MPI_Comm_rank", rank: -1)
        try check(lockstep_mpi_size(&size), "MPI_Comm_size", rank: Int(rank))
        try check(lockstep_mpi_local_rank(&localRank), "local rank (MPI_COMM_TYPE_SHARED)", rank: Int(rank))
        try check(lockstep_mpi_local_size(&localSize), "local size (MPI_COMM_TYPE_SHARED)", rank: Int(rank))
        let level = ThreadLevel(mpiValue: provided) ?? .single
        if level < minimumThreadLevel {
            throw CommunicationError(operation: "MPI start", rank: Int(rank),
                                     message: "MPI provides \(level) but \(minimumThreadLevel) is required; use an MPI built with thread support")
        }
        return MPICommunicator(rank: Int(rank), size: Int(size), localRank: Int(localRank), localSize: Int(localSize),
                               threadLevel: level, requestCapacity: requestCapacity, recorderCapacity: recorderCapacity)
    }

    private init(rank: Int, size: Int, localRank: Int, localSize: Int, threadLevel: ThreadLevel,
                 requestCapacity: Int, recorderCapacity: Int) {
        self.rank = rank; self.size = size; self.localRank = localRank; self.localSize = localSize
        self.threadLevel = threadLevel
        recorder = FlightRecorder(capacity: recorderCapacity)
        self.requestCapacity = max(1, requestCapacity)
        requests = .allocate(capacity: self.requestCapacity)
        requests.initialize(repeating: lockstep_mpi_request(), count: self.requestCapacity)
        generations = .allocate(capacity: self.requestCapacity)
        generations.initialize(repeating: 0, count: self.requestCapacity)
        slotCounts = .allocate(capacity: self.requestCapacity)
        slotCounts.initialize(repeating: -1, count: self.requestCapacity)
        freeSlots = .allocate(capacity: self.requestCapacity)
        for slot in 0..<self.requestCapacity { (freeSlots + slot).initialize(to: self.requestCapacity - 1 - slot) }
        freeCount = self.requestCapacity
    }

    deinit {
        requests.deallocate(); generations.deallocate(); slotCounts.deallocate(); freeSlots.deallocate()
    }

    /// Ends MPI for this process; every rank must call it, after its last collective and with no reduction in flight.
    public func finalize() throws {
        guard !isFinalized else { return }
        let inFlight = requestCapacity - freeCount
        if inFlight > 0 {
            throw CommunicationError(operation: "MPI_Finalize", rank: rank,
                                     message: "\(inFlight) nonblocking reduction(s) still in flight; wait() on them first")
        }
        for group in groups {
            try Self.check(lockstep_mpi_comm_free(group), "MPI_Comm_free (ranks across nodes)", rank: rank)
            group.deallocate()
        }
        groups.removeAll()
        for window in windows {
            try Self.check(lockstep_mpi_shared_free(window), "MPI_Win_free (node-shared memory)", rank: rank)
            window.deallocate()
        }
        windows.removeAll()
        try Self.check(lockstep_mpi_finalize(), "MPI_Finalize", rank: rank)
        isFinalized = true
    }

    public var sequenceNumber: UInt64 { recorder.sequenceNumber }

    public func recentCollectives(limit: Int) -> [String] { recorder.recentLines(limit: limit) }

    // MARK: Collectives

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>, at site: CallSite) throws {
        try ready(.allreduceSum, .float32, buffer.count, site)
        try check(lockstep_mpi_allreduce_sum_float(buffer.baseAddress, buffer.count), .allreduceSum, .float32, buffer.count)
    }

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>, at site: CallSite) throws {
        try ready(.allreduceSum, .float64, buffer.count, site)
        try check(lockstep_mpi_allreduce_sum_double(buffer.baseAddress, buffer.count), .allreduceSum, .float64, buffer.count)
    }

    public func allreduce(_ buffer: UnsafeMutableBufferPointer<Int64>, operation: ReduceOperation, at site: CallSite) throws {
        let kind: CollectiveOperation
        let code: Int32
        switch operation {
        case .sum: kind = .allreduceSum; code = Int32(LOCKSTEP_MPI_OP_SUM)
        case .min: kind = .allreduceMin; code = Int32(LOCKSTEP_MPI_OP_MIN)
        case .max: kind = .allreduceMax; code = Int32(LOCKSTEP_MPI_OP_MAX)
        }
        try ready(kind, .int64, buffer.count, site)
        try check(lockstep_mpi_allreduce_int64(buffer.baseAddress, buffer.count, code), kind, .int64, buffer.count)
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int, at site: CallSite) throws {
        guard (0..<size).contains(root) else {
            throw CommunicationError(operation: "broadcast(bytes × \(buffer.count))", rank: rank,
                                     message: "root \(root) is not a rank of this \(size)-rank job")
        }
        try ready(.broadcast, .bytes, buffer.count, site, root: root)
        try check(lockstep_mpi_broadcast(buffer.baseAddress, buffer.count, Int32(root)), .broadcast, .bytes, buffer.count)
    }

    public func allgather(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, at site: CallSite) throws {
        guard receive.count == send.count * size else {
            throw CommunicationError(operation: "allgather(bytes × \(send.count))", rank: rank,
                                     message: "receive buffer holds \(receive.count) bytes but \(size) ranks × \(send.count) bytes = \(send.count * size) are needed")
        }
        try ready(.allgather, .bytes, send.count, site)
        try check(lockstep_mpi_allgather(send.baseAddress, send.count, receive.baseAddress), .allgather, .bytes, send.count)
    }

    public func barrier(at site: CallSite) throws {
        try ready(.barrier, .none, 0, site)
        try check(lockstep_mpi_barrier(), .barrier, .none, 0)
    }

    public func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>, at site: CallSite) throws -> PendingReduction {
        try ready(.startAllreduceSum, .float32, buffer.count, site)
        guard freeCount > 0 else {
            throw CommunicationError(operation: describe(.startAllreduceSum, .float32, buffer.count), rank: rank,
                                     message: "all \(requestCapacity) nonblocking request slots are in flight; wait() on earlier reductions or raise requestCapacity")
        }
        freeCount -= 1
        let slot = freeSlots[freeCount]
        slotCounts[slot] = buffer.count
        let code = lockstep_mpi_start_allreduce_sum_float(buffer.baseAddress, buffer.count, requests + slot)
        if code != lockstep_mpi_success {
            release(slot)
            try check(code, .startAllreduceSum, .float32, buffer.count)
        }
        return PendingReduction(owner: self, handle: Int(generations[slot]) << 32 | slot)
    }

    public func testReduction(handle: Int) throws -> Bool {
        guard let slot = liveSlot(handle) else { return true }
        var completed: Int32 = 0
        let code = lockstep_mpi_test(requests + slot, &completed)
        if code != lockstep_mpi_success {
            let count = slotCounts[slot]
            release(slot)
            try check(code, "test(allreduceSum float32 × \(count))")
        }
        if completed != 0 { release(slot) }
        return completed != 0
    }

    public func waitReduction(handle: Int) throws {
        guard let slot = liveSlot(handle) else { return }
        let code = lockstep_mpi_wait(requests + slot)
        let count = slotCounts[slot]
        release(slot)
        try check(code, "wait(allreduceSum float32 × \(count))")
    }

    public func allocateNodeShared(floatCount: Int, at site: CallSite) throws -> NodeSharedFloats? {
        // Local rank = rank only when every rank shares this node (the node communicator keeps world order).
        guard size > 1, localSize == size, localRank == rank else { return nil }
        return try allocateShared(floatCount: floatCount, at: site)
    }

    public func allocateSharedWithinNode(floatCount: Int, at site: CallSite) throws -> NodeSharedFloats? {
        guard size > 1 else { return nil }
        return try allocateShared(floatCount: floatCount, at: site)
    }

    public func allocateOneSegmentWithinNode(floatCount: Int, at site: CallSite) throws -> NodeSharedFloats? {
        guard size > 1 else { return nil }
        let perRank = try allocateShared(floatCount: floatCount, ownFloats: localRank == 0 ? floatCount : 0, at: site)
        return NodeSharedFloats(count: floatCount, local: perRank.segments[0], segments: [perRank.segments[0]]) { site in
            try perRank.synchronize(file: site.file, line: site.line)
        }
    }

    /// One segment per rank of this node, indexed by local rank, of `ownFloats` floats on this rank (default
    /// `floatCount`, the count every rank records); collective over the node.
    private func allocateShared(floatCount: Int, ownFloats: Int? = nil, at site: CallSite) throws -> NodeSharedFloats {
        try ready(.sharedAllocate, .float32, floatCount, site)
        let window = UnsafeMutablePointer<lockstep_mpi_window>.allocate(capacity: 1)
        window.initialize(to: lockstep_mpi_window())
        var base: UnsafeMutableRawPointer?
        let own = ownFloats ?? floatCount
        let code = lockstep_mpi_shared_allocate(max(own, 1) * MemoryLayout<Float>.stride, &base, window)
        if code != lockstep_mpi_success { window.deallocate() }
        try check(code, .sharedAllocate, .float32, floatCount)
        windows.append(window)
        var segments: [UnsafeMutablePointer<Float>] = []
        for peer in 0..<localSize {
            var address: UnsafeMutableRawPointer?
            var bytes = 0
            try check(lockstep_mpi_shared_query(window, Int32(peer), &address, &bytes), "MPI_Win_shared_query(local rank \(peer))")
            guard let address, Int(bitPattern: address) % 64 == 0 else {
                throw CommunicationError(operation: "node-shared memory", rank: rank,
                                         message: "local rank \(peer)'s segment is missing or not 64-byte aligned")
            }
            // Segments may differ in size (`ownFloats`); bind what each one holds.
            segments.append(address.bindMemory(to: Float.self, capacity: max(bytes / MemoryLayout<Float>.stride, 1)))
        }
        let local = segments[localRank]
        local.update(repeating: 0, count: own)
        return NodeSharedFloats(count: floatCount, local: local, segments: segments) { [unowned self] site in
            try ready(.sharedBarrier, .none, 0, site)
            try check(lockstep_mpi_shared_synchronize(window), .sharedBarrier, .none, 0)
        }
    }

    public func splitAcrossNodes(at site: CallSite) throws -> CrossNodeGroup? {
        try ready(.splitAcrossNodes, .none, 0, site)
        let group = UnsafeMutablePointer<lockstep_mpi_comm>.allocate(capacity: 1)
        group.initialize(to: lockstep_mpi_comm())
        var nodeIndex: Int32 = 0, nodeCount: Int32 = 0
        let code = lockstep_mpi_split_across_nodes(group, &nodeIndex, &nodeCount)
        // Freed in finalize() even if a step after MPI_Comm_split failed (the shim leaves MPI_COMM_NULL otherwise).
        groups.append(group)
        try check(code, .splitAcrossNodes, .none, 0)
        return CrossNodeGroup(size: Int(nodeCount), nodeIndex: Int(nodeIndex)) { [unowned self] send, destination, receive, source, site in
            try ready(.sendReceiveAcrossNodes, .float32, send.count, site)
            try check(lockstep_mpi_comm_sendrecv_float(group, send.baseAddress, send.count, Int32(destination),
                                                       receive.baseAddress, receive.count, Int32(source)),
                      .sendReceiveAcrossNodes, .float32, send.count)
        } neighborExchange: { [unowned self, nodeIndex, nodeCount] transfers, recordedCount, site in
            try ready(.chainAcrossNodes, .float32, recordedCount, site)
            let previous = nodeIndex > 0 ? nodeIndex - 1 : -1, next = nodeIndex + 1 < nodeCount ? nodeIndex + 1 : -1
            try check(lockstep_mpi_comm_neighbor_exchange_float(
                          group, previous, next,
                          transfers.toPrevious?.baseAddress, transfers.toPrevious?.count ?? 0,
                          transfers.toNext?.baseAddress, transfers.toNext?.count ?? 0,
                          transfers.fromPrevious?.baseAddress, transfers.fromPrevious?.count ?? 0,
                          transfers.fromNext?.baseAddress, transfers.fromNext?.count ?? 0),
                      .chainAcrossNodes, .float32, recordedCount)
        }
    }

    public func reduceScatterSum(_ send: UnsafePointer<Float>, into receive: UnsafeMutablePointer<Float>, layout: ShardLayout,
                                 at site: CallSite) throws {
        try ready(.reduceScatterSum, .float32, layout.count, site)
        try checkParts(layout, .reduceScatterSum)
        let code = layout.counts.withUnsafeBufferPointer { lockstep_mpi_reduce_scatter_sum_float(send, receive, $0.baseAddress) }
        try check(code, .reduceScatterSum, .float32, layout.count)
    }

    public func allgatherSlices(_ buffer: UnsafeMutablePointer<Float>, layout: ShardLayout, at site: CallSite) throws {
        try ready(.allgatherSlices, .float32, layout.count, site)
        try checkParts(layout, .allgatherSlices)
        let code = layout.counts.withUnsafeBufferPointer { counts in
            layout.offsets.withUnsafeBufferPointer { lockstep_mpi_allgatherv_float(buffer, counts.baseAddress, $0.baseAddress) }
        }
        try check(code, .allgatherSlices, .float32, layout.count)
    }

    public func alltoallSlices(_ send: UnsafePointer<Float>, into receive: UnsafeMutablePointer<Float>, layout: ShardLayout,
                               at site: CallSite) throws {
        try ready(.alltoallSlices, .float32, layout.count, site)
        try checkParts(layout, .alltoallSlices)
        let code = layout.counts.withUnsafeBufferPointer { counts in
            layout.offsets.withUnsafeBufferPointer { lockstep_mpi_alltoall_blocks_float(send, counts.baseAddress, $0.baseAddress, receive) }
        }
        try check(code, .alltoallSlices, .float32, layout.count)
    }

    public func gatherSlices(_ slice: UnsafePointer<Float>, into full: UnsafeMutablePointer<Float>?, layout: ShardLayout,
                             root: Int, at site: CallSite) throws {
        try ready(.gatherSlices, .float32, layout.count, site, root: root)
        try checkParts(layout, .gatherSlices, root: root, rootBuffer: full != nil)
        let code = layout.counts.withUnsafeBufferPointer { counts in
            layout.offsets.withUnsafeBufferPointer {
                lockstep_mpi_gatherv_float(slice, layout.counts[rank], full, counts.baseAddress, $0.baseAddress, Int32(root))
            }
        }
        try check(code, .gatherSlices, .float32, layout.count)
    }

    public func scatterSlices(_ full: UnsafePointer<Float>?, into slice: UnsafeMutablePointer<Float>, layout: ShardLayout,
                              root: Int, at site: CallSite) throws {
        try ready(.scatterSlices, .float32, layout.count, site, root: root)
        try checkParts(layout, .scatterSlices, root: root, rootBuffer: full != nil)
        let code = layout.counts.withUnsafeBufferPointer { counts in
            layout.offsets.withUnsafeBufferPointer {
                lockstep_mpi_scatterv_float(full, counts.baseAddress, $0.baseAddress, slice, layout.counts[rank], Int32(root))
            }
        }
        try check(code, .scatterSlices, .float32, layout.count)
    }

    /// Refuses a layout cut for another world size, a root outside it, or a root without its full buffer.
    private func checkParts(_ layout: ShardLayout, _ operation: CollectiveOperation, root: Int = 0, rootBuffer: Bool = true) throws {
        if layout.parts != size || !(0..<size).contains(root) || (rank == root && !rootBuffer) {
            throw CommunicationError(operation: describe(operation, .float32, layout.count), rank: rank,
                                     message: "needs a layout of \(size) slices (got \(layout.parts)), a root among the \(size) ranks (got \(root)) and the full buffer on the root")
        }
    }

    /// A bare `MPI_Allreduce` (in place, float sum) with no flight record and no error wrapping: the baseline
    /// `lockstep bench allreduce` compares the Communicator against. Returns the MPI error code.
    public func rawAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) -> Int32 {
        lockstep_mpi_allreduce_sum_float(buffer.baseAddress, buffer.count)
    }

    /// Seconds `abort` waits for MPI_Abort before this process leaves on its own.
    public static let abortGraceSeconds = 5.0

    public func abort(code: Int32) -> Never {
        // MPI_Abort asks mpirun to end the job and can block for ever when a peer host is frozen (its daemon never
        // answers), so a thread ends this process after a grace period whatever MPI_Abort does. _exit, not exit:
        // atexit handlers could call into the same stuck MPI library.
        let deadline = Thread { Thread.sleep(forTimeInterval: Self.abortGraceSeconds); _exit(code) }
        deadline.start()
        _ = lockstep_mpi_abort(code)
        _exit(code)
    }

    // MARK: Helpers

    private func liveSlot(_ handle: Int) -> Int? {
        let slot = handle & 0xFFFF_FFFF
        guard slot < requestCapacity, UInt32(truncatingIfNeeded: handle >> 32) == generations[slot],
              slotCounts[slot] >= 0 else { return nil }
        return slot
    }

    private func release(_ slot: Int) {
        generations[slot] &+= 1
        slotCounts[slot] = -1
        freeSlots[freeCount] = slot
        freeCount += 1
    }

    /// Records the call and refuses calls after finalize (MPI would abort instead of returning an error).
    @inline(__always)
    private func ready(_ operation: CollectiveOperation, _ dataType: CollectiveDataType, _ count: Int,
                       _ site: CallSite, root: Int = -1) throws {
        if isFinalized {
            throw CommunicationError(operation: describe(operation, dataType, count), rank: rank,
                                     message: "MPI has been finalized; no communication is possible")
        }
        recorder.record(operation, dataType, count: count, root: root, at: site)
    }

    private func describe(_ operation: CollectiveOperation, _ dataType: CollectiveDataType, _ count: Int) -> String {
        dataType == .none ? operation.rawValue : "\(operation.rawValue)(\(dataType.rawValue) × \(count))"
    }

    @inline(__always)
    private func check(_ code: Int32, _ operation: CollectiveOperation, _ dataType: CollectiveDataType, _ count: Int) throws {
        if code != lockstep_mpi_success {
            try check(code, "\(describe(operation, dataType, count)) [collective #\(recorder.sequenceNumber)]")
        }
    }

    private func check(_ code: Int32, _ operation: @autoclosure () -> String) throws {
        try Self.check(code, operation(), rank: rank)
    }

    private static func check(_ code: Int32, _ operation: @autoclosure () -> String, rank: Int) throws {
        guard code != lockstep_mpi_success else { return }
        throw CommunicationError(operation: operation(), rank: rank, mpiErrorCode: code,
                                 message: CommunicationError.mpiErrorString(code))
    }
}
