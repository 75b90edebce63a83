import CKernels
import Foundation
import LockstepCore
import XCTest

/// The C kernels compiled per ISA (CKernels): every variant this CPU runs gives the same bits, and each kernel
/// computes what its Swift or Double reference says.
final class VectorKernelTests: XCTestCase {
    private let lengths = [1, 2, 15, 16, 17, 31, 32, 33, 64, 70, 114, 1000]

    private func randomRow(_ count: Int, in range: ClosedRange<Float>, seed: UInt64) -> [Float] {
        var rng = SplitMix(seed: seed)
        return (0..<count).map { _ in Float.random(in: range, using: &rng) }
    }

    /// Every kernel's output on fixed inputs, flattened to bit patterns.
    private func allOutputs() -> [UInt32] {
        var bits: [UInt32] = []
        func keep(_ values: [Float]) { bits += values.map(\.bitPattern) }
        for (index, count) in lengths.enumerated() {
            let x = randomRow(count, in: -12...12, seed: UInt64(index)), dy = randomRow(count, in: -1...1, seed: UInt64(index + 100))
            var y = [Float](repeating: 0, count: count), gates = y, dx = y
            lockstep_exp(x, &y, count); keep(y)
            lockstep_gelu_forward(x, &y, &gates, count); keep(y); keep(gates)
            lockstep_gelu_backward(x, dy, &dx, gates, count); keep(dx)
            lockstep_gelu_backward(x, dy, &dx, nil, count); keep(dx)
            lockstep_softmax(x, &y, count); keep(y)
            keep([lockstep_log_sum_exp(x, count)])
            for visible in Set([1, count / 2 + 1, count]).sorted() {
                lockstep_masked_softmax(x, &y, 1, count, visible, 0); keep(y)
                var g = dy
                lockstep_softmax_backward(y, &g, 1, count, visible, 0); keep(g)
            }
            // A causal block in one call: row i is the one-row kernel with i + 1 visible (the last rows all of them).
            let block = (0..<(count + 2)).flatMap { randomRow(count, in: -12...12, seed: UInt64(1000 * index + $0)) }
            var probabilities = [Float](repeating: 0, count: block.count), blockGradient = block.map { $0 / 12 }
            lockstep_masked_softmax(block, &probabilities, count + 2, count, 1, 1); keep(probabilities)
            let gradientBefore = blockGradient
            lockstep_softmax_backward(probabilities, &blockGradient, count + 2, count, 1, 1); keep(blockGradient)
            for row in 0..<(count + 2) {
                let range = (row * count)..<((row + 1) * count)
                var one = [Float](repeating: 0, count: count), oneGradient = Array(gradientBefore[range])
                lockstep_masked_softmax(Array(block[range]), &one, 1, count, min(row + 1, count), 0)
                lockstep_softmax_backward(one, &oneGradient, 1, count, min(row + 1, count), 0)
                XCTAssertEqual(Array(probabilities[range]).map(\.bitPattern), one.map(\.bitPattern), "count \(count) row \(row)")
                XCTAssertEqual(Array(blockGradient[range]).map(\.bitPattern), oneGradient.map(\.bitPattern), "count \(count) row \(row)")
            }
            var filled = [Float](repeating: 0, count: 3 * count)
            lockstep_fill_rows(&filled, dy, nil, 3, count); keep(filled)
            XCTAssertEqual(filled, dy + dy + dy)
            let residual = x + dy + x
            lockstep_fill_rows(&filled, dy, residual, 3, count); keep(filled)
            XCTAssertEqual(filled, zip(residual, dy + dy + dy).map { $0 + $1 })
            var sums = randomRow(count, in: -1...1, seed: 7)
            lockstep_sum_rows(x + dy + x, &sums, 3, count); keep(sums)
            var means = [Float](repeating: 0, count: 3), inverses = means
            let weight = randomRow(count, in: 0.5...1.5, seed: 8), bias = randomRow(count, in: -1...1, seed: 9)
            var normalized = [Float](repeating: 0, count: 3 * count)
            lockstep_layer_norm_forward(x + dy + x, &normalized, weight, bias, &means, &inverses, 3, count, 1e-5)
            keep(normalized); keep(means); keep(inverses)
            var weightGradient = [Float](repeating: 0, count: count), biasGradient = weightGradient
            var inputGradient = [Float](repeating: 0, count: 3 * count)
            lockstep_layer_norm_backward(x + dy + x, dy + x + dy, &inputGradient, nil, weight, &weightGradient, &biasGradient,
                                         means, inverses, 3, count)
            keep(inputGradient); keep(weightGradient); keep(biasGradient)
            // With an addend (a residual's gradient): the same values plus it, in one pass.
            var summedGradient = inputGradient
            lockstep_layer_norm_backward(x + dy + x, dy + x + dy, &summedGradient, residual, weight, &weightGradient,
                                         &biasGradient, means, inverses, 3, count)
            XCTAssertEqual(summedGradient, zip(residual, inputGradient).map { $0 + $1 })
            bits.append(UInt32(lockstep_all_finite(x, count)))
            var sources: [UnsafeMutablePointer<Float>?] = [x, dy, x].map { row in UnsafeMutablePointer<Float>.allocate(capacity: count).initialized(from: row) }
            defer { sources.forEach { $0?.deallocate() } }
            var summed = [Float](repeating: 0, count: count)
            bits.append(UInt32(lockstep_sum_sources(&sources, 3, 0, count, 1 / 3, &summed, 0))); keep(summed)
            for (momentum, nesterov, first) in [(Float(0), Int32(0), Int32(0)), (0.9, 0, 1), (0.9, 0, 0), (0.9, 1, 0)] {
                var parameters = x, gradients = dy, velocity = summed
                lockstep_sgd_step(&parameters, &gradients, &velocity, count, 0.05, momentum, 1e-4, nesterov, first, 1)
                keep(parameters); keep(gradients); keep(velocity)
            }
        }
        // A tile transform: B^T (4x4 with zeros) on both sides of a 4x4 tile of 16-lane vectors, then accumulated.
        let tile = randomRow(4 * 4 * 16, in: -2...2, seed: 21)
        let transform = SparseTileMatrix([1, 0, -1, 0, 0, 1, 1, 0, 0, -1, 1, 0, 0, 1, 0, -1], rows: 4, columns: 4)
        var temp = [Float](repeating: 0, count: 4 * 4 * 16), transformed = temp
        Kernels.tileTransform(transform, transform, from: tile, rowStride: 64, columnStride: 16, through: &temp,
                              to: &transformed, outputRowStride: 64, outputColumnStride: 16, accumulate: false)
        Kernels.tileTransform(transform, transform, from: tile, rowStride: 64, columnStride: 16, through: &temp,
                              to: &transformed, outputRowStride: 64, outputColumnStride: 16, accumulate: true)
        keep(transformed)
        let image = randomRow(3 * 6 * 36, in: -1...1, seed: 23)
        var pooled = [Float](repeating: 0, count: 3 * 3 * 18), winners = [Int32](repeating: 0, count: 3 * 3 * 18)
        var pooledGradient = [Float](repeating: 0, count: image.count)
        Kernels.maxPool2x2(image, planes: 3, height: 6, width: 36, channels: 3, into: &pooled, winners: &winners, rectify: true)
        Kernels.maxPool2x2Backward(output: pooled, outputGradient: image, winners: winners, planes: 3, height: 6, width: 36,
                                   channels: 3, into: &pooledGradient, rectified: true)
        keep(pooled); keep(pooledGradient); bits += winners.map { UInt32(bitPattern: $0) }
        let matrix = randomRow(37 * 50, in: -1...1, seed: 24)
        var transposed = [Float](repeating: 0, count: matrix.count)
        Kernels.transpose(matrix, rows: 37, columns: 50, into: &transposed)
        keep(transposed)
        let tile8 = randomRow(8 * 8 * 16, in: -2...2, seed: 22)
        for stage in WinogradStage.allCases {
            var out = [Float](repeating: 1, count: 8 * 8 * 16)
            Kernels.winogradF45(stage, from: tile8, rowStride: 128, columnStride: 16, to: &out, outputRowStride: 128,
                                outputColumnStride: 16, accumulate: stage == .inputAdjoint)
            keep(out)
        }
        return bits
    }

    func testEveryISAThisCPURunsGivesTheSameBits() throws {
        let chosen = lockstep_kernels_active()
        defer { _ = lockstep_kernels_select(chosen) }
        XCTAssertEqual(lockstep_kernels_select(LOCKSTEP_KERNELS_BASELINE), 1)
        let reference = allOutputs()
        var compared = 0
        for isa in [LOCKSTEP_KERNELS_AVX2, LOCKSTEP_KERNELS_AVX512] where lockstep_kernels_select(isa) == 1 {
            let outputs = allOutputs()
            XCTAssertEqual(outputs.count, reference.count)
            let first = outputs.indices.first { outputs[$0] != reference[$0] }
            XCTAssertNil(first, "ISA \(isa.rawValue) differs from the baseline at output \(first ?? -1): "
                         + "\(first.map { Float(bitPattern: outputs[$0]) } ?? 0) vs \(first.map { Float(bitPattern: reference[$0]) } ?? 0)")
            compared += 1
        }
        if compared == 0 { throw XCTSkip("this CPU runs only the baseline kernels; nothing to compare") }
    }

    /// Every ISA's streaming copy writes exactly the range asked for, from any start alignment (its scalar head and
    /// tail around the whole-line stores), and leaves the floats on either side alone.
    func testStreamingCopyWritesExactlyTheRangeOnEveryISA() {
        let chosen = lockstep_kernels_active()
        defer { _ = lockstep_kernels_select(chosen) }
        let source = (0..<300).map { Float($0) + 0.5 }
        for isa in [LOCKSTEP_KERNELS_BASELINE, LOCKSTEP_KERNELS_AVX2, LOCKSTEP_KERNELS_AVX512] where lockstep_kernels_select(isa) == 1 {
            for offset in [0, 1, 5, 15, 16, 17] {
                for count in [0, 1, 15, 16, 17, 33, 64, 250] {
                    let buffer = FloatBuffer(count: 320)  // 64-byte aligned: `offset` sets the start's alignment
                    buffer.pointer.update(repeating: -1, count: 320)
                    source.withUnsafeBufferPointer { Kernels.copyStreaming($0.baseAddress!, into: buffer.pointer + offset, count: count) }
                    let expected = [Float](repeating: -1, count: offset) + source[0..<count]
                        + [Float](repeating: -1, count: 320 - offset - count)
                    XCTAssertEqual(buffer.array, expected, "ISA \(isa.rawValue), offset \(offset), count \(count)")
                }
            }
        }
    }

    /// Every shape's blocks and edges land where the element-by-element rule puts them.
    func testTransposeMovesEveryElement() {
        for (rows, columns) in [(1, 1), (1, 20), (16, 16), (17, 33), (64, 256), (256, 64), (31, 48)] {
            let source = (0..<(rows * columns)).map(Float.init)
            var destination = [Float](repeating: -1, count: source.count)
            Kernels.transpose(source, rows: rows, columns: columns, into: &destination)
            let expected = (0..<(rows * columns)).map { Float(($0 % rows) * columns + $0 / rows) }
            XCTAssertEqual(destination, expected, "\(rows) × \(columns)")
        }
    }

    func testExpIsFastMathExpBitForBit() {
        let values = (0..<100_003).map { Float(-90) + 180 * Float($0) / 100_002 } + [0, -0.0, 88.7, -104, .infinity, -.infinity]
        var y = [Float](repeating: 0, count: values.count)
        lockstep_exp(values, &y, values.count)
        for (x, got) in zip(values, y) {
            XCTAssertEqual(got.bitPattern, FastMath.exp(SIMD4(repeating: x))[0].bitPattern, "x = \(x)")
        }
    }

    func testMaskedSoftmaxIsTheSoftmaxOfTheVisiblePrefixAndZerosAfter() {
        for count in [1, 5, 16, 19, 64] {
            let row = randomRow(count, in: -20...20, seed: UInt64(count))
            for visible in 1...count {
                var y = [Float](repeating: .nan, count: count)
                Kernels.maskedSoftmax(row, into: &y, count: count, visible: visible)
                let largest = Double(row[..<visible].max()!)
                let denominator = row[..<visible].reduce(0.0) { $0 + Foundation.exp(Double($1) - largest) }
                for j in 0..<visible {
                    XCTAssertEqual(Double(y[j]), Foundation.exp(Double(row[j]) - largest) / denominator, accuracy: 1e-6)
                }
                XCTAssertTrue(y[visible...].allSatisfy { $0 == 0 }, "count \(count) visible \(visible)")
            }
        }
    }

    func testSoftmaxBackwardMatchesTheDoubleFormula() {
        for count in [3, 16, 33, 64] {
            let logits = randomRow(count, in: -5...5, seed: 11), upstream = randomRow(count, in: -1...1, seed: 12)
            for visible in [1, count / 2, count] where visible > 0 {
                var p = [Float](repeating: 0, count: count)
                Kernels.maskedSoftmax(logits, into: &p, count: count, visible: visible)
                var g = upstream
                Kernels.softmaxBackward(probabilities: p, gradient: &g, count: count, visible: visible)
                let dot = (0..<visible).reduce(0.0) { $0 + Double(p[$1]) * Double(upstream[$1]) }
                for j in 0..<count {
                    let expected = j < visible ? Double(p[j]) * (Double(upstream[j]) - dot) : 0
                    XCTAssertEqual(Double(g[j]), expected, accuracy: 1e-6, "count \(count) visible \(visible) j \(j)")
                }
            }
        }
    }

    /// P · X · Qᵀ per lane against a dense Double product, with unequal shapes (P 3×4, Q 2×4, a sparse P row).
    func testTileTransformIsTheDenseProductPerLane() {
        let p: [Float] = [1, 0, 0, 0, 0.5, -1, 0, 2, 0, 0, 0, 3], q: [Float] = [1, 1, 1, 1, 0, 1, -1, 0.25]
        let tile = randomRow(4 * 4 * 16, in: -2...2, seed: 5)
        var temp = [Float](repeating: 0, count: 3 * 4 * 16)
        var output = randomRow(3 * 2 * 16, in: -1...1, seed: 6)
        let before = output
        for accumulate in [false, true] {
            if accumulate { output = before }
            Kernels.tileTransform(SparseTileMatrix(p, rows: 3, columns: 4), SparseTileMatrix(q, rows: 2, columns: 4),
                                  from: tile, rowStride: 4 * 16, columnStride: 16, through: &temp,
                                  to: &output, outputRowStride: 2 * 16, outputColumnStride: 16, accumulate: accumulate)
            for i in 0..<3 {
                for l in 0..<2 {
                    for lane in 0..<16 {
                        var expected = 0.0
                        for a in 0..<4 { for b in 0..<4 { expected += Double(p[i * 4 + a]) * Double(tile[(a * 4 + b) * 16 + lane]) * Double(q[l * 4 + b]) } }
                        if accumulate { expected += Double(before[(i * 2 + l) * 16 + lane]) }
                        XCTAssertEqual(Double(output[(i * 2 + l) * 16 + lane]), expected, accuracy: 1e-5, "[\(i), \(l)] lane \(lane)")
                    }
                }
            }
        }
    }

    /// Samples into lanes and back on a window of strided planes (4 × 4 blocks by transposes plus ragged edges), with
    /// and without all 16 lanes: unused lanes become 0, nothing outside the window is touched, and the round trip
    /// returns the window.
    func testInterleavingLanesRoundTrips() {
        let laneStride = 120, rowStride = 13, rows = 9, columns = 11, destinationRowStride = 12 * 16
        for lanes in [1, 9, 16] {
            let source = randomRow(16 * laneStride, in: -1...1, seed: UInt64(lanes))
            var lanesOut = [Float](repeating: 7, count: rows * destinationRowStride)
            Kernels.interleaveLanes(from: source, laneStride: laneStride, rowStride: rowStride, lanes: lanes, rows: rows,
                                    columns: columns, to: &lanesOut, destinationRowStride: destinationRowStride)
            for r in 0..<rows {
                for c in 0...columns {
                    for lane in 0..<16 {
                        let value = lanesOut[r * destinationRowStride + c * 16 + lane]
                        let expected = c == columns ? 7 : lane < lanes ? source[lane * laneStride + r * rowStride + c] : 0
                        XCTAssertEqual(value, expected, "lanes \(lanes) [\(r), \(c)] lane \(lane)")
                    }
                }
            }
            var back = [Float](repeating: 3, count: 16 * laneStride)
            Kernels.deinterleaveLanes(from: lanesOut, sourceRowStride: destinationRowStride, lanes: lanes, rows: rows,
                                      columns: columns, to: &back, laneStride: laneStride, rowStride: rowStride)
            for lane in 0..<16 {
                for offset in 0..<laneStride {
                    let (r, c) = (offset / rowStride, offset % rowStride)
                    let inside = lane < lanes && r < rows && c < columns
                    XCTAssertEqual(back[lane * laneStride + offset], inside ? source[lane * laneStride + offset] : 3)
                }
            }
        }
    }

    /// 2x2 max pooling and its backward against the scalar rule, on values with ties, NaNs and signed zeros, for
    /// plane sizes with one and several 16-window groups per row and tensors ending inside a group.
    func testMaxPool2x2MatchesTheScalarRule() {
        for (planes, height, width, channels) in [(3, 28, 28, 2), (5, 14, 14, 5), (2, 6, 6, 1), (3, 4, 40, 3), (1, 2, 2, 1)] {
            var rng = SplitMix(seed: UInt64(planes * 1000 + width))
            // Few distinct values, so ties are common.
            let choices: [Float] = [-1, -0.0, 0, 0.5, 1, 2, .nan]
            let input = (0..<planes * height * width).map { _ in choices[Int(rng.next() % UInt64(choices.count))] }
            let rows = height / 2, columns = width / 2, count = planes * rows * columns
            let outputGradient = (0..<count).map { _ in [Float(-0.0), 1.5, -2][Int(rng.next() % 3)] }
            for rectify in [false, true] {
                var expected = [Float](repeating: 0, count: count), expectedWinners = [Int32](repeating: 0, count: count)
                for p in 0..<planes {
                    for oh in 0..<rows {
                        for ow in 0..<columns {
                            let a = 2 * oh * width + 2 * ow
                            var best = a, value = input[p * height * width + a]
                            for candidate in [a + 1, a + width, a + width + 1] where input[p * height * width + candidate] > value {
                                best = candidate; value = input[p * height * width + candidate]
                            }
                            let k = (p * rows + oh) * columns + ow
                            expected[k] = rectify ? max(value, 0) : value
                            expectedWinners[k] = Int32((p % channels) * height * width + best)
                        }
                    }
                }
                var output = [Float](repeating: 7, count: count), winners = [Int32](repeating: -1, count: count)
                Kernels.maxPool2x2(input, planes: planes, height: height, width: width, channels: channels, into: &output,
                                   winners: &winners, rectify: rectify)
                XCTAssertEqual(output.map(\.bitPattern), expected.map(\.bitPattern), "\(planes)x\(height)x\(width) rectify \(rectify)")
                XCTAssertEqual(winners, expectedWinners, "\(planes)x\(height)x\(width) rectify \(rectify)")
                var withoutWinners = [Float](repeating: 7, count: count)
                Kernels.maxPool2x2(input, planes: planes, height: height, width: width, channels: channels,
                                   into: &withoutWinners, winners: nil, rectify: rectify)
                XCTAssertEqual(withoutWinners.map(\.bitPattern), expected.map(\.bitPattern))
                // Backward: clear, then add each window's gradient at its winner (the loop the kernel replaces).
                var expectedGradient = [Float](repeating: 0, count: input.count)
                for k in 0..<count {
                    let sample = k / (channels * rows * columns)
                    expectedGradient[sample * channels * height * width + Int(winners[k])] +=
                        rectify && !(output[k] > 0) ? 0 : outputGradient[k]
                }
                var gradient = [Float](repeating: 9, count: input.count)
                Kernels.maxPool2x2Backward(output: output, outputGradient: outputGradient, winners: winners, planes: planes,
                                           height: height, width: width, channels: channels, into: &gradient, rectified: rectify)
                XCTAssertEqual(gradient.map(\.bitPattern), expectedGradient.map(\.bitPattern), "\(planes)x\(height)x\(width) backward rectify \(rectify)")
            }
        }
    }

    func testSumRowsAddsEachColumnInRowOrder() {
        for width in [1, 16, 19, 64] {
            let matrix = randomRow(5 * width, in: -3...3, seed: UInt64(width))
            var row = randomRow(width, in: -1...1, seed: 99), expected = row
            Kernels.sumRows(matrix, into: &row, rows: 5, width: width)
            for r in 0..<5 { for c in 0..<width { expected[c] += matrix[r * width + c] } }
            XCTAssertEqual(row.map(\.bitPattern), expected.map(\.bitPattern))
        }
    }
}

/// A small seeded generator for reproducible test inputs.
private struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private extension UnsafeMutablePointer where Pointee == Float {
    /// Copies `values` into this freshly allocated memory and returns it.
    func initialized(from values: [Float]) -> Self {
        initialize(from: values, count: values.count)
        return self
    }
}
