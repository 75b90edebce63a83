import XCTest
@testable import LockstepCore

final class RNGTests: XCTestCase {
    func testSameSeedGivesSameStream() {
        var a = RNG(seed: 42), b = RNG(seed: 42)
        for _ in 0..<1000 { XCTAssertEqual(a.next(), b.next()) }
        var c = RNG(seed: 43)
        var d = RNG(seed: 42)
        XCTAssertNotEqual((0..<4).map { _ in c.next() }, (0..<4).map { _ in d.next() })
    }

    func testKnownFirstValuesPinTheStreamAcrossVersions() {
        // Pinned so a change to the generator (which would break exact resume of old checkpoints) is noticed.
        var rng = RNG(seed: 0)
        let first = rng.next()
        var again = RNG(seed: 0)
        XCTAssertEqual(first, again.next())
        XCTAssertEqual(RNG.mix(0), 0)
        XCTAssertEqual(RNG.mix(1), 0x5692_161D_100B_05E5)
    }

    func testSplitStreamsAreIndependentOfDrawsOnTheParent() {
        var parent = RNG(seed: 7)
        let child1 = parent.split(3)
        _ = parent.next()
        let child2 = RNG(seed: 7).split(3)
        XCTAssertEqual(child1, child2)
        XCTAssertNotEqual(RNG(seed: 7).split(3), RNG(seed: 7).split(4))
    }

    func testUniformAndNormalMoments() {
        var rng = RNG(seed: 1)
        let n = 200_000
        var sum = 0.0, squares = 0.0, uniformSum = 0.0
        for _ in 0..<n {
            let u = rng.uniform()
            XCTAssert(u >= 0 && u < 1)
            uniformSum += Double(u)
            let z = Double(rng.normal())
            sum += z; squares += z * z
        }
        XCTAssertEqual(uniformSum / Double(n), 0.5, accuracy: 0.01)
        XCTAssertEqual(sum / Double(n), 0, accuracy: 0.01)
        XCTAssertEqual(squares / Double(n), 1, accuracy: 0.02)
    }

    func testShuffleIsAPermutationAndSeeded() {
        var values = Array(0..<100)
        var rng = RNG(seed: 9)
        rng.shuffle(&values)
        XCTAssertEqual(values.sorted(), Array(0..<100))
        XCTAssertNotEqual(values, Array(0..<100))
        var again = Array(0..<100)
        var rng2 = RNG(seed: 9)
        rng2.shuffle(&again)
        XCTAssertEqual(values, again)
    }
}

final class FlatTensorsTests: XCTestCase {
    func testLayoutIsContiguousInLayerOrder() {
        let specs: [[ParameterSpec]] = [
            [ParameterSpec(name: "weight", shape: [3, 2], initializer: .zeros), ParameterSpec(name: "bias", shape: [3], initializer: .zeros)],
            [],
            [ParameterSpec(name: "weight", shape: [4, 3], initializer: .ones)],
        ]
        let flat = FlatTensors(layerSpecs: specs, withGradients: true)
        XCTAssertEqual(flat.count, 6 + 3 + 12)
        XCTAssertEqual(flat.slots.map(\.name), ["layers.0.weight", "layers.0.bias", "layers.2.weight"])
        XCTAssertEqual(flat.slots.map(\.offset), [0, 6, 9])
        XCTAssertEqual(flat.startOffset(ofLayer: 0), 0)
        XCTAssertEqual(flat.startOffset(ofLayer: 1), 9, "a layer without parameters starts where the next one does")
        XCTAssertEqual(flat.startOffset(ofLayer: 2), 9)
        XCTAssertEqual(flat.startOffset(ofLayer: 3), 21)
        XCTAssertEqual(flat.gradients?.count, 21)
        XCTAssertEqual(flat.gradientPointer(flat.slots[2]) - flat.gradients!.pointer, 9)
    }

    func testInitializersFillWithTheRightScale() {
        var rng = RNG(seed: 3)
        let buffer = FloatBuffer(count: 100_000)
        Initializer.he(fanIn: 50).fill(buffer.pointer, count: buffer.count, rng: &rng)
        let variance = buffer.array.reduce(0.0) { $0 + Double($1 * $1) } / Double(buffer.count)
        XCTAssertEqual(variance, 2.0 / 50, accuracy: 0.002)
        Initializer.xavier(fanIn: 10, fanOut: 20).fill(buffer.pointer, count: buffer.count, rng: &rng)
        let bound = Float(6.0 / 30).squareRoot()
        XCTAssertLessThanOrEqual(buffer.array.map(abs).max()!, bound)
        XCTAssertGreaterThan(buffer.array.map(abs).max()!, bound * 0.99)
    }
}

final class KernelAndBLASTests: XCTestCase {
    func testGemmWithTransposesMatchesNaiveProduct() {
        var rng = RNG(seed: 5)
        let (m, n, k) = (5, 7, 3)
        let a = (0..<(m * k)).map { _ in rng.uniform(-1, 1) }   // A [m, k]
        let b = (0..<(k * n)).map { _ in rng.uniform(-1, 1) }   // B [k, n]
        var expected = [Float](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n { for p in 0..<k { expected[i * n + j] += a[i * k + p] * b[p * n + j] } } }
        let at = (0..<(k * m)).map { index in a[(index % m) * k + index / m] }  // Aᵀ stored [k, m]
        let bt = (0..<(n * k)).map { index in b[(index % k) * n + index / k] }  // Bᵀ stored [n, k]
        for (transposeA, transposeB) in [(false, false), (true, false), (false, true), (true, true)] {
            var c = [Float](repeating: 0, count: m * n)
            BLAS.gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
                      a: transposeA ? at : a, lda: transposeA ? m : k, b: transposeB ? bt : b, ldb: transposeB ? k : n,
                      c: &c, ldc: n)
            for i in 0..<(m * n) { XCTAssertEqual(c[i], expected[i], accuracy: 1e-5, "transposes \(transposeA) \(transposeB)") }
        }
    }

    func testPreferredCoreTypeOnlyReplacesTheGenericFallback() {
        let avx512: Set<String> = ["sse3", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"]
        XCTAssertEqual(BLAS.preferredCoreType(current: "Prescott", flags: avx512, vendor: "GenuineIntel"), "SkylakeX")
        XCTAssertEqual(BLAS.preferredCoreType(current: "Prescott", flags: ["avx2", "fma"], vendor: "GenuineIntel"), "Haswell")
        XCTAssertEqual(BLAS.preferredCoreType(current: "Prescott", flags: ["avx2", "fma"], vendor: "AuthenticAMD"), "Zen")
        XCTAssertNil(BLAS.preferredCoreType(current: "Prescott", flags: ["sse3", "avx"], vendor: "GenuineIntel"))
        XCTAssertNil(BLAS.preferredCoreType(current: "Zen", flags: avx512, vendor: "AuthenticAMD"), "OpenBLAS's own choice stands")
        XCTAssertFalse(BLAS.coreName.isEmpty)
    }

    func testKernels() {
        let x = FloatBuffer([1, 2, 3, 4]), y = FloatBuffer([10, 20, 30, 40])
        Kernels.add(x.pointer, into: y.pointer, count: 4)
        XCTAssertEqual(y.array, [11, 22, 33, 44])
        Kernels.scale(y.pointer, by: 0.5, count: 4)
        XCTAssertEqual(y.array, [5.5, 11, 16.5, 22])
        XCTAssertEqual(Kernels.sumOfSquares(x.pointer, count: 4), 30)
        XCTAssertTrue(Kernels.allFinite(x.pointer, count: 4))
        x.pointer[2] = .infinity
        XCTAssertFalse(Kernels.allFinite(x.pointer, count: 4))
        x.pointer[2] = .nan
        XCTAssertFalse(Kernels.allFinite(x.pointer, count: 4))
        let matrix = FloatBuffer([1, 2, 3, 4, 5, 6]), row = FloatBuffer([1, 1, 1])
        Kernels.addRow(row.pointer, to: matrix.pointer, rows: 2, width: 3)
        XCTAssertEqual(matrix.array, [2, 3, 4, 5, 6, 7])
        let sums = FloatBuffer(count: 3)
        Kernels.sumRows(matrix.pointer, into: sums.pointer, rows: 2, width: 3)
        XCTAssertEqual(sums.array, [7, 9, 11])
        // Sum of several sources in source order, scaled, over a sub-range with a SIMD body and a scalar tail;
        // the output may be one of the sources.
        let sources = (0..<3).map { source in FloatBuffer((0..<53).map { Float($0 * (source + 1)) + (source == 2 ? 1e8 : 0) }) }
        let pointers = sources.map(\.pointer)
        pointers.withUnsafeBufferPointer { table in
            Kernels.sum(table.baseAddress!, sourceCount: 3, range: 3..<50, scaledBy: 0.5, into: sources[0].pointer)
        }
        for i in 0..<53 {
            let original = Float(i)
            let expected = (3..<50).contains(i) ? ((original + Float(2 * i)) + (Float(3 * i) + 1e8)) * 0.5 : original
            XCTAssertEqual(sources[0].pointer[i].bitPattern, expected.bitPattern, "sum [\(i)]")
        }
        // Clearing: the same sums, and the other sources are zero over the range (and only there), with ordinary
        // stores or non-temporal ones for the zeros, the sums or both (taken for whole lines: ranges from a 64-byte
        // boundary use them).
        for (range, streamingClears, streamingOut) in [(3..<50, false, false), (3..<50, true, true), (16..<50, true, false),
                                                      (16..<50, false, true), (0..<53, true, true)] {
            let streaming = "clears \(streamingClears) out \(streamingOut)"
            let again = (0..<3).map { source in FloatBuffer((0..<53).map { Float($0 * (source + 1)) + (source == 2 ? 1e8 : 0) }) }
            again.map(\.pointer).withUnsafeBufferPointer { table in
                Kernels.sum(table.baseAddress!, sourceCount: 3, range: range, scaledBy: 0.5, into: again[0].pointer,
                            clearingSources: true, streamingClears: streamingClears, streamingOut: streamingOut)
            }
            for i in 0..<53 {
                let expected = range.contains(i) ? ((Float(i) + Float(2 * i)) + (Float(3 * i) + 1e8)) * 0.5 : Float(i)
                XCTAssertEqual(again[0].pointer[i].bitPattern, expected.bitPattern, "\(range) streaming \(streaming): sum [\(i)]")
            }
            for source in 1..<3 {
                for i in 0..<53 {
                    let original = Float(i * (source + 1)) + (source == 2 ? 1e8 : 0)
                    XCTAssertEqual(again[source].pointer[i], range.contains(i) ? 0 : original,
                                   "\(range) streaming \(streaming): source \(source) [\(i)]")
                }
            }
        }
        let bytes: [UInt8] = Array("a".utf8)
        XCTAssertEqual(bytes.withUnsafeBytes { Kernels.fnv1a($0) }, 0xaf63_dc4c_8601_ec8c)  // published FNV-1a 64 of "a"
    }

    /// `Kernels.sum` reports whether what it wrote is finite: a NaN or ±Inf in the SIMD body or the scalar tail of
    /// the range, or an overflow of the sum itself, makes it false; values outside the range do not count.
    func testSumReportsWhetherItsOutputIsFinite() {
        func sum(_ poison: (source: Int, index: Int, value: Float)?, big: Bool = false) -> Bool {
            let sources = (0..<2).map { _ in FloatBuffer((0..<53).map { Float($0) * (big ? 2e38 : 1) }) }
            if let poison { sources[poison.source].pointer[poison.index] = poison.value }
            let out = FloatBuffer(count: 53)
            return sources.map(\.pointer).withUnsafeBufferPointer {
                Kernels.sum($0.baseAddress!, sourceCount: 2, range: 3..<50, scaledBy: 0.5, into: out.pointer)
            }
        }
        XCTAssertTrue(sum(nil))
        XCTAssertFalse(sum((1, 4, .nan)), "NaN in the SIMD body")
        XCTAssertFalse(sum((0, 49, .infinity)), "Inf in the scalar tail")
        XCTAssertFalse(sum((1, 20, -.infinity)))
        XCTAssertTrue(sum((0, 2, .nan)), "outside the range")
        XCTAssertTrue(sum((1, 50, .nan)), "outside the range")
        XCTAssertFalse(sum(nil, big: true), "2e38·i + 2e38·i overflows before the scaling")
    }

    /// The word hash sees every byte (tail included) and any one-word change; equal bytes hash equally.
    func testWordHashChangesWithAnyByte() {
        let base = (0..<27).map { UInt8($0 * 5 + 1) }
        let reference = base.withUnsafeBytes { Kernels.wordHash($0) }
        XCTAssertEqual(base.withUnsafeBytes { Kernels.wordHash($0) }, reference)
        for index in base.indices {
            var changed = base
            changed[index] ^= 0x80
            XCTAssertNotEqual(changed.withUnsafeBytes { Kernels.wordHash($0) }, reference, "byte \(index)")
        }
        XCTAssertNotEqual(Array(base.dropLast()).withUnsafeBytes { Kernels.wordHash($0) }, reference)
    }
}
