import Foundation
import LockstepComm
import LockstepCore

/// A fake multi-node world inside one process: every rank is a thread with its own `ThreadRankCommunicator`, nodes
/// are groups of ranks (`nodeSizes[n]` ranks on node n, consecutive world ranks), node-shared memory is plain memory
/// the node's threads all see. Only what hierarchical reduction needs is real: the int64 allreduce, node-shared
/// segments, node barriers and send-receives among the ranks with the same local rank. Every collective is a world barrier,
/// so all ranks must issue the same collectives, as with MPI.
final class ThreadWorld: @unchecked Sendable {
    let nodeSizes: [Int]
    var size: Int { nodeSizes.reduce(0, +) }
    private let condition = NSCondition()
    private var arrived = 0
    private var generation = 0
    /// Per-rank exchange slots: the int64 contributions, and the buffer each rank sends and to whom.
    private var integers: [[Int64]]
    private var outgoing: [(data: UnsafeBufferPointer<Float>, destination: Int)?]
    private var outgoingToNeighbors: [(toPrevious: UnsafeBufferPointer<Float>?, toNext: UnsafeBufferPointer<Float>?)?]
    /// Per-rank node-shared segments (one allocation per rank; a world allocates at most once per rank).
    private var segments: [UnsafeMutablePointer<Float>?]
    private var segmentCount = 0

    init(nodeSizes: [Int]) {
        self.nodeSizes = nodeSizes
        let size = nodeSizes.reduce(0, +)
        integers = [[Int64]](repeating: [], count: size)
        outgoing = [(data: UnsafeBufferPointer<Float>, destination: Int)?](repeating: nil, count: size)
        outgoingToNeighbors = .init(repeating: nil, count: size)
        segments = [UnsafeMutablePointer<Float>?](repeating: nil, count: size)
    }

    deinit { for segment in segments { segment?.deallocate() } }

    /// (node, local rank) of a world rank.
    func place(of rank: Int) -> (node: Int, localRank: Int) {
        var first = 0
        for (node, count) in nodeSizes.enumerated() {
            if rank < first + count { return (node, rank - first) }
            first += count
        }
        preconditionFailure("rank \(rank) outside a world of \(size)")
    }

    /// World ranks on `node`.
    func ranks(onNode node: Int) -> Range<Int> {
        let first = nodeSizes[..<node].reduce(0, +)
        return first..<(first + nodeSizes[node])
    }

    /// Runs `body` on one thread per rank and returns each rank's error (nil when it succeeded).
    func run(_ body: @escaping @Sendable (ThreadRankCommunicator) throws -> Void) -> [String?] {
        final class Results: @unchecked Sendable { var errors: [String?]; init(_ n: Int) { errors = .init(repeating: nil, count: n) } }
        let results = Results(size)
        let group = DispatchGroup()
        let lock = NSLock()
        for rank in 0..<size {
            group.enter()
            let thread = Thread { [self] in
                defer { group.leave() }
                do { try body(ThreadRankCommunicator(world: self, rank: rank)) } catch {
                    lock.lock(); results.errors[rank] = "\(error)"; lock.unlock()
                }
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        group.wait()
        return results.errors
    }

    /// Every rank waits here until all have arrived.
    func barrier() {
        condition.lock()
        let mine = generation
        arrived += 1
        if arrived == size {
            arrived = 0
            generation += 1
            condition.broadcast()
        } else {
            while generation == mine { condition.wait() }
        }
        condition.unlock()
    }

    func allreduce(_ buffer: UnsafeMutableBufferPointer<Int64>, operation: ReduceOperation, rank: Int) {
        condition.lock(); integers[rank] = Array(buffer); condition.unlock()
        barrier()
        condition.lock()
        for index in buffer.indices {
            let values = integers.map { $0[index] }
            switch operation {
            case .sum: buffer[index] = values.reduce(0, +)
            case .min: buffer[index] = values.min()!
            case .max: buffer[index] = values.max()!
            }
        }
        condition.unlock()
        barrier()
    }

    /// Send-receive within `rank`'s cross-node group (positions are node indices among the nodes that have its
    /// local rank): every rank of the world takes part in the same step, as the reducer's equal slices guarantee.
    /// Fails when the source did not address this rank or the sizes differ, as MPI would truncate or hang.
    func sendReceive(_ send: UnsafeBufferPointer<Float>, to destination: Int, receive: UnsafeMutableBufferPointer<Float>,
                     from source: Int, rank: Int) throws {
        let localRank = place(of: rank).localRank
        let members = nodeSizes.indices.filter { nodeSizes[$0] > localRank }.map { ranks(onNode: $0).lowerBound + localRank }
        condition.lock(); outgoing[rank] = (send, members[destination]); condition.unlock()
        barrier()
        condition.lock()
        let (data, target) = outgoing[members[source]]!
        condition.unlock()
        var failure: String?
        if target != rank || data.count != receive.count {
            failure = "rank \(rank) expected \(receive.count) floats from rank \(members[source]), which sent \(data.count) to rank \(target)"
        } else {
            for index in 0..<receive.count { receive[index] = data[index] }
        }
        barrier()  // every rank has read what it receives before any sender reuses its buffer
        if let failure { throw CommunicationError(operation: "sendReceive", rank: rank, message: failure) }
    }

    /// One chain step within `rank`'s cross-node group: every rank of the world takes part. Fails when a transfer
    /// has no matching one of the same size on the neighbour, as MPI would truncate or hang.
    func exchangeWithNeighbors(_ transfers: NeighborTransfers, rank: Int) throws {
        let (node, localRank) = place(of: rank)
        let members = nodeSizes.indices.filter { nodeSizes[$0] > localRank }.map { ranks(onNode: $0).lowerBound + localRank }
        let position = members.firstIndex(of: ranks(onNode: node).lowerBound + localRank)!
        condition.lock(); outgoingToNeighbors[rank] = (transfers.toPrevious, transfers.toNext); condition.unlock()
        barrier()
        condition.lock()
        let fromPrevious = position > 0 ? outgoingToNeighbors[members[position - 1]]?.toNext : nil
        let fromNext = position + 1 < members.count ? outgoingToNeighbors[members[position + 1]]?.toPrevious : nil
        condition.unlock()
        var failure: String?
        func take(_ sent: UnsafeBufferPointer<Float>?, into receive: UnsafeMutableBufferPointer<Float>?, _ way: String) {
            guard sent != nil || receive != nil else { return }
            guard let sent, let receive, sent.count == receive.count else {
                failure = failure ?? "rank \(rank) expected \(receive?.count ?? 0) floats from the \(way) node, which sent \(sent?.count ?? 0)"
                return
            }
            for index in 0..<receive.count { receive[index] = sent[index] }
        }
        take(fromPrevious, into: transfers.fromPrevious, "previous")
        take(fromNext, into: transfers.fromNext, "next")
        barrier()  // every rank has read what it receives before any sender reuses its buffer
        condition.lock(); outgoingToNeighbors[rank] = nil; condition.unlock()
        if let failure { throw CommunicationError(operation: "exchangeWithNeighbors", rank: rank, message: failure) }
    }

    /// Segments of `count` floats for the ranks of `rank`'s node, indexed by local rank.
    func allocateShared(count: Int, rank: Int) -> (local: UnsafeMutablePointer<Float>, segments: [UnsafeMutablePointer<Float>]) {
        let mine = UnsafeMutablePointer<Float>.allocate(capacity: count)
        mine.initialize(repeating: 0, count: count)
        condition.lock(); segments[rank] = mine; condition.unlock()
        barrier()
        condition.lock()
        let node = place(of: rank).node
        let all = ranks(onNode: node).map { segments[$0]! }
        condition.unlock()
        barrier()
        return (mine, all)
    }
}

/// One rank of a `ThreadWorld`; collectives the reducer does not use are left unimplemented.
final class ThreadRankCommunicator: Communicator, @unchecked Sendable {
    let world: ThreadWorld
    let rank: Int
    var size: Int { world.size }
    var localRank: Int { world.place(of: rank).localRank }
    var localSize: Int { world.nodeSizes[world.place(of: rank).node] }
    var threadLevel: ThreadLevel { .multiple }
    let recorder = FlightRecorder(capacity: 64)

    init(world: ThreadWorld, rank: Int) { self.world = world; self.rank = rank }

    var sequenceNumber: UInt64 { recorder.sequenceNumber }
    func recentCollectives(limit: Int) -> [String] { recorder.recentLines(limit: limit) }

    private func unsupported(_ name: String) -> CommunicationError {
        CommunicationError(operation: name, rank: rank, message: "not part of the thread world fake")
    }

    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>, at site: CallSite) throws { throw unsupported("allreduceSum float32") }
    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>, at site: CallSite) throws { throw unsupported("allreduceSum float64") }

    func allreduce(_ buffer: UnsafeMutableBufferPointer<Int64>, operation: ReduceOperation, at site: CallSite) throws {
        recorder.record(.allreduceMax, .int64, count: buffer.count, at: site)
        world.allreduce(buffer, operation: operation, rank: rank)
    }

    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int, at site: CallSite) throws { throw unsupported("broadcast") }
    func allgather(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, at site: CallSite) throws { throw unsupported("allgather") }
    func barrier(at site: CallSite) throws { world.barrier() }
    func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>, at site: CallSite) throws -> PendingReduction {
        throw unsupported("startAllreduceSum")
    }

    func allocateSharedWithinNode(floatCount: Int, at site: CallSite) throws -> NodeSharedFloats? {
        recorder.record(.sharedAllocate, .float32, count: floatCount, at: site)
        let (local, segments) = world.allocateShared(count: floatCount, rank: rank)
        return NodeSharedFloats(count: floatCount, local: local, segments: segments) { [world, recorder] site in
            recorder.record(.sharedBarrier, .none, count: 0, at: site)
            world.barrier()
        }
    }

    func allocateOneSegmentWithinNode(floatCount: Int, at site: CallSite) throws -> NodeSharedFloats? {
        recorder.record(.sharedAllocate, .float32, count: floatCount, at: site)
        let (_, segments) = world.allocateShared(count: floatCount, rank: rank)  // the node's first rank's serves all
        return NodeSharedFloats(count: floatCount, local: segments[0], segments: [segments[0]]) { [world, recorder] site in
            recorder.record(.sharedBarrier, .none, count: 0, at: site)
            world.barrier()
        }
    }

    func splitAcrossNodes(at site: CallSite) throws -> CrossNodeGroup? {
        recorder.record(.splitAcrossNodes, .none, count: 0, at: site)
        world.barrier()
        let (node, localRank) = world.place(of: rank)
        let members = world.nodeSizes.filter { $0 > localRank }.count
        let position = world.nodeSizes[..<node].filter { $0 > localRank }.count
        return CrossNodeGroup(size: members, nodeIndex: position) { [world, recorder, rank] send, destination, receive, source, site in
            recorder.record(.sendReceiveAcrossNodes, .float32, count: send.count, at: site)
            try world.sendReceive(send, to: destination, receive: receive, from: source, rank: rank)
        } neighborExchange: { [world, recorder, rank] transfers, recordedCount, site in
            recorder.record(.chainAcrossNodes, .float32, count: recordedCount, at: site)
            try world.exchangeWithNeighbors(transfers, rank: rank)
        }
    }

    func abort(code: Int32) -> Never { fatalError("thread world abort \(code)") }
    func finalize() throws {}
}
