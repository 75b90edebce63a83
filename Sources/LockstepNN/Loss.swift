import LockstepCore

/// A loss over a batch of model outputs and targets; `forward` returns the batch mean and `backward`
/// writes dL/doutput scaled by `scale` (1/accumulation steps when accumulating micro-batches).
public protocol Loss: AnyObject {
    /// Name used in configs ("cross_entropy", "mse", "bce_with_logits").
    var kind: String { get }
    /// Target values per sample expected for a model output of `outputWidth` features.
    func targetWidth(outputWidth: Int) -> Int
    /// Mean loss over the batch. Targets are [batch, targetWidth] (class indices stored as floats for classification).
    func forward(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, batch: Int, width: Int) -> Float
    /// Writes dL/doutput for the last `forward` into `gradient` ([batch, width]).
    func backward(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>,
                  batch: Int, width: Int, scale: Float)
}

/// Softmax fused with cross-entropy on logits, numerically stable (max subtracted, log-sum-exp).
public final class SoftmaxCrossEntropy: Loss {
    public let kind = "cross_entropy"
    /// Creates the loss.
    public init() {}
    public func targetWidth(outputWidth: Int) -> Int { 1 }

    public func forward(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, batch: Int, width: Int) -> Float {
        var total: Double = 0
        for b in 0..<batch {
            let row = output + b * width
            var maximum = row[0]
            for c in 1..<width { maximum = max(maximum, row[c]) }
            var sum: Float = 0
            for c in 0..<width { sum += expf(row[c] - maximum) }
            let label = Int(targets[b])
            total += Double(logf(sum) + maximum - row[label])
        }
        return Float(total / Double(max(batch, 1)))
    }

    public func backward(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>,
                         batch: Int, width: Int, scale: Float) {
        // d/dlogits of mean CE = (softmax − onehot) / batch
        let factor = scale / Float(batch)
        for b in 0..<batch {
            let row = output + b * width
            let g = gradient + b * width
            var maximum = row[0]
            for c in 1..<width { maximum = max(maximum, row[c]) }
            var sum: Float = 0
            for c in 0..<width { let e = expf(row[c] - maximum); g[c] = e; sum += e }
            let inverse = factor / sum
            for c in 0..<width { g[c] *= inverse }
            g[Int(targets[b])] -= factor
        }
    }
}

/// Counts rows whose arg-max equals the integer target (classification accuracy).
public func countCorrect(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, batch: Int, width: Int) -> Int {
    var correct = 0
    for b in 0..<batch {
        let row = output + b * width
        var best = 0
        for c in 1..<width where row[c] > row[best] { best = c }
        if best == Int(targets[b]) { correct += 1 }
    }
    return correct
}

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
