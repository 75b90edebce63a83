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
        let rows = batch * (width / classes)
        return Float(CrossEntropyRows.sum(output: output, targets: targets, rows: rows, classes: classes, loss: kind)
                     / Double(max(rows, 1)))
    }

    public func backward(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>,
                         batch: Int, width: Int, scale: Float) {
        // d/dlogits of the mean over rows = (softmax − onehot) / rows
        let rows = batch * (width / classes)
        CrossEntropyRows.gradient(output: output, targets: targets, gradient: gradient, rows: rows, classes: classes,
                                  factor: scale / Float(max(rows, 1)), loss: kind)
    }
}
