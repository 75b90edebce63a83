import Foundation

/// A world of one rank without MPI: reductions leave buffers unchanged, allgather copies, broadcast checks the root.
///
/// Used when the binary runs without mpirun, so a standalone run never pays for MPI singleton start-up.
public final class SingleProcessCommunicator: Communicator, @unchecked Sendable {
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var localRank: Int { 0 }
    public var localSize: Int { 1 }
    public var threadLevel: ThreadLevel { .multiple }
    /// Record of recent collectives (kept so single-process runs print the same diagnostics).
    public let recorder: FlightRecorder

    /// Creates the communicator.
    public init(recorderCapacity: Int = 256) { recorder = FlightRecorder(capacity: recorderCapacity) }

    public var sequenceNumber: UInt64 { recorder.sequenceNumber }

    public func recentCollectives(limit: Int) -> [String] { recorder.recentLines(limit: limit) }

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>, at site: CallSite) throws {
        recorder.record(.allreduceSum, .float32, count: buffer.count, at: site)
    }

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>, at site: CallSite) throws {
        recorder.record(.allreduceSum, .float64, count: buffer.count, at: site)
    }

    public func allreduce(_ buffer: UnsafeMutableBufferPointer<Int64>, operation: ReduceOperation, at site: CallSite) throws {
        let kind: CollectiveOperation = switch operation {
        case .sum: .allreduceSum
        case .min: .allreduceMin
        case .max: .allreduceMax
        }
        recorder.record(kind, .int64, count: buffer.count, at: site)
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int, at site: CallSite) throws {
        guard root == 0 else {
            throw CommunicationError(operation: "broadcast(bytes × \(buffer.count))", rank: 0,
                                     message: "root \(root) is not a rank of this 1-rank job")
        }
        recorder.record(.broadcast, .bytes, count: buffer.count, root: root, at: site)
    }

    public func allgather(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, at site: CallSite) throws {
        guard receive.count == send.count else {
            throw CommunicationError(operation: "allgather(bytes × \(send.count))", rank: 0,
                                     message: "receive buffer holds \(receive.count) bytes but 1 rank × \(send.count) bytes are needed")
        }
        recorder.record(.allgather, .bytes, count: send.count, at: site)
        if send.count > 0 { receive.baseAddress!.copyMemory(from: send.baseAddress!, byteCount: send.count) }
    }

    public func barrier(at site: CallSite) throws {
        recorder.record(.barrier, .none, count: 0, at: site)
    }

    public func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>, at site: CallSite) throws -> PendingReduction {
        recorder.record(.startAllreduceSum, .float32, count: buffer.count, at: site)
        return .completed
    }

    // One rank owns the single slice: every sliced collective is a copy (or nothing, in place).

    public func reduceScatterSum(_ send: UnsafePointer<Float>, into receive: UnsafeMutablePointer<Float>, layout: ShardLayout,
                                 at site: CallSite) throws {
        try checkOnePart(layout, "reduceScatterSum")
        recorder.record(.reduceScatterSum, .float32, count: layout.count, at: site)
        receive.update(from: send, count: layout.count)
    }

    public func allgatherSlices(_ buffer: UnsafeMutablePointer<Float>, layout: ShardLayout, at site: CallSite) throws {
        try checkOnePart(layout, "allgatherSlices")
        recorder.record(.allgatherSlices, .float32, count: layout.count, at: site)
    }

    public func alltoallSlices(_ send: UnsafePointer<Float>, into receive: UnsafeMutablePointer<Float>, layout: ShardLayout,
                               at site: CallSite) throws {
        try checkOnePart(layout, "alltoallSlices")
        recorder.record(.alltoallSlices, .float32, count: layout.count, at: site)
        receive.update(from: send, count: layout.count)
    }

    public func gatherSlices(_ slice: UnsafePointer<Float>, into full: UnsafeMutablePointer<Float>?, layout: ShardLayout,
                             root: Int, at site: CallSite) throws {
        try checkOnePart(layout, "gatherSlices", root: root)
        recorder.record(.gatherSlices, .float32, count: layout.count, root: root, at: site)
        full?.update(from: slice, count: layout.count)
    }

    public func scatterSlices(_ full: UnsafePointer<Float>?, into slice: UnsafeMutablePointer<Float>, layout: ShardLayout,
                              root: Int, at site: CallSite) throws {
        try checkOnePart(layout, "scatterSlices", root: root)
        recorder.record(.scatterSlices, .float32, count: layout.count, root: root, at: site)
        if let full { slice.update(from: full, count: layout.count) }
    }

    private func checkOnePart(_ layout: ShardLayout, _ operation: String, root: Int = 0) throws {
        guard layout.parts == 1, root == 0 else {
            throw CommunicationError(operation: "\(operation)(float32 × \(layout.count))", rank: 0,
                                     message: "a 1-rank job has one slice and root 0, got \(layout.parts) slices and root \(root)")
        }
    }

    public func abort(code: Int32) -> Never { exit(code) }

    public func finalize() throws {}
}
