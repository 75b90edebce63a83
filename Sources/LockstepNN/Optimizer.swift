import LockstepCore

/// Updates a flat parameter buffer from its flat gradient buffer; state tensors share the parameter layout.
public protocol Optimizer: AnyObject {
    /// Name used in configs and checkpoints ("sgd", "adam", "adamw").
    var kind: String { get }
    /// Number of `step` calls so far (Adam's bias correction uses it; checkpoints save it).
    var stepCount: Int { get set }
    /// Per-parameter state buffers with their checkpoint suffix ("momentum_buffer", "exp_avg", "exp_avg_sq").
    var stateBuffers: [(name: String, buffer: FloatBuffer)] { get }
    /// One update of `count` parameters with `learningRate`.
    func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int, learningRate: Float)
}

extension Optimizer {
    /// Zeroes every state buffer and the step count, as if freshly created.
    public func resetState() {
        for (_, buffer) in stateBuffers { buffer.zero() }
        stepCount = 0
    }
}

/// Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight decay (PyTorch semantics,
/// dampening 0):
///
///     g = grad + wd·p
///     buf = g                      (first step)
///     buf = μ·buf + g              (later steps)
///     p -= lr · (nesterov ? g + μ·buf : buf)
public final class SGD: Optimizer {
    /// Config and checkpoint name.
    public let kind = "sgd"
    /// Updates applied so far.
    public var stepCount = 0
    /// Momentum factor (0 disables the buffer).
    public let momentum: Float
    /// Use Nesterov momentum.
    public let nesterov: Bool
    /// L2 penalty added to the gradient.
    public let weightDecay: Float
    /// Number of parameters the state buffers cover.
    public let parameterCount: Int
    private let velocity: FloatBuffer

    /// Creates SGD for `parameterCount` parameters.
    public init(parameterCount: Int, momentum: Float = 0, nesterov: Bool = false, weightDecay: Float = 0) {
        precondition(momentum >= 0, "SGD momentum must be non-negative, got \(momentum)")
        precondition(!nesterov || momentum > 0, "SGD Nesterov momentum needs momentum > 0")
        self.momentum = momentum; self.nesterov = nesterov; self.weightDecay = weightDecay
        self.parameterCount = parameterCount
        velocity = FloatBuffer(count: momentum != 0 ? parameterCount : 0)
    }

    /// The momentum buffer, when momentum is on.
    public var stateBuffers: [(name: String, buffer: FloatBuffer)] { momentum != 0 ? [("momentum_buffer", velocity)] : [] }

    /// One update in place; allocates nothing.
    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int, learningRate: Float) {
        precondition(count <= parameterCount, "SGD was created for \(parameterCount) parameters, step got \(count)")
        let v = velocity.pointer
        let (mu, wd, lr) = (momentum, weightDecay, learningRate)
        if mu == 0 {
            for i in 0..<count { parameters[i] -= lr * (gradients[i] + wd * parameters[i]) }
        } else if stepCount == 0 {
            // PyTorch initializes the buffer with the first gradient (no μ·0 term, no dampening).
            for i in 0..<count {
                let g = gradients[i] + wd * parameters[i]
                v[i] = g
                parameters[i] -= lr * (nesterov ? g + mu * g : g)
            }
        } else {
            for i in 0..<count {
                let g = gradients[i] + wd * parameters[i]
                let vi = mu * v[i] + g
                v[i] = vi
                parameters[i] -= lr * (nesterov ? g + mu * vi : vi)
            }
        }
        stepCount += 1
    }
}

/// Adam, or AdamW when `decoupledWeightDecay` is set (PyTorch semantics, no AMSGrad):
///
///     t = stepCount + 1
///     Adam:  g = grad + wd·p                 AdamW: p *= 1 - lr·wd; g = grad
///     m = β1·m + (1-β1)·g
///     v = β2·v + (1-β2)·g²
///     p -= (lr / (1-β1^t)) · m / (sqrt(v) / sqrt(1-β2^t) + eps)
public final class Adam: Optimizer {
    /// "adamw" with decoupled weight decay, else "adam".
    public var kind: String { decoupledWeightDecay ? "adamw" : "adam" }
    /// Updates applied so far.
    public var stepCount = 0
    // Betas and epsilon are kept in Double like PyTorch's Python floats: 1 - β is formed in Double and rounded
    // once, whereas 1 - Float(0.999) is off by 1e-5 relative.
    /// Decay rate of the first-moment average.
    public let beta1: Double
    /// Decay rate of the second-moment average.
    public let beta2: Double
    /// Added to the bias-corrected sqrt(v) to avoid division by zero.
    public let epsilon: Double
    /// Weight decay: L2 term in the gradient (Adam) or decoupled shrink of the parameters (AdamW).
    public let weightDecay: Float
    /// True for AdamW's decoupled weight decay.
    public let decoupledWeightDecay: Bool
    /// Number of parameters the state buffers cover.
    public let parameterCount: Int
    private let firstMoment: FloatBuffer
    private let secondMoment: FloatBuffer

    /// Creates Adam (or AdamW with `decoupledWeightDecay`) for `parameterCount` parameters; defaults match PyTorch's Adam.
    public init(parameterCount: Int, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8,
                weightDecay: Float = 0, decoupledWeightDecay: Bool = false) {
        precondition((0..<1).contains(beta1) && (0..<1).contains(beta2), "Adam betas must be in [0, 1), got \(beta1), \(beta2)")
        precondition(epsilon >= 0, "Adam epsilon must be non-negative, got \(epsilon)")
        self.beta1 = decimalWidened(beta1); self.beta2 = decimalWidened(beta2); self.epsilon = decimalWidened(epsilon)
        self.weightDecay = weightDecay; self.decoupledWeightDecay = decoupledWeightDecay
        self.parameterCount = parameterCount
        firstMoment = FloatBuffer(count: parameterCount)
        secondMoment = FloatBuffer(count: parameterCount)
    }

    /// AdamW with PyTorch's defaults (weight decay 0.01).
    public static func adamW(parameterCount: Int, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8,
                             weightDecay: Float = 0.01) -> Adam {
        Adam(parameterCount: parameterCount, beta1: beta1, beta2: beta2, epsilon: epsilon,
             weightDecay: weightDecay, decoupledWeightDecay: true)
    }

    /// First and second moment averages.
    public var stateBuffers: [(name: String, buffer: FloatBuffer)] { [("exp_avg", firstMoment), ("exp_avg_sq", secondMoment)] }

    /// One update in place; allocates nothing.
    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int, learningRate: Float) {
        precondition(count <= parameterCount, "Adam was created for \(parameterCount) parameters, step got \(count)")
        stepCount += 1
        // Scalars in Double then rounded once, so β^t stays accurate for long runs.
        let t = Double(stepCount)
        let biasCorrection1 = 1 - _pow(beta1, t)
        let biasCorrection2 = 1 - _pow(beta2, t)
        let stepSize = Float(Double(learningRate) / biasCorrection1)
        let sqrtCorrection2 = Float(biasCorrection2.squareRoot())
        let (b1, b2, eps) = (Float(beta1), Float(beta2), Float(epsilon))
        let (oneMinusB1, oneMinusB2) = (Float(1 - beta1), Float(1 - beta2))
        let m = firstMoment.pointer, v = secondMoment.pointer
        let l2 = decoupledWeightDecay ? 0 : weightDecay
        let shrink: Float = decoupledWeightDecay ? 1 - learningRate * weightDecay : 1
        // Explicit 8-lane vectors: the compiler left the scalar loop unvectorized (4 pointers that may alias),
        // measured 820 µs → see `lockstep bench kernels`. Lane arithmetic is the scalar formula, so results are identical.
        typealias V = SIMD8<Float>
        let (rawP, rawG, rawM, rawV) = (UnsafeMutableRawPointer(parameters), UnsafeRawPointer(gradients),
                                        UnsafeMutableRawPointer(m), UnsafeMutableRawPointer(v))
        let stride = MemoryLayout<V>.stride
        var i = 0
        while i + 8 <= count {
            let offset = i * 4
            let p = rawP.loadUnaligned(fromByteOffset: offset, as: V.self) * shrink
            let g = rawG.loadUnaligned(fromByteOffset: offset, as: V.self) + l2 * p
            let mi = b1 * rawM.loadUnaligned(fromByteOffset: offset, as: V.self) + oneMinusB1 * g
            let vi = b2 * rawV.loadUnaligned(fromByteOffset: offset, as: V.self) + oneMinusB2 * g * g
            rawM.storeBytes(of: mi, toByteOffset: offset, as: V.self)
            rawV.storeBytes(of: vi, toByteOffset: offset, as: V.self)
            rawP.storeBytes(of: p - stepSize * (mi / (vi.squareRoot() / sqrtCorrection2 + eps)), toByteOffset: offset, as: V.self)
            i += stride / 4
        }
        while i < count {
            let p = parameters[i] * shrink
            let g = gradients[i] + l2 * p
            let mi = b1 * m[i] + oneMinusB1 * g
            let vi = b2 * v[i] + oneMinusB2 * g * g
            m[i] = mi; v[i] = vi
            parameters[i] = p - stepSize * (mi / (vi.squareRoot() / sqrtCorrection2 + eps))
            i += 1
        }
    }
}

/// The Double nearest to the shortest decimal that rounds to `value` (0.999 for Float(0.999)), i.e. what a user
/// wrote in a config, so Float hyperparameters behave like PyTorch's Python floats.
private func decimalWidened(_ value: Float) -> Double {
    Double(value.description) ?? Double(value)
}

#if canImport(Glibc)
import Glibc
@inline(__always) private func _pow(_ x: Double, _ y: Double) -> Double { Glibc.pow(x, y) }
#else
import Darwin
@inline(__always) private func _pow(_ x: Double, _ y: Double) -> Double { Darwin.pow(x, y) }
#endif
