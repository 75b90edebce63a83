import LockstepCore

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
        for i in 0..<count { inputGradient[i] = output[i] > 0 ? outputGradient[i] : 0 }
    }
    private var width = 0
    public func plan(batchSize: Int, inputShape: [Int]) { width = inputShape.reduce(1, *) }
}
