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
    /// every value written is finite (checked in the same pass, so callers need no second read of `out`).
    @discardableResult
    public static func sum(_ sources: UnsafePointer<UnsafeMutablePointer<Float>>, sourceCount: Int, range: Range<Int>,
                           scaledBy factor: Float, into out: UnsafeMutablePointer<Float>) -> Bool {
        // Explicit 16-wide loads: the compiler cannot vectorize through the pointer table on its own.
        let target = UnsafeMutableRawPointer(out)
        var bad = SIMD16<Float>()  // x·0 is NaN exactly for NaN and ±Inf, as in allFinite
        var i = range.lowerBound
        while i + 16 <= range.upperBound {
            var total = UnsafeRawPointer(sources[0]).loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            for source in 1..<max(sourceCount, 1) {
                total += UnsafeRawPointer(sources[source]).loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            }
            let result = total * factor
            bad += result * 0
            target.storeBytes(of: result, toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        var badTail: Float = 0
        while i < range.upperBound {
            var total = sources[0][i]
            for source in 1..<max(sourceCount, 1) { total += sources[source][i] }
            out[i] = total * factor
            badTail += out[i] * 0
            i += 1
        }
        return !(bad.sum() + badTail).isNaN
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
        // x·0 is NaN exactly for NaN and ±Inf; summing it in independent lanes keeps the loop vectorized.
        let raw = UnsafeRawPointer(x)
        var lanes = SIMD16<Float>()
        var i = 0
        while i + 16 <= count {
            lanes += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) * 0
            i += 16
        }
        var bad = lanes.sum()
        while i < count { bad += x[i] * 0; i += 1 }
        return !bad.isNaN
    }

    /// y = softmax(x) over `count` values; `y` may be `x` (in place). Subtracting the maximum keeps exp in range
    /// without changing the result. exp runs 4 lanes at a time (FastMath): libm's expf was a call per element.
    @inline(__always)
    public static func softmax(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        let full = count & ~3
        let shift = SIMD4<Float>(repeating: maximum(x, count: count))
        var sums = SIMD4<Float>(repeating: 0)
        for c in stride(from: 0, to: full, by: 4) {
            let e = FastMath.exp(UnsafeRawPointer(x + c).loadUnaligned(as: SIMD4<Float>.self) - shift)
            UnsafeMutableRawPointer(y + c).storeBytes(of: e, as: SIMD4<Float>.self)
            sums += e
        }
        var sum = sums.sum()
        if full < count {
            var tail = shift
            for lane in 0..<(count - full) { tail[lane] = x[full + lane] }
            let e = FastMath.exp(tail - shift)
            for lane in 0..<(count - full) { y[full + lane] = e[lane]; sum += e[lane] }
        }
        let inverse = SIMD4<Float>(repeating: 1 / sum)
        for c in stride(from: 0, to: full, by: 4) {
            let v = UnsafeRawPointer(y + c).loadUnaligned(as: SIMD4<Float>.self)
            UnsafeMutableRawPointer(y + c).storeBytes(of: v * inverse, as: SIMD4<Float>.self)
        }
        for c in full..<count { y[c] *= inverse[0] }
    }

    /// The largest of `count` ≥ 1 values, 4 lanes at a time (a NaN first value makes it NaN, as the result should be).
    @inline(__always)
    public static func maximum(_ x: UnsafePointer<Float>, count: Int) -> Float {
        let full = count & ~3
        var maxima = SIMD4<Float>(repeating: x[0])
        for c in stride(from: 0, to: full, by: 4) {
            let v = UnsafeRawPointer(x + c).loadUnaligned(as: SIMD4<Float>.self)
            maxima = maxima.replacing(with: v, where: v .> maxima)
        }
        var result = maxima.max()
        for c in full..<count where x[c] > result { result = x[c] }
        return result
    }

    /// log Σ exp(x) over `count` values, stable (the maximum is factored out), exp 4 lanes at a time.
    @inline(__always)
    public static func logSumExp(_ x: UnsafePointer<Float>, count: Int) -> Float {
        let full = count & ~3
        let largest = maximum(x, count: count)
        let shift = SIMD4<Float>(repeating: largest)
        var sums = SIMD4<Float>(repeating: 0)
        for c in stride(from: 0, to: full, by: 4) {
            sums += FastMath.exp(UnsafeRawPointer(x + c).loadUnaligned(as: SIMD4<Float>.self) - shift)
        }
        var sum = sums.sum()
        if full < count {
            var tail = shift
            for lane in 0..<(count - full) { tail[lane] = x[full + lane] }
            let e = FastMath.exp(tail - shift)
            for lane in 0..<(count - full) { sum += e[lane] }
        }
        return logf(sum) + largest
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
        for r in 0..<rows {
            let m = matrix + r * width
            for c in 0..<width { row[c] += m[c] }
        }
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
