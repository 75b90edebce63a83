/// How a parameter is filled before training.
public enum Initializer: Sendable, Equatable {
    case zeros
    case ones
    /// He/Kaiming normal: std = sqrt(2 / fanIn), for ReLU-family layers.
    case he(fanIn: Int)
    /// Xavier/Glorot uniform: bound = sqrt(6 / (fanIn + fanOut)).
    case xavier(fanIn: Int, fanOut: Int)
    /// Uniform in [-bound, bound] (PyTorch's default bias init uses bound = 1/sqrt(fanIn)).
    case uniform(bound: Float)
    /// Normal with the given standard deviation.
    case normal(standardDeviation: Float)

    /// Fills `count` floats at `pointer` from `rng`.
    public func fill(_ pointer: UnsafeMutablePointer<Float>, count: Int, rng: inout RNG) {
        switch self {
        case .zeros: pointer.update(repeating: 0, count: count)
        case .ones: pointer.update(repeating: 1, count: count)
        case .he(let fanIn):
            let std = (2 / Float(max(fanIn, 1))).squareRoot()
            for i in 0..<count { pointer[i] = rng.normal() * std }
        case .xavier(let fanIn, let fanOut):
            let bound = (6 / Float(max(fanIn + fanOut, 1))).squareRoot()
            for i in 0..<count { pointer[i] = rng.uniform(-bound, bound) }
        case .uniform(let bound):
            for i in 0..<count { pointer[i] = rng.uniform(-bound, bound) }
        case .normal(let std):
            for i in 0..<count { pointer[i] = rng.normal() * std }
        }
    }
}

/// What a layer asks the store for: a named tensor with a shape and an initializer.
public struct ParameterSpec: Sendable, Equatable {
    /// Local name inside the layer ("weight", "bias", "running_mean").
    public var name: String
    /// Tensor shape, row-major.
    public var shape: [Int]
    /// How the tensor starts.
    public var initializer: Initializer

    /// Creates a spec.
    public init(name: String, shape: [Int], initializer: Initializer) {
        self.name = name; self.shape = shape; self.initializer = initializer
    }

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
}

/// Where one named tensor lives in a flat buffer.
public struct ParameterSlot: Sendable, Equatable {
    /// Full name, e.g. `layers.0.weight`.
    public var name: String
    /// Tensor shape.
    public var shape: [Int]
    /// Offset in elements from the start of the flat buffer.
    public var offset: Int
    /// Number of elements.
    public var count: Int
    /// Index of the owning layer.
    public var layerIndex: Int
}

/// All tensors of one kind for a whole model in one contiguous buffer (llm.c style); layers hold views at offsets.
///
/// `values` and `gradients` share a layout, so the gradient buffer can be allreduced in place in contiguous
/// buckets with no packing copy.
public final class FlatTensors: @unchecked Sendable {
    /// Named regions in layout order.
    public let slots: [ParameterSlot]
    /// The values.
    public private(set) var values: FloatBuffer
    /// Matching gradients, or nil for non-trainable state.
    public private(set) var gradients: FloatBuffer?

    /// Lays out `specs` (grouped per layer) back to back; allocates gradients when `withGradients`.
    public init(layerSpecs: [[ParameterSpec]], withGradients: Bool) {
        var slots: [ParameterSlot] = []
        var offset = 0
        for (layerIndex, specs) in layerSpecs.enumerated() {
            for spec in specs {
                slots.append(ParameterSlot(name: "layers.\(layerIndex).\(spec.name)", shape: spec.shape,
                                           offset: offset, count: spec.count, layerIndex: layerIndex))
                offset += spec.count
            }
        }
        self.slots = slots
        values = FloatBuffer(count: offset)
        gradients = withGradients ? FloatBuffer(count: offset) : nil
    }

    /// Total element count.
    public var count: Int { values.count }

    /// Moves the gradients into `buffer` (e.g. node-shared memory the reducer sums from); contents start zeroed.
    /// Whoever holds pointers into the old buffer must be re-bound.
    public func replaceGradients(with buffer: FloatBuffer) {
        precondition(buffer.count == count, "replacement gradient buffer holds \(buffer.count) floats, the tensors \(count)")
        buffer.zero()
        gradients = buffer
    }

    /// Moves the values into `buffer` (e.g. node-shared memory every rank on a node reads), which must already hold
    /// them. Whoever holds pointers into the old buffer must be re-bound.
    public func replaceValues(with buffer: FloatBuffer) {
        precondition(buffer.count == count, "replacement value buffer holds \(buffer.count) floats, the tensors \(count)")
        values = buffer
    }

    /// Start offset of layer `index`'s first tensor (or the end offset of all earlier layers if it has none).
    public func startOffset(ofLayer index: Int) -> Int {
        slots.first(where: { $0.layerIndex >= index })?.offset ?? count
    }

    /// Pointer to slot `slot` inside `values`.
    public func valuePointer(_ slot: ParameterSlot) -> UnsafeMutablePointer<Float> { values.pointer + slot.offset }

    /// Pointer to slot `slot` inside `gradients`.
    public func gradientPointer(_ slot: ParameterSlot) -> UnsafeMutablePointer<Float> { gradients!.pointer + slot.offset }
}
