import Foundation
import LockstepCore

/// Allreduce measurements that cannot support a fit.
public struct MeasurementError: Error, CustomStringConvertible {
    /// What is missing.
    public var description: String
    /// Creates the error.
    public init(_ description: String) { self.description = description }
}

/// Human-readable byte count (B, KiB, MiB, GiB).
public func formatByteCount(_ bytes: Double) -> String {
    if !bytes.isFinite { return "∞" }
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = bytes, unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    return unit == 0 ? String(format: "%.0f B", value) : String(format: "%.1f %@", value, units[unit])
}

/// One measured allreduce: `ranks` processes reduced `bytes` in `seconds`.
public struct AllreduceSample: Sendable, Equatable {
    /// World size.
    public var ranks: Int
    /// Message size in bytes.
    public var bytes: Double
    /// Wall time of one allreduce.
    public var seconds: Double

    /// Creates a sample.
    public init(ranks: Int, bytes: Double, seconds: Double) { self.ranks = ranks; self.bytes = bytes; self.seconds = seconds }
}

/// The α–β cost of a ring allreduce: T(n, bytes) = 2(n−1)·α + 2(n−1)/n · bytes · β.
///
/// A ring allreduce is a reduce-scatter and an allgather, each n−1 steps that move bytes/n per rank.
public struct AlphaBeta: Sendable, Equatable {
    /// Per-message latency, seconds.
    public var alpha: Double
    /// Inverse bandwidth, seconds per byte.
    public var beta: Double

    /// Creates a model from latency (s) and inverse bandwidth (s/byte).
    public init(alpha: Double, beta: Double) { self.alpha = alpha; self.beta = beta }

    /// A link of `gigabitsPerSecond` (β = 8 / rate) with per-message latency `alpha` seconds.
    public init(alpha: Double, gigabitsPerSecond: Double) { self.init(alpha: alpha, beta: 8 / (gigabitsPerSecond * 1e9)) }

    /// Latency term 2(n−1)α of one allreduce.
    public func latencySeconds(ranks: Int) -> Double { 2 * Double(max(ranks - 1, 0)) * alpha }

    /// Bandwidth term 2(n−1)/n · bytes · β of one allreduce.
    public func bandwidthSeconds(ranks: Int, bytes: Double) -> Double {
        ranks <= 1 ? 0 : 2 * Double(ranks - 1) / Double(ranks) * bytes * beta
    }

    /// Modelled time of one ring allreduce of `bytes` over `ranks`.
    public func allreduceSeconds(ranks: Int, bytes: Double) -> Double {
        latencySeconds(ranks: ranks) + bandwidthSeconds(ranks: ranks, bytes: bytes)
    }

    /// Time to reduce `totalBytes` split into `buckets` messages (each pays the latency term).
    public func bucketedAllreduceSeconds(ranks: Int, totalBytes: Double, buckets: Int) -> Double {
        Double(max(buckets, 1)) * latencySeconds(ranks: ranks) + bandwidthSeconds(ranks: ranks, bytes: totalBytes)
    }

    /// Smallest message whose bandwidth term is at least `ratio` × its latency term: bytes = ratio · n · α / β.
    /// Buckets this large spend at most 1/(1+ratio) of their time on latency.
    public func suggestedBucketBytes(ranks: Int, ratio: Double = 10) -> Double {
        guard beta > 0 else { return .infinity }
        return ratio * Double(max(ranks, 2)) * alpha / beta
    }

    /// Bus bandwidth the model gives for large messages, bytes/s (1/β).
    public var busBandwidth: Double { beta > 0 ? 1 / beta : .infinity }

    /// Least-squares fit to measured allreduces, minimizing relative error (times span six orders of magnitude,
    /// so an absolute fit would ignore small messages and leave α meaningless). α, β ≥ 0.
    /// Needs at least two samples with more than one rank and two distinct sizes.
    public static func fit(_ samples: [AllreduceSample]) throws -> AlphaBeta {
        let usable = samples.filter { $0.ranks > 1 && $0.seconds > 0 && $0.bytes >= 0 }
        guard usable.count >= 2, Set(usable.map(\.bytes)).count >= 2 else {
            throw MeasurementError("allreduce fit: needs at least two measurements with more than one rank and two distinct message sizes, got \(usable.count)")
        }
        // Rows x = (2(n−1), 2(n−1)/n·bytes), target T; weights 1/T² make residuals relative.
        var sxx = 0.0, sxy = 0.0, syy = 0.0, sxt = 0.0, syt = 0.0
        func add(_ x: Double, _ y: Double, _ t: Double, _ w: Double) {
            sxx += w * x * x; sxy += w * x * y; syy += w * y * y; sxt += w * x * t; syt += w * y * t
        }
        for s in usable {
            let n = Double(s.ranks)
            add(2 * (n - 1), 2 * (n - 1) / n * s.bytes, s.seconds, 1 / (s.seconds * s.seconds))
        }
        let determinant = sxx * syy - sxy * sxy
        var alpha = determinant != 0 ? (sxt * syy - syt * sxy) / determinant : 0
        var beta = determinant != 0 ? (syt * sxx - sxt * sxy) / determinant : 0
        // A negative coefficient means the data cannot support it: drop it and refit the other alone.
        if alpha < 0 || determinant == 0 { alpha = 0; beta = syy > 0 ? max(syt / syy, 0) : 0 }
        if beta < 0 { beta = 0; alpha = sxx > 0 ? max(sxt / sxx, 0) : 0 }
        return AlphaBeta(alpha: alpha, beta: beta)
    }

    /// Largest relative error |model − measured| / measured over `samples` with more than one rank.
    public func maximumRelativeError(_ samples: [AllreduceSample]) -> Double {
        samples.filter { $0.ranks > 1 && $0.seconds > 0 }
            .map { abs(allreduceSeconds(ranks: $0.ranks, bytes: $0.bytes) - $0.seconds) / $0.seconds }.max() ?? 0
    }
}

extension Communicator {
    /// Median over `trials` of the slowest rank's seconds per call; a barrier starts every trial.
    public func timeCollective(trials: Int, warmup: Int, repetitions: Int, _ body: () throws -> Void) throws -> Double {
        var nanoseconds = [Int64](repeating: 0, count: max(trials, 1))
        for trial in -warmup..<nanoseconds.count {
            try barrier()
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<repetitions { try body() }
            let elapsed = DispatchTime.now().uptimeNanoseconds - start
            if trial >= 0 { nanoseconds[trial] = Int64(elapsed) }
        }
        // A collective finishes when its slowest rank does.
        try nanoseconds.withUnsafeMutableBufferPointer { try allreduce($0, operation: .max) }
        return Statistics.median(nanoseconds.map { Double($0) * 1e-9 / Double(repetitions) })
    }
}
