import LockstepCore

/// Per-step information a layer may need in forward: train/eval mode and a random stream.
public struct LayerContext: Sendable {
    /// Training mode (dropout active, BatchNorm uses batch statistics and updates running ones).
    public var training: Bool
    /// Random stream for this step; layers `split` it by their index so streams never overlap.
    public var rng: RNG

    /// Creates a context.
    public init(training: Bool, rng: RNG = RNG(seed: 0)) { self.training = training; self.rng = rng }
}

/// One differentiable layer over a batch of samples stored row-major as [batch, per-sample shape].
///
/// Lifecycle: `outputShape` (validation) → `bind` (views into the model's flat buffers) → `plan`
/// (workspace for a batch size, allocated once) → `forward`/`backward` many times, allocating nothing.
public protocol Layer: AnyObject {
    /// Short kind name used in configs and checkpoints ("linear", "conv2d").
    var kind: String { get }
    /// Trainable tensors in layout order.
    var parameterSpecs: [ParameterSpec] { get }
    /// Non-trainable tensors saved with the model (BatchNorm running statistics).
    var stateSpecs: [ParameterSpec] { get }
    /// Per-sample output shape for a per-sample input shape; throws `ShapeError` on impossible shapes.
    func outputShape(inputShape: [Int]) throws -> [Int]
    /// Receives views (one per spec, same order) into the flat parameter, gradient and state buffers.
    func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>],
              state: [UnsafeMutablePointer<Float>])
    /// Allocates workspace for batches of up to `batchSize` samples of `inputShape`.
    func plan(batchSize: Int, inputShape: [Int])
    /// output[batch, out] = f(input[batch, in]).
    func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext)
    /// Adds parameter gradients into the bound gradient views and, when `inputGradient` is non-nil,
    /// writes (overwrites) dL/dinput. Called after `forward` with the same `input`/`output`.
    func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                  inputGradient: UnsafeMutablePointer<Float>?, batch: Int)
}

extension Layer {
    public var parameterSpecs: [ParameterSpec] { [] }
    public var stateSpecs: [ParameterSpec] { [] }
    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>],
                     state: [UnsafeMutablePointer<Float>]) {}
    public func plan(batchSize: Int, inputShape: [Int]) {}
}

/// A shape that a layer cannot accept.
public struct ShapeError: Error, CustomStringConvertible {
    /// What is wrong, naming the layer and the shapes.
    public var description: String
    /// Creates an error with a message.
    public init(_ description: String) { self.description = description }
}
