import LockstepCore

/// Updates a flat parameter buffer from its flat gradient buffer; state tensors share the parameter layout.
public protocol Optimizer: AnyObject {
    /// Name used in configs and checkpoints ("sgd", "adam", "adamw", "rmsprop", "adagrad").
    var kind: String { get }
    /// Number of `step` calls so far (Adam's bias correction uses it; checkpoints save it).
    var stepCount: Int { get set }
    /// Per-parameter state buffers with their checkpoint suffix, PyTorch's state names ("momentum_buffer", "exp_avg", …).
    var stateBuffers: [(name: String, buffer: FloatBuffer)] { get }
    /// One update of `count` parameters with `learningRate`.
    func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int, learningRate: Float)
    /// Restores the state of a freshly created optimizer (zero buffers and step count unless the optimizer says otherwise).
    func resetState()
    /// `step`, then zeroes the `count` gradients so the next step can accumulate into them; an optimizer that reads
    /// each gradient once clears it in the same pass (no separate pass over the buffer).
    func stepClearingGradients(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, count: Int,
                               learningRate: Float)
}

extension Optimizer {
    /// Zeroes every state buffer and the step count, as if freshly created.
    public func resetState() {
        for (_, buffer) in stateBuffers { buffer.zero() }
        stepCount = 0
    }

    /// Zeroes the gradients in a pass of their own after `step`.
    public func stepClearingGradients(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                                      count: Int, learningRate: Float) {
        step(parameters: parameters, gradients: UnsafePointer(gradients), count: count, learningRate: learningRate)
        gradients.update(repeating: 0, count: count)
    }

    /// `step` after adding the L1 penalty's subgradient `l1`·sign(p) (sign(0) = 0) to `gradients` in place, so every
    /// optimizer sees it as part of the gradient, before its own weight decay; allocates nothing. With
    /// `clearingGradients` the gradients are zero afterwards (`stepClearingGradients`).
    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, count: Int,
                     learningRate: Float, l1: Float, clearingGradients: Bool = false) {
        if l1 != 0 {
            for i in 0..<count {
                let p = parameters[i]
                gradients[i] += p > 0 ? l1 : (p < 0 ? -l1 : 0)
            }
        }
        if clearingGradients {
            stepClearingGradients(parameters: parameters, gradients: gradients, count: count, learningRate: learningRate)
        } else {
            step(parameters: parameters, gradients: UnsafePointer(gradients), count: count, learningRate: learningRate)
        }
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
        update(parameters: parameters, gradients: UnsafeMutablePointer(mutating: gradients), count: count,
               learningRate: learningRate, clearing: false)
    }

    /// One update that zeroes each gradient right after reading it (the cache line is already there; a separate
    /// memset would stream the whole buffer again).
    public func stepClearingGradients(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                                      count: Int, learningRate: Float) {
        update(parameters: parameters, gradients: gradients, count: count, learningRate: learningRate, clearing: true)
    }

    /// The update, 16 lanes per step in CKernels.
    @inline(__always)
    private func update(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, count: Int,
                        learningRate: Float, clearing: Bool) {
        precondition(count <= parameterCount, "SGD was created for \(parameterCount) parameters, step got \(count)")
        // PyTorch initializes the momentum buffer with the first gradient (no μ·0 term, no dampening).
        Kernels.sgdStep(parameters: parameters, gradients: gradients, velocity: velocity.pointer, count: count,
                        learningRate: learningRate, momentum: momentum, weightDecay: weightDecay, nesterov: nesterov,
                        firstStep: stepCount == 0, clearingGradients: clearing)
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

/// RMSprop (PyTorch semantics; `square_avg`, `grad_avg` and `momentum_buffer` start at zero):
///
///     g = grad + wd·p
///     v = α·v + (1-α)·g²                                  square_avg
///     centered: a = a + (1-α)·(g - a); d = sqrt(v - a²) + eps   grad_avg
///     otherwise: d = sqrt(v) + eps
///     momentum > 0: buf = μ·buf + g/d; p -= lr·buf        momentum_buffer
///     otherwise:    p -= lr·g/d
public final class RMSprop: Optimizer {
    /// Config and checkpoint name.
    public let kind = "rmsprop"
    /// Updates applied so far.
    public var stepCount = 0
    /// Decay rate of the squared-gradient average (kept in Double like Adam's betas: 1 - α is formed once).
    public let alpha: Double
    /// Added to the root of the average to avoid division by zero.
    public let epsilon: Float
    /// L2 penalty added to the gradient.
    public let weightDecay: Float
    /// Momentum factor (0 disables the buffer).
    public let momentum: Float
    /// Normalize by the variance estimate (subtract the squared mean gradient).
    public let centered: Bool
    /// Number of parameters the state buffers cover.
    public let parameterCount: Int
    private let squareAverage: FloatBuffer
    private let momentumBuffer: FloatBuffer
    private let gradientAverage: FloatBuffer

    /// Creates RMSprop for `parameterCount` parameters; defaults match PyTorch's.
    public init(parameterCount: Int, alpha: Float = 0.99, epsilon: Float = 1e-8, weightDecay: Float = 0,
                momentum: Float = 0, centered: Bool = false) {
        precondition((0...1).contains(alpha), "RMSprop alpha must be in [0, 1], got \(alpha)")
        precondition(epsilon >= 0 && momentum >= 0, "RMSprop epsilon and momentum must be non-negative")
        self.alpha = decimalWidened(alpha); self.epsilon = epsilon; self.weightDecay = weightDecay
        self.momentum = momentum; self.centered = centered
        self.parameterCount = parameterCount
        squareAverage = FloatBuffer(count: parameterCount)
        momentumBuffer = FloatBuffer(count: momentum > 0 ? parameterCount : 0)
        gradientAverage = FloatBuffer(count: centered ? parameterCount : 0)
    }

    /// `square_avg`, plus `momentum_buffer` with momentum and `grad_avg` when centered.
    public var stateBuffers: [(name: String, buffer: FloatBuffer)] {
        [("square_avg", squareAverage)] + (momentum > 0 ? [("momentum_buffer", momentumBuffer)] : [])
            + (centered ? [("grad_avg", gradientAverage)] : [])
    }

    /// One update in place; allocates nothing.
    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int, learningRate: Float) {
        precondition(count <= parameterCount, "RMSprop was created for \(parameterCount) parameters, step got \(count)")
        let v = squareAverage.pointer, buf = momentumBuffer.pointer, a = gradientAverage.pointer
        let (decay, oneMinusDecay) = (Float(alpha), Float(1 - alpha))
        let (mu, wd, eps, lr) = (momentum, weightDecay, epsilon, learningRate)
        // 8 lanes at a time like Adam: the scalar loop stayed scalar (`lockstep bench kernels`, fashion-mlp's 235k
        // parameters: 490 → 316 µs, Adagrad likewise); each lane computes the scalar formula, so results are identical.
        var i = 0
        while i < count {
            let n = min(8, count - i)
            let p = lanes(parameters, i, n)
            let g = lanes(gradients, i, n) + wd * p
            let vi = decay * lanes(v, i, n) + oneMinusDecay * g * g
            store(vi, v, i, n)
            let denominator: Lanes
            if centered {
                // PyTorch's lerp form (a + w·(g - a)), not α·a + (1-α)·g: same value, PyTorch's rounding.
                let previous = lanes(a, i, n)
                let ai = previous + oneMinusDecay * (g - previous)
                store(ai, a, i, n)
                denominator = (vi - ai * ai).squareRoot() + eps
            } else {
                denominator = vi.squareRoot() + eps
            }
            if mu > 0 {
                let bi = mu * lanes(buf, i, n) + g / denominator
                store(bi, buf, i, n)
                store(p - lr * bi, parameters, i, n)
            } else {
                store(p - lr * (g / denominator), parameters, i, n)
            }
            i += 8
        }
        stepCount += 1
    }
}

/// Adagrad (PyTorch semantics; `sum` starts at `initialAccumulatorValue`):
///
///     t = stepCount + 1
///     g = grad + wd·p
///     sum += g²
///     p -= lr / (1 + (t-1)·lr_decay) · g / (sqrt(sum) + eps)
public final class Adagrad: Optimizer {
    /// Config and checkpoint name.
    public let kind = "adagrad"
    /// Updates applied so far (the learning-rate decay uses it; checkpoints save it).
    public var stepCount = 0
    /// Learning rate divided by 1 + (t-1)·lrDecay at step t.
    public let learningRateDecay: Double
    /// Value `sum` starts from.
    public let initialAccumulatorValue: Float
    /// Added to sqrt(sum) to avoid division by zero.
    public let epsilon: Float
    /// L2 penalty added to the gradient.
    public let weightDecay: Float
    /// Number of parameters the state buffers cover.
    public let parameterCount: Int
    private let sum: FloatBuffer

    /// Creates Adagrad for `parameterCount` parameters; defaults match PyTorch's.
    public init(parameterCount: Int, learningRateDecay: Float = 0, weightDecay: Float = 0, initialAccumulatorValue: Float = 0,
                epsilon: Float = 1e-10) {
        precondition(learningRateDecay >= 0 && initialAccumulatorValue >= 0 && epsilon >= 0,
                     "Adagrad lr_decay, initial_accumulator_value and eps must be non-negative")
        self.learningRateDecay = decimalWidened(learningRateDecay); self.weightDecay = weightDecay
        self.initialAccumulatorValue = initialAccumulatorValue; self.epsilon = epsilon
        self.parameterCount = parameterCount
        sum = FloatBuffer(count: parameterCount)
        resetState()
    }

    /// The running sum of squared gradients.
    public var stateBuffers: [(name: String, buffer: FloatBuffer)] { [("sum", sum)] }

    /// Fills `sum` with the initial accumulator value and zeroes the step count.
    public func resetState() {
        sum.pointer.update(repeating: initialAccumulatorValue, count: parameterCount)
        stepCount = 0
    }

    /// One update in place; allocates nothing.
    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int, learningRate: Float) {
        precondition(count <= parameterCount, "Adagrad was created for \(parameterCount) parameters, step got \(count)")
        stepCount += 1
        // Formed in Double and rounded once, like PyTorch's Python-float clr.
        let stepSize = Float(Double(learningRate) / (1 + Double(stepCount - 1) * learningRateDecay))
        let s = sum.pointer
        let (wd, eps) = (weightDecay, epsilon)
        var i = 0
        while i < count {
            let n = min(8, count - i)
            let p = lanes(parameters, i, n)
            let g = lanes(gradients, i, n) + wd * p
            let si = lanes(s, i, n) + g * g
            store(si, s, i, n)
            store(p - stepSize * (g / (si.squareRoot() + eps)), parameters, i, n)
            i += 8
        }
    }
}

private typealias Lanes = SIMD8<Float>

/// `n` (at most 8) values from `pointer + index`; lanes past `n` are 0 (harmless in every formula above, never stored).
@inline(__always) private func lanes(_ pointer: UnsafePointer<Float>, _ index: Int, _ n: Int) -> Lanes {
    if n == 8 { return UnsafeRawPointer(pointer + index).loadUnaligned(as: Lanes.self) }
    var result = Lanes()
    for k in 0..<n { result[k] = pointer[index + k] }
    return result
}

/// Stores the first `n` lanes of `values` at `pointer + index`.
@inline(__always) private func store(_ values: Lanes, _ pointer: UnsafeMutablePointer<Float>, _ index: Int, _ n: Int) {
    if n == 8 { UnsafeMutableRawPointer(pointer + index).storeBytes(of: values, as: Lanes.self); return }
    for k in 0..<n { pointer[index + k] = values[k] }
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
