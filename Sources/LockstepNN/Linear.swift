import LockstepCore

/// Fully connected layer: y = x · Wᵀ + b, with W stored [outputDimensions, inputDimensions] as in PyTorch.
public final class Linear: Layer {
    public let kind = "linear"
    /// Features per input sample.
    public let inputDimensions: Int
    /// Features per output sample.
    public let outputDimensions: Int
    /// Whether a bias vector is added.
    public let hasBias: Bool
    /// Weight initializer.
    public let weightInitializer: Initializer

    private var weight: UnsafeMutablePointer<Float>!
    private var bias: UnsafeMutablePointer<Float>?
    private var weightGradient: UnsafeMutablePointer<Float>!
    private var biasGradient: UnsafeMutablePointer<Float>?
    private var transposedOutput: FloatBuffer?  // [out, rows] when `usesTransposedProduct` (planned once)

    /// A linear layer; the weight initializer defaults to He (ReLU networks).
    public init(inputDimensions: Int, outputDimensions: Int, bias: Bool = true, initializer: Initializer? = nil) {
        self.inputDimensions = inputDimensions
        self.outputDimensions = outputDimensions
        self.hasBias = bias
        self.weightInitializer = initializer ?? .he(fanIn: inputDimensions)
    }

    public var parameterSpecs: [ParameterSpec] {
        var specs = [ParameterSpec(name: "weight", shape: [outputDimensions, inputDimensions], initializer: weightInitializer)]
        if hasBias { specs.append(ParameterSpec(name: "bias", shape: [outputDimensions], initializer: .zeros)) }
        return specs
    }

    public func outputShape(inputShape: [Int]) throws -> [Int] {
        let width = inputShape.reduce(1, *)
        guard width == inputDimensions else {
            throw ShapeError("expects \(inputDimensions) input features but receives shape \(inputShape) (\(width) features)")
        }
        return [outputDimensions]
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>],
                     state: [UnsafeMutablePointer<Float>]) {
        weight = parameters[0]; weightGradient = gradients[0]
        if hasBias { bias = parameters[1]; biasGradient = gradients[1] }
    }

    /// Most rows a forward computes as the transposed product (`usesTransposedProduct(rows:)`).
    public static let transposedProductRows = 64

    /// Whether the forward of `rows` rows computes outputᵀ = weight · inputᵀ and transposes it: with few rows and a
    /// large weight, OpenBLAS (SkylakeX kernels) runs that product 12–16% faster than input · weightᵀ, which packs the
    /// whole weight as its second operand (784 → 256 at 64 rows: 235 → 207 µs, the transpose back 3 µs); at 128 rows
    /// the two are even, for narrow layers the transpose costs more than it saves.
    public func usesTransposedProduct(rows: Int) -> Bool {
        rows <= Linear.transposedProductRows && inputDimensions >= 256 && outputDimensions >= 256
    }

    public func plan(batchSize: Int, inputShape: [Int]) {
        let rows = Linear.transposedProductRows  // sized for the most rows the path takes, whatever the planned batch
        transposedOutput = usesTransposedProduct(rows: rows) ? FloatBuffer(count: outputDimensions * rows) : nil
    }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        forward(input: input, output: output, adding: nil, batch: batch, context: context)
    }

    /// The forward pass plus `residual` ([batch, out], may be nil), added in the pass that seeds the bias.
    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, adding residual: UnsafePointer<Float>?,
                        batch: Int, context: LayerContext) {
        if residual == nil, usesTransposedProduct(rows: batch), let transposed = transposedOutput?.pointer {
            // outputᵀ[out, batch] = bias + weight[out, in] · inputᵀ[in, batch], seeded as below (the same sums in
            // the same order), then transposed into output[batch, out].
            if let bias { for j in 0..<outputDimensions { (transposed + j * batch).update(repeating: bias[j], count: batch) } }
            BLAS.gemm(transposeB: true, m: outputDimensions, n: batch, k: inputDimensions,
                      a: weight, lda: inputDimensions, b: input, ldb: inputDimensions,
                      beta: bias == nil ? 0 : 1, c: transposed, ldc: batch)
            Kernels.transpose(transposed, rows: outputDimensions, columns: batch, into: output)
            return
        }
        // output[batch, out] = (residual +) bias + input[batch, in] · weightᵀ[in, out]; the GEMM adds into the seeded
        // rows (beta = 1).
        if let bias {
            Kernels.fillRows(output, with: bias, adding: residual, rows: batch, width: outputDimensions)
        } else if let residual {
            output.update(from: residual, count: batch * outputDimensions)
        }
        BLAS.gemm(transposeB: true, m: batch, n: outputDimensions, k: inputDimensions,
                  a: input, lda: inputDimensions, b: weight, ldb: inputDimensions,
                  beta: bias == nil && residual == nil ? 0 : 1, c: output, ldc: outputDimensions)
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        // weightGradient[out, in] += outputGradientᵀ[out, batch] · input[batch, in]
        BLAS.gemm(transposeA: true, m: outputDimensions, n: inputDimensions, k: batch,
                  a: outputGradient, lda: outputDimensions, b: input, ldb: inputDimensions,
                  beta: 1, c: weightGradient, ldc: inputDimensions)
        if let biasGradient { Kernels.sumRows(outputGradient, into: biasGradient, rows: batch, width: outputDimensions) }
        // inputGradient[batch, in] = outputGradient[batch, out] · weight[out, in]
        if let inputGradient {
            BLAS.gemm(m: batch, n: inputDimensions, k: outputDimensions,
                      a: outputGradient, lda: outputDimensions, b: weight, ldb: inputDimensions,
                      c: inputGradient, ldc: inputDimensions)
        }
    }
}
