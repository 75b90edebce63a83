import Dispatch

/// How a rank stores a block of node-shared memory that other ranks read every step.
public enum SliceWriteMethod: String, Sendable {
    /// Ordinary stores (memmove): each line's ownership comes back from the caches of the ranks that read it.
    case cached
    /// Non-temporal stores (`Kernels.copyStreaming`): whole lines to memory, no ownership transfer; readers then
    /// read from memory.
    case streaming
}

/// Picks the `SliceWriteMethod` for one recurring write by timing both: the current one always, the other for a few
/// steps now and then.
///
/// Every line such a write stores was read by the other ranks one step before, so an ordinary store first takes the
/// line back from their caches. What that costs depends on where the host put the cores, and changes while a job runs:
/// fashion-mlp on 2 ranks of a 2-vCPU AMD EPYC VM (470 KB per slice) wrote it in 11 µs, 75 µs or 200–260 µs in
/// periods of minutes, the last while a core-to-core round trip took 350 ns instead of 60; non-temporal stores took
/// 80–95 µs in every period. Always streaming cost the 75 µs periods 0.90 → 0.93 ms per step; with both sharded
/// writes tuned, the slow periods' median step went 1.040 → 0.812 ms and the fast ones stayed at 0.77 ms. The same bits
/// either way, so ranks may choose differently.
public struct SliceWriteTuner: Sendable {
    /// The method outside trials.
    public private(set) var method: SliceWriteMethod = .cached
    /// Steps from the start of one trial cycle to the next.
    public let period: Int
    /// Steps timed with the current method, then with the other, at the start of every cycle.
    public let trialLength: Int
    /// Streaming must be this much faster to be chosen: its readers' slower reads from memory are not timed here
    /// (measured +12 µs on top of its 80–95 µs).
    public let streamingMargin: Double

    /// Writes recorded so far.
    public private(set) var writes = 0
    private var current: [UInt64]
    private var other: [UInt64]

    /// A tuner that starts with ordinary stores and tries the other method for `trialLength` steps every `period`.
    public init(period: Int = 256, trialLength: Int = 8, streamingMargin: Double = 1.25) {
        precondition(trialLength > 0 && period >= 2 * trialLength, "a trial cycle needs room for both timings")
        self.period = period
        self.trialLength = trialLength
        self.streamingMargin = streamingMargin
        current = Array(repeating: 0, count: trialLength)
        other = Array(repeating: 0, count: trialLength)
    }

    /// The method for the write about to happen.
    public var methodForNextWrite: SliceWriteMethod {
        let phase = writes % period
        return phase >= trialLength && phase < 2 * trialLength ? method.alternative : method
    }

    /// Runs `write` with `methodForNextWrite` and records how long it took.
    public mutating func timedWrite<Result>(_ write: (SliceWriteMethod) throws -> Result) rethrows -> Result {
        let start = DispatchTime.now().uptimeNanoseconds
        defer { record(nanoseconds: DispatchTime.now().uptimeNanoseconds - start) }
        return try write(methodForNextWrite)
    }

    /// Records how long the write took (with `methodForNextWrite`); at the end of a trial keeps the faster method.
    public mutating func record(nanoseconds: UInt64) {
        let phase = writes % period
        if phase < trialLength {
            current[phase] = nanoseconds
        } else if phase < 2 * trialLength {
            other[phase - trialLength] = nanoseconds
            if phase == 2 * trialLength - 1 {
                let mine = Self.median(&current), theirs = Self.median(&other)
                let (cached, streaming) = method == .cached ? (mine, theirs) : (theirs, mine)
                method = Double(streaming) * streamingMargin < Double(cached) ? .streaming : .cached
            }
        }
        writes += 1
    }

    /// Median of `values` (sorted in place: insertion sort, no allocation in the training step).
    private static func median(_ values: inout [UInt64]) -> UInt64 {
        for i in 1..<values.count {
            let value = values[i]
            var j = i
            while j > 0 && values[j - 1] > value { values[j] = values[j - 1]; j -= 1 }
            values[j] = value
        }
        return values[values.count / 2]
    }
}

extension SliceWriteMethod {
    /// The other method.
    var alternative: SliceWriteMethod { self == .cached ? .streaming : .cached }
}
