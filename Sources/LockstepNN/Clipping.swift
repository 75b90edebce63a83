import LockstepCore

/// Gradient clipping over a whole flat gradient buffer (PyTorch clip_grad_norm_ with the L2 norm).
public enum GradientClipping {
    /// L2 norm of `count` gradients, accumulated in Double.
    public static func globalNorm(_ gradients: UnsafePointer<Float>, count: Int) -> Float {
        Float(Kernels.sumOfSquares(gradients, count: count).squareRoot())
    }

    /// Scales `gradients` by maxNorm / (norm + 1e-6) when the norm exceeds `maxNorm`; returns the pre-clip norm.
    ///
    /// A non-finite norm is returned unchanged and the gradients are left alone, so the caller can skip the step
    /// instead of spreading NaN into every parameter.
    @discardableResult
    public static func clipByGlobalNorm(_ gradients: UnsafeMutablePointer<Float>, count: Int, maxNorm: Float) -> Float {
        precondition(maxNorm > 0, "maxNorm must be positive, got \(maxNorm)")
        let norm = globalNorm(gradients, count: count)
        clip(gradients, count: count, norm: norm, maxNorm: maxNorm)
        return norm
    }

    /// Scales `count` gradients by maxNorm / (norm + 1e-6) when `norm` (of these and possibly others: a sharded
    /// optimizer's slice) exceeds `maxNorm`; leaves them alone when `norm` is not finite.
    public static func clip(_ gradients: UnsafeMutablePointer<Float>, count: Int, norm: Float, maxNorm: Float) {
        precondition(maxNorm > 0, "maxNorm must be positive, got \(maxNorm)")
        guard norm.isFinite else { return }
        // The 1e-6 matches PyTorch and keeps the clipped norm just under maxNorm.
        let coefficient = maxNorm / (norm + 1e-6)
        if coefficient < 1 { Kernels.scale(gradients, by: coefficient, count: count) }
    }
}
