import Foundation
import LockstepNN

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
            throw ConfigError("allreduce fit: needs at least two measurements with more than one rank and two distinct message sizes, got \(usable.count)")
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

/// Training FLOPs per sample from a model's Linear and Conv2D layers (other layers are ignored as small).
///
/// Forward is 2·MACs; backward is the weight gradient (2·MACs) plus the input gradient (2·MACs) except for the
/// first layer with parameters, whose input gradient nobody needs. These are model FLOPs: work the layer
/// implementation does beyond them (e.g. an input gradient computed anyway) does not count.
public struct FlopCount: Sendable, Equatable {
    /// Forward FLOPs per sample.
    public var forward: Double
    /// Backward FLOPs per sample.
    public var backward: Double
    /// Forward plus backward.
    public var total: Double { forward + backward }

    /// Creates a count.
    public init(forward: Double, backward: Double) { self.forward = forward; self.backward = backward }

    /// Counts `model`'s layers using its planned shapes.
    public init(model: Sequential) {
        var forward = 0.0, backward = 0.0
        var seenParameters = false
        for (index, layer) in model.layers.enumerated() {
            let output = model.shapes[index]
            var macs = 0.0
            if let linear = layer as? Linear {
                // Sequence inputs [time, features] apply the layer at every step.
                let positions = output.count > 1 ? output.dropLast().reduce(1, *) : 1
                macs = Double(positions * linear.inputDimensions * linear.outputDimensions)
            } else if let conv = layer as? Conv2D, output.count == 3 {
                macs = Double(output[0] * output[1] * output[2] * conv.inputChannels * conv.kernelSize.height * conv.kernelSize.width)
            } else {
                if !layer.parameterSpecs.isEmpty { seenParameters = true }
                continue
            }
            forward += 2 * macs
            backward += (seenParameters ? 4 : 2) * macs
            seenParameters = true
        }
        self.init(forward: forward, backward: backward)
    }
}

/// What `lockstep bench train` measured, as far as the projection needs it.
public struct MeasuredStep: Sendable {
    /// Config name, e.g. "fashion-mlp".
    public var name: String
    /// Samples per rank per step.
    public var perRankBatch: Int
    /// Seconds per step outside backward and communication (data, forward, optimizer), one rank.
    public var otherSeconds: Double
    /// Backward seconds per step, one rank.
    public var backwardSeconds: Double
    /// Bytes of gradients reduced per step.
    public var gradientBytes: Double
    /// Number of gradient buckets (messages) per step.
    public var bucketCount: Int
    /// Small latency-bound collectives per step after the gradients (the Trainer's control vector: 1).
    public var controlMessages: Int

    /// Creates a measurement.
    public init(name: String, perRankBatch: Int, otherSeconds: Double, backwardSeconds: Double, gradientBytes: Double, bucketCount: Int,
                controlMessages: Int = 1) {
        self.name = name; self.perRankBatch = perRankBatch; self.otherSeconds = otherSeconds
        self.backwardSeconds = backwardSeconds; self.gradientBytes = gradientBytes; self.bucketCount = bucketCount
        self.controlMessages = controlMessages
    }

    /// Compute seconds per step (no communication).
    public var computeSeconds: Double { otherSeconds + backwardSeconds }
}

/// Projected weak-scaling step (fixed per-rank batch) on `ranks` nodes.
public struct ProjectedStep: Sendable, Equatable {
    /// Nodes.
    public var ranks: Int
    /// Gradient allreduce seconds per step.
    public var communicationSeconds: Double
    /// Control-collective seconds per step (latency only; never overlapped: it follows the gradients).
    public var controlSeconds: Double
    /// Step seconds with communication after backward (no overlap).
    public var stepSeconds: Double
    /// Step seconds if communication hides completely behind backward (the best bucketing can do).
    public var overlappedStepSeconds: Double
    /// Compute / step time without overlap.
    public var efficiency: Double
    /// Compute / step time with ideal overlap.
    public var overlappedEfficiency: Double
}

/// α–β projections of data-parallel step time.
public enum ScalingModel {
    /// Weak scaling: every node computes `measured` one-rank work, then reduces the gradients over `link`.
    public static func project(_ measured: MeasuredStep, ranks: Int, link: AlphaBeta) -> ProjectedStep {
        let communication = ranks <= 1 ? 0 : link.bucketedAllreduceSeconds(ranks: ranks, totalBytes: measured.gradientBytes,
                                                                          buckets: measured.bucketCount)
        let control = Double(measured.controlMessages) * link.latencySeconds(ranks: ranks)
        let compute = measured.computeSeconds
        let step = compute + communication + control
        let overlapped = measured.otherSeconds + max(measured.backwardSeconds, communication) + control
        return ProjectedStep(ranks: ranks, communicationSeconds: communication, controlSeconds: control, stepSeconds: step,
                             overlappedStepSeconds: overlapped, efficiency: compute / step,
                             overlappedEfficiency: compute / overlapped)
    }

    /// Markdown table: one row per node count, per link speed the step time (ms) and efficiency with no overlap
    /// and with ideal overlap; `alpha` is the per-message network latency assumed for every link.
    public static func markdownTable(_ measured: MeasuredStep, nodes: [Int], gigabitsPerSecond: [Double], alpha: Double) -> String {
        var header = "| nodes |"
        var rule = "|---:|"
        for rate in gigabitsPerSecond {
            let label = rate.rounded() == rate ? String(Int(rate)) : String(rate)
            header += " \(label) Gb/s step ms | eff. | eff. overlapped |"
            rule += "---:|---:|---:|"
        }
        var lines = [header, rule]
        for n in nodes {
            var line = "| \(n) |"
            for rate in gigabitsPerSecond {
                let p = project(measured, ranks: n, link: AlphaBeta(alpha: alpha, gigabitsPerSecond: rate))
                line += String(format: " %.2f | %.0f%% | %.0f%% |", p.stepSeconds * 1e3, p.efficiency * 100, p.overlappedEfficiency * 100)
            }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }

    /// Human-readable byte count (B, KiB, MiB, GiB).
    public static func formatBytes(_ bytes: Double) -> String {
        if !bytes.isFinite { return "∞" }
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = bytes, unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? String(format: "%.0f B", value) : String(format: "%.1f %@", value, units[unit])
    }
}
