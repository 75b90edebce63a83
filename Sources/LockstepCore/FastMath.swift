/// Elementwise transcendental functions that vectorize.
///
/// glibc's `tanhf` (through `expm1f`) cost 43% of a text-transformer step in its GELU (perf, 2026-12-03, Xeon model
/// 207): a call per element that cannot be vectorized. These are short polynomials on 4 lanes (SSE2, the x86-64
/// baseline). Each element's result depends on its value alone, never on its position or the count, so results are
/// the same whatever the batch size or sharding.
public enum FastMath {
    @usableFromInline static let signMask = SIMD4<UInt32>(repeating: 0x8000_0000)

    /// Lanes of `x` limited to [lower, upper] (the stdlib's `clamped` stays a generic call across modules).
    @inlinable @inline(__always)
    static func limit(_ x: SIMD4<Float>, _ lower: Float, _ upper: Float) -> SIMD4<Float> {
        let low = SIMD4<Float>(repeating: lower), high = SIMD4<Float>(repeating: upper)
        return x.replacing(with: low, where: x .< low).replacing(with: high, where: x .> high)
    }

    /// e^x per lane; relative error < 3e-7 on [−87, 88] (result clamped to that range's ends outside it).
    @inlinable @inline(__always)
    public static func exp(_ x: SIMD4<Float>) -> SIMD4<Float> {
        let clamped = limit(x, -87, 88)
        // n = round(x / ln 2) by the 1.5·2²³ trick: adding it leaves n in the low mantissa bits (SSE2 has no roundps).
        let shifter = SIMD4<Float>(repeating: 12_582_912)
        let shifted = clamped * 1.442_695_04 + shifter
        let n = shifted - shifter
        // r = x − n·ln 2 in two parts, so r keeps its low bits; |r| ≤ ln 2 / 2.
        let r = (clamped - n * 0.693_145_75) - n * 1.428_606_8e-6
        // e^r by its Taylor polynomial to degree 6 (truncation error < 1.2e-7 · e^r on |r| ≤ 0.347).
        var p = SIMD4<Float>(repeating: 1.0 / 720)
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        // 2ⁿ from n's bits: (n + 127) << 23.
        let integer = unsafeBitCast(shifted, to: SIMD4<Int32>.self) &- unsafeBitCast(shifter, to: SIMD4<Int32>.self)
        let scale = unsafeBitCast((integer &+ 127) &<< 23, to: SIMD4<Float>.self)
        return p * scale
    }

    /// tanh per lane; relative error < 5e-7.
    @inlinable @inline(__always)
    public static func tanh(_ x: SIMD4<Float>) -> SIMD4<Float> {
        let bits = unsafeBitCast(x, to: SIMD4<UInt32>.self)
        let sign = bits & signMask
        let a = unsafeBitCast(bits & ~signMask, to: SIMD4<Float>.self)
        // |x| ≥ 0.5: (1 − e)/(1 + e) with e = e^(−2|x|) ≤ 0.37, no cancellation; past 9 the result rounds to 1.
        let e = exp(-2 * limit(a, 0, 9))
        let large = (1 - e) / (1 + e)
        // |x| < 0.5: the odd Taylor series to x¹³ (next term < 5e-8 of the result).
        let s = a * a
        var q = SIMD4<Float>(repeating: 21_844.0 / 6_081_075)
        q = q * s - 1_382.0 / 155_925
        q = q * s + 62.0 / 2_835
        q = q * s - 17.0 / 315
        q = q * s + 2.0 / 15
        q = q * s - 1.0 / 3
        let small = a + a * s * q
        let magnitude = large.replacing(with: small, where: a .< 0.5)
        return unsafeBitCast(unsafeBitCast(magnitude, to: SIMD4<UInt32>.self) | sign, to: SIMD4<Float>.self)
    }

    /// Applies `body` to `count` floats from `x` into `y` four at a time; the tail is padded with zeros, so an element's
    /// result never depends on where it sits.
    @inlinable @inline(__always)
    public static func map(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int,
                           _ body: (SIMD4<Float>) -> SIMD4<Float>) {
        var i = 0
        while i + 4 <= count {
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD4<Float>.self)
            UnsafeMutableRawPointer(y + i).storeBytes(of: body(v), as: SIMD4<Float>.self)
            i += 4
        }
        if i < count {
            var v = SIMD4<Float>(repeating: 0)
            for lane in 0..<(count - i) { v[lane] = x[i + lane] }
            let result = body(v)
            for lane in 0..<(count - i) { y[i + lane] = result[lane] }
        }
    }
}
