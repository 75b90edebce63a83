import LockstepCore

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Rectified linear unit: max(0, x).
public final class ReLU: Layer {
    public let kind = "relu"
    /// Creates the layer.
    public init() {}
    public func outputShape(inputShape: [Int]) throws -> [Int] { inputShape }
    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        let count = batch * width
        for i in 0..<count { output[i] = max(input[i], 0) }
    }
    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        guard let inputGradient else { return }
        let count = batch * width
        // Multiplying by a 0/1 select (not a branch) lets the loop vectorize: signs are random, so a branch mispredicts.
        for i in 0..<count { inputGradient[i] = outputGradient[i] * (output[i] > 0 ? 1 : 0) }
    }
    private var width = 0
    public func plan(batchSize: Int, inputShape: [Int]) { width = inputShape.reduce(1, *) }
}

/// Leaky rectified linear unit: x for x > 0, slope · x otherwise.
public final class LeakyReLU: Layer {
    public let kind = "leaky_relu"
    /// Multiplier applied to negative inputs.
    public let slope: Float
    private var width = 0

    /// Creates the layer with `slope` for negative inputs (PyTorch's default is 0.01).
    public init(slope: Float = 0.01) { self.slope = slope }
    public func outputShape(inputShape: [Int]) throws -> [Int] { inputShape }
    public func plan(batchSize: Int, inputShape: [Int]) { width = inputShape.reduce(1, *) }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        let slope = self.slope
        for i in 0..<(batch * width) { output[i] = input[i] * (input[i] > 0 ? 1 : slope) }
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        guard let inputGradient else { return }
        let slope = self.slope
        // Decided on the input, not the output: with slope 0 the output alone cannot tell the sides apart.
        for i in 0..<(batch * width) { inputGradient[i] = outputGradient[i] * (input[i] > 0 ? 1 : slope) }
    }
}

/// Logistic sigmoid: 1 / (1 + e^-x).
public final class Sigmoid: Layer {
    public let kind = "sigmoid"
    private var width = 0

    /// Creates the layer.
    public init() {}
    public func outputShape(inputShape: [Int]) throws -> [Int] { inputShape }
    public func plan(batchSize: Int, inputShape: [Int]) { width = inputShape.reduce(1, *) }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        // Two branches so exp never overflows: e^-|x| is always in (0, 1].
        for i in 0..<(batch * width) {
            let x = input[i]
            if x >= 0 {
                output[i] = 1 / (1 + expf(-x))
            } else {
                let e = expf(x)
                output[i] = e / (1 + e)
            }
        }
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        guard let inputGradient else { return }
        // dσ/dx = σ (1 − σ), read from the saved output.
        for i in 0..<(batch * width) { inputGradient[i] = outputGradient[i] * output[i] * (1 - output[i]) }
    }
}

/// Hyperbolic tangent.
public final class Tanh: Layer {
    public let kind = "tanh"
    private var width = 0

    /// Creates the layer.
    public init() {}
    public func outputShape(inputShape: [Int]) throws -> [Int] { inputShape }
    public func plan(batchSize: Int, inputShape: [Int]) { width = inputShape.reduce(1, *) }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        FastMath.map(input, into: output, count: batch * width, FastMath.tanh)
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        guard let inputGradient else { return }
        // dtanh/dx = 1 − tanh², read from the saved output.
        for i in 0..<(batch * width) { inputGradient[i] = outputGradient[i] * (1 - output[i] * output[i]) }
    }
}

/// Softmax along the last dimension of each sample (rows of length `inputShape.last`).
public final class Softmax: Layer {
    public let kind = "softmax"
    private var width = 0
    private var rowLength = 1

    /// Creates the layer.
    public init() {}

    public func outputShape(inputShape: [Int]) throws -> [Int] {
        guard let last = inputShape.last, last > 0 else { throw ShapeError("softmax needs a non-empty last dimension, receives \(inputShape)") }
        return inputShape
    }

    public func plan(batchSize: Int, inputShape: [Int]) {
        width = inputShape.reduce(1, *)
        rowLength = max(inputShape.last ?? 1, 1)
    }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        let n = rowLength
        for row in 0..<(batch * width / n) {
            Kernels.softmax(input + row * n, into: output + row * n, count: n)
        }
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        guard let inputGradient else { return }
        let n = rowLength
        // dx = y ⊙ (dy − ⟨dy, y⟩) per row.
        for row in 0..<(batch * width / n) {
            let y = output + row * n
            let dy = outputGradient + row * n
            let dx = inputGradient + row * n
            var dot: Float = 0
            for c in 0..<n { dot += dy[c] * y[c] }
            for c in 0..<n { dx[c] = y[c] * (dy[c] - dot) }
        }
    }
}
