import LockstepCore

/// 2-D convolution (cross-correlation, as in PyTorch) over [channels, height, width] samples, by im2col + GEMM.
///
/// Weight is [outputChannels, inputChannels, kernelHeight, kernelWidth], bias [outputChannels]. The im2col
/// columns of the whole batch are kept from forward to backward (one planned workspace), and backward reuses the
/// same workspace for the column gradient before col2im.
///
/// One GEMM per sample, not one batch-wide GEMM over [patchSize, batch·pixels] columns: on the fashion-cnn layers at
/// batch 64 the batch-wide form was never faster (it also needs a staging buffer and two NCHW permutes).
public final class Conv2D: Layer {
    public let kind = "conv2d"
    /// Channels per input sample.
    public let inputChannels: Int
    /// Channels per output sample (number of filters).
    public let outputChannels: Int
    /// Filter (height, width).
    public let kernelSize: (height: Int, width: Int)
    /// Step between filter positions (height, width).
    public let stride: (height: Int, width: Int)
    /// Zero padding added on each side (height, width).
    public let padding: (height: Int, width: Int)
    /// Whether a per-channel bias is added.
    public let hasBias: Bool
    /// Weight initializer.
    public let weightInitializer: Initializer

    private var weight: UnsafeMutablePointer<Float>!
    private var bias: UnsafeMutablePointer<Float>?
    private var weightGradient: UnsafeMutablePointer<Float>!
    private var biasGradient: UnsafeMutablePointer<Float>?

    private var inputImage = ImageShape(channels: 0, height: 0, width: 0)
    private var outputImage = ImageShape(channels: 0, height: 0, width: 0)
    /// im2col columns: per sample a [patchSize, outputPixels] matrix, samples back to back.
    private var columns = FloatBuffer(count: 0)

    /// A convolution; the weight initializer defaults to He with fan-in inputChannels·kernelHeight·kernelWidth.
    public init(inputChannels: Int, outputChannels: Int, kernelSize: (Int, Int), stride: (Int, Int) = (1, 1),
                padding: (Int, Int) = (0, 0), bias: Bool = true, initializer: Initializer? = nil) {
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.kernelSize = (kernelSize.0, kernelSize.1)
        self.stride = (stride.0, stride.1)
        self.padding = (padding.0, padding.1)
        self.hasBias = bias
        self.weightInitializer = initializer ?? .he(fanIn: inputChannels * kernelSize.0 * kernelSize.1)
    }

    /// A convolution with a square kernel, stride and padding.
    public convenience init(inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                            bias: Bool = true, initializer: Initializer? = nil) {
        self.init(inputChannels: inputChannels, outputChannels: outputChannels, kernelSize: (kernelSize, kernelSize),
                  stride: (stride, stride), padding: (padding, padding), bias: bias, initializer: initializer)
    }

    /// Rows of the column matrix: inputChannels·kernelHeight·kernelWidth.
    private var patchSize: Int { inputChannels * kernelSize.height * kernelSize.width }

    public var parameterSpecs: [ParameterSpec] {
        var specs = [ParameterSpec(name: "weight", shape: [outputChannels, inputChannels, kernelSize.height, kernelSize.width],
                                   initializer: weightInitializer)]
        if hasBias { specs.append(ParameterSpec(name: "bias", shape: [outputChannels], initializer: .zeros)) }
        return specs
    }

    public func outputShape(inputShape: [Int]) throws -> [Int] { try outputImage(for: inputShape).dimensions }

    private func outputImage(for inputShape: [Int]) throws -> ImageShape {
        let image = try ImageShape(inputShape, layer: kind)
        guard image.channels == inputChannels else {
            throw ShapeError("conv2d expects \(inputChannels) input channels but receives shape \(inputShape) (\(image.channels) channels)")
        }
        guard inputChannels > 0, outputChannels > 0, kernelSize.height > 0, kernelSize.width > 0,
              stride.height > 0, stride.width > 0, padding.height >= 0, padding.width >= 0 else {
            throw ShapeError("conv2d needs positive channels, kernel and stride and non-negative padding, has kernel \(kernelSize), stride \(stride), padding \(padding)")
        }
        guard let height = ImageShape.slidingCount(input: image.height, kernel: kernelSize.height, stride: stride.height, padding: padding.height),
              let width = ImageShape.slidingCount(input: image.width, kernel: kernelSize.width, stride: stride.width, padding: padding.width) else {
            throw ShapeError("conv2d kernel \(kernelSize.height)x\(kernelSize.width) with padding \(padding) does not fit in the \(image.height)x\(image.width) input \(inputShape)")
        }
        return ImageShape(channels: outputChannels, height: height, width: width)
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>],
                     state: [UnsafeMutablePointer<Float>]) {
        weight = parameters[0]; weightGradient = gradients[0]
        if hasBias { bias = parameters[1]; biasGradient = gradients[1] }
    }

    public func plan(batchSize: Int, inputShape: [Int]) {
        inputImage = try! ImageShape(inputShape, layer: kind)
        outputImage = try! outputImage(for: inputShape)
        let needed = batchSize * patchSize * outputImage.planeCount
        if needed > columns.count { columns = FloatBuffer(count: needed) }
    }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        let k = patchSize, pixels = outputImage.planeCount, outputCount = outputImage.count
        for b in 0..<batch {
            let sampleColumns = columns.pointer + b * k * pixels
            im2col(input + b * inputImage.count, into: sampleColumns)
            let y = output + b * outputCount
            // Seed the output with the bias so the GEMM adds into it (beta = 1) instead of a second pass.
            if let bias {
                for o in 0..<outputChannels { (y + o * pixels).update(repeating: bias[o], count: pixels) }
            }
            // y[outC, pixels] (+)= weight[outC, k] · columns[k, pixels]
            BLAS.gemm(m: outputChannels, n: pixels, k: k, a: weight, lda: k, b: sampleColumns, ldb: pixels,
                      beta: bias == nil ? 0 : 1, c: y, ldc: pixels)
        }
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        let k = patchSize, pixels = outputImage.planeCount, outputCount = outputImage.count
        if let biasGradient {
            for b in 0..<batch {
                for o in 0..<outputChannels {
                    let dy = outputGradient + b * outputCount + o * pixels
                    var sum: Float = 0
                    for p in 0..<pixels { sum += dy[p] }
                    biasGradient[o] += sum
                }
            }
        }
        for b in 0..<batch {
            let sampleColumns = columns.pointer + b * k * pixels
            let dy = outputGradient + b * outputCount
            // weightGradient[outC, k] += dy[outC, pixels] · columnsᵀ[pixels, k]
            BLAS.gemm(transposeB: true, m: outputChannels, n: k, k: pixels, a: dy, lda: pixels, b: sampleColumns, ldb: pixels,
                      beta: 1, c: weightGradient, ldc: k)
            guard let inputGradient else { continue }
            // columnGradient[k, pixels] = weightᵀ[k, outC] · dy[outC, pixels], written over this sample's columns
            // (no longer needed once its weight gradient is in).
            BLAS.gemm(transposeA: true, m: k, n: pixels, k: outputChannels, a: weight, lda: k, b: dy, ldb: pixels,
                      c: sampleColumns, ldc: pixels)
            col2im(sampleColumns, into: inputGradient + b * inputImage.count)
        }
    }

    /// Valid output columns [start, end) for kernel column `kw`: those whose input column lies inside the image.
    @inline(__always)
    private func validRange(offset: Int, padding: Int, stride: Int, inputLength: Int, outputLength: Int) -> Range<Int> {
        // input index = out·stride − padding + offset must be in [0, inputLength).
        let low = padding - offset
        let start = low > 0 ? (low + stride - 1) / stride : 0
        let high = inputLength - 1 + padding - offset
        let end = high < 0 ? 0 : min(outputLength, high / stride + 1)
        return min(start, end)..<end
    }

    /// Writes one sample's [patchSize, outputPixels] column matrix; padded positions become 0.
    private func im2col(_ x: UnsafePointer<Float>, into columns: UnsafeMutablePointer<Float>) {
        let i = inputImage, o = outputImage, (kH, kW) = kernelSize, (sH, sW) = stride, (pH, pW) = padding
        var row = columns
        for c in 0..<i.channels {
            let plane = x + c * i.planeCount
            for kh in 0..<kH {
                let rows = validRange(offset: kh, padding: pH, stride: sH, inputLength: i.height, outputLength: o.height)
                for kw in 0..<kW {
                    let cols = validRange(offset: kw, padding: pW, stride: sW, inputLength: i.width, outputLength: o.width)
                    row.update(repeating: 0, count: rows.lowerBound * o.width)
                    for oh in rows {
                        let destination = row + oh * o.width
                        let source = plane + (oh * sH - pH + kh) * i.width - pW + kw
                        destination.update(repeating: 0, count: cols.lowerBound)
                        if sW == 1 {
                            (destination + cols.lowerBound).update(from: source + cols.lowerBound, count: cols.count)
                        } else {
                            for ow in cols { destination[ow] = source[ow * sW] }
                        }
                        (destination + cols.upperBound).update(repeating: 0, count: o.width - cols.upperBound)
                    }
                    (row + rows.upperBound * o.width).update(repeating: 0, count: (o.height - rows.upperBound) * o.width)
                    row += o.planeCount
                }
            }
        }
    }

    /// Sums one sample's column gradient back into image layout (overwrites `dx`); the adjoint of `im2col`.
    private func col2im(_ columns: UnsafePointer<Float>, into dx: UnsafeMutablePointer<Float>) {
        let i = inputImage, o = outputImage, (kH, kW) = kernelSize, (sH, sW) = stride, (pH, pW) = padding
        dx.update(repeating: 0, count: i.count)
        var row = columns
        for c in 0..<i.channels {
            let plane = dx + c * i.planeCount
            for kh in 0..<kH {
                let rows = validRange(offset: kh, padding: pH, stride: sH, inputLength: i.height, outputLength: o.height)
                for kw in 0..<kW {
                    let cols = validRange(offset: kw, padding: pW, stride: sW, inputLength: i.width, outputLength: o.width)
                    for oh in rows {
                        let source = row + oh * o.width
                        let destination = plane + (oh * sH - pH + kh) * i.width - pW + kw
                        for ow in cols { destination[ow * sW] += source[ow] }
                    }
                    row += o.planeCount
                }
            }
        }
    }
}
