import LockstepCore

/// How a `Conv2D` computes its products.
public enum ConvolutionAlgorithm: String, Sendable, CaseIterable {
    /// Winograd where it applies and measured faster (`Conv2D.prefersWinograd`), else im2col.
    case auto
    /// im2col + one GEMM per sample: any kernel, stride and padding.
    case im2col
    /// Winograd minimal filtering F(m×m, r×r) (`WinogradConvolution`): stride 1 and a square kernel of side 2–7 only.
    case winograd
}

/// 2-D convolution (cross-correlation, as in PyTorch) over [channels, height, width] samples, by im2col + GEMM or
/// by Winograd minimal filtering (`algorithm`).
///
/// Weight is [outputChannels, inputChannels, kernelHeight, kernelWidth], bias [outputChannels]. Each sample's
/// im2col columns go to one per-sample workspace that stays in L2 for its GEMMs; backward rebuilds them from the
/// input and reuses the same workspace for the column gradient before col2im.
///
/// One GEMM per sample, not one batch-wide GEMM over [patchSize, batch·pixels] columns: re-measured with OpenBLAS's
/// SkylakeX kernels on an AVX-512 Xeon, the batch-wide shapes of fashion-cnn's layers at batch 64 were 10–60% slower
/// (their columns no longer fit in cache), before counting the two NCHW permutes they need.
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
    /// The algorithm asked for; `usesWinograd` says what `auto` chose.
    public let algorithm: ConvolutionAlgorithm

    private var weight: UnsafeMutablePointer<Float>!
    private var bias: UnsafeMutablePointer<Float>?
    private var weightGradient: UnsafeMutablePointer<Float>!
    private var biasGradient: UnsafeMutablePointer<Float>?

    private var inputImage = ImageShape(channels: 0, height: 0, width: 0)
    private var outputImage = ImageShape(channels: 0, height: 0, width: 0)
    /// One sample's input with its zero padding, [inputChannels, height + 2·padH, width + 2·padW]; the borders stay 0.
    private var paddedInput = FloatBuffer(count: 0)
    /// One sample's input gradient with padding, accumulated by col2im before its interior is copied out.
    private var paddedGradient = FloatBuffer(count: 0)
    /// One sample's im2col columns [patchSize, outputPixels], then its column gradient in backward.
    private var columns = FloatBuffer(count: 0)
    /// The batch's weight gradient transposed, [patchSize, outputChannels], added into the weight gradient at the end.
    private var weightGradientTransposed = FloatBuffer(count: 0)
    /// The Winograd path, when selected; planned with the layer.
    private var winograd: WinogradConvolution?
    /// Upper bound on a Winograd block's transformed inputs and products (bytes); tests make it small to get
    /// several blocks and a partial last one.
    var winogradBlockBytes = 1 << 20
    /// Winograd outputs per tile side (m of F(m, r)); tests set it to cover other tile sizes.
    lazy var winogradOutputTile = Self.winogradOutputTile(kernel: kernelSize.height)

    /// A convolution; the weight initializer defaults to He with fan-in inputChannels·kernelHeight·kernelWidth.
    public init(inputChannels: Int, outputChannels: Int, kernelSize: (Int, Int), stride: (Int, Int) = (1, 1),
                padding: (Int, Int) = (0, 0), bias: Bool = true, initializer: Initializer? = nil,
                algorithm: ConvolutionAlgorithm = .auto) {
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.kernelSize = (kernelSize.0, kernelSize.1)
        self.stride = (stride.0, stride.1)
        self.padding = (padding.0, padding.1)
        self.hasBias = bias
        self.weightInitializer = initializer ?? .he(fanIn: inputChannels * kernelSize.0 * kernelSize.1)
        self.algorithm = algorithm
    }

    /// A convolution with a square kernel, stride and padding.
    public convenience init(inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                            bias: Bool = true, initializer: Initializer? = nil, algorithm: ConvolutionAlgorithm = .auto) {
        self.init(inputChannels: inputChannels, outputChannels: outputChannels, kernelSize: (kernelSize, kernelSize),
                  stride: (stride, stride), padding: (padding, padding), bias: bias, initializer: initializer,
                  algorithm: algorithm)
    }

    /// Whether Winograd can compute this layer: stride 1 and a square kernel of side 2–7.
    public var supportsWinograd: Bool {
        stride == (1, 1) && kernelSize.height == kernelSize.width && (2...7).contains(kernelSize.height)
    }

    /// Whether `auto` picks Winograd: a stride-1 5x5 layer with at least `winogradMinimumInputChannels` inputs.
    /// Measured (BENCHMARKS.md, "Winograd convolution"): faster than im2col for fashion-cnn's 32→64 5x5 layer, not
    /// for the same layer with 3x3 kernels (the tile transforms, SSE code, cost more than the GEMM work saved), and
    /// even within noise for the 1→32 5x5 first layer.
    public var prefersWinograd: Bool {
        supportsWinograd && kernelSize.height == 5 && inputChannels >= Self.winogradMinimumInputChannels
    }

    /// Input channels from which `auto` uses Winograd.
    public static let winogradMinimumInputChannels = 8

    /// Whether this layer runs Winograd (after `algorithm` is resolved).
    public var usesWinograd: Bool {
        switch algorithm {
        case .auto: return prefersWinograd
        case .im2col: return false
        case .winograd: return true
        }
    }

    /// The Winograd tile (outputs per side, m) for a kernel side r: F(4, r), the fastest of m = 2, 3, 4, 6 measured
    /// for 5x5 and 3x3 kernels on 14x14 images (F(4, 5) computes 16x16 of a 14x14 output and is still fastest), as
    /// long as the tile has at most 8 inputs; larger tiles need the points ±3 and round 20–60× worse, so 6x6 and 7x7
    /// kernels take F(2, r).
    static func winogradOutputTile(kernel: Int) -> Int { kernel + 3 <= 8 ? 4 : 2 }

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
        if algorithm == .winograd && !supportsWinograd {
            throw ShapeError("conv2d algorithm winograd needs stride 1 and a square kernel of side 2-7, has kernel \(kernelSize.height)x\(kernelSize.width), stride \(stride)")
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

    /// Padded input (height, width).
    private var paddedSize: (height: Int, width: Int) {
        (inputImage.height + 2 * padding.height, inputImage.width + 2 * padding.width)
    }

    public func plan(batchSize: Int, inputShape: [Int]) {
        inputImage = try! ImageShape(inputShape, layer: kind)
        outputImage = try! outputImage(for: inputShape)
        if usesWinograd {
            if winograd == nil {
                let transform = WinogradTransform(outputTile: winogradOutputTile, kernel: kernelSize.height)
                winograd = WinogradConvolution(transform: transform, inputChannels: inputChannels, outputChannels: outputChannels,
                                               padding: padding, blockBytes: winogradBlockBytes)
            }
            winograd!.plan(inputImage: inputImage, outputImage: outputImage)
            return
        }
        // Per-sample buffers (not per batch) stay in L2 between im2col and the GEMMs. The 16 spare floats let the
        // stride-1 row copies read and write whole 16-float vectors past a row's end.
        let padded = inputChannels * paddedSize.height * paddedSize.width + 16
        if padded > paddedInput.count { paddedInput = FloatBuffer(count: padded); paddedGradient = FloatBuffer(count: padded) }
        let needed = patchSize * outputImage.planeCount + 16
        if needed > columns.count { columns = FloatBuffer(count: needed) }
        if patchSize * outputChannels > weightGradientTransposed.count {
            weightGradientTransposed = FloatBuffer(count: patchSize * outputChannels)
        }
    }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        if let winograd {
            winograd.forward(weight: weight, bias: bias, input: input, output: output, batch: batch)
            return
        }
        let k = patchSize, pixels = outputImage.planeCount, outputCount = outputImage.count
        for b in 0..<batch {
            im2col(input + b * inputImage.count)
            let y = output + b * outputCount
            // Seed the output with the bias so the GEMM adds into it (beta = 1) instead of a second pass.
            if let bias {
                for o in 0..<outputChannels { (y + o * pixels).update(repeating: bias[o], count: pixels) }
            }
            // y[outC, pixels] (+)= weight[outC, k] · columns[k, pixels]
            BLAS.gemm(m: outputChannels, n: pixels, k: k, a: weight, lda: k, b: columns.pointer, ldb: pixels,
                      beta: bias == nil ? 0 : 1, c: y, ldc: pixels)
        }
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        let k = patchSize, pixels = outputImage.planeCount, outputCount = outputImage.count
        if let biasGradient {
            for o in 0..<outputChannels {
                var sum: Float = 0
                for b in 0..<batch { sum += Kernels.sum(outputGradient + b * outputCount + o * pixels, count: pixels) }
                biasGradient[o] += sum
            }
        }
        if let winograd {
            winograd.backward(input: input, outputGradient: outputGradient, weightGradient: weightGradient,
                              inputGradient: inputGradient, batch: batch)
            return
        }
        for b in 0..<batch {
            // Rebuilt rather than kept from forward: a batch of columns (40 MB for fashion-cnn's second layer) would
            // be written and read back through memory, while one sample's stays in L2.
            im2col(input + b * inputImage.count)
            let dy = outputGradient + b * outputCount
            // weightGradientᵀ[k, outC] (+)= columns[k, pixels] · dyᵀ[pixels, outC]; transposed because OpenBLAS runs
            // this shape faster than dy · columnsᵀ (SkylakeX kernels: 131 vs 114 GFLOP/s at fashion-cnn's 800x64x196).
            BLAS.gemm(transposeB: true, m: k, n: outputChannels, k: pixels, a: columns.pointer, lda: pixels, b: dy, ldb: pixels,
                      beta: b == 0 ? 0 : 1, c: weightGradientTransposed.pointer, ldc: outputChannels)
            guard let inputGradient else { continue }
            // columnGradient[k, pixels] = weightᵀ[k, outC] · dy[outC, pixels], written over the columns
            BLAS.gemm(transposeA: true, m: k, n: pixels, k: outputChannels, a: weight, lda: k, b: dy, ldb: pixels,
                      c: columns.pointer, ldc: pixels)
            col2im(into: inputGradient + b * inputImage.count)
        }
        guard batch > 0 else { return }
        let transposed = weightGradientTransposed.pointer
        for o in 0..<outputChannels {
            let row = weightGradient + o * k
            for j in 0..<k { row[j] += transposed[j * outputChannels + o] }
        }
    }

    /// Writes one sample's [patchSize, outputPixels] column matrix into `columns` (through `paddedInput`).
    private func im2col(_ x: UnsafePointer<Float>) {
        let i = inputImage, o = outputImage, (kH, kW) = kernelSize, (sH, sW) = stride, (pH, pW) = padding
        let (paddedHeight, paddedWidth) = paddedSize, paddedPlane = paddedHeight * paddedWidth
        let padded = paddedInput.pointer
        for c in 0..<i.channels {
            for h in 0..<i.height {
                (padded + c * paddedPlane + (h + pH) * paddedWidth + pW).update(from: x + (c * i.height + h) * i.width, count: i.width)
            }
        }
        var row = columns.pointer
        for c in 0..<i.channels {
            for kh in 0..<kH {
                for kw in 0..<kW {
                    for oh in 0..<o.height {
                        let source = padded + c * paddedPlane + (oh * sH + kh) * paddedWidth + kw
                        let destination = row + oh * o.width
                        if sW == 1 {
                            // Whole vectors: the floats written past the row's end belong to the next row, written next.
                            var ow = 0
                            while ow < o.width {
                                UnsafeMutableRawPointer(destination + ow).storeBytes(
                                    of: UnsafeRawPointer(source + ow).loadUnaligned(as: SIMD16<Float>.self), as: SIMD16<Float>.self)
                                ow += 16
                            }
                        } else {
                            for ow in 0..<o.width { destination[ow] = source[ow * sW] }
                        }
                    }
                    row += o.planeCount
                }
            }
        }
    }

    /// Sums the column gradient in `columns` back into image layout (overwrites `dx`); the adjoint of `im2col`.
    private func col2im(into dx: UnsafeMutablePointer<Float>) {
        let i = inputImage, o = outputImage, (kH, kW) = kernelSize, (sH, sW) = stride, (pH, pW) = padding
        let (paddedHeight, paddedWidth) = paddedSize, paddedPlane = paddedHeight * paddedWidth
        let padded = paddedGradient.pointer
        padded.update(repeating: 0, count: i.channels * paddedPlane)
        // Lanes of the last, partial vector of a row that are inside it (the rest add 0 and store back what they read).
        let tail = o.width % 16 == 0 ? 16 : o.width % 16
        let tailMask = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) .< SIMD16(repeating: Int32(tail))
        var row = UnsafePointer(columns.pointer)
        for c in 0..<i.channels {
            for kh in 0..<kH {
                for kw in 0..<kW {
                    for oh in 0..<o.height {
                        let source = row + oh * o.width
                        let destination = padded + c * paddedPlane + (oh * sH + kh) * paddedWidth + kw
                        if sW == 1 {
                            var ow = 0
                            while ow < o.width {
                                var value = UnsafeRawPointer(source + ow).loadUnaligned(as: SIMD16<Float>.self)
                                if ow + 16 > o.width { value.replace(with: 0, where: .!tailMask) }
                                let target = UnsafeMutableRawPointer(destination + ow)
                                target.storeBytes(of: target.loadUnaligned(as: SIMD16<Float>.self) + value, as: SIMD16<Float>.self)
                                ow += 16
                            }
                        } else {
                            for ow in 0..<o.width { destination[ow * sW] += source[ow] }
                        }
                    }
                    row += o.planeCount
                }
            }
        }
        for c in 0..<i.channels {
            for h in 0..<i.height {
                (dx + (c * i.height + h) * i.width).update(from: padded + c * paddedPlane + (h + pH) * paddedWidth + pW, count: i.width)
            }
        }
    }
}
