import CMPIShim
import Foundation

/// Reduction applied element-wise across ranks by the integer allreduce.
public enum ReduceOperation: String, Sendable, CaseIterable {
    case sum, min, max
}

/// MPI thread-support level, ordered from least to most permissive.
public enum ThreadLevel: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    /// Only one thread exists.
    case single
    /// Only the thread that initialized MPI calls it.
    case funneled
    /// Any thread may call MPI, one at a time.
    case serialized
    /// Any thread may call MPI at any time.
    case multiple

    /// The MPI constant for this level.
    public var mpiValue: Int32 {
        switch self {
        case .single: lockstep_mpi_thread_single
        case .funneled: lockstep_mpi_thread_funneled
        case .serialized: lockstep_mpi_thread_serialized
        case .multiple: lockstep_mpi_thread_multiple
        }
    }

    /// The level for an MPI constant, or nil if it is not one of the four.
    public init?(mpiValue: Int32) {
        guard let level = ThreadLevel.allCases.first(where: { $0.mpiValue == mpiValue }) else { return nil }
        self = level
    }

    /// Orders by permissiveness.
    public static func < (lhs: ThreadLevel, rhs: ThreadLevel) -> Bool { lhs.rawValue < rhs.rawValue }

    /// MPI-style name, e.g. `MPI_THREAD_SERIALIZED`.
    public var description: String {
        switch self {
        case .single: "MPI_THREAD_SINGLE"
        case .funneled: "MPI_THREAD_FUNNELED"
        case .serialized: "MPI_THREAD_SERIALIZED"
        case .multiple: "MPI_THREAD_MULTIPLE"
        }
    }
}

/// Source location of a communication call, recorded by the flight recorder.
public struct CallSite: Sendable {
    /// `#fileID` of the caller.
    public var file: StaticString
    /// `#line` of the caller.
    public var line: UInt

    /// Captures the location where it is written (or the given one).
    public init(file: StaticString = #fileID, line: UInt = #line) { self.file = file; self.line = line }
}

/// A failed communication call: names the operation, the rank and MPI's own explanation.
public struct CommunicationError: Error, CustomStringConvertible, LocalizedError, Sendable {
    /// The operation, e.g. `allreduceSum(float32 × 262144)`.
    public var operation: String
    /// Rank that saw the failure (-1 before the rank is known).
    public var rank: Int
    /// MPI error code, or nil for a usage error caught before calling MPI.
    public var mpiErrorCode: Int32?
    /// `MPI_Error_string` for the code, or the usage problem.
    public var message: String

    /// Creates an error.
    public init(operation: String, rank: Int, mpiErrorCode: Int32? = nil, message: String) {
        self.operation = operation; self.rank = rank; self.mpiErrorCode = mpiErrorCode; self.message = message
    }

    /// One line: operation, rank, reason.
    public var description: String {
        let code = mpiErrorCode.map { " (MPI error \($0))" } ?? ""
        let who = rank >= 0 ? "rank \(rank)" : "this process"
        return "\(operation) failed on \(who): \(message)\(code)"
    }

    /// Same as `description`, for Foundation error printing.
    public var errorDescription: String? { description }

    /// MPI's text for an error code (a generic line outside MPI_Init..MPI_Finalize, where MPI cannot say).
    public static func mpiErrorString(_ code: Int32) -> String {
        var text = [CChar](repeating: 0, count: 512)
        let rc = text.withUnsafeMutableBufferPointer { lockstep_mpi_error_string(code, $0.baseAddress, $0.count) }
        guard rc == lockstep_mpi_success else { return "unknown MPI error" }
        return text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

/// Something a `PendingReduction` can ask whether its reduction has finished.
public protocol PendingReductionOwner: AnyObject {
    /// Drives progress and reports whether request `handle` has completed; completed handles stay completed.
    func testReduction(handle: Int) throws -> Bool
    /// Blocks until request `handle` has completed.
    func waitReduction(handle: Int) throws
}

/// A nonblocking reduction in flight; the buffer must stay untouched until `test()` returns true or `wait()` returns.
public struct PendingReduction {
    /// Who completes it; nil means it completed at start.
    public let owner: (any PendingReductionOwner)?
    /// Owner-defined request identifier.
    public let handle: Int

    /// Wraps an owner's request.
    public init(owner: any PendingReductionOwner, handle: Int) { self.owner = owner; self.handle = handle }

    private init() { owner = nil; handle = -1 }

    /// A reduction that finished at start (single process).
    public static var completed: PendingReduction { PendingReduction() }

    /// True once the reduction has finished; each call also lets MPI make progress.
    public func test() throws -> Bool {
        guard let owner else { return true }
        return try owner.testReduction(handle: handle)
    }

    /// Blocks until the reduction has finished.
    public func wait() throws {
        guard let owner else { return }
        try owner.waitReduction(handle: handle)
    }
}

/// The collectives Lockstep needs, over MPI or within a single process.
///
/// Every rank must issue the same collectives in the same order. Requirements take an explicit `CallSite`;
/// call the overloads without it (defaulting to `#fileID`/`#line`) so the flight recorder names your line.
public protocol Communicator: AnyObject {
    /// This process's rank in the world, 0..<size.
    var rank: Int { get }
    /// Number of ranks.
    var size: Int { get }
    /// Rank among the processes on this node.
    var localRank: Int { get }
    /// Number of processes on this node.
    var localSize: Int { get }
    /// Thread level MPI provided (`.multiple` without MPI).
    var threadLevel: ThreadLevel { get }
    /// Number of collectives issued so far; equal on all ranks when they are in lockstep.
    var sequenceNumber: UInt64 { get }
    /// The last `limit` collectives, oldest first, one readable line each.
    func recentCollectives(limit: Int) -> [String]

    /// In-place sum over ranks.
    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>, at site: CallSite) throws
    /// In-place sum over ranks.
    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>, at site: CallSite) throws
    /// In-place sum, minimum or maximum over ranks.
    func allreduce(_ buffer: UnsafeMutableBufferPointer<Int64>, operation: ReduceOperation, at site: CallSite) throws
    /// Copies `buffer` from rank `root` to every rank.
    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int, at site: CallSite) throws
    /// Gathers `send` from every rank into `receive` (size × send.count bytes), rank 0 first.
    func allgather(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, at site: CallSite) throws
    /// Blocks until every rank arrives.
    func barrier(at site: CallSite) throws
    /// Starts an in-place float sum that completes later.
    func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>, at site: CallSite) throws -> PendingReduction
    /// One segment of `floatCount` floats per rank in memory every rank can read, or nil when the ranks are
    /// not all on one node (or there is one rank). Collective; segments live until `finalize()`.
    func allocateNodeShared(floatCount: Int, at site: CallSite) throws -> NodeSharedFloats?
    /// One segment of `floatCount` floats for every rank on this node, indexed by local rank, in memory those ranks
    /// can read; nil where there is none (one process). Collective over the world; segments live until `finalize()`.
    func allocateSharedWithinNode(floatCount: Int, at site: CallSite) throws -> NodeSharedFloats?
    /// One segment of `floatCount` floats for the whole node (held by local rank 0; `local` and `segments[0]` on
    /// every rank), which every rank on this node can read and write; nil where there is none (one process).
    /// Collective over the world; lives until `finalize()`.
    func allocateOneSegmentWithinNode(floatCount: Int, at site: CallSite) throws -> NodeSharedFloats?
    /// The ranks that hold this rank's local rank, one per node, ordered by node (hierarchical reduction's
    /// cross-node step), or nil without MPI. Collective over the world; the group lives until `finalize()`.
    func splitAcrossNodes(at site: CallSite) throws -> CrossNodeGroup?
    /// Sums every rank's `send` (`layout.count` floats) and writes this rank's slice of the sum to `receive`
    /// (`layout.counts[rank]` floats, not overlapping `send`).
    func reduceScatterSum(_ send: UnsafePointer<Float>, into receive: UnsafeMutablePointer<Float>, layout: ShardLayout,
                          at site: CallSite) throws
    /// In place over `buffer` (`layout.count` floats): every rank's own slice is copied to every rank.
    func allgatherSlices(_ buffer: UnsafeMutablePointer<Float>, layout: ShardLayout, at site: CallSite) throws
    /// This rank receives its slice of every rank's `send`, rank 0's first, back to back in `receive`
    /// (size × `layout.counts[rank]` floats).
    func alltoallSlices(_ send: UnsafePointer<Float>, into receive: UnsafeMutablePointer<Float>, layout: ShardLayout,
                        at site: CallSite) throws
    /// Rank `root` receives every rank's `slice` (`layout.counts[rank]` floats) at that rank's place in `full`
    /// (`layout.count` floats, used on the root only).
    func gatherSlices(_ slice: UnsafePointer<Float>, into full: UnsafeMutablePointer<Float>?, layout: ShardLayout,
                      root: Int, at site: CallSite) throws
    /// Every rank receives its slice of the root's `full` (`layout.count` floats, used on the root only) in `slice`.
    func scatterSlices(_ full: UnsafePointer<Float>?, into slice: UnsafeMutablePointer<Float>, layout: ShardLayout,
                       root: Int, at site: CallSite) throws
    /// Ends every rank of the job with `code`.
    func abort(code: Int32) -> Never
    /// Shuts communication down (MPI_Finalize); every rank calls it once after its last collective.
    func finalize() throws
}

extension Communicator {
    // Communicators without sliced collectives (test doubles) refuse them, so a sharded optimizer fails at its
    // first use with the communicator named rather than computing something else.

    public func reduceScatterSum(_ send: UnsafePointer<Float>, into receive: UnsafeMutablePointer<Float>, layout: ShardLayout,
                                 at site: CallSite) throws { throw slicedCollectiveMissing("reduceScatterSum") }
    public func allgatherSlices(_ buffer: UnsafeMutablePointer<Float>, layout: ShardLayout, at site: CallSite) throws {
        throw slicedCollectiveMissing("allgatherSlices")
    }
    public func alltoallSlices(_ send: UnsafePointer<Float>, into receive: UnsafeMutablePointer<Float>, layout: ShardLayout,
                               at site: CallSite) throws { throw slicedCollectiveMissing("alltoallSlices") }
    public func gatherSlices(_ slice: UnsafePointer<Float>, into full: UnsafeMutablePointer<Float>?, layout: ShardLayout,
                             root: Int, at site: CallSite) throws { throw slicedCollectiveMissing("gatherSlices") }
    public func scatterSlices(_ full: UnsafePointer<Float>?, into slice: UnsafeMutablePointer<Float>, layout: ShardLayout,
                              root: Int, at site: CallSite) throws { throw slicedCollectiveMissing("scatterSlices") }

    private func slicedCollectiveMissing(_ operation: String) -> CommunicationError {
        CommunicationError(operation: operation, rank: rank, message: "\(type(of: self)) does not implement sliced collectives (distributed.shard_optimizer)")
    }

    /// No node-shared memory: the default for communicators without it.
    public func allocateNodeShared(floatCount: Int, at site: CallSite) throws -> NodeSharedFloats? { nil }

    /// One segment of `floatCount` floats per rank in node-shared memory, or nil where there is none.
    public func allocateNodeShared(floatCount: Int, file: StaticString = #fileID, line: UInt = #line) throws -> NodeSharedFloats? {
        try allocateNodeShared(floatCount: floatCount, at: CallSite(file: file, line: line))
    }

    /// No node-shared memory: the default for communicators without it.
    public func allocateSharedWithinNode(floatCount: Int, at site: CallSite) throws -> NodeSharedFloats? { nil }

    /// One segment of `floatCount` floats per rank of this node, indexed by local rank, or nil where there is none.
    public func allocateSharedWithinNode(floatCount: Int, file: StaticString = #fileID,
                                         line: UInt = #line) throws -> NodeSharedFloats? {
        try allocateSharedWithinNode(floatCount: floatCount, at: CallSite(file: file, line: line))
    }

    /// No node-shared memory: the default for communicators without it.
    public func allocateOneSegmentWithinNode(floatCount: Int, at site: CallSite) throws -> NodeSharedFloats? { nil }

    /// One segment of `floatCount` floats for the whole node, or nil where there is none.
    public func allocateOneSegmentWithinNode(floatCount: Int, file: StaticString = #fileID,
                                             line: UInt = #line) throws -> NodeSharedFloats? {
        try allocateOneSegmentWithinNode(floatCount: floatCount, at: CallSite(file: file, line: line))
    }

    /// No groups across nodes: the default for communicators without MPI.
    public func splitAcrossNodes(at site: CallSite) throws -> CrossNodeGroup? { nil }

    /// The ranks that hold this rank's local rank, one per node, or nil without MPI.
    public func splitAcrossNodes(file: StaticString = #fileID, line: UInt = #line) throws -> CrossNodeGroup? {
        try splitAcrossNodes(at: CallSite(file: file, line: line))
    }

    /// Sums every rank's `send` and writes this rank's slice of the sum to `receive`.
    public func reduceScatterSum(_ send: UnsafePointer<Float>, into receive: UnsafeMutablePointer<Float>, layout: ShardLayout,
                                 file: StaticString = #fileID, line: UInt = #line) throws {
        try reduceScatterSum(send, into: receive, layout: layout, at: CallSite(file: file, line: line))
    }

    /// In place: every rank's own slice of `buffer` is copied to every rank.
    public func allgatherSlices(_ buffer: UnsafeMutablePointer<Float>, layout: ShardLayout,
                                file: StaticString = #fileID, line: UInt = #line) throws {
        try allgatherSlices(buffer, layout: layout, at: CallSite(file: file, line: line))
    }

    /// This rank receives its slice of every rank's `send`, in rank order.
    public func alltoallSlices(_ send: UnsafePointer<Float>, into receive: UnsafeMutablePointer<Float>, layout: ShardLayout,
                               file: StaticString = #fileID, line: UInt = #line) throws {
        try alltoallSlices(send, into: receive, layout: layout, at: CallSite(file: file, line: line))
    }

    /// Rank `root` receives every rank's slice at its place in `full`.
    public func gatherSlices(_ slice: UnsafePointer<Float>, into full: UnsafeMutablePointer<Float>?, layout: ShardLayout,
                             root: Int, file: StaticString = #fileID, line: UInt = #line) throws {
        try gatherSlices(slice, into: full, layout: layout, root: root, at: CallSite(file: file, line: line))
    }

    /// Every rank receives its slice of the root's `full`.
    public func scatterSlices(_ full: UnsafePointer<Float>?, into slice: UnsafeMutablePointer<Float>, layout: ShardLayout,
                              root: Int, file: StaticString = #fileID, line: UInt = #line) throws {
        try scatterSlices(full, into: slice, layout: layout, root: root, at: CallSite(file: file, line: line))
    }

    /// In-place sum over ranks.
    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>,
                             file: StaticString = #fileID, line: UInt = #line) throws {
        try allreduceSum(buffer, at: CallSite(file: file, line: line))
    }

    /// In-place sum over ranks.
    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>,
                             file: StaticString = #fileID, line: UInt = #line) throws {
        try allreduceSum(buffer, at: CallSite(file: file, line: line))
    }

    /// In-place sum, minimum or maximum over ranks.
    public func allreduce(_ buffer: UnsafeMutableBufferPointer<Int64>, operation: ReduceOperation,
                          file: StaticString = #fileID, line: UInt = #line) throws {
        try allreduce(buffer, operation: operation, at: CallSite(file: file, line: line))
    }

    /// Sum, minimum or maximum of one value over ranks.
    public func allreduce(_ value: Int64, operation: ReduceOperation,
                          file: StaticString = #fileID, line: UInt = #line) throws -> Int64 {
        var result = value
        try withUnsafeMutablePointer(to: &result) {
            try allreduce(UnsafeMutableBufferPointer(start: $0, count: 1), operation: operation,
                          at: CallSite(file: file, line: line))
        }
        return result
    }

    /// Sum of one value over ranks.
    public func allreduceSum(_ value: Double, file: StaticString = #fileID, line: UInt = #line) throws -> Double {
        var result = value
        try withUnsafeMutablePointer(to: &result) {
            try allreduceSum(UnsafeMutableBufferPointer(start: $0, count: 1), at: CallSite(file: file, line: line))
        }
        return result
    }

    /// Copies `buffer` from rank `root` to every rank.
    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int,
                          file: StaticString = #fileID, line: UInt = #line) throws {
        try broadcast(buffer, root: root, at: CallSite(file: file, line: line))
    }

    /// Gathers `send` from every rank into `receive` (size × send.count bytes), rank 0 first.
    public func allgather(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer,
                          file: StaticString = #fileID, line: UInt = #line) throws {
        try allgather(send: send, receive: receive, at: CallSite(file: file, line: line))
    }

    /// Blocks until every rank arrives.
    public func barrier(file: StaticString = #fileID, line: UInt = #line) throws {
        try barrier(at: CallSite(file: file, line: line))
    }

    /// Starts an in-place float sum that completes later.
    public func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>,
                                  file: StaticString = #fileID, line: UInt = #line) throws -> PendingReduction {
        try startAllreduceSum(buffer, at: CallSite(file: file, line: line))
    }
}

/// True when this process was started by an MPI launcher (mpirun/srun with PMIx) rather than directly.
public func isLaunchedByMPI() -> Bool {
    // MPI_Init without a launcher works as a slow singleton in OpenMPI 4.1, so avoid it when not launched.
    getenv("OMPI_COMM_WORLD_SIZE") != nil || getenv("PMIX_RANK") != nil
}

/// MPI when launched by mpirun (requesting `threadLevel`), otherwise a world-size-1 communicator.
public func makeCommunicator(threadLevel: ThreadLevel = .serialized) throws -> any Communicator {
    if isLaunchedByMPI() { return try MPICommunicator.start(threadLevel: threadLevel) }
    return SingleProcessCommunicator()
}

/// Every rank's segment of one node-shared allocation: rank r reads rank q's floats at `segments[q]` directly
/// (q a world rank for `allocateNodeShared`, where every rank is on the node, a local rank for
/// `allocateSharedWithinNode`).
///
/// Plain loads and stores; `synchronize()` (a node barrier with memory fences) orders one rank's writes before
/// the other ranks' reads, so a phase of writes and a phase of reads must be separated by it.
public final class NodeSharedFloats: @unchecked Sendable {
    /// Floats per segment.
    public let count: Int
    /// This rank's segment.
    public let local: UnsafeMutablePointer<Float>
    /// Every rank's segment, indexed by (local) rank (64-byte aligned, each in its own pages).
    public let segments: [UnsafeMutablePointer<Float>]
    private let barrier: (CallSite) throws -> Void

    /// Wraps segments obtained by a communicator; `barrier` is its node barrier with memory fences.
    public init(count: Int, local: UnsafeMutablePointer<Float>, segments: [UnsafeMutablePointer<Float>],
                barrier: @escaping (CallSite) throws -> Void) {
        self.count = count; self.local = local; self.segments = segments; self.barrier = barrier
    }

    /// Makes every rank's writes before this call visible to every rank's reads after it (collective).
    public func synchronize(file: StaticString = #fileID, line: UInt = #line) throws {
        try barrier(CallSite(file: file, line: line))
    }
}

/// What one rank of a `CrossNodeGroup` chain sends to and receives from the positions before and after its own in
/// one step; nil for no transfer that way. Sizes must match what the neighbour sends or expects.
public struct NeighborTransfers {
    /// Sent to position nodeIndex − 1.
    public var toPrevious: UnsafeBufferPointer<Float>?
    /// Sent to position nodeIndex + 1.
    public var toNext: UnsafeBufferPointer<Float>?
    /// Received from position nodeIndex − 1.
    public var fromPrevious: UnsafeMutableBufferPointer<Float>?
    /// Received from position nodeIndex + 1.
    public var fromNext: UnsafeMutableBufferPointer<Float>?

    /// No transfers; set the ones this step has.
    public init() {}
}

/// The ranks that hold one local rank index, one on each node: rank l of every node reduces slice l of its node's
/// gradients with its peers here, so every rank's link carries traffic, not only a node leader's.
///
/// Made by `Communicator.splitAcrossNodes()`; its calls go into the world communicator's flight recorder, so
/// the watchdog sees them among the others.
public final class CrossNodeGroup: @unchecked Sendable {
    /// Signature of the group's send-receive: (send, destination, receive, source, call site).
    public typealias SendReceive = (UnsafeBufferPointer<Float>, Int, UnsafeMutableBufferPointer<Float>, Int, CallSite) throws -> Void

    /// Signature of the group's neighbour exchange: (transfers, element count for the flight record, call site).
    public typealias NeighborExchange = (NeighborTransfers, Int, CallSite) throws -> Void

    /// Ranks in the group: the number of nodes when every node has the same number of ranks.
    public let size: Int
    /// This rank's position in the group: its node's index (nodes ordered by the world rank of their local rank 0).
    public let nodeIndex: Int
    private let exchange: SendReceive
    private let neighborExchange: NeighborExchange

    /// Wraps a group made by a communicator; `sendReceive` sends to one group position while receiving from another,
    /// `neighborExchange` moves data both ways between positions nodeIndex − 1, nodeIndex and nodeIndex + 1.
    public init(size: Int, nodeIndex: Int, sendReceive: @escaping SendReceive, neighborExchange: @escaping NeighborExchange) {
        self.size = size; self.nodeIndex = nodeIndex; exchange = sendReceive; self.neighborExchange = neighborExchange
    }

    /// One step of a chain along the nodes: sends to and receives from the previous and the next position at once
    /// (nil: nothing that way). Every group member calls it the same number of times; `recordedCount` is what the
    /// flight recorder keeps, the same on every rank so the watchdog can compare records.
    public func exchangeWithNeighbors(_ transfers: NeighborTransfers, recordedCount: Int,
                                      file: StaticString = #fileID, line: UInt = #line) throws {
        try neighborExchange(transfers, recordedCount, CallSite(file: file, line: line))
    }

    /// Sends `send` to group position `destination` while receiving `receive.count` floats from `source`
    /// (MPI_Sendrecv: both directions of the link at once); the two buffers must not overlap.
    public func sendReceive(_ send: UnsafeBufferPointer<Float>, to destination: Int,
                            receive: UnsafeMutableBufferPointer<Float>, from source: Int,
                            file: StaticString = #fileID, line: UInt = #line) throws {
        try exchange(send, destination, receive, source, CallSite(file: file, line: line))
    }
}
