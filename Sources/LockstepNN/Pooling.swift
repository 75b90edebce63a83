import LockstepCore

/// Maximum over sliding windows of each channel (no padding); remembers the winner of every window for backward.
public final class MaxPool2D: Layer {
    public let kind = "maxpool2d"
    /// Window (height, width).
    public let kernelSize: (height: Int, width: Int)
    /// Step between windows (height, width).
    public let stride: (height: Int, width: Int)

    private var inputImage = ImageShape(channels: 0, height: 0, width: 0)
    private var outputImage = ImageShape(channels: 0, height: 0, width: 0)
    /// Per output element, the index inside its sample of the input element that won (planned workspace).
    private var argmax: UnsafeMutablePointer<Int32>?
    private var argmaxCapacity = 0

    /// A max pool with window `kernelSize` and step `stride` (PyTorch's default stride is the kernel size).
    public init(kernelSize: (Int, Int), stride: (Int, Int)? = nil) {
        self.kernelSize = (kernelSize.0, kernelSize.1)
        let step = stride ?? kernelSize
        self.stride = (step.0, step.1)
    }

    /// A max pool with a square window and square step (default: the window size).
    public convenience init(kernelSize: Int, stride: Int? = nil) {
        self.init(kernelSize: (kernelSize, kernelSize), stride: stride.map { ($0, $0) })
    }

    deinit { argmax?.deallocate() }

    public func outputShape(inputShape: [Int]) throws -> [Int] {
        try poolOutputShape(inputShape, kernel: kernelSize, stride: stride, layer: kind).dimensions
    }

    public func plan(batchSize: Int, inputShape: [Int]) {
        inputImage = try! ImageShape(inputShape, layer: kind)
        outputImage = try! poolOutputShape(inputShape, kernel: kernelSize, stride: stride, layer: kind)
        let needed = batchSize * outputImage.count
        if needed > argmaxCapacity {
            argmax?.deallocate()
            argmax = .allocate(capacity: max(needed, 1))
            argmaxCapacity = needed
        }
    }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        pool(input: input, output: output, batch: batch, rectify: false, training: context.training)
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        guard let inputGradient else { return }
        scatter(output: output, outputGradient: outputGradient, into: inputGradient, batch: batch, rectified: false)
    }

    /// ReLU followed by this pool, computed from the ReLU's input: max(0, ·) is monotone, so it commutes with the
    /// window maximum, and the pair never writes or reads the full-size ReLU output (`Sequential` fuses the two).
    /// Same outputs as `ReLU` then `forward`; the winners differ only in windows whose output is 0, whose gradient
    /// is 0 either way.
    public func forwardRectified(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        pool(input: input, output: output, batch: batch, rectify: true, training: context.training)
    }

    /// Backward of `forwardRectified`: writes the gradient with respect to the ReLU's input (each window's
    /// gradient goes to its winner where the output is positive), as `backward` then `ReLU.backward` would.
    public func backwardRectified(output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                                  inputGradient: UnsafeMutablePointer<Float>, batch: Int) {
        scatter(output: output, outputGradient: outputGradient, into: inputGradient, batch: batch, rectified: true)
    }

    /// Window maxima, clamped at 0 when `rectify`; records the winners only in training (evaluation never runs
    /// backward, so it does not pay for them).
    private func pool(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, rectify: Bool, training: Bool) {
        let i = inputImage, o = outputImage, (kH, kW) = kernelSize, (sH, sW) = stride
        if evenTwoByTwo {
            Kernels.maxPool2x2(input, planes: batch * i.channels, height: i.height, width: i.width, channels: i.channels,
                               into: output, winners: training ? argmax : nil, rectify: rectify)
            return
        }
        if kH == 2 && kW == 2 && sH == 2 && sW == 2 {
            if training {
                forward2x2(input: input, output: output, batch: batch, rectify: rectify)
            } else {
                forward2x2Evaluation(input: input, output: output, batch: batch, rectify: rectify)
            }
            return
        }
        let argmax = self.argmax!
        for b in 0..<batch {
            for c in 0..<i.channels {
                let planeOffset = c * i.planeCount
                let x = input + b * i.count + planeOffset
                let outputBase = b * o.count + c * o.planeCount
                for oh in 0..<o.height {
                    for ow in 0..<o.width {
                        let top = oh * sH, left = ow * sW
                        var best = top * i.width + left
                        var bestValue = x[best]
                        for kh in 0..<kH {
                            let rowStart = (top + kh) * i.width + left
                            for kw in 0..<kW where x[rowStart + kw] > bestValue {
                                bestValue = x[rowStart + kw]; best = rowStart + kw
                            }
                        }
                        // max(x, 0) as ReLU computes it, so a NaN passes through the same way.
                        output[outputBase + oh * o.width + ow] = rectify ? max(bestValue, 0) : bestValue
                        if training { argmax[outputBase + oh * o.width + ow] = Int32(planeOffset + best) }
                    }
                }
            }
        }
    }

    /// 2x2 windows at stride 2 tiling an even-sized plane: CKernels' vector pooling (16 windows per step, no
    /// clearing pass in backward: every input belongs to exactly one window).
    private var evenTwoByTwo: Bool {
        kernelSize == (2, 2) && stride == (2, 2) && inputImage.height % 2 == 0 && inputImage.width % 2 == 0
    }

    /// The common 2x2 / stride 2 window on odd sizes, unrolled; same first-maximum tie rule as the general loop.
    private func forward2x2(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, rectify: Bool) {
        let i = inputImage, o = outputImage
        let argmax = self.argmax!
        for plane in 0..<(batch * i.channels) {
            let x = input + plane * i.planeCount
            let y = output + plane * o.planeCount
            let winners = argmax + plane * o.planeCount
            let planeOffset = Int32((plane % i.channels) * i.planeCount)
            for oh in 0..<o.height {
                let top = 2 * oh * i.width
                for ow in 0..<o.width {
                    let a = top + 2 * ow, c = a + i.width
                    var best = a, value = x[a]
                    if x[a + 1] > value { best = a + 1; value = x[a + 1] }
                    if x[c] > value { best = c; value = x[c] }
                    if x[c + 1] > value { best = c + 1; value = x[c + 1] }
                    y[oh * o.width + ow] = rectify ? max(value, 0) : value
                    winners[oh * o.width + ow] = planeOffset + Int32(best)
                }
            }
        }
    }

    /// `forward2x2` without the winners.
    private func forward2x2Evaluation(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, rectify: Bool) {
        let i = inputImage, o = outputImage
        for plane in 0..<(batch * i.channels) {
            let x = input + plane * i.planeCount
            let y = output + plane * o.planeCount
            for oh in 0..<o.height {
                let top = 2 * oh * i.width
                for ow in 0..<o.width {
                    let a = top + 2 * ow, c = a + i.width
                    var value = x[a]
                    if x[a + 1] > value { value = x[a + 1] }
                    if x[c] > value { value = x[c] }
                    if x[c + 1] > value { value = x[c + 1] }
                    y[oh * o.width + ow] = rectify ? max(value, 0) : value
                }
            }
        }
    }

    /// Sends each window's gradient to its winner (zero where `rectified` and the output is not positive).
    private func scatter(output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         into inputGradient: UnsafeMutablePointer<Float>, batch: Int, rectified: Bool) {
        let i = inputImage, o = outputImage
        let argmax = self.argmax!
        if evenTwoByTwo {
            Kernels.maxPool2x2Backward(output: output, outputGradient: outputGradient, winners: argmax,
                                       planes: batch * i.channels, height: i.height, width: i.width, channels: i.channels,
                                       into: inputGradient, rectified: rectified)
            return
        }
        // Scalar fallback (odd sizes, other windows): zeroing first and then adding at the winners measured faster
        // than writing every element once with scalar stores (memset's string stores avoid reading the target into
        // cache); the even 2x2 kernel above writes whole vectors instead.
        inputGradient.update(repeating: 0, count: batch * i.count)
        // Accumulate: with stride < kernel one input can win several windows.
        for b in 0..<batch {
            let dx = inputGradient + b * i.count
            let base = b * o.count
            // A select, not a branch: the outputs' signs are unpredictable.
            for j in 0..<o.count {
                dx[Int(argmax[base + j])] += rectified && !(output[base + j] > 0) ? 0 : outputGradient[base + j]
            }
        }
    }
}

/// Mean over sliding windows of each channel (no padding).
public final class AvgPool2D: Layer {
    public let kind = "avgpool2d"
    /// Window (height, width).
    public let kernelSize: (height: Int, width: Int)
    /// Step between windows (height, width).
    public let stride: (height: Int, width: Int)

    private var inputImage = ImageShape(channels: 0, height: 0, width: 0)
    private var outputImage = ImageShape(channels: 0, height: 0, width: 0)

    /// An average pool with window `kernelSize` and step `stride` (default: the window size).
    public init(kernelSize: (Int, Int), stride: (Int, Int)? = nil) {
        self.kernelSize = (kernelSize.0, kernelSize.1)
        let step = stride ?? kernelSize
        self.stride = (step.0, step.1)
    }

    /// An average pool with a square window and square step (default: the window size).
    public convenience init(kernelSize: Int, stride: Int? = nil) {
        self.init(kernelSize: (kernelSize, kernelSize), stride: stride.map { ($0, $0) })
    }

    public func outputShape(inputShape: [Int]) throws -> [Int] {
        try poolOutputShape(inputShape, kernel: kernelSize, stride: stride, layer: kind).dimensions
    }

    public func plan(batchSize: Int, inputShape: [Int]) {
        inputImage = try! ImageShape(inputShape, layer: kind)
        outputImage = try! poolOutputShape(inputShape, kernel: kernelSize, stride: stride, layer: kind)
    }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        let i = inputImage, o = outputImage, (kH, kW) = kernelSize, (sH, sW) = stride
        let scale = 1 / Float(kH * kW)
        for plane in 0..<(batch * i.channels) {
            let x = input + plane * i.planeCount
            let y = output + plane * o.planeCount
            for oh in 0..<o.height {
                for ow in 0..<o.width {
                    var sum: Float = 0
                    for kh in 0..<kH {
                        let row = x + (oh * sH + kh) * i.width + ow * sW
                        for kw in 0..<kW { sum += row[kw] }
                    }
                    y[oh * o.width + ow] = sum * scale
                }
            }
        }
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        guard let inputGradient else { return }
        let i = inputImage, o = outputImage, (kH, kW) = kernelSize, (sH, sW) = stride
        let scale = 1 / Float(kH * kW)
        inputGradient.update(repeating: 0, count: batch * i.count)
        for plane in 0..<(batch * i.channels) {
            let dx = inputGradient + plane * i.planeCount
            let dy = outputGradient + plane * o.planeCount
            for oh in 0..<o.height {
                for ow in 0..<o.width {
                    let share = dy[oh * o.width + ow] * scale
                    for kh in 0..<kH {
                        let row = dx + (oh * sH + kh) * i.width + ow * sW
                        for kw in 0..<kW { row[kw] += share }
                    }
                }
            }
        }
    }
}

/// Output image of a pooling window over `shape`, or a ShapeError naming the layer.
func poolOutputShape(_ shape: [Int], kernel: (height: Int, width: Int), stride: (height: Int, width: Int),
                     layer: String) throws -> ImageShape {
    let image = try ImageShape(shape, layer: layer)
    guard kernel.height > 0, kernel.width > 0, stride.height > 0, stride.width > 0 else {
        throw ShapeError("\(layer) needs a positive kernel and stride, has kernel \(kernel) and stride \(stride)")
    }
    guard let height = ImageShape.slidingCount(input: image.height, kernel: kernel.height, stride: stride.height, padding: 0),
          let width = ImageShape.slidingCount(input: image.width, kernel: kernel.width, stride: stride.width, padding: 0) else {
        throw ShapeError("\(layer) kernel \(kernel.height)x\(kernel.width) does not fit in the \(image.height)x\(image.width) input \(shape)")
    }
    return ImageShape(channels: image.channels, height: height, width: width)
}
