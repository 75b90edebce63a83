import LockstepCore

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Mean squared error over every element: mean((output − target)²), targets shaped like the output.
public final class MSELoss: Loss {
    public let kind = "mse"
    /// Creates the loss.
    public init() {}
    public func targetWidth(outputWidth: Int) -> Int { outputWidth }

    public func forward(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, batch: Int, width: Int) -> Float {
        let count = batch * width
        var total: Double = 0
        for i in 0..<count {
            let difference = Double(output[i] - targets[i])
            total += difference * difference
        }
        return Float(total / Double(max(count, 1)))
    }

    public func backward(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>,
                         batch: Int, width: Int, scale: Float) {
        // d/doutput of mean((o − t)²) = 2 (o − t) / count
        let count = batch * width
        let factor = 2 * scale / Float(max(count, 1))
        for i in 0..<count { gradient[i] = factor * (output[i] - targets[i]) }
    }
}

/// Binary cross-entropy on logits, mean over every element; targets in [0, 1] shaped like the output.
///
/// Uses max(x, 0) − x·t + log(1 + e^−|x|), which never overflows and equals −t·log σ(x) − (1−t)·log(1−σ(x)).
public final class BCEWithLogitsLoss: Loss {
    public let kind = "bce_with_logits"
    public let measuresAccuracy = true
    /// Creates the loss.
    public init() {}
    public func targetWidth(outputWidth: Int) -> Int { outputWidth }

    /// Labels on the right side of logit 0, per sample (a fraction of the sample's labels for multi-label outputs).
    public func correctCount(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, batch: Int, width: Int) -> Double? {
        Double(countCorrectBinary(logits: output, targets: targets, count: batch * width)) / Double(width)
    }

    public func forward(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, batch: Int, width: Int) -> Float {
        let count = batch * width
        var total: Double = 0
        for i in 0..<count {
            let x = output[i], t = targets[i]
            total += Double(max(x, 0) - x * t + log1pf(expf(-abs(x))))
        }
        return Float(total / Double(max(count, 1)))
    }

    public func backward(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>,
                         batch: Int, width: Int, scale: Float) {
        // d/dx = (σ(x) − t) / count, with σ evaluated on the branch whose exponent is ≤ 0.
        let count = batch * width
        let factor = scale / Float(max(count, 1))
        for i in 0..<count {
            let x = output[i]
            let e = expf(-abs(x))
            let sigmoid = x >= 0 ? 1 / (1 + e) : e / (1 + e)
            gradient[i] = factor * (sigmoid - targets[i])
        }
    }
}

/// Hinge loss on one score per sample with 0/1 targets (y = 2t − 1): mean max(0, 1 − y·f). A linear model trained
/// with it is a (soft-margin) perceptron; the prediction is the sign of the score.
public final class HingeLoss: Loss {
    public let kind = "hinge"
    public let measuresAccuracy = true
    /// Creates the loss.
    public init() {}
    public func targetWidth(outputWidth: Int) -> Int { outputWidth }

    public func forward(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, batch: Int, width: Int) -> Float {
        let count = batch * width
        var total: Double = 0
        for i in 0..<count { total += Double(max(0, 1 - (2 * targets[i] - 1) * output[i])) }
        return Float(total / Double(max(count, 1)))
    }

    public func backward(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>,
                         batch: Int, width: Int, scale: Float) {
        // d/df max(0, 1 − y·f) = −y inside the margin, 0 outside (the perceptron rule with a margin)
        let count = batch * width
        let factor = scale / Float(max(count, 1))
        for i in 0..<count {
            let y = 2 * targets[i] - 1
            gradient[i] = y * output[i] < 1 ? -y * factor : 0
        }
    }

    /// Scores on the right side of 0 (score > 0 predicts 1).
    public func correctCount(output: UnsafePointer<Float>, targets: UnsafePointer<Float>, batch: Int, width: Int) -> Double? {
        Double(countCorrectBinary(logits: output, targets: targets, count: batch * width)) / Double(width)
    }
}
