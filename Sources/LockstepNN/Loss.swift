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
    /// Whether accuracy means something for this loss (classification); evaluation reports it then.
    var measuresAccuracy: Bool { get }
    /// Correctly predicted samples in the batch (fractional for multi-label outputs), nil where accuracy means nothing.
    func correctCount(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, batch: Int, width: Int) -> Double?
}

extension Loss {
    /// Regression losses: no accuracy.
    public var measuresAccuracy: Bool { false }
    public func correctCount(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, batch: Int, width: Int) -> Double? { nil }
}

/// Softmax fused with cross-entropy on logits, numerically stable (max subtracted, log-sum-exp).
public final class SoftmaxCrossEntropy: Loss {
    public let kind = "cross_entropy"
    public let measuresAccuracy = true
    /// Creates the loss.
    public init() {}

    /// Rows whose largest logit is the target class.
    public func correctCount(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, batch: Int, width: Int) -> Double? {
        Double(countCorrect(output: output, targets: targets, batch: batch, width: width))
    }
    public func targetWidth(outputWidth: Int) -> Int { 1 }

    public func forward(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, batch: Int, width: Int) -> Float {
        Float(CrossEntropyRows.sum(output: output, targets: targets, rows: batch, classes: width, loss: kind)
              / Double(max(batch, 1)))
    }

    public func backward(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>,
                         batch: Int, width: Int, scale: Float) {
        // d/dlogits of mean CE = (softmax − onehot) / batch
        CrossEntropyRows.gradient(output: output, targets: targets, gradient: gradient, rows: batch, classes: width,
                                  factor: scale / Float(max(batch, 1)), loss: kind)
    }
}

/// Softmax cross-entropy over independent rows of logits (one integer target per row), shared by the per-sample
/// and the per-time-step losses. Stable: the row maximum is subtracted before exp.
enum CrossEntropyRows {
    /// Σ over rows of −log softmax(row)[target], accumulated in Double.
    static func sum(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, rows: Int, classes n: Int, loss: String) -> Double {
        var total: Double = 0
        for r in 0..<rows {
            let row = output + r * n
            total += Double(Kernels.logSumExp(row, count: n) - row[label(targets[r], classes: n, loss: loss)])
        }
        return total
    }

    /// gradient[row] = factor · (softmax(row) − onehot(target)).
    static func gradient(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>,
                         rows: Int, classes n: Int, factor: Float, loss: String) {
        for r in 0..<rows {
            let row = output + r * n, g = gradient + r * n
            Kernels.softmax(row, into: g, count: n)
            for c in 0..<n { g[c] *= factor }
            g[label(targets[r], classes: n, loss: loss)] -= factor
        }
    }

    @inline(__always)
    static func label(_ value: Float, classes: Int, loss: String) -> Int {
        let index = Int(value.rounded())
        // fatalError survives -Ounchecked (precondition does not); a bad id would write outside the gradient row.
        if index < 0 || index >= classes { fatalError("\(loss): target \(value) outside 0..<\(classes)") }
        return index
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

/// Counts logits on the side of 0 their 0/1 target names (logit > 0 predicts 1): binary accuracy for BCE with logits.
public func countCorrectBinary(logits: UnsafePointer<Float>, targets: UnsafePointer<Float>, count: Int) -> Int {
    var correct = 0
    for i in 0..<count where (logits[i] > 0) == (targets[i] > 0.5) { correct += 1 }
    return correct
}

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
