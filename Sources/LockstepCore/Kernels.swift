import CKernels

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Elementwise kernels over raw Float32 memory; simple loops the compiler vectorizes under -Ounchecked.
public enum Kernels {
    /// y[i] += x[i].
    @inline(__always)
    public static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += x[i] }
    }

    /// x[i] *= factor.
    @inline(__always)
    public static func scale(_ x: UnsafeMutablePointer<Float>, by factor: Float, count: Int) {
        for i in 0..<count { x[i] *= factor }
    }

    /// out[i] = (sources[0][i] + sources[1][i] + … + sources[n-1][i]) × factor for i in `range`, added in source
    /// order (so the result does not depend on who computes it). `out` may be one of the sources. Returns whether
    /// every value written is finite (checked in the same pass, so callers need no second read of `out`). With
    /// `clearingSources`, every source other than `out` is zeroed over `range` as it is read (with `streamingClears`
    /// through non-temporal stores, see `copyStreaming`); with `streamingOut`, `out` is written that way.
    @discardableResult
    public static func sum(_ sources: UnsafePointer<UnsafeMutablePointer<Float>>, sourceCount: Int, range: Range<Int>,
                           scaledBy factor: Float, into out: UnsafeMutablePointer<Float>, clearingSources: Bool = false,
                           streamingClears: Bool = false, streamingOut: Bool = false) -> Bool {
        let stores = (clearingSources ? LOCKSTEP_SUM_CLEAR_SOURCES : 0) | (streamingClears ? LOCKSTEP_SUM_STREAM_CLEARS : 0)
            | (streamingOut ? LOCKSTEP_SUM_STREAM_OUT : 0)
        return lockstep_sum_sources(UnsafePointer<UnsafeMutablePointer<Float>?>(OpaquePointer(sources)), max(sourceCount, 1),
                                    range.lowerBound, range.upperBound, factor, out, Int32(stores)) != 0
    }

    /// Sum of squares, accumulated in Double for a stable global norm.
    public static func sumOfSquares(_ x: UnsafePointer<Float>, count: Int) -> Double {
        // 16 independent float lanes per 1024-element block (a single scalar accumulator is a serial add chain,
        // measured 183 µs for 235k floats), widened to Double once per block for accuracy.
        let raw = UnsafeRawPointer(x)
        var total: Double = 0
        var i = 0
        while i + 1024 <= count {
            var lanes = SIMD16<Float>()
            var j = i
            while j < i + 1024 {
                let v = raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD16<Float>.self)
                lanes += v * v
                j += 16
            }
            total += Double(lanes.sum())
            i += 1024
        }
        while i < count { total += Double(x[i] * x[i]); i += 1 }
        return total
    }

    /// Sum of `count` values, in 16 independent lanes (a single accumulator is a serial chain of dependent adds).
    @inline(__always)
    public static func sum(_ x: UnsafePointer<Float>, count: Int) -> Float {
        let raw = UnsafeRawPointer(x)
        var lanes = SIMD16<Float>()
        var i = 0
        while i + 16 <= count {
            lanes += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        var total = lanes.sum()
        while i < count { total += x[i]; i += 1 }
        return total
    }

    /// True when every value is finite.
    public static func allFinite(_ x: UnsafePointer<Float>, count: Int) -> Bool {
        lockstep_all_finite(x, count) != 0
    }

    /// y = softmax(x) over `count` > 0 values; `y` may be `x` (in place). Subtracting the maximum keeps exp in range
    /// without changing the result; 16 lanes at a time in CKernels, with the same bits on every x86 ISA.
    @inline(__always)
    public static func softmax(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        lockstep_softmax(x, y, count)
    }

    /// Softmax of x[0..<visible] into y and zeros in y[visible..<count] (a causal attention row); `y` may be `x`.
    @inline(__always)
    public static func maskedSoftmax(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int, visible: Int) {
        lockstep_masked_softmax(x, y, 1, count, visible, 0)
    }

    /// `maskedSoftmax` over each row of a rows × count block in one call; row i sees i + 1 values when `causal`, all
    /// `count` otherwise (attention scores: one call per head instead of one per row).
    @inline(__always)
    public static func maskedSoftmax(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Int, count: Int,
                                     causal: Bool) {
        lockstep_masked_softmax(x, y, rows, count, causal ? 1 : count, causal ? 1 : 0)
    }

    /// Softmax backward in place over one row: g = p ⊙ (g − ⟨g, p⟩) for the first `visible` values, 0 after them.
    @inline(__always)
    public static func softmaxBackward(probabilities p: UnsafePointer<Float>, gradient g: UnsafeMutablePointer<Float>,
                                       count: Int, visible: Int) {
        lockstep_softmax_backward(p, g, 1, count, visible, 0)
    }

    /// `softmaxBackward` over each row of a rows × count block, visible lengths as in `maskedSoftmax(_:into:rows:…)`.
    @inline(__always)
    public static func softmaxBackward(probabilities p: UnsafePointer<Float>, gradient g: UnsafeMutablePointer<Float>,
                                       rows: Int, count: Int, causal: Bool) {
        lockstep_softmax_backward(p, g, rows, count, causal ? 1 : count, causal ? 1 : 0)
    }

    /// log Σ exp(x) over `count` > 0 values, stable (the maximum is factored out).
    @inline(__always)
    public static func logSumExp(_ x: UnsafePointer<Float>, count: Int) -> Float {
        lockstep_log_sum_exp(x, count)
    }

    /// y = gelu(x) (tanh form) elementwise; with `gates`, σ(2u) is kept there for `geluBackward`.
    @inline(__always)
    public static func geluForward(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
                                   gates: UnsafeMutablePointer<Float>?, count: Int) {
        lockstep_gelu_forward(x, y, gates, count)
    }

    /// dx = dy · gelu'(x) elementwise (`dx` may be `dy`); σ(2u) from `gates` when given, else recomputed.
    @inline(__always)
    public static func geluBackward(_ x: UnsafePointer<Float>, outputGradient dy: UnsafePointer<Float>,
                                    into dx: UnsafeMutablePointer<Float>, gates: UnsafePointer<Float>?, count: Int) {
        lockstep_gelu_backward(x, dy, dx, gates, count)
    }

    /// Layer normalization of `rows` rows of `width` values, y = (x − mean)·invstd·weight + bias; each row's mean and
    /// invstd are stored in `means` and `inverseDeviations` for `layerNormBackward`.
    @inline(__always)
    public static func layerNormForward(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
                                        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                        means: UnsafeMutablePointer<Float>, inverseDeviations: UnsafeMutablePointer<Float>,
                                        rows: Int, width: Int, epsilon: Float) {
        lockstep_layer_norm_forward(x, y, weight, bias, means, inverseDeviations, rows, width, epsilon)
    }

    /// Layer normalization backward: `weightGradient` and `biasGradient` accumulate, `inputGradient` is written (plus
    /// `addend`, a residual path's gradient, when given: one pass instead of a second one adding it).
    @inline(__always)
    public static func layerNormBackward(_ x: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                                         inputGradient: UnsafeMutablePointer<Float>?, adding addend: UnsafePointer<Float>? = nil,
                                         weight: UnsafePointer<Float>,
                                         weightGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>,
                                         means: UnsafePointer<Float>, inverseDeviations: UnsafePointer<Float>,
                                         rows: Int, width: Int) {
        lockstep_layer_norm_backward(x, outputGradient, inputGradient, addend, weight, weightGradient, biasGradient, means,
                                     inverseDeviations, rows, width)
    }

    /// One SGD step over flat buffers (PyTorch semantics; see `lockstep_sgd_step`); `velocity` is unused without
    /// momentum. With `clearingGradients`, each gradient is zeroed right after it is read.
    @inline(__always)
    public static func sgdStep(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                               velocity: UnsafeMutablePointer<Float>, count: Int, learningRate: Float, momentum: Float,
                               weightDecay: Float, nesterov: Bool, firstStep: Bool, clearingGradients: Bool) {
        lockstep_sgd_step(parameters, gradients, velocity, count, learningRate, momentum, weightDecay, nesterov ? 1 : 0,
                          firstStep ? 1 : 0, clearingGradients ? 1 : 0)
    }

    /// The instruction set the elementwise C kernels run on here ("avx512", "avx2" or "baseline").
    public static var vectorISA: String {
        switch lockstep_kernels_active() {
        case LOCKSTEP_KERNELS_AVX512: "avx512"
        case LOCKSTEP_KERNELS_AVX2: "avx2"
        default: "baseline"
        }
    }

    /// Writes the same `row` (length `width`) into each of `rows` rows of `matrix`: seeds a GEMM with its bias, so the
    /// GEMM adds into it (beta = 1) instead of OpenBLAS clearing C first (a memset pass) and a second pass adding the bias.
    /// With `addend` (rows × width), each row is addend's row + `row` instead: a residual joins the seed.
    @inline(__always)
    public static func fillRows(_ matrix: UnsafeMutablePointer<Float>, with row: UnsafePointer<Float>,
                                adding addend: UnsafePointer<Float>? = nil, rows: Int, width: Int) {
        lockstep_fill_rows(matrix, row, addend, rows, width)
    }

    /// destination[i] = source[i] through non-temporal stores (see `lockstep_copy_streaming`).
    @inline(__always)
    public static func copyStreaming(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>,
                                     count: Int) {
        lockstep_copy_streaming(destination, source, count)
    }

    /// destination[c, r] = source[r, c] for a rows × columns row-major `source`.
    @inline(__always)
    public static func transpose(_ source: UnsafePointer<Float>, rows: Int, columns: Int,
                                 into destination: UnsafeMutablePointer<Float>) {
        lockstep_transpose(source, rows, columns, destination)
    }

    /// Adds the same `row` (length `width`) to each of `rows` rows of `matrix`.
    @inline(__always)
    public static func addRow(_ row: UnsafePointer<Float>, to matrix: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        for r in 0..<rows {
            let m = matrix + r * width
            for c in 0..<width { m[c] += row[c] }
        }
    }

    /// row[c] += Σ_r matrix[r, c] (bias gradients).
    @inline(__always)
    public static func sumRows(_ matrix: UnsafePointer<Float>, into row: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        lockstep_sum_rows(matrix, row, rows, width)
    }

    /// FNV-1a's xor-and-multiply over 8-byte words instead of bytes (a tail of fewer than 8 bytes byte by byte):
    /// 8× fewer steps of the serial multiply chain, for comparing large buffers between ranks often (each step is a
    /// bijection of the state, so buffers differing in one word always hash differently). Not FNV-1a's values.
    public static func wordHash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
        var hash = seed
        let words = bytes.count / 8
        for word in 0..<words {
            hash = (hash ^ bytes.loadUnaligned(fromByteOffset: word * 8, as: UInt64.self)) &* 0x0000_0100_0000_01B3
        }
        for byte in bytes[(words * 8)...] { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return hash
    }

    /// 64-bit FNV-1a hash of raw bytes (parameter checksums, config hashes).
    public static func fnv1a(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
        var hash = seed
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return hash
    }
}

extension Kernels {
    /// 2 × 2, stride 2 max pooling of `planes` planes of height × width (both even), first maximum in reading order;
    /// `rectify` applies max(·, 0) as ReLU does. `winners` (may be nil) gets each window's winner as an index inside
    /// its sample (channel · height · width + position, channel = plane mod `channels`).
    @inline(__always)
    public static func maxPool2x2(_ input: UnsafePointer<Float>, planes: Int, height: Int, width: Int, channels: Int,
                                  into output: UnsafeMutablePointer<Float>, winners: UnsafeMutablePointer<Int32>?,
                                  rectify: Bool) {
        lockstep_max_pool_2x2(input, planes, height, width, channels, output, winners, rectify ? 1 : 0)
    }

    /// Backward of `maxPool2x2`: writes every input gradient (the window's gradient at its winner, 0 elsewhere; with
    /// `rectified`, 0 too where the window's output is not positive).
    @inline(__always)
    public static func maxPool2x2Backward(output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                                          winners: UnsafePointer<Int32>, planes: Int, height: Int, width: Int,
                                          channels: Int, into inputGradient: UnsafeMutablePointer<Float>, rectified: Bool) {
        lockstep_max_pool_2x2_backward(output, outputGradient, winners, planes, height, width, channels, inputGradient,
                                       rectified ? 1 : 0)
    }
}
