import LockstepCore

/// Collapses each sample to one dimension ([channels, height, width] → [channels·height·width]).
///
/// Memory is already row-major per sample, so forward and backward are plain copies; they exist only because
/// `Sequential` gives every layer its own output buffer.
public final class Flatten: Layer {
    public let kind = "flatten"
    private var width = 0

    /// Creates the layer.
    public init() {}

    public func outputShape(inputShape: [Int]) throws -> [Int] { [inputShape.reduce(1, *)] }
    public func plan(batchSize: Int, inputShape: [Int]) { width = inputShape.reduce(1, *) }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        output.update(from: input, count: batch * width)
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        inputGradient?.update(from: outputGradient, count: batch * width)
    }
}

/// A per-sample image shape [channels, height, width] (NCHW without the batch).
struct ImageShape: Equatable {
    var channels: Int
    var height: Int
    var width: Int

    /// Elements per sample.
    var count: Int { channels * height * width }
    /// Elements per channel plane.
    var planeCount: Int { height * width }
    /// As a shape array.
    var dimensions: [Int] { [channels, height, width] }

    init(channels: Int, height: Int, width: Int) {
        self.channels = channels; self.height = height; self.width = width
    }

    /// Validates a [channels, height, width] shape; `layer` names the caller in the error.
    init(_ shape: [Int], layer: String) throws {
        guard shape.count == 3, shape.allSatisfy({ $0 > 0 }) else {
            throw ShapeError("\(layer) needs a positive [channels, height, width] input per sample, receives \(shape)")
        }
        self.init(channels: shape[0], height: shape[1], width: shape[2])
    }

    /// Output size of a sliding window along one axis, or nil when the window never fits.
    static func slidingCount(input: Int, kernel: Int, stride: Int, padding: Int) -> Int? {
        let span = input + 2 * padding - kernel
        guard span >= 0, stride > 0 else { return nil }
        return span / stride + 1
    }
}
