import LockstepCore

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

// Recurrent layers over per-sample [time, features], memory [batch, time, features]. Each one projects the inputs of
// all time steps with a single GEMM, runs one small GEMM per step for the recurrence, and back-propagates through
// the whole sequence (full BPTT). Every step writes into planned [batch, time, ·] buffers: nothing is allocated.
// Gate layouts and initialization follow PyTorch (uniform ±1/√hidden), so weights can be compared with it.

@inline(__always) private func sigmoid(_ x: Float) -> Float {
    x >= 0 ? 1 / (1 + expf(-x)) : { let e = expf(x); return e / (1 + e) }()
}

/// Shared shapes, parameters and workspace for RNN, LSTM and GRU; `gates` is the number of H-wide blocks per step.
public class RecurrentLayer {
    /// Features per input step.
    public let inputFeatures: Int
    /// Hidden state width (also the output width per step).
    public let hidden: Int
    let gates: Int
    var time = 0
    var weightInput: UnsafeMutablePointer<Float>!, weightHidden: UnsafeMutablePointer<Float>!
    var weightInputGradient: UnsafeMutablePointer<Float>!, weightHiddenGradient: UnsafeMutablePointer<Float>!
    /// Previous hidden states, [batch, time, hidden] with step 0 all zeros (for the recurrent weight gradient).
    var previous = FloatBuffer(count: 0)
    /// dL/dh per step, [batch, time, hidden]: the output gradient plus what flows back from later steps.
    var hiddenGradient = FloatBuffer(count: 0)
    /// dL/d(pre-activation) of the input projection per step, [batch, time, gates·hidden].
    var projectionGradient = FloatBuffer(count: 0)

    init(inputFeatures: Int, hidden: Int, gates: Int) {
        precondition(inputFeatures > 0 && hidden > 0, "recurrent layers need positive input and hidden sizes")
        self.inputFeatures = inputFeatures
        self.hidden = hidden
        self.gates = gates
    }

    var bound: Initializer { .uniform(bound: 1 / Float(hidden).squareRoot()) }

    var weightSpecs: [ParameterSpec] {
        [ParameterSpec(name: "weight_ih", shape: [gates * hidden, inputFeatures], initializer: bound),
         ParameterSpec(name: "weight_hh", shape: [gates * hidden, hidden], initializer: bound)]
    }

    func checkedOutputShape(_ inputShape: [Int], kind: String) throws -> [Int] {
        let shape = try sequenceShape(inputShape, layer: kind)
        guard shape.features == inputFeatures else {
            throw ShapeError("\(kind) expects \(inputFeatures) features per step, receives \(inputShape)")
        }
        return [shape.time, hidden]
    }

    func bindWeights(_ parameters: [UnsafeMutablePointer<Float>], _ gradients: [UnsafeMutablePointer<Float>]) {
        weightInput = parameters[0]; weightHidden = parameters[1]
        weightInputGradient = gradients[0]; weightHiddenGradient = gradients[1]
    }

    /// Allocates the shared backward workspace; returns true when the sizes grew (subclasses then allocate theirs).
    func planShared(batchSize: Int, inputShape: [Int]) -> Bool {
        time = inputShape[0]
        let rows = batchSize * time
        guard previous.count < rows * hidden || projectionGradient.count < rows * gates * hidden else { return false }
        previous = FloatBuffer(count: rows * hidden)
        hiddenGradient = FloatBuffer(count: rows * hidden)
        projectionGradient = FloatBuffer(count: rows * gates * hidden)
        return true
    }

    /// projection[b, t, :] = input[b, t, :] · weight_ihᵀ for every step at once, plus `bias` when given.
    func projectInputs(_ input: UnsafePointer<Float>, into projection: UnsafeMutablePointer<Float>, batch: Int,
                       bias: UnsafePointer<Float>?) {
        let width = gates * hidden
        BLAS.gemm(transposeB: true, m: batch * time, n: width, k: inputFeatures, a: input, lda: inputFeatures,
                  b: weightInput, ldb: inputFeatures, c: projection, ldc: width)
        if let bias { Kernels.addRow(bias, to: projection, rows: batch * time, width: width) }
    }

    /// c[b, t, :] += h[b, t−1, :] · weight_hhᵀ for one step, reading the previous step from `output` (stride time·hidden).
    func addRecurrence(output: UnsafePointer<Float>, step t: Int, into c: UnsafeMutablePointer<Float>, batch: Int) {
        let width = gates * hidden
        BLAS.gemm(transposeB: true, m: batch, n: width, k: hidden, a: output + (t - 1) * hidden, lda: time * hidden,
                  b: weightHidden, ldb: hidden, beta: 1, c: c + t * width, ldc: time * width)
    }

    /// dh[b, t−1, :] += gradient[b, t, :] · weight_hh, the recurrent path back one step.
    func propagateBack(from gradient: UnsafePointer<Float>, step t: Int, batch: Int) {
        let width = gates * hidden
        BLAS.gemm(m: batch, n: hidden, k: width, a: gradient + t * width, lda: time * width, b: weightHidden, ldb: hidden,
                  beta: 1, c: hiddenGradient.pointer + (t - 1) * hidden, ldc: time * hidden)
    }

    /// Fills `previous` with the hidden states shifted one step later (zeros at step 0).
    func shiftHiddenStates(_ output: UnsafePointer<Float>, batch: Int) {
        let h = hidden, t = time
        for b in 0..<batch {
            let destination = previous.pointer + b * t * h
            destination.update(repeating: 0, count: h)
            if t > 1 { (destination + h).update(from: output + b * t * h, count: (t - 1) * h) }
        }
    }

    /// Weight gradients and dL/dinput from the per-step pre-activation gradients.
    ///
    /// `inputSide` multiplies the inputs (weight_ih, input gradient); `hiddenSide` multiplies h(t−1) (weight_hh).
    func finishBackward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, inputSide: UnsafePointer<Float>,
                        hiddenSide: UnsafePointer<Float>, inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        let width = gates * hidden, rows = batch * time
        shiftHiddenStates(output, batch: batch)
        // weight_ih gradient [G·H, F] += inputSideᵀ [G·H, rows] · input [rows, F]
        BLAS.gemm(transposeA: true, m: width, n: inputFeatures, k: rows, a: inputSide, lda: width, b: input, ldb: inputFeatures,
                  beta: 1, c: weightInputGradient, ldc: inputFeatures)
        // weight_hh gradient [G·H, H] += hiddenSideᵀ [G·H, rows] · previous [rows, H]
        BLAS.gemm(transposeA: true, m: width, n: hidden, k: rows, a: hiddenSide, lda: width, b: previous.pointer, ldb: hidden,
                  beta: 1, c: weightHiddenGradient, ldc: hidden)
        if let inputGradient {
            // dx [rows, F] = inputSide [rows, G·H] · weight_ih [G·H, F]
            BLAS.gemm(m: rows, n: inputFeatures, k: width, a: inputSide, lda: width, b: weightInput, ldb: inputFeatures,
                      c: inputGradient, ldc: inputFeatures)
        }
    }
}

/// Elman RNN: h_t = tanh(W_ih·x_t + W_hh·h_{t−1} + b); outputs h at every step, [time, hidden].
public final class RNN: RecurrentLayer, Layer {
    public let kind = "rnn"
    private var bias: UnsafeMutablePointer<Float>!, biasGradient: UnsafeMutablePointer<Float>!

    /// A tanh RNN from `inputFeatures` to `hidden` units.
    public init(inputFeatures: Int, hidden: Int) { super.init(inputFeatures: inputFeatures, hidden: hidden, gates: 1) }

    public var parameterSpecs: [ParameterSpec] { weightSpecs + [ParameterSpec(name: "bias", shape: [hidden], initializer: bound)] }
    public func outputShape(inputShape: [Int]) throws -> [Int] { try checkedOutputShape(inputShape, kind: kind) }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>],
                     state: [UnsafeMutablePointer<Float>]) {
        bindWeights(parameters, gradients)
        bias = parameters[2]; biasGradient = gradients[2]
    }

    public func plan(batchSize: Int, inputShape: [Int]) { _ = planShared(batchSize: batchSize, inputShape: inputShape) }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        // The pre-activations are built in `output` and squashed in place; backward only needs tanh's output.
        projectInputs(input, into: output, batch: batch, bias: bias)
        let h = hidden, t = time
        for step in 0..<t {
            if step > 0 { addRecurrence(output: output, step: step, into: output, batch: batch) }
            for b in 0..<batch {
                let row = output + (b * t + step) * h
                for j in 0..<h { row[j] = tanhf(row[j]) }
            }
        }
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        let h = hidden, t = time
        let dh = hiddenGradient.pointer, dPre = projectionGradient.pointer
        dh.update(from: outputGradient, count: batch * t * h)
        for step in stride(from: t - 1, through: 0, by: -1) {
            for b in 0..<batch {
                let offset = (b * t + step) * h
                for j in 0..<h { let y = output[offset + j]; dPre[offset + j] = dh[offset + j] * (1 - y * y) }
            }
            if step > 0 { propagateBack(from: dPre, step: step, batch: batch) }
        }
        Kernels.sumRows(dPre, into: biasGradient, rows: batch * t, width: h)
        finishBackward(input: input, output: output, inputSide: dPre, hiddenSide: dPre, inputGradient: inputGradient, batch: batch)
    }
}

/// LSTM with PyTorch's gate order (input, forget, cell, output); outputs h at every step, [time, hidden].
public final class LSTM: RecurrentLayer, Layer {
    public let kind = "lstm"
    private var bias: UnsafeMutablePointer<Float>!, biasGradient: UnsafeMutablePointer<Float>!
    /// Activated gates i, f, g, o per step, [batch, time, 4·hidden].
    private var gateValues = FloatBuffer(count: 0)
    /// Cell states, [batch, time, hidden].
    private var cells = FloatBuffer(count: 0)
    /// dL/dc flowing from step t+1 to step t, [batch, hidden].
    private var cellCarry = FloatBuffer(count: 0)

    /// An LSTM from `inputFeatures` to `hidden` units.
    public init(inputFeatures: Int, hidden: Int) { super.init(inputFeatures: inputFeatures, hidden: hidden, gates: 4) }

    /// One bias per gate unit (PyTorch's b_ih + b_hh folded into one, which is the same function).
    public var parameterSpecs: [ParameterSpec] { weightSpecs + [ParameterSpec(name: "bias", shape: [4 * hidden], initializer: bound)] }
    public func outputShape(inputShape: [Int]) throws -> [Int] { try checkedOutputShape(inputShape, kind: kind) }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>],
                     state: [UnsafeMutablePointer<Float>]) {
        bindWeights(parameters, gradients)
        bias = parameters[2]; biasGradient = gradients[2]
    }

    public func plan(batchSize: Int, inputShape: [Int]) {
        guard planShared(batchSize: batchSize, inputShape: inputShape) else { return }
        let rows = batchSize * time
        gateValues = FloatBuffer(count: rows * 4 * hidden)
        cells = FloatBuffer(count: rows * hidden)
        cellCarry = FloatBuffer(count: batchSize * hidden)
    }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        let h = hidden, t = time, width = 4 * hidden
        let g = gateValues.pointer, c = cells.pointer
        projectInputs(input, into: g, batch: batch, bias: bias)
        for step in 0..<t {
            if step > 0 { addRecurrence(output: output, step: step, into: g, batch: batch) }
            for b in 0..<batch {
                let row = b * t + step
                let gate = g + row * width, cell = c + row * h, out = output + row * h
                for j in 0..<h {
                    let i = sigmoid(gate[j]), f = sigmoid(gate[h + j]), candidate = tanhf(gate[2 * h + j]), o = sigmoid(gate[3 * h + j])
                    gate[j] = i; gate[h + j] = f; gate[2 * h + j] = candidate; gate[3 * h + j] = o
                    let previousCell: Float = step > 0 ? cell[j - h] : 0
                    let value = f * previousCell + i * candidate
                    cell[j] = value
                    out[j] = o * tanhf(value)
                }
            }
        }
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        let h = hidden, t = time, width = 4 * hidden
        let g = gateValues.pointer, c = cells.pointer, dh = hiddenGradient.pointer, dGate = projectionGradient.pointer
        let carry = cellCarry.pointer
        dh.update(from: outputGradient, count: batch * t * h)
        carry.update(repeating: 0, count: batch * h)
        for step in stride(from: t - 1, through: 0, by: -1) {
            for b in 0..<batch {
                let row = b * t + step
                let gate = g + row * width, cell = c + row * h, dGateRow = dGate + row * width
                let dhRow = dh + row * h, dc = carry + b * h
                for j in 0..<h {
                    let i = gate[j], f = gate[h + j], candidate = gate[2 * h + j], o = gate[3 * h + j]
                    let squashed = tanhf(cell[j])
                    let previousCell: Float = step > 0 ? cell[j - h] : 0
                    let cellGradient = dc[j] + dhRow[j] * o * (1 - squashed * squashed)
                    dc[j] = cellGradient * f
                    // Pre-activation gradients through σ' = s(1 − s) and tanh' = 1 − g².
                    dGateRow[j] = cellGradient * candidate * i * (1 - i)
                    dGateRow[h + j] = cellGradient * previousCell * f * (1 - f)
                    dGateRow[2 * h + j] = cellGradient * i * (1 - candidate * candidate)
                    dGateRow[3 * h + j] = dhRow[j] * squashed * o * (1 - o)
                }
            }
            if step > 0 { propagateBack(from: dGate, step: step, batch: batch) }
        }
        Kernels.sumRows(dGate, into: biasGradient, rows: batch * t, width: width)
        finishBackward(input: input, output: output, inputSide: dGate, hiddenSide: dGate, inputGradient: inputGradient, batch: batch)
    }
}

/// GRU with PyTorch's equations and gate order (reset, update, new):
/// r = σ(W_ir x + b_ir + W_hr h + b_hr), z = σ(…), n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h.
public final class GRU: RecurrentLayer, Layer {
    public let kind = "gru"
    private var biasInput: UnsafeMutablePointer<Float>!, biasHidden: UnsafeMutablePointer<Float>!
    private var biasInputGradient: UnsafeMutablePointer<Float>!, biasHiddenGradient: UnsafeMutablePointer<Float>!
    /// Activated r, z, n per step, [batch, time, 3·hidden] (built from the input projection in place).
    private var gateValues = FloatBuffer(count: 0)
    /// Hidden projections W_hh·h + b_hh per step, [batch, time, 3·hidden] (the n block is needed in backward).
    private var hiddenProjection = FloatBuffer(count: 0)
    /// dL/d(hidden projection) per step, [batch, time, 3·hidden].
    private var hiddenProjectionGradient = FloatBuffer(count: 0)

    /// A GRU from `inputFeatures` to `hidden` units.
    public init(inputFeatures: Int, hidden: Int) { super.init(inputFeatures: inputFeatures, hidden: hidden, gates: 3) }

    /// Separate input and hidden biases: b_hn sits inside r ⊙ (…), so the two cannot be folded.
    public var parameterSpecs: [ParameterSpec] {
        weightSpecs + [ParameterSpec(name: "bias_ih", shape: [3 * hidden], initializer: bound),
                       ParameterSpec(name: "bias_hh", shape: [3 * hidden], initializer: bound)]
    }
    public func outputShape(inputShape: [Int]) throws -> [Int] { try checkedOutputShape(inputShape, kind: kind) }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>],
                     state: [UnsafeMutablePointer<Float>]) {
        bindWeights(parameters, gradients)
        biasInput = parameters[2]; biasHidden = parameters[3]
        biasInputGradient = gradients[2]; biasHiddenGradient = gradients[3]
    }

    public func plan(batchSize: Int, inputShape: [Int]) {
        guard planShared(batchSize: batchSize, inputShape: inputShape) else { return }
        let count = batchSize * time * 3 * hidden
        gateValues = FloatBuffer(count: count)
        hiddenProjection = FloatBuffer(count: count)
        hiddenProjectionGradient = FloatBuffer(count: count)
    }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        let h = hidden, t = time, width = 3 * hidden
        let g = gateValues.pointer, hp = hiddenProjection.pointer
        projectInputs(input, into: g, batch: batch, bias: biasInput)
        for step in 0..<t {
            for b in 0..<batch { (hp + (b * t + step) * width).update(from: biasHidden, count: width) }
            if step > 0 { addRecurrence(output: output, step: step, into: hp, batch: batch) }
            for b in 0..<batch {
                let row = b * t + step
                let gate = g + row * width, projection = hp + row * width, out = output + row * h
                for j in 0..<h {
                    let r = sigmoid(gate[j] + projection[j])
                    let z = sigmoid(gate[h + j] + projection[h + j])
                    let n = tanhf(gate[2 * h + j] + r * projection[2 * h + j])
                    gate[j] = r; gate[h + j] = z; gate[2 * h + j] = n
                    let previousHidden: Float = step > 0 ? out[j - h] : 0
                    out[j] = (1 - z) * n + z * previousHidden
                }
            }
        }
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        let h = hidden, t = time, width = 3 * hidden
        let g = gateValues.pointer, hp = hiddenProjection.pointer, dh = hiddenGradient.pointer
        let dInput = projectionGradient.pointer, dHidden = hiddenProjectionGradient.pointer
        dh.update(from: outputGradient, count: batch * t * h)
        for step in stride(from: t - 1, through: 0, by: -1) {
            for b in 0..<batch {
                let row = b * t + step
                let gate = g + row * width, projection = hp + row * width, out = output + row * h
                let dx = dInput + row * width, dp = dHidden + row * width, dhRow = dh + row * h
                for j in 0..<h {
                    let r = gate[j], z = gate[h + j], n = gate[2 * h + j]
                    let previousHidden: Float = step > 0 ? out[j - h] : 0
                    let d = dhRow[j]
                    let dn = d * (1 - z) * (1 - n * n)
                    let dr = dn * projection[2 * h + j] * r * (1 - r)
                    let dz = d * (previousHidden - n) * z * (1 - z)
                    dx[j] = dr; dx[h + j] = dz; dx[2 * h + j] = dn
                    dp[j] = dr; dp[h + j] = dz; dp[2 * h + j] = dn * r
                    // The direct path z ⊙ h(t−1).
                    if step > 0 { dhRow[j - h] += d * z }
                }
            }
            if step > 0 { propagateBack(from: dHidden, step: step, batch: batch) }
        }
        Kernels.sumRows(dInput, into: biasInputGradient, rows: batch * t, width: width)
        Kernels.sumRows(dHidden, into: biasHiddenGradient, rows: batch * t, width: width)
        finishBackward(input: input, output: output, inputSide: dInput, hiddenSide: dHidden, inputGradient: inputGradient, batch: batch)
    }
}
