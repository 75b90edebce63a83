import LockstepCore

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Reads a per-sample [time, features] shape; `layer` names the caller in the error.
func sequenceShape(_ inputShape: [Int], layer: String) throws -> (time: Int, features: Int) {
    guard inputShape.count == 2, inputShape[0] > 0, inputShape[1] > 0 else {
        throw ShapeError("\(layer) needs a [time, features] input, receives \(inputShape)")
    }
    return (inputShape[0], inputShape[1])
}

/// Token lookup: ids stored as Float, per-sample [time] → [time, dimensions]; ids are not differentiable.
public final class Embedding: Layer {
    public let kind = "embedding"
    /// Number of distinct token ids (rows of the table).
    public let vocabularySize: Int
    /// Width of each embedding vector.
    public let dimensions: Int
    private var weight: UnsafeMutablePointer<Float>!
    private var weightGradient: UnsafeMutablePointer<Float>!
    private var time = 0

    /// A table of `vocabularySize` × `dimensions`, initialized N(0, 1) as in PyTorch.
    public init(vocabularySize: Int, dimensions: Int) {
        precondition(vocabularySize > 0 && dimensions > 0, "embedding needs a positive vocabulary size and dimension")
        self.vocabularySize = vocabularySize
        self.dimensions = dimensions
    }

    public var parameterSpecs: [ParameterSpec] {
        [ParameterSpec(name: "weight", shape: [vocabularySize, dimensions], initializer: .normal(standardDeviation: 1))]
    }

    public func outputShape(inputShape: [Int]) throws -> [Int] {
        guard inputShape.count == 1, inputShape[0] > 0 else {
            throw ShapeError("embedding needs a [time] input of token ids, receives \(inputShape)")
        }
        return [inputShape[0], dimensions]
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>],
                     state: [UnsafeMutablePointer<Float>]) {
        weight = parameters[0]; weightGradient = gradients[0]
    }

    public func plan(batchSize: Int, inputShape: [Int]) { time = inputShape.reduce(1, *) }

    @inline(__always)
    private func tokenIndex(_ value: Float) -> Int {
        // Rounded, not truncated: an id stored as 2.9999 still means 3.
        let index = Int(value.rounded())
        // fatalError, not precondition: this module builds with -Ounchecked, which drops preconditions, and a bad id
        // would otherwise read outside the table.
        if index < 0 || index >= vocabularySize { fatalError("embedding: token id \(value) outside 0..<\(vocabularySize)") }
        return index
    }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        // output[b, t, :] = weight[id[b, t], :]
        let d = dimensions
        for row in 0..<(batch * time) {
            (output + row * d).update(from: weight + tokenIndex(input[row]) * d, count: d)
        }
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        // weightGradient[id, :] += outputGradient[b, t, :]
        let d = dimensions
        for row in 0..<(batch * time) {
            BLAS.axpy(count: d, alpha: 1, x: outputGradient + row * d, y: weightGradient + tokenIndex(input[row]) * d)
        }
        // Ids are discrete: their gradient is zero by definition.
        inputGradient?.update(repeating: 0, count: batch * time)
    }
}

/// Learned absolute positions: output[t, :] = input[t, :] + table[t, :] over [time, dimensions].
public final class PositionalEmbedding: Layer {
    public let kind = "positional_embedding"
    /// Sequence length (rows of the table).
    public let length: Int
    /// Features per time step.
    public let dimensions: Int
    private var table: UnsafeMutablePointer<Float>!
    private var tableGradient: UnsafeMutablePointer<Float>!

    /// A `length` × `dimensions` table initialized N(0, 0.02²) (GPT-2's choice).
    public init(length: Int, dimensions: Int) {
        precondition(length > 0 && dimensions > 0, "positional embedding needs a positive length and dimension")
        self.length = length
        self.dimensions = dimensions
    }

    public var parameterSpecs: [ParameterSpec] {
        [ParameterSpec(name: "weight", shape: [length, dimensions], initializer: .normal(standardDeviation: 0.02))]
    }

    public func outputShape(inputShape: [Int]) throws -> [Int] {
        guard inputShape == [length, dimensions] else {
            throw ShapeError("positional embedding of [\(length), \(dimensions)] cannot take input \(inputShape)")
        }
        return inputShape
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>],
                     state: [UnsafeMutablePointer<Float>]) {
        table = parameters[0]; tableGradient = gradients[0]
    }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        let width = length * dimensions
        output.update(from: input, count: batch * width)
        Kernels.addRow(table, to: output, rows: batch, width: width)
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        let width = length * dimensions
        Kernels.sumRows(outputGradient, into: tableGradient, rows: batch, width: width)
        inputGradient?.update(from: outputGradient, count: batch * width)
    }
}

/// Selects the final time step: [time, features] → [features] (sequence classifiers).
public final class LastTimeStep: Layer {
    public let kind = "last_time_step"
    private var time = 0, features = 0

    /// Creates the layer.
    public init() {}

    public func outputShape(inputShape: [Int]) throws -> [Int] {
        let shape = try sequenceShape(inputShape, layer: "last_time_step")
        return [shape.features]
    }

    public func plan(batchSize: Int, inputShape: [Int]) { time = inputShape[0]; features = inputShape[1] }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        let (t, f) = (time, features)
        for b in 0..<batch { (output + b * f).update(from: input + (b * t + t - 1) * f, count: f) }
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        guard let inputGradient else { return }
        let (t, f) = (time, features)
        inputGradient.update(repeating: 0, count: batch * t * f)
        for b in 0..<batch { (inputGradient + (b * t + t - 1) * f).update(from: outputGradient + b * f, count: f) }
    }
}

/// The same fully connected map at every time step: [time, in] → [time, out] (one GEMM over batch × time rows).
public final class SequenceLinear: Layer {
    public let kind = "sequence_linear"
    /// The per-step map; it is a row-wise GEMM, so running it on batch·time rows is exactly per-step application.
    private let linear: Linear
    private var time = 0

    /// A per-step linear layer `inputDimensions` → `outputDimensions`.
    public init(inputDimensions: Int, outputDimensions: Int, bias: Bool = true, initializer: Initializer? = nil) {
        linear = Linear(inputDimensions: inputDimensions, outputDimensions: outputDimensions, bias: bias,
                        initializer: initializer ?? .uniform(bound: 1 / Float(inputDimensions).squareRoot()))
    }

    /// Features per input step.
    public var inputDimensions: Int { linear.inputDimensions }
    /// Features per output step.
    public var outputDimensions: Int { linear.outputDimensions }
    public var parameterSpecs: [ParameterSpec] { linear.parameterSpecs }

    public func outputShape(inputShape: [Int]) throws -> [Int] {
        let shape = try sequenceShape(inputShape, layer: "sequence_linear")
        guard shape.features == linear.inputDimensions else {
            throw ShapeError("sequence_linear expects \(linear.inputDimensions) features per step, receives \(inputShape)")
        }
        return [shape.time, linear.outputDimensions]
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>],
                     state: [UnsafeMutablePointer<Float>]) {
        linear.bind(parameters: parameters, gradients: gradients, state: state)
    }

    public func plan(batchSize: Int, inputShape: [Int]) { time = inputShape[0] }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        linear.forward(input: input, output: output, batch: batch * time, context: context)
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        linear.backward(input: input, output: output, outputGradient: outputGradient, inputGradient: inputGradient, batch: batch * time)
    }
}

/// Layer normalization over the last dimension (per time step), with learned scale and shift.
public final class LayerNorm: Layer {
    public let kind = "layernorm"
    /// Size of the normalized (last) dimension.
    public let features: Int
    /// Added to the variance before the square root.
    public let epsilon: Float
    private var weight: UnsafeMutablePointer<Float>!
    private var bias: UnsafeMutablePointer<Float>!
    private var weightGradient: UnsafeMutablePointer<Float>!
    private var biasGradient: UnsafeMutablePointer<Float>!
    private var rowsPerSample = 1
    /// Per-row mean and 1/sqrt(var + eps) from the last forward, [batch · rowsPerSample] each.
    private var means = FloatBuffer(count: 0)
    private var inverseDeviations = FloatBuffer(count: 0)

    /// Normalizes vectors of `features` elements.
    public init(features: Int, epsilon: Float = 1e-5) {
        precondition(features > 0, "layernorm needs a positive feature count")
        self.features = features
        self.epsilon = epsilon
    }

    public var parameterSpecs: [ParameterSpec] {
        [ParameterSpec(name: "weight", shape: [features], initializer: .ones),
         ParameterSpec(name: "bias", shape: [features], initializer: .zeros)]
    }

    public func outputShape(inputShape: [Int]) throws -> [Int] {
        guard inputShape.last == features else {
            throw ShapeError("layernorm over \(features) features cannot take input \(inputShape)")
        }
        return inputShape
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>],
                     state: [UnsafeMutablePointer<Float>]) {
        weight = parameters[0]; bias = parameters[1]
        weightGradient = gradients[0]; biasGradient = gradients[1]
    }

    public func plan(batchSize: Int, inputShape: [Int]) {
        rowsPerSample = inputShape.reduce(1, *) / features
        if means.count < batchSize * rowsPerSample {
            means = FloatBuffer(count: batchSize * rowsPerSample)
            inverseDeviations = FloatBuffer(count: batchSize * rowsPerSample)
        }
    }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        // Two passes per row (mean, then squared deviations): no cancellation when |mean| ≫ std.
        Kernels.layerNormForward(input, into: output, weight: weight, bias: bias, means: means.pointer,
                                 inverseDeviations: inverseDeviations.pointer, rows: batch * rowsPerSample, width: features,
                                 epsilon: epsilon)
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        backward(input: input, outputGradient: outputGradient, inputGradient: inputGradient, adding: nil, batch: batch)
    }

    /// The backward pass with `residualGradient` (may be nil) added to the input gradient in the same pass.
    public func backward(input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, adding residualGradient: UnsafePointer<Float>?, batch: Int) {
        // dx = (residual gradient +) invstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ · x̂)), ĝ = dy · γ.
        Kernels.layerNormBackward(input, outputGradient: outputGradient, inputGradient: inputGradient,
                                  adding: residualGradient, weight: weight,
                                  weightGradient: weightGradient, biasGradient: biasGradient, means: means.pointer,
                                  inverseDeviations: inverseDeviations.pointer, rows: batch * rowsPerSample, width: features)
    }
}

/// Gaussian error linear unit, tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
public final class GELU: Layer {
    public let kind = "gelu"
    private var width = 0

    /// Creates the layer.
    public init() {}
    public func outputShape(inputShape: [Int]) throws -> [Int] { inputShape }
    public func plan(batchSize: Int, inputShape: [Int]) { width = inputShape.reduce(1, *) }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        GELU.forward(input, output, count: batch * width)
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        guard let inputGradient else { return }
        GELU.backward(input, outputGradient, inputGradient, count: batch * width)
    }

    /// y = gelu(x) elementwise (shared with the Transformer block). 0.5·(1 + tanh(u)) is the logistic σ(2u), so
    /// y = x / (1 + e^(−2u)): one exp and one division per element, no tanh (CKernels, 16 lanes). With `gates`, σ(2u)
    /// is kept there for `backward`, which then needs no exp.
    static func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, gates: UnsafeMutablePointer<Float>? = nil,
                        count: Int) {
        Kernels.geluForward(x, into: y, gates: gates, count: count)
    }

    /// dx = dy · gelu'(x) elementwise; `dx` may be `dy`. With s = σ(2u): gelu'(x) = s + 2·x·s·(1 − s)·u'(x); s comes
    /// from `gates` (written by `forward`) when given, else it is recomputed.
    static func backward(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                         gates: UnsafePointer<Float>? = nil, count: Int) {
        Kernels.geluBackward(x, outputGradient: dy, into: dx, gates: gates, count: count)
    }
}
