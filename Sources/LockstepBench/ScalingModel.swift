import Foundation
import LockstepComm
import LockstepConfig
import LockstepCore
import LockstepTrain
import LockstepNN


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
            if let (inputs, outputs) = Bench.linearDimensions(layer) {
                // Sequence inputs [time, features] apply the layer at every step.
                let positions = output.count > 1 ? output.dropLast().reduce(1, *) : 1
                macs = Double(positions * inputs * outputs)
            } else if let conv = layer as? Conv2D, output.count == 3 {
                macs = Double(output[0] * output[1] * output[2] * conv.inputChannels * conv.kernelSize.height * conv.kernelSize.width)
            } else if let block = layer as? TransformerBlock, output.count == 2 {
                // Attention (projections 4·D², scores and P·V 2·T·D per position) plus the MLP's two Linear layers.
                let (t, d, m) = (output[0], block.dimensions, block.mlpDimensions)
                macs = Double(t * (4 * d * d + 2 * t * d + 2 * d * m))
            } else if let attention = layer as? MultiHeadSelfAttention, output.count == 2 {
                let (t, d) = (output[0], attention.dimensions)
                macs = Double(t * (4 * d * d + 2 * t * d))
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

}
