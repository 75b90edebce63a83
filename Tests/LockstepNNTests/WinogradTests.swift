import XCTest
import LockstepCore
@testable import LockstepNN

/// Winograd convolution against the im2col path (the reference) and finite differences.
final class WinogradTests: XCTestCase {
    func testTransformsReproduceDirectCorrelation() {
        var rng = RNG(seed: 3)
        for (m, r) in [(2, 3), (4, 3), (6, 3), (2, 5), (3, 5), (4, 5), (2, 7)] {
            let transform = WinogradTransform(outputTile: m, kernel: r)
            XCTAssertEqual(transform.inputTile, m + r - 1)
            // Bᵀ holds the integer polynomial coefficients when every point is an integer (n ≤ 6: 0, ±1, ±2, ∞).
            if m + r - 1 <= 6 {
                for value in transform.inputTransform { XCTAssertEqual(value, value.rounded(), "F(\(m),\(r)) Bᵀ \(value)") }
            }
            for _ in 0..<5 {
                let d = (0..<(m + r - 1)).map { _ in rng.normal() }, g = (0..<r).map { _ in rng.normal() }
                let y = transform.correlate(d, g)
                for j in 0..<m {
                    let terms = (0..<r).map { Double(d[j + $0]) * Double(g[$0]) }
                    let expected = terms.reduce(0, +), magnitude = terms.map(abs).reduce(0, +)
                    // Float rounding of the transforms: a few ulps of the summed magnitudes, more for the larger F.
                    XCTAssertEqual(Double(y[j]), expected, accuracy: 1e-5 * Double(m * m) * max(magnitude, 1),
                                   "F(\(m),\(r)) output \(j)")
                }
            }
        }
    }

    /// CKernels' written-out F(4×4, 5×5) implements exactly the matrices `WinogradTransform` builds (else the layer
    /// would silently fall back to the sparse transforms), and each of its four stages computes what the sparse
    /// transform computes with them, up to rounding.
    func testWrittenOutF45MatchesTheSparseTransforms() {
        let transform = WinogradTransform(outputTile: 4, kernel: 5)
        XCTAssertEqual(transform.inputTransform, Kernels.winogradF45Matrices.input)
        XCTAssertEqual(transform.outputTransform, Kernels.winogradF45Matrices.output)
        XCTAssertTrue(WinogradConvolution(transform: transform, inputChannels: 8, outputChannels: 8, padding: (2, 2)).writtenOut)
        XCTAssertFalse(WinogradConvolution(transform: WinogradTransform(outputTile: 2, kernel: 5), inputChannels: 8,
                                           outputChannels: 8, padding: (2, 2)).writtenOut)
        func transposed(_ values: [Float], rows: Int, columns: Int) -> [Float] {
            (0..<rows * columns).map { values[($0 % rows) * columns + $0 / rows] }
        }
        let bT = transform.inputTransform, aT = transform.outputTransform
        let matrices: [(WinogradStage, [Float], rows: Int, columns: Int)] = [
            (.input, bT, 8, 8), (.inputAdjoint, transposed(bT, rows: 8, columns: 8), 8, 8),
            (.output, aT, 4, 8), (.outputAdjoint, transposed(aT, rows: 4, columns: 8), 8, 4),
        ]
        for (stage, matrix, rows, columns) in matrices {
            let sparse = SparseTileMatrix(matrix, rows: rows, columns: columns)
            let tile = TestData.normal(columns * columns * 16, seed: 77)
            for accumulate in [false, true] {
                let start = TestData.normal(rows * rows * 16, seed: 78)
                var expected = start, actual = start, temp = [Float](repeating: 0, count: rows * columns * 16)
                Kernels.tileTransform(sparse, sparse, from: tile, rowStride: columns * 16, columnStride: 16, through: &temp,
                                      to: &expected, outputRowStride: rows * 16, outputColumnStride: 16, accumulate: accumulate)
                Kernels.winogradF45(stage, from: tile, rowStride: columns * 16, columnStride: 16, to: &actual,
                                    outputRowStride: rows * 16, outputColumnStride: 16, accumulate: accumulate)
                // Coefficients up to 5.25 on both sides: sums of up to 64 terms of size ~30, rounded in another order.
                let scale = expected.map(abs).max()!
                for i in expected.indices {
                    XCTAssertEqual(actual[i], expected[i], accuracy: 2e-6 * scale, "\(stage) accumulate \(accumulate) [\(i)]")
                }
            }
        }
    }

    /// The same layer twice: Winograd and im2col with identical parameters.
    private func pair(inputChannels: Int, outputChannels: Int, kernel: Int, padding: Int, bias: Bool = true,
                      inputShape: [Int], batch: Int, blockBytes: Int? = nil, outputTile: Int? = nil) throws -> (winograd: LayerHarness, im2col: LayerHarness) {
        let winogradLayer = Conv2D(inputChannels: inputChannels, outputChannels: outputChannels, kernelSize: kernel,
                                   padding: padding, bias: bias, algorithm: .winograd)
        if let blockBytes { winogradLayer.winogradBlockBytes = blockBytes }
        if let outputTile { winogradLayer.winogradOutputTile = outputTile }
        let im2colLayer = Conv2D(inputChannels: inputChannels, outputChannels: outputChannels, kernelSize: kernel,
                                 padding: padding, bias: bias, algorithm: .im2col)
        XCTAssertTrue(winogradLayer.usesWinograd)
        XCTAssertFalse(im2colLayer.usesWinograd)
        let winograd = try LayerHarness(winogradLayer, inputShape: inputShape, batch: batch, randomParameters: true)
        let im2col = try LayerHarness(im2colLayer, inputShape: inputShape, batch: batch, randomParameters: true)
        XCTAssertEqual(winograd.parameters.values.array, im2col.parameters.values.array)
        return (winograd, im2col)
    }

    /// Largest |a − e| over the tensor relative to its largest |e|.
    private func relativeError(_ a: [Float], _ e: [Float]) -> Double {
        XCTAssertEqual(a.count, e.count)
        let scale = e.map { Double(abs($0)) }.max() ?? 0
        XCTAssertGreaterThan(scale, 0, "a reference of zeros cannot fail")
        return zip(a, e).map { abs(Double($0) - Double($1)) }.max()! / scale
    }

    func testForwardAndGradientsMatchIm2col() throws {
        // (inC, outC, kernel, padding, [C, H, W], batch, block bytes): odd output sizes leave partial border tiles;
        // batch 17 fills one 16-lane group and starts a second; 5·17 = 85 filters leave a partial filter vector;
        // small blocks split a sample's tiles into several blocks with a partial last one.
        let cases: [(Int, Int, Int, Int, [Int], Int, Int?)] = [
            (1, 2, 3, 1, [1, 5, 5], 1, nil),
            (2, 3, 3, 0, [2, 7, 6], 3, nil),
            (3, 4, 3, 1, [3, 9, 11], 3, nil),
            (2, 3, 5, 2, [2, 7, 7], 1, nil),
            (5, 17, 5, 2, [5, 9, 8], 3, nil),
            (3, 2, 5, 0, [3, 9, 10], 3, nil),
            (4, 5, 5, 1, [4, 8, 9], 17, nil),
            (8, 6, 3, 2, [8, 10, 9], 3, 40_000),
            (6, 8, 5, 2, [6, 14, 14], 17, 100_000),
            (2, 3, 2, 0, [2, 6, 7], 3, nil),
            (3, 2, 7, 3, [3, 9, 9], 3, nil),
        ]
        for tile in [2, 3, 4] { for (index, test) in cases.enumerated() {
            let (inC, outC, kernel, padding, shape, batch, blockBytes) = test
            // Tiles over 8 inputs need the points ±3: F(3, 7) and F(4, 7) measured 1.4e-4 and 4e-4, so
            // `Conv2D.winogradOutputTile` never picks them (checked in testSelection).
            guard tile + kernel - 1 <= 8 else { continue }
            let layers = try pair(inputChannels: inC, outputChannels: outC, kernel: kernel, padding: padding,
                                  bias: index % 3 != 1, inputShape: shape, batch: batch, blockBytes: blockBytes,
                                  outputTile: tile)
            let input = TestData.normal(layers.winograd.inputCount, seed: UInt64(40 + index))
            let outputGradient = TestData.normal(layers.winograd.outputCount, seed: UInt64(60 + index))
            let context = LayerContext(training: true)
            let expected = layers.im2col.gradients(input: input, outputGradient: outputGradient, context: context)
            let actual = layers.winograd.gradients(input: input, outputGradient: outputGradient, context: context)
            let expectedOutput = layers.im2col.forward(input, context: context)
            let actualOutput = layers.winograd.forward(input, context: context)
            // Winograd rounds in its transforms (coefficients up to 5 and fractions like 1/24; F(4, r) also uses
            // the points ±1/2) and sums in another order than im2col. Measured worst over these cases, relative to
            // the tensor's largest value: F(2, 3) 3e-7, F(2, 5) 9e-6, F(3, 5) 5e-6, F(4, 3) 5e-6, F(4, 5) 6e-6,
            // F(4, 2) 7e-7, F(2, 7) 6e-6.
            let label = "F(\(tile), \(kernel)) case \(index) \(test)"
            XCTAssertLessThan(relativeError(actualOutput, expectedOutput), 3e-5, "\(label) output")
            XCTAssertLessThan(relativeError(actual.input, expected.input), 3e-5, "\(label) input gradient")
            XCTAssertLessThan(relativeError(actual.parameters, expected.parameters), 3e-5, "\(label) parameter gradients")
        } }
    }

    func testFiniteDifferences() throws {
        for (kernel, padding, shape) in [(3, 1, [2, 5, 6]), (5, 2, [2, 5, 5])] {
            let layer = Conv2D(inputChannels: 2, outputChannels: 3, kernelSize: kernel, padding: padding, algorithm: .winograd)
            let harness = try LayerHarness(layer, inputShape: shape, batch: 2, randomParameters: true)
            // Linear in input and parameters, so a large step costs no accuracy; it keeps the forward's rounding
            // (larger than im2col's: the transforms' fractional coefficients) divided by 2·step below the tolerance.
            // The floor allows 5e-5 absolute error on near-zero entries (about 1e-5 of the largest, the rounding level).
            GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 21), step: 4, floor: 0.05)
        }
    }

    func testSelection() throws {
        XCTAssertFalse(Conv2D(inputChannels: 1, outputChannels: 32, kernelSize: 5, padding: 2).usesWinograd)
        XCTAssertTrue(Conv2D(inputChannels: 32, outputChannels: 64, kernelSize: 5, padding: 2).usesWinograd)
        XCTAssertFalse(Conv2D(inputChannels: 16, outputChannels: 16, kernelSize: 3, padding: 1).usesWinograd)
        XCTAssertTrue(Conv2D(inputChannels: 16, outputChannels: 16, kernelSize: 3, padding: 1, algorithm: .winograd).usesWinograd)
        XCTAssertFalse(Conv2D(inputChannels: 32, outputChannels: 64, kernelSize: 3, stride: 2, padding: 1).usesWinograd)
        XCTAssertFalse(Conv2D(inputChannels: 32, outputChannels: 64, kernelSize: 1).usesWinograd)
        for kernel in 2...7 {
            XCTAssertLessThanOrEqual(Conv2D.winogradOutputTile(kernel: kernel) + kernel - 1, 8, "kernel \(kernel)")
        }
        XCTAssertFalse(Conv2D(inputChannels: 32, outputChannels: 64, kernelSize: 5, padding: 2, algorithm: .im2col).usesWinograd)
        let strided = Conv2D(inputChannels: 4, outputChannels: 4, kernelSize: 3, stride: 2, algorithm: .winograd)
        XCTAssertThrowsError(try strided.outputShape(inputShape: [4, 9, 9])) { error in
            XCTAssertTrue("\(error)".contains("winograd needs stride 1"), "\(error)")
        }
        let rectangular = Conv2D(inputChannels: 4, outputChannels: 4, kernelSize: (3, 5), algorithm: .winograd)
        XCTAssertThrowsError(try rectangular.outputShape(inputShape: [4, 9, 9]))
        XCTAssertThrowsError(try Sequential([strided], inputShape: [4, 9, 9])) { error in
            XCTAssertTrue("\(error)".contains("layer 0 (conv2d)"), "\(error)")
        }
    }

    func testTrainingAgreesWithIm2col() throws {
        // 30 plain gradient steps on a squared error: the weights must stay within the rounding difference.
        let layers = try pair(inputChannels: 4, outputChannels: 3, kernel: 5, padding: 2, inputShape: [4, 7, 7], batch: 5)
        let input = TestData.normal(layers.winograd.inputCount, seed: 31)
        let target = TestData.normal(layers.winograd.outputCount, seed: 32)
        var losses: [[Double]] = [[], []]
        for (which, harness) in [layers.winograd, layers.im2col].enumerated() {
            for _ in 0..<30 {
                let output = harness.forward(input, context: LayerContext(training: true))
                let difference = zip(output, target).map { $0 - $1 }
                losses[which].append(difference.reduce(0) { $0 + 0.5 * Double($1 * $1) })
                let gradient = harness.gradients(input: input, outputGradient: difference, context: LayerContext(training: true))
                let values = harness.parameters.values.pointer
                for (k, g) in gradient.parameters.enumerated() { values[k] -= 0.002 * g }
            }
        }
        XCTAssertLessThan(losses[0].last!, 0.5 * losses[0].first!, "training reduces the loss")
        for (a, b) in zip(losses[0], losses[1]) { XCTAssertEqual(a, b, accuracy: 1e-4 * b) }
        XCTAssertLessThan(relativeError(layers.winograd.parameters.values.array, layers.im2col.parameters.values.array), 1e-4)
    }
}
