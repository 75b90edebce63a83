import Foundation
import LockstepCore
import XCTest

final class FastMathTests: XCTestCase {
    /// Every float step of a dense grid, against glibc's correctly rounded-ish expf and tanhf.
    private func maximumRelativeError(over range: ClosedRange<Float>, samples: Int, _ fast: (SIMD4<Float>) -> SIMD4<Float>,
                                      _ reference: (Double) -> Double) -> (error: Double, at: Float) {
        var worst = (error: 0.0, at: Float(0))
        for i in 0..<samples {
            let x = range.lowerBound + (range.upperBound - range.lowerBound) * Float(i) / Float(samples - 1)
            let expected = reference(Double(x))
            let got = Double(fast(SIMD4(repeating: x))[0])
            let error = expected == 0 ? abs(got) : abs(got - expected) / abs(expected)
            if error > worst.error { worst = (error, x) }
        }
        return worst
    }

    func testExpIsAccurateOverTheFloatRange() {
        let worst = maximumRelativeError(over: -87...88, samples: 400_003, FastMath.exp, Foundation.exp)
        XCTAssertLessThan(worst.error, 3e-7, "at \(worst.at)")
        XCTAssertEqual(FastMath.exp(SIMD4(repeating: 0))[0], 1)
    }

    func testTanhIsAccurateIncludingNearZeroAndTheSwitchPoint() {
        for range: ClosedRange<Float> in [-12...12, -0.6...0.6, -1e-3...1e-3] {
            let worst = maximumRelativeError(over: range, samples: 200_001, FastMath.tanh, Foundation.tanh)
            XCTAssertLessThan(worst.error, 5e-7, "\(range) at \(worst.at)")
        }
        let ends = FastMath.tanh(SIMD4(-50, 50, 0, -0.0))
        XCTAssertEqual(ends[0], -1); XCTAssertEqual(ends[1], 1); XCTAssertEqual(ends[2], 0)
        XCTAssertEqual(ends[3].sign, .minus)
    }

    func testMapGivesEachElementTheSameResultWhateverItsPosition() {
        let values: [Float] = (0..<11).map { Float($0) * 0.37 - 2 }
        var whole = [Float](repeating: 0, count: values.count)
        FastMath.map(values, into: &whole, count: values.count, FastMath.tanh)
        for (i, value) in values.enumerated() {
            XCTAssertEqual(whole[i].bitPattern, FastMath.tanh(SIMD4(repeating: value))[0].bitPattern, "element \(i)")
        }
    }

    /// Softmax and log-sum-exp against Double references on rows of every length 1…19 (full lanes and tails).
    func testSoftmaxAndLogSumExpMatchDoubleReferences() {
        var rng = SystemRandomNumberGenerator()
        for count in 1..<20 {
            let row = (0..<count).map { _ in Float.random(in: -30...30, using: &rng) }
            let largest = Double(row.max()!)
            let denominator = row.reduce(0.0) { $0 + Foundation.exp(Double($1) - largest) }
            var y = [Float](repeating: 0, count: count)
            Kernels.softmax(row, into: &y, count: count)
            for (value, p) in zip(row, y) {
                XCTAssertEqual(Double(p), Foundation.exp(Double(value) - largest) / denominator, accuracy: 1e-6, "count \(count)")
            }
            XCTAssertEqual(Double(Kernels.logSumExp(row, count: count)), Foundation.log(denominator) + largest, accuracy: 1e-5)
        }
    }
}
