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

/// Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight decay (PyTorch semantics).
public final class SGD: Optimizer {
    public let kind = "sgd"
    public var stepCount = 0
    /// Momentum factor (0 disables the buffer).
    public let momentum: Float
    /// Use Nesterov momentum.
    public let nesterov: Bool
    /// L2 penalty added to the gradient.
    public let weightDecay: Float
    private let velocity: FloatBuffer

    /// Creates SGD for `parameterCount` parameters.
    public init(parameterCount: Int, momentum: Float = 0, nesterov: Bool = false, weightDecay: Float = 0) {
        self.momentum = momentum; self.nesterov = nesterov; self.weightDecay = weightDecay
        velocity = FloatBuffer(count: momentum != 0 ? parameterCount : 0)
    }

    public var stateBuffers: [(name: String, buffer: FloatBuffer)] { momentum != 0 ? [("momentum_buffer", velocity)] : [] }

    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int, learningRate: Float) {
        let v = velocity.pointer
        let (mu, wd, lr) = (momentum, weightDecay, learningRate)
        if mu == 0 {
            for i in 0..<count { parameters[i] -= lr * (gradients[i] + wd * parameters[i]) }
        } else if stepCount == 0 {
            // PyTorch initializes the buffer with the first gradient.
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
