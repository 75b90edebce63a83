import LockstepCore

/// The transform matrices of Winograd's minimal filtering F(m, r): m outputs of an r-tap correlation from
/// n = m + r − 1 inputs with n multiplications, y = Aᵀ[(G g) ⊙ (Bᵀ d)]; in 2-D, Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A.
///
/// Built by the Toom–Cook construction from n − 1 finite interpolation points and ∞, in Double, stored as Float:
/// correlation is the transpose of the linear convolution of an m-sequence with an r-sequence, which evaluates both
/// polynomials at the points, multiplies and interpolates (V⁻¹). So Aᵀ = E_mᵀ (m×n), G = E_r (n×r) and Bᵀ = V⁻ᵀ
/// (n×n), where E_k[i][j] = p_iʲ (the ∞ row picks the leading coefficient) and row i of V⁻ᵀ holds the coefficients of
/// the i-th Lagrange polynomial (the ∞ row those of ∏(x − p_j)). Each Lagrange denominator ∏_{j≠i}(p_i − p_j) is moved
/// from Bᵀ into G, so Bᵀ holds small integers (for integer points) and rounds nothing.
public struct WinogradTransform: Sendable {
    /// Outputs per tile side (m).
    public let outputTile: Int
    /// Kernel side (r).
    public let kernel: Int
    /// Input tile side, m + r − 1 (n).
    public let inputTile: Int
    /// Aᵀ, [m, n] row-major.
    public let outputTransform: [Float]
    /// G, [n, r] row-major.
    public let kernelTransform: [Float]
    /// Bᵀ, [n, n] row-major.
    public let inputTransform: [Float]

    /// Finite interpolation points in the order they are used; ∞ is always the last point.
    static let points: [Double] = [0, 1, -1, 2, -2, 0.5, -0.5, 3, -3, 1.0 / 3, -1.0 / 3]

    /// The matrices for F(outputTile, kernel); needs outputTile + kernel − 2 ≤ 11 finite points.
    public init(outputTile m: Int, kernel r: Int) {
        precondition(m >= 1 && r >= 1 && m + r - 2 <= Self.points.count, "Winograd F(\(m), \(r)) has no point set here")
        let n = m + r - 1
        let finite = Array(Self.points.prefix(n - 1))
        outputTile = m; kernel = r; inputTile = n
        func power(_ x: Double, _ k: Int) -> Double { (0..<k).reduce(1) { value, _ in value * x } }
        /// Coefficients (lowest first) of ∏(x − p) over `roots`.
        func polynomial(roots: [Double]) -> [Double] {
            var coefficients = [1.0]
            for root in roots {
                var next = [Double](repeating: 0, count: coefficients.count + 1)
                for (k, c) in coefficients.enumerated() { next[k + 1] += c; next[k] -= root * c }
                coefficients = next
            }
            return coefficients
        }
        var a = [Double](repeating: 0, count: m * n), g = [Double](repeating: 0, count: n * r)
        var b = [Double](repeating: 0, count: n * n)
        for (i, point) in finite.enumerated() {
            let others = finite.enumerated().filter { $0.offset != i }.map(\.element)
            let denominator = others.reduce(1.0) { $0 * (point - $1) }
            for j in 0..<m { a[j * n + i] = power(point, j) }
            for k in 0..<r { g[i * r + k] = power(point, k) / denominator }
            for (l, c) in polynomial(roots: others).enumerated() { b[i * n + l] = c }
        }
        a[(m - 1) * n + n - 1] = 1
        g[(n - 1) * r + r - 1] = 1
        for (l, c) in polynomial(roots: finite).enumerated() { b[(n - 1) * n + l] = c }
        outputTransform = a.map { Float($0) }
        kernelTransform = g.map { Float($0) }
        inputTransform = b.map { Float($0) }
    }

    /// y[j] = Σ_k d[j + k]·g[k] for j < m through the transforms (d has n values, g has r); for tests.
    public func correlate(_ d: [Float], _ g: [Float]) -> [Float] {
        let n = inputTile
        let product = (0..<n).map { i in
            (0..<kernel).reduce(Float(0)) { $0 + kernelTransform[i * kernel + $1] * g[$1] }
                * (0..<n).reduce(Float(0)) { $0 + inputTransform[i * n + $1] * d[$1] }
        }
        return (0..<outputTile).map { j in (0..<n).reduce(Float(0)) { $0 + outputTransform[j * n + $1] * product[$1] } }
    }
}

/// A stride-1 convolution with a square kernel by Winograd F(m×m, r×r): the per-point products of transformed tiles
/// become (m + r − 1)² GEMMs over [outputChannels, inputChannels] × [inputChannels, tiles].
///
/// Samples go 16 at a time, one per SIMD lane: tile transforms are the scalar algorithm on `SIMD16<Float>`, and the
/// GEMMs' columns are (tile, lane) pairs. Tiles of a 16-sample group are taken in blocks small enough that their
/// transformed inputs V and products M stay in L2 between the transforms and the GEMMs. Backward is the exact adjoint
/// of forward (so it is the gradient of what forward computed) and transforms the input again rather than keeping a
/// batch of V (14 MB for fashion-cnn's second layer) in memory.
final class WinogradConvolution {
    let transform: WinogradTransform
    let inputChannels: Int
    let outputChannels: Int
    let padding: (height: Int, width: Int)
    /// Upper bound on one block's V and M, in bytes.
    let blockBytes: Int

    private var inputImage = ImageShape(channels: 0, height: 0, width: 0)
    private var outputImage = ImageShape(channels: 0, height: 0, width: 0)
    private var tilesHigh = 0, tilesWide = 0, tilesPerBlock = 0
    /// Rows and columns of the lane-interleaved padded input: every tile, partial ones included, lies inside.
    private var laneHeight = 0, laneWidth = 0
    /// Filters (outputChannels·inputChannels) rounded up to whole vectors: the stride of U and dU between points.
    private var filterStride = 0

    // Transform matrices and their transposes, nonzeros only, for the hot loops.
    private let aT: SparseTileMatrix, a: SparseTileMatrix, g: SparseTileMatrix, gT: SparseTileMatrix, bT: SparseTileMatrix, b: SparseTileMatrix
    /// Whether the tile transforms are CKernels' written-out F(4×4, 5×5) (same matrices, about half the operations).
    let writtenOut: Bool

    /// Transformed weights U, [point, outputChannels, inputChannels] (stride `filterStride` per point).
    private var transformedWeight = FloatBuffer(count: 0)
    /// Their gradient dU, same layout.
    private var transformedWeightGradient = FloatBuffer(count: 0)
    /// 16 samples' padded input, [inputChannels, laneHeight, laneWidth, 16 lanes]; the borders stay 0.
    private var laneInput = FloatBuffer(count: 0)
    /// 16 samples' padded input gradient, same layout.
    private var laneInputGradient = FloatBuffer(count: 0)
    /// One block's V [point, inputChannels, columns] (dV in backward); columns are (tile, lane) pairs.
    private var blockInput = FloatBuffer(count: 0)
    /// One block's M [point, outputChannels, columns] (dM in backward).
    private var blockProduct = FloatBuffer(count: 0)
    /// Two n×n tiles of vectors: a transform's input and its intermediate.
    private var scratch = FloatBuffer(count: 0)
    private var scratchOut = FloatBuffer(count: 0)

    init(transform: WinogradTransform, inputChannels: Int, outputChannels: Int, padding: (Int, Int),
         blockBytes: Int = 1 << 20) {
        self.transform = transform
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.padding = (padding.0, padding.1)
        self.blockBytes = blockBytes
        let m = transform.outputTile, n = transform.inputTile, r = transform.kernel
        func transposed(_ values: [Float], rows: Int, columns: Int) -> [Float] {
            (0..<columns * rows).map { values[($0 % rows) * columns + $0 / rows] }
        }
        aT = SparseTileMatrix(transform.outputTransform, rows: m, columns: n)
        a = SparseTileMatrix(transposed(transform.outputTransform, rows: m, columns: n), rows: n, columns: m)
        g = SparseTileMatrix(transform.kernelTransform, rows: n, columns: r)
        gT = SparseTileMatrix(transposed(transform.kernelTransform, rows: n, columns: r), rows: r, columns: n)
        bT = SparseTileMatrix(transform.inputTransform, rows: n, columns: n)
        b = SparseTileMatrix(transposed(transform.inputTransform, rows: n, columns: n), rows: n, columns: n)
        writtenOut = m == 4 && r == 5 && transform.inputTransform == Kernels.winogradF45Matrices.input
            && transform.outputTransform == Kernels.winogradF45Matrices.output
    }

    private var points: Int { transform.inputTile * transform.inputTile }

    func plan(inputImage: ImageShape, outputImage: ImageShape) {
        self.inputImage = inputImage
        self.outputImage = outputImage
        let m = transform.outputTile, n = transform.inputTile
        tilesHigh = (outputImage.height + m - 1) / m
        tilesWide = (outputImage.width + m - 1) / m
        laneHeight = (tilesHigh - 1) * m + n
        laneWidth = (tilesWide - 1) * m + n
        let bytesPerTile = points * (inputChannels + outputChannels) * 16 * MemoryLayout<Float>.stride
        tilesPerBlock = max(1, min(tilesHigh * tilesWide, blockBytes / bytesPerTile))
        filterStride = (outputChannels * inputChannels + 15) / 16 * 16
        transformedWeight = FloatBuffer(count: points * filterStride)
        transformedWeightGradient = FloatBuffer(count: points * filterStride)
        laneInput = FloatBuffer(count: inputChannels * laneHeight * laneWidth * 16)
        laneInputGradient = FloatBuffer(count: inputChannels * laneHeight * laneWidth * 16)
        blockInput = FloatBuffer(count: points * inputChannels * tilesPerBlock * 16)
        blockProduct = FloatBuffer(count: points * outputChannels * tilesPerBlock * 16)
        scratch = FloatBuffer(count: n * n * 16)
        scratchOut = FloatBuffer(count: n * n * 16)
    }

    // MARK: Forward

    func forward(weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, input: UnsafePointer<Float>,
                 output: UnsafeMutablePointer<Float>, batch: Int) {
        transformWeights(weight)
        let tiles = tilesHigh * tilesWide
        var first = 0
        while first < batch {
            let lanes = min(16, batch - first)
            packLanes(input + first * inputImage.count, lanes: lanes)
            var tile = 0
            while tile < tiles {
                let count = min(tilesPerBlock, tiles - tile)
                let columns = count * 16
                transformInputs(firstTile: tile, count: count)
                for point in 0..<points {
                    // M[ξ][outC, columns] = U[ξ][outC, inC] · V[ξ][inC, columns]
                    BLAS.gemm(m: outputChannels, n: columns, k: inputChannels,
                              a: transformedWeight.pointer + point * filterStride, lda: inputChannels,
                              b: blockInput.pointer + point * inputChannels * columns, ldb: columns,
                              c: blockProduct.pointer + point * outputChannels * columns, ldc: columns)
                }
                transformOutputs(firstTile: tile, count: count, bias: bias, output: output + first * outputImage.count, lanes: lanes)
                tile += count
            }
            first += lanes
        }
    }

    /// U[ξ][o, c] = (G · W[o, c] · Gᵀ)[ξ], 16 filters per vector.
    private func transformWeights(_ weight: UnsafePointer<Float>) {
        let r = transform.kernel, n = transform.inputTile, filters = outputChannels * inputChannels
        let input = scratch.pointer
        var filter = 0
        while filter < filters {
            let lanes = min(16, filters - filter)
            // Scalar stores into memory: inserting into a SIMD16 value by a variable lane goes through the stack.
            if lanes < 16 { input.update(repeating: 0, count: r * r * 16) }
            for lane in 0..<lanes {
                for k in 0..<(r * r) { input[k * 16 + lane] = weight[(filter + lane) * r * r + k] }
            }
            Self.transform(g, g,
                           from: input, rowStride: r * 16, columnStride: 16, through: scratchOut.pointer,
                           to: transformedWeight.pointer + filter, rowStride: n * filterStride, columnStride: filterStride,
                           accumulate: false)
            filter += 16
        }
    }

    /// Copies `lanes` samples into the lane-interleaved padded input (other lanes 0; the borders stay 0).
    private func packLanes(_ x: UnsafePointer<Float>, lanes: Int) {
        let (pH, pW) = padding, i = inputImage
        for c in 0..<i.channels {
            Kernels.interleaveLanes(from: x + c * i.planeCount, laneStride: i.count, rowStride: i.width, lanes: lanes,
                                    rows: i.height, columns: i.width,
                                    to: laneInput.pointer + ((c * laneHeight + pH) * laneWidth + pW) * 16,
                                    destinationRowStride: laneWidth * 16)
        }
    }

    /// V[ξ][c, (tile, lane)] = (Bᵀ · d · B)[ξ] for the block's tiles.
    private func transformInputs(firstTile: Int, count: Int) {
        let m = transform.outputTile, n = transform.inputTile, columns = count * 16
        for c in 0..<inputChannels {
            let plane = laneInput.pointer + c * laneHeight * laneWidth * 16
            for t in 0..<count {
                let tile = firstTile + t, y = tile / tilesWide * m, x = tile % tilesWide * m
                transformTile(.input, from: plane + (y * laneWidth + x) * 16, rowStride: laneWidth * 16, columnStride: 16,
                              to: blockInput.pointer + c * columns + t * 16, rowStride: n * inputChannels * columns,
                              columnStride: inputChannels * columns, accumulate: false)
            }
        }
    }

    /// y = Aᵀ · M · A (+ bias) per tile, cropped to the output and scattered to the lanes' samples.
    private func transformOutputs(firstTile: Int, count: Int, bias: UnsafePointer<Float>?,
                                  output: UnsafeMutablePointer<Float>, lanes: Int) {
        let m = transform.outputTile, n = transform.inputTile, columns = count * 16
        let o = outputImage, result = scratch.pointer
        for channel in 0..<outputChannels {
            let shift = SIMD16<Float>(repeating: bias?[channel] ?? 0)
            let plane = output + channel * o.planeCount
            for t in 0..<count {
                let tile = firstTile + t, y = tile / tilesWide * m, x = tile % tilesWide * m
                transformTile(.output, from: blockProduct.pointer + channel * columns + t * 16,
                              rowStride: n * outputChannels * columns, columnStride: outputChannels * columns,
                              to: result, rowStride: m * 16, columnStride: 16, accumulate: false)
                for k in 0..<(m * m) { store(load(result + k * 16) + shift, result + k * 16) }
                Kernels.deinterleaveLanes(from: result, sourceRowStride: m * 16, lanes: lanes, rows: min(m, o.height - y),
                                          columns: min(m, o.width - x), to: plane + y * o.width + x, laneStride: o.count,
                                          rowStride: o.width)
            }
        }
    }

    // MARK: Backward

    /// Adds dW into `weightGradient` and, when `inputGradient` is non-nil, writes dX; uses U from the last forward.
    func backward(input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                  weightGradient: UnsafeMutablePointer<Float>, inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        let tiles = tilesHigh * tilesWide
        transformedWeightGradient.zero()
        var first = 0
        while first < batch {
            let lanes = min(16, batch - first)
            packLanes(input + first * inputImage.count, lanes: lanes)
            if inputGradient != nil { laneInputGradient.zero() }
            var tile = 0
            while tile < tiles {
                let count = min(tilesPerBlock, tiles - tile)
                let columns = count * 16
                transformInputs(firstTile: tile, count: count)
                transformOutputGradients(firstTile: tile, count: count, outputGradient: outputGradient + first * outputImage.count,
                                         lanes: lanes)
                for point in 0..<points {
                    let dM = blockProduct.pointer + point * outputChannels * columns
                    let v = blockInput.pointer + point * inputChannels * columns
                    // dU[ξ][outC, inC] += dM[ξ][outC, columns] · V[ξ]ᵀ[columns, inC]
                    BLAS.gemm(transposeB: true, m: outputChannels, n: inputChannels, k: columns, a: dM, lda: columns,
                              b: v, ldb: columns, beta: 1, c: transformedWeightGradient.pointer + point * filterStride,
                              ldc: inputChannels)
                    guard inputGradient != nil else { continue }
                    // dV[ξ][inC, columns] = U[ξ]ᵀ[inC, outC] · dM[ξ][outC, columns], over V (no longer needed)
                    BLAS.gemm(transposeA: true, m: inputChannels, n: columns, k: outputChannels,
                              a: transformedWeight.pointer + point * filterStride, lda: inputChannels, b: dM, ldb: columns,
                              c: v, ldc: columns)
                }
                if inputGradient != nil { transformInputGradients(firstTile: tile, count: count) }
                tile += count
            }
            if let inputGradient { unpackLanes(into: inputGradient + first * inputImage.count, lanes: lanes) }
            first += lanes
        }
        transformWeightGradients(into: weightGradient)
    }

    /// dM[ξ][o, (tile, lane)] = (A · dY · Aᵀ)[ξ], the adjoint of the output transform; dY is 0 outside the output.
    private func transformOutputGradients(firstTile: Int, count: Int, outputGradient: UnsafePointer<Float>, lanes: Int) {
        let m = transform.outputTile, n = transform.inputTile, columns = count * 16
        let o = outputImage, gathered = scratch.pointer
        for channel in 0..<outputChannels {
            let plane = outputGradient + channel * o.planeCount
            for t in 0..<count {
                let tile = firstTile + t, y = tile / tilesWide * m, x = tile % tilesWide * m
                let inside = (rows: min(m, o.height - y), columns: min(m, o.width - x))
                if inside.rows < m || inside.columns < m { gathered.update(repeating: 0, count: m * m * 16) }
                Kernels.interleaveLanes(from: plane + y * o.width + x, laneStride: o.count, rowStride: o.width, lanes: lanes,
                                        rows: inside.rows, columns: inside.columns, to: gathered,
                                        destinationRowStride: m * 16)
                transformTile(.outputAdjoint, from: gathered, rowStride: m * 16, columnStride: 16,
                              to: blockProduct.pointer + channel * columns + t * 16, rowStride: n * outputChannels * columns,
                              columnStride: outputChannels * columns, accumulate: false)
            }
        }
    }

    /// Adds B · dV · Bᵀ of each tile into the padded lane input gradient (tiles overlap by r − 1).
    private func transformInputGradients(firstTile: Int, count: Int) {
        let m = transform.outputTile, n = transform.inputTile, columns = count * 16
        for c in 0..<inputChannels {
            let plane = laneInputGradient.pointer + c * laneHeight * laneWidth * 16
            for t in 0..<count {
                let tile = firstTile + t, y = tile / tilesWide * m, x = tile % tilesWide * m
                transformTile(.inputAdjoint, from: blockInput.pointer + c * columns + t * 16,
                              rowStride: n * inputChannels * columns, columnStride: inputChannels * columns,
                              to: plane + (y * laneWidth + x) * 16, rowStride: laneWidth * 16, columnStride: 16,
                              accumulate: true)
            }
        }
    }

    /// Copies the unpadded interior of the lane input gradient to `lanes` samples of dX.
    private func unpackLanes(into dx: UnsafeMutablePointer<Float>, lanes: Int) {
        let (pH, pW) = padding, i = inputImage
        for c in 0..<i.channels {
            Kernels.deinterleaveLanes(from: laneInputGradient.pointer + ((c * laneHeight + pH) * laneWidth + pW) * 16,
                                      sourceRowStride: laneWidth * 16, lanes: lanes, rows: i.height, columns: i.width,
                                      to: dx + c * i.planeCount, laneStride: i.count, rowStride: i.width)
        }
    }

    /// dW[o, c] += Gᵀ · dU[o, c] · G, 16 filters per vector.
    private func transformWeightGradients(into weightGradient: UnsafeMutablePointer<Float>) {
        let r = transform.kernel, n = transform.inputTile, filters = outputChannels * inputChannels
        let result = scratch.pointer
        var filter = 0
        while filter < filters {
            let lanes = min(16, filters - filter)
            Self.transform(gT, gT,
                           from: transformedWeightGradient.pointer + filter, rowStride: n * filterStride,
                           columnStride: filterStride, through: scratchOut.pointer,
                           to: result, rowStride: r * 16, columnStride: 16, accumulate: false)
            for lane in 0..<lanes {
                for k in 0..<(r * r) { weightGradient[(filter + lane) * r * r + k] += result[k * 16 + lane] }
            }
            filter += 16
        }
    }

    // MARK: Tile transform

    /// One tile's transform of the given stage: CKernels' written-out F(4×4, 5×5) where it applies, else the sparse one.
    @inline(__always)
    private func transformTile(_ stage: WinogradStage, from input: UnsafePointer<Float>, rowStride: Int, columnStride: Int,
                               to output: UnsafeMutablePointer<Float>, rowStride outputRowStride: Int,
                               columnStride outputColumnStride: Int, accumulate: Bool) {
        if writtenOut {
            Kernels.winogradF45(stage, from: input, rowStride: rowStride, columnStride: columnStride, to: output,
                                outputRowStride: outputRowStride, outputColumnStride: outputColumnStride, accumulate: accumulate)
            return
        }
        let (p, q) = switch stage {
        case .input: (bT, bT)
        case .inputAdjoint: (b, b)
        case .output: (aT, aT)
        case .outputAdjoint: (a, a)
        }
        Self.transform(p, q, from: input, rowStride: rowStride, columnStride: columnStride, through: scratchOut.pointer,
                       to: output, rowStride: outputRowStride, columnStride: outputColumnStride, accumulate: accumulate)
    }

    /// out = P · in · Qᵀ (or out += …) on tiles of 16-lane vectors: `in` is [P.columns, Q.columns] at the given
    /// strides (in floats); `temp` holds P.rows × Q.columns vectors. Only nonzero coefficients are visited; runs in
    /// CKernels on the CPU's widest ISA (Swift's SIMD16 compiles to four SSE operations each).
    @inline(__always)
    static func transform(_ p: SparseTileMatrix, _ q: SparseTileMatrix,
                          from input: UnsafePointer<Float>, rowStride: Int, columnStride: Int,
                          through temp: UnsafeMutablePointer<Float>,
                          to output: UnsafeMutablePointer<Float>, rowStride outputRowStride: Int,
                          columnStride outputColumnStride: Int, accumulate: Bool) {
        Kernels.tileTransform(p, q, from: input, rowStride: rowStride, columnStride: columnStride, through: temp,
                              to: output, outputRowStride: outputRowStride, outputColumnStride: outputColumnStride,
                              accumulate: accumulate)
    }
}

@inline(__always)
private func load(_ pointer: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(pointer).loadUnaligned(as: SIMD16<Float>.self)
}

@inline(__always)
private func load(_ pointer: UnsafeMutablePointer<Float>) -> SIMD16<Float> { load(UnsafePointer(pointer)) }

@inline(__always)
private func store(_ value: SIMD16<Float>, _ pointer: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(pointer).storeBytes(of: value, as: SIMD16<Float>.self)
}
