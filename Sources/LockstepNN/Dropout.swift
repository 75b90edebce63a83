import LockstepCore

/// Inverted dropout: in training each element is zeroed with `probability` and survivors are scaled by
/// 1 / (1 − probability), so evaluation is the identity.
public final class Dropout: Layer {
    public let kind = "dropout"
    /// Chance that an element is dropped in training.
    public let probability: Float

    private var width = 0
    /// Per element, 0 or 1/(1 − p) from the last training forward (planned workspace).
    private var mask = FloatBuffer(count: 0)
    /// Whether the last forward applied a mask, so backward matches it.
    private var maskApplied = false

    /// Creates the layer; `probability` must be in [0, 1).
    public init(probability: Float = 0.5) {
        precondition(probability >= 0 && probability < 1, "dropout probability must be in [0, 1), got \(probability)")
        self.probability = probability
    }

    public func outputShape(inputShape: [Int]) throws -> [Int] { inputShape }

    public func plan(batchSize: Int, inputShape: [Int]) {
        width = inputShape.reduce(1, *)
        if batchSize * width > mask.count { mask = FloatBuffer(count: batchSize * width) }
    }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        let count = batch * width
        maskApplied = context.training && probability > 0
        guard maskApplied else {
            output.update(from: input, count: count)
            return
        }
        // The stream comes from the context (split per step and layer), so every rank and every rerun draws the same mask.
        var rng = context.rng
        let keepScale = 1 / (1 - probability)
        let p = probability
        let m = mask.pointer
        for i in 0..<count { m[i] = rng.uniform() < p ? 0 : keepScale }
        for i in 0..<count { output[i] = input[i] * m[i] }
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        guard let inputGradient else { return }
        let count = batch * width
        guard maskApplied else {
            inputGradient.update(from: outputGradient, count: count)
            return
        }
        let m = mask.pointer
        for i in 0..<count { inputGradient[i] = outputGradient[i] * m[i] }
    }
}
