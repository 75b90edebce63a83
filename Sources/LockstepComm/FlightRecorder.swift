/// Kind of collective kept by the flight recorder.
public enum CollectiveOperation: String, Sendable {
    case allreduceSum, allreduceMin, allreduceMax, broadcast, allgather, barrier, startAllreduceSum
    /// Node-shared memory: allocation, and the barrier that orders writes before reads.
    case sharedAllocate, sharedBarrier
    /// Hierarchical reduction: the split into one group per local rank, one step of the ring across nodes in such
    /// a group (send to the next node's rank, receive from the previous one's), and one step of the deterministic
    /// chain (partial sums toward the last node, results back).
    case splitAcrossNodes, sendReceiveAcrossNodes, chainAcrossNodes
    /// Sharded optimizer (`ShardLayout` slices): gradient sum to slice owners, parameter allgather, every rank's copy
    /// of a slice to its owner (deterministic order), and the checkpoint's gather to / scatter from the root.
    case reduceScatterSum, allgatherSlices, alltoallSlices, gatherSlices, scatterSlices
}

/// Element type of a collective's buffer.
public enum CollectiveDataType: String, Sendable {
    case float32, float64, int64, bytes, none
}

/// One collective as issued by this rank.
public struct CollectiveRecord: Sendable, CustomStringConvertible {
    /// 1-based position in this rank's sequence of collectives.
    public var sequence: UInt64
    /// What was called.
    public var operation: CollectiveOperation
    /// Element type.
    public var dataType: CollectiveDataType
    /// Element count (bytes for `.bytes`).
    public var count: Int
    /// Root rank for broadcast, -1 otherwise.
    public var root: Int
    /// Caller's `#fileID`.
    public var file: StaticString
    /// Caller's `#line`.
    public var line: UInt

    /// E.g. `#12 allreduceSum float32 × 262144 at LockstepTrain/Trainer.swift:88`.
    public var description: String {
        var text = "#\(sequence) \(operation.rawValue)"
        if dataType != .none { text += " \(dataType.rawValue) × \(count)" }
        if root >= 0 { text += " root \(root)" }
        return text + " at \(file):\(line)"
    }
}

/// Fixed-size ring of the most recent collectives, so a hang or mismatch can name the call where ranks diverged.
///
/// Preallocated and allocation-free per record (call sites are `StaticString`). Not locked: MPI use is
/// serialized by the callers (the reducer's communication thread hands off through a condition variable).
public final class FlightRecorder: @unchecked Sendable {
    /// Ring capacity.
    public let capacity: Int
    /// Collectives recorded so far (the sequence number of the latest record).
    public private(set) var sequenceNumber: UInt64 = 0
    private let records: UnsafeMutablePointer<CollectiveRecord>

    /// Preallocates room for the last `capacity` records.
    public init(capacity: Int = 256) {
        precondition(capacity > 0, "FlightRecorder capacity must be positive")
        self.capacity = capacity
        records = .allocate(capacity: capacity)
        records.initialize(repeating: CollectiveRecord(sequence: 0, operation: .barrier, dataType: .none, count: 0,
                                                       root: -1, file: "", line: 0), count: capacity)
    }

    deinit {
        records.deinitialize(count: capacity)
        records.deallocate()
    }

    /// Appends a record and returns its sequence number.
    @discardableResult
    public func record(_ operation: CollectiveOperation, _ dataType: CollectiveDataType, count: Int,
                       root: Int = -1, at site: CallSite) -> UInt64 {
        sequenceNumber += 1
        records[Int((sequenceNumber - 1) % UInt64(capacity))] = CollectiveRecord(
            sequence: sequenceNumber, operation: operation, dataType: dataType, count: count, root: root,
            file: site.file, line: site.line)
        return sequenceNumber
    }

    /// The last `limit` records (fewer if fewer were made), oldest first.
    public func recent(limit: Int = 16) -> [CollectiveRecord] {
        let available = Int(min(sequenceNumber, UInt64(capacity)))
        let wanted = max(0, min(limit, available))
        return (0..<wanted).map { offset in
            let sequence = sequenceNumber - UInt64(wanted - offset)  // 0-based index of that record
            return records[Int(sequence % UInt64(capacity))]
        }
    }

    /// `recent(limit:)` as readable lines.
    public func recentLines(limit: Int = 16) -> [String] { recent(limit: limit).map(\.description) }
}
