/// A failure every rank detects at the same collective, so ranks can exit together without MPI_Abort.
public struct CollectiveError: Error, CustomStringConvertible {
    /// The message, naming ranks and step.
    public var description: String
    /// Creates the error.
    public init(_ description: String) { self.description = description }
}

extension Communicator {
    /// Every rank's `values` (all the same length), rank 0's first.
    public func allgather<Value: BitwiseCopyable>(_ values: [Value], file: StaticString = #fileID, line: UInt = #line) throws -> [Value] {
        let count = values.count * size
        return try [Value](unsafeUninitializedCapacity: count) { result, initialized in
            try values.withUnsafeBytes { send in
                try allgather(send: send, receive: UnsafeMutableRawBufferPointer(result), file: file, line: line)
            }
            initialized = count
        }
    }

    /// Every rank's `text`, rank 0's first (lengths first, then each padded to the longest).
    public func allgather(text: String, file: StaticString = #fileID, line: UInt = #line) throws -> [String] {
        let bytes = Array(text.utf8)
        let lengths = try allgather([Int64(bytes.count)], file: file, line: line)
        let longest = Int(lengths.max() ?? 0)
        guard longest > 0 else { return [String](repeating: "", count: size) }
        let gathered = try allgather(bytes + [UInt8](repeating: 0, count: longest - bytes.count), file: file, line: line)
        return (0..<size).map { String(decoding: gathered[($0 * longest)..<($0 * longest + Int(lengths[$0]))], as: UTF8.self) }
    }

    /// Rank 0 runs `action`; then every rank learns whether it worked (one MAX allreduce) and, if it did not, throws
    /// a `CollectiveError` with rank 0's message (printed by rank 0), so all ranks stop together instead of some
    /// waiting in the next collective. `what` names the action for the other ranks' message.
    public func rootActs(_ what: String, file: StaticString = #fileID, line: UInt = #line, _ action: () throws -> Void) throws {
        var failure: String?
        if rank == 0 {
            do { try action() } catch { failure = "\(error)" }
        }
        let flag = try allreduce(Int64(failure == nil ? 0 : 1), operation: .max, file: file, line: line)
        if flag != 0 { throw CollectiveError(failure ?? "rank 0 failed to \(what) (its message is above)") }
    }
}
