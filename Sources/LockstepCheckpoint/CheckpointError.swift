import Foundation

/// A checkpoint problem, naming the file (or directory) and what is wrong with it.
public struct CheckpointError: Error, CustomStringConvertible, LocalizedError, Equatable {
    /// The file or directory concerned.
    public var file: String
    /// What is wrong and, where it helps, what to do about it.
    public var reason: String

    /// Creates an error about `file`.
    public init(file: String, _ reason: String) { self.file = file; self.reason = reason }

    /// "<file>: <reason>".
    public var description: String { "\(file): \(reason)" }
    /// Same as `description`, so `localizedDescription` is useful too.
    public var errorDescription: String? { description }
}
