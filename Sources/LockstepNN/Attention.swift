import LockstepCore

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Multi-head scaled dot-product self-attention over [time, dimensions], optionally causal (step t sees steps ≤ t).
///
/// Q, K, V come from one fused projection (weight_qkv [3·D, D], PyTorch's in_proj layout); per head,
/// softmax(Q·Kᵀ/√d_head + mask)·V, heads concatenated, then the output projection (weight_out [D, D]).
public final class MultiHeadSelfAttention: Layer {
    public let kind = "attention"
    /// Model width D.
    public let dimensions: Int
    /// Number of heads; D must be divisible by it.
    public let heads: Int
    /// Whether step t may only attend to steps ≤ t.
    public let causal: Bool
    private var time = 0
    private var weightQKV: UnsafeMutablePointer<Float>!, biasQKV: UnsafeMutablePointer<Float>!
    private var weightOut: UnsafeMutablePointer<Float>!, biasOut: UnsafeMutablePointer<Float>!
    private var weightQKVGradient: UnsafeMutablePointer<Float>!, biasQKVGradient: UnsafeMutablePointer<Float>!
    private var weightOutGradient: UnsafeMutablePointer<Float>!, biasOutGradient: UnsafeMutablePointer<Float>!
    /// Workspace planned once: projections [batch, time, 3D], attention weights [batch, heads, time, time],
    /// concatenated head outputs [batch, time, D], and their gradients.
    private var qkv = FloatBuffer(count: 0), probabilities = FloatBuffer(count: 0), context = FloatBuffer(count: 0)
    private var qkvGradient = FloatBuffer(count: 0), contextGradient = FloatBuffer(count: 0), scoreGradient = FloatBuffer(count: 0)

    /// Attention with `heads` heads over `dimensions` features per step.
    public init(dimensions: Int, heads: Int, causal: Bool = true) {
        precondition(dimensions > 0 && heads > 0, "attention needs positive dimensions and heads")
        self.dimensions = dimensions
        self.heads = heads
        self.causal = causal
    }

    private var headDimensions: Int { dimensions / heads }

    public var parameterSpecs: [ParameterSpec] {
        let d = dimensions
        return [ParameterSpec(name: "weight_qkv", shape: [3 * d, d], initializer: .xavier(fanIn: d, fanOut: d)),
                ParameterSpec(name: "bias_qkv", shape: [3 * d], initializer: .zeros),
                ParameterSpec(name: "weight_out", shape: [d, d], initializer: .uniform(bound: 1 / Float(d).squareRoot())),
                ParameterSpec(name: "bias_out", shape: [d], initializer: .zeros)]
    }

    public func outputShape(inputShape: [Int]) throws -> [Int] {
        let shape = try sequenceShape(inputShape, layer: "attention")
        guard shape.features == dimensions else {
            throw ShapeError("attention over \(dimensions) features cannot take input \(inputShape)")
        }
        guard dimensions % heads == 0 else {
            throw ShapeError("attention: \(dimensions) features do not split into \(heads) equal heads")
        }
        return inputShape
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>],
                     state: [UnsafeMutablePointer<Float>]) {
        weightQKV = parameters[0]; biasQKV = parameters[1]; weightOut = parameters[2]; biasOut = parameters[3]
        weightQKVGradient = gradients[0]; biasQKVGradient = gradients[1]; weightOutGradient = gradients[2]; biasOutGradient = gradients[3]
    }

    public func plan(batchSize: Int, inputShape: [Int]) {
        time = inputShape[0]
        let rows = batchSize * time
        guard qkv.count < rows * 3 * dimensions else { return }
        qkv = FloatBuffer(count: rows * 3 * dimensions)
        qkvGradient = FloatBuffer(count: rows * 3 * dimensions)
        probabilities = FloatBuffer(count: batchSize * heads * time * time)
        context = FloatBuffer(count: rows * dimensions)
        contextGradient = FloatBuffer(count: rows * dimensions)
        scoreGradient = FloatBuffer(count: time * time)
    }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context layerContext: LayerContext) {
        forward(input: input, output: output, adding: nil, batch: batch, context: layerContext)
    }

    /// The forward pass plus `residual` ([rows, D], may be nil), added in the pass that seeds the output bias.
    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, adding residual: UnsafePointer<Float>?,
                        batch: Int, context layerContext: LayerContext) {
        let d = dimensions, t = time, dh = headDimensions, rows = batch * time
        let scale = 1 / Float(dh).squareRoot()
        // qkv [rows, 3D] = bias + x [rows, D] · weight_qkvᵀ (the GEMM adds into the bias rows)
        Kernels.fillRows(qkv.pointer, with: biasQKV, rows: rows, width: 3 * d)
        BLAS.gemm(transposeB: true, m: rows, n: 3 * d, k: d, a: input, lda: d, b: weightQKV, ldb: d,
                  beta: 1, c: qkv.pointer, ldc: 3 * d)
        for b in 0..<batch {
            let base = qkv.pointer + b * t * 3 * d
            for head in 0..<heads {
                let q = base + head * dh, k = base + d + head * dh, v = base + 2 * d + head * dh
                let p = probabilities.pointer + (b * heads + head) * t * t
                // scores [T, T] = Q · Kᵀ / √d_head
                BLAS.gemm(transposeB: true, m: t, n: t, k: dh, alpha: scale, a: q, lda: 3 * d, b: k, ldb: 3 * d, c: p, ldc: t)
                // Masked weights are exactly zero, so the GEMMs below ignore future steps.
                Kernels.maskedSoftmax(p, into: p, rows: t, count: t, causal: causal)
                // context[:, head] [T, d_head] = P [T, T] · V [T, d_head]
                BLAS.gemm(m: t, n: dh, k: t, a: p, lda: t, b: v, ldb: 3 * d,
                          c: context.pointer + b * t * d + head * dh, ldc: d)
            }
        }
        // output [rows, D] = (residual +) bias + context · weight_outᵀ
        Kernels.fillRows(output, with: biasOut, adding: residual, rows: rows, width: d)
        BLAS.gemm(transposeB: true, m: rows, n: d, k: d, a: context.pointer, lda: d, b: weightOut, ldb: d,
                  beta: 1, c: output, ldc: d)
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        let d = dimensions, t = time, dh = headDimensions, rows = batch * time
        let scale = 1 / Float(dh).squareRoot()
        // Output projection: weight_out gradient += dyᵀ · context, dcontext = dy · weight_out.
        BLAS.gemm(transposeA: true, m: d, n: d, k: rows, a: outputGradient, lda: d, b: context.pointer, ldb: d,
                  beta: 1, c: weightOutGradient, ldc: d)
        Kernels.sumRows(outputGradient, into: biasOutGradient, rows: rows, width: d)
        BLAS.gemm(m: rows, n: d, k: d, a: outputGradient, lda: d, b: weightOut, ldb: d, c: contextGradient.pointer, ldc: d)
        let dS = scoreGradient.pointer
        for b in 0..<batch {
            let base = qkv.pointer + b * t * 3 * d, dBase = qkvGradient.pointer + b * t * 3 * d
            for head in 0..<heads {
                let q = base + head * dh, k = base + d + head * dh, v = base + 2 * d + head * dh
                let p = probabilities.pointer + (b * heads + head) * t * t
                let dContext = contextGradient.pointer + b * t * d + head * dh
                // dP [T, T] = dcontext [T, d_head] · Vᵀ
                BLAS.gemm(transposeB: true, m: t, n: t, k: dh, a: dContext, lda: d, b: v, ldb: 3 * d, c: dS, ldc: t)
                // dV [T, d_head] = Pᵀ · dcontext
                BLAS.gemm(transposeA: true, m: t, n: dh, k: t, a: p, lda: t, b: dContext, ldb: d,
                          c: dBase + 2 * d + head * dh, ldc: 3 * d)
                // Softmax backward per row: dS = P ⊙ (dP − ⟨dP, P⟩); masked entries have P = 0, so dS = 0 there.
                Kernels.softmaxBackward(probabilities: p, gradient: dS, rows: t, count: t, causal: causal)
                // dQ = dS · K / √d_head, dK = dSᵀ · Q / √d_head
                BLAS.gemm(m: t, n: dh, k: t, alpha: scale, a: dS, lda: t, b: k, ldb: 3 * d, c: dBase + head * dh, ldc: 3 * d)
                BLAS.gemm(transposeA: true, m: t, n: dh, k: t, alpha: scale, a: dS, lda: t, b: q, ldb: 3 * d,
                          c: dBase + d + head * dh, ldc: 3 * d)
            }
        }
        // Input projection: weight_qkv gradient += dqkvᵀ · x, dx = dqkv · weight_qkv.
        BLAS.gemm(transposeA: true, m: 3 * d, n: d, k: rows, a: qkvGradient.pointer, lda: 3 * d, b: input, ldb: d,
                  beta: 1, c: weightQKVGradient, ldc: d)
        Kernels.sumRows(qkvGradient.pointer, into: biasQKVGradient, rows: rows, width: 3 * d)
        if let inputGradient {
            BLAS.gemm(m: rows, n: d, k: 3 * d, a: qkvGradient.pointer, lda: 3 * d, b: weightQKV, ldb: d, c: inputGradient, ldc: d)
        }
    }
}

/// Pre-LN Transformer block over [time, D]: x + attention(LN(x)), then x + MLP(LN(x)) with MLP = Linear(D→M), GELU or
/// ReLU, Linear(M→D). The sub-layers are ordinary layers whose parameters are consecutive views in the flat buffer.
public final class TransformerBlock: Layer {
    public let kind = "transformer_block"
    /// Model width D.
    public let dimensions: Int
    /// Hidden width M of the MLP.
    public let mlpDimensions: Int
    /// Whether the MLP uses GELU (else ReLU).
    public let usesGELU: Bool
    /// Attention heads.
    public var heads: Int { attention.heads }
    private let norm1: LayerNorm, attention: MultiHeadSelfAttention, norm2: LayerNorm
    private let expand: Linear, contract: Linear
    private var time = 0
    // Planned activations and gradient scratch, [batch, time, ·].
    private var normalized1 = FloatBuffer(count: 0), residual = FloatBuffer(count: 0)
    private var normalized2 = FloatBuffer(count: 0), expanded = FloatBuffer(count: 0), activated = FloatBuffer(count: 0)
    /// GELU's σ(2u) from the training forward pass, so backward needs no exp.
    private var gates = FloatBuffer(count: 0)
    private var wideGradient = FloatBuffer(count: 0), narrowGradient = FloatBuffer(count: 0), residualGradient = FloatBuffer(count: 0)

    /// A block of width `dimensions` with `heads` causal attention heads and an MLP of width `mlpDimensions`.
    public init(dimensions: Int, heads: Int, mlpDimensions: Int, gelu: Bool = true, causal: Bool = true) {
        self.dimensions = dimensions
        self.mlpDimensions = mlpDimensions
        self.usesGELU = gelu
        norm1 = LayerNorm(features: dimensions)
        attention = MultiHeadSelfAttention(dimensions: dimensions, heads: heads, causal: causal)
        norm2 = LayerNorm(features: dimensions)
        expand = Linear(inputDimensions: dimensions, outputDimensions: mlpDimensions,
                        initializer: .uniform(bound: 1 / Float(dimensions).squareRoot()))
        contract = Linear(inputDimensions: mlpDimensions, outputDimensions: dimensions,
                          initializer: .uniform(bound: 1 / Float(mlpDimensions).squareRoot()))
    }

    private var parts: [(String, Layer)] {
        [("ln1", norm1), ("attention", attention), ("ln2", norm2), ("mlp_in", expand), ("mlp_out", contract)]
    }

    public var parameterSpecs: [ParameterSpec] {
        parts.flatMap { prefix, layer in
            layer.parameterSpecs.map { ParameterSpec(name: "\(prefix).\($0.name)", shape: $0.shape, initializer: $0.initializer) }
        }
    }

    public func outputShape(inputShape: [Int]) throws -> [Int] {
        let shape = try sequenceShape(inputShape, layer: "transformer_block")
        guard shape.features == dimensions else {
            throw ShapeError("transformer_block of width \(dimensions) cannot take input \(inputShape)")
        }
        _ = try attention.outputShape(inputShape: inputShape)
        return inputShape
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>],
                     state: [UnsafeMutablePointer<Float>]) {
        var start = 0
        for (_, layer) in parts {
            let n = layer.parameterSpecs.count
            layer.bind(parameters: Array(parameters[start..<(start + n)]), gradients: Array(gradients[start..<(start + n)]), state: [])
            start += n
        }
    }

    public func plan(batchSize: Int, inputShape: [Int]) {
        time = inputShape[0]
        norm1.plan(batchSize: batchSize, inputShape: inputShape)
        attention.plan(batchSize: batchSize, inputShape: inputShape)
        norm2.plan(batchSize: batchSize, inputShape: inputShape)
        let narrow = batchSize * time * dimensions, wide = batchSize * time * mlpDimensions
        guard normalized1.count < narrow else { return }
        normalized1 = FloatBuffer(count: narrow); residual = FloatBuffer(count: narrow)
        normalized2 = FloatBuffer(count: narrow); expanded = FloatBuffer(count: wide); activated = FloatBuffer(count: wide)
        gates = FloatBuffer(count: usesGELU ? wide : 0)
        wideGradient = FloatBuffer(count: wide); narrowGradient = FloatBuffer(count: narrow); residualGradient = FloatBuffer(count: narrow)
    }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        let rows = batch * time, wide = rows * mlpDimensions
        norm1.forward(input: input, output: normalized1.pointer, batch: batch, context: context)
        // residual = x + attention(LN1(x)), x joining the attention's bias seed (no pass of its own)
        attention.forward(input: normalized1.pointer, output: residual.pointer, adding: input, batch: batch, context: context)
        norm2.forward(input: residual.pointer, output: normalized2.pointer, batch: batch, context: context)
        expand.forward(input: normalized2.pointer, output: expanded.pointer, batch: rows, context: context)
        if usesGELU {
            GELU.forward(expanded.pointer, activated.pointer, gates: context.training ? gates.pointer : nil, count: wide)
        } else {
            for i in 0..<wide { activated.pointer[i] = max(expanded.pointer[i], 0) }
        }
        // output = residual + MLP(LN2(residual)), the residual joining the bias seed
        contract.forward(input: activated.pointer, output: output, adding: residual.pointer, batch: rows, context: context)
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        let rows = batch * time, wide = rows * mlpDimensions
        // MLP branch, back to dL/d(LN2 output) in narrowGradient.
        contract.backward(input: activated.pointer, output: output, outputGradient: outputGradient,
                          inputGradient: wideGradient.pointer, batch: rows)
        if usesGELU {
            GELU.backward(expanded.pointer, wideGradient.pointer, wideGradient.pointer, gates: gates.pointer, count: wide)
        } else {
            for i in 0..<wide { wideGradient.pointer[i] *= expanded.pointer[i] > 0 ? 1 : 0 }
        }
        expand.backward(input: normalized2.pointer, output: expanded.pointer, outputGradient: wideGradient.pointer,
                        inputGradient: narrowGradient.pointer, batch: rows)
        // dL/dresidual = dy (skip path) + LN2 backward, added as LN2 backward writes.
        norm2.backward(input: residual.pointer, outputGradient: narrowGradient.pointer,
                       inputGradient: residualGradient.pointer, adding: outputGradient, batch: batch)
        // Attention branch, back to dL/d(LN1 output) in narrowGradient.
        attention.backward(input: normalized1.pointer, output: residual.pointer, outputGradient: residualGradient.pointer,
                           inputGradient: narrowGradient.pointer, batch: batch)
        // dL/dx = dL/dresidual (skip path) + LN1 backward.
        norm1.backward(input: input, outputGradient: narrowGradient.pointer, inputGradient: inputGradient,
                       adding: residualGradient.pointer, batch: batch)
    }
}
