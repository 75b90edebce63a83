import LockstepCore

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Softmax cross-entropy at every time step: output [batch, time, classes], targets [batch, time] class ids as Float;
/// the mean over batch × time, computed with the row maximum subtracted (log-sum-exp) so it never overflows.
public final class SequenceCrossEntropy: Loss {
    public let kind = "sequence_cross_entropy"
    /// Classes per step (the vocabulary size for language models).
    public let classes: Int

    /// A per-step cross-entropy over `classes` logits per step.
    public init(classes: Int) {
        precondition(classes > 0, "sequence cross-entropy needs at least one class")
        self.classes = classes
    }

    /// One target id per time step.
    public func targetWidth(outputWidth: Int) -> Int { outputWidth / classes }

    public func forward(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, batch: Int, width: Int) -> Float {
        let rows = batch * (width / classes), n = classes
        var total: Double = 0
        for r in 0..<rows {
            let row = output + r * n
            var maximum = row[0]
            for c in 1..<n { maximum = max(maximum, row[c]) }
            var sum: Float = 0
            for c in 0..<n { sum += expf(row[c] - maximum) }
            total += Double(logf(sum) + maximum - row[label(targets[r])])
        }
        return Float(total / Double(max(rows, 1)))
    }

    public func backward(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>,
                         batch: Int, width: Int, scale: Float) {
        // d/dlogits of the mean over rows = (softmax − onehot) / rows
        let rows = batch * (width / classes), n = classes
        let factor = scale / Float(max(rows, 1))
        for r in 0..<rows {
            let row = output + r * n, g = gradient + r * n
            var maximum = row[0]
            for c in 1..<n { maximum = max(maximum, row[c]) }
            var sum: Float = 0
            for c in 0..<n { let e = expf(row[c] - maximum); g[c] = e; sum += e }
            let inverse = factor / sum
            for c in 0..<n { g[c] *= inverse }
            g[label(targets[r])] -= factor
        }
    }

    @inline(__always)
    private func label(_ value: Float) -> Int {
        let index = Int(value.rounded())
        // fatalError survives -Ounchecked (precondition does not); a bad id would write outside the gradient row.
        if index < 0 || index >= classes { fatalError("sequence_cross_entropy: target id \(value) outside 0..<\(classes)") }
        return index
    }
}
