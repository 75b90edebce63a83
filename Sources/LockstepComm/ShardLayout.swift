/// A flat range of `count` elements cut into one contiguous slice per rank, balanced and starting on 16-float
/// (64-byte) boundaries, so a sliced elementwise kernel runs its 8-lane groups exactly as on the whole range.
///
/// Rank r owns `range(of: r)`; the slices tile `0..<count` in rank order. Counts and offsets are kept as MPI's
/// `int`s (a layout of more than `Int32.max` elements is refused), so collectives pass them without converting.
public struct ShardLayout: Sendable, Equatable {
    /// Elements covered.
    public let count: Int
    /// Number of slices (ranks).
    public let parts: Int
    /// Elements in each rank's slice.
    public let counts: [Int32]
    /// Where each rank's slice starts.
    public let offsets: [Int32]

    /// Cuts `count` elements into `parts` slices; slice r starts at ⌊count·r/parts⌋ rounded down to a multiple of 16.
    public init(count: Int, parts: Int) throws {
        guard parts > 0, count >= 0 else {
            throw ReducerConfigurationError("a shard layout needs at least one part and a non-negative count, got \(parts) parts of \(count) elements")
        }
        guard count <= Int(Int32.max) else {
            throw ReducerConfigurationError("a shard layout of \(count) elements exceeds MPI's int count (\(Int32.max))")
        }
        self.count = count
        self.parts = parts
        let starts = (0...parts).map { r in r == parts ? count : (count * r / parts) & ~15 }
        offsets = (0..<parts).map { Int32(starts[$0]) }
        counts = (0..<parts).map { Int32(starts[$0 + 1] - starts[$0]) }
    }

    /// The elements rank `rank` owns.
    public func range(of rank: Int) -> Range<Int> {
        Int(offsets[rank])..<(Int(offsets[rank]) + Int(counts[rank]))
    }

    /// Length of the longest slice.
    public var largest: Int { Int(counts.max() ?? 0) }
}
