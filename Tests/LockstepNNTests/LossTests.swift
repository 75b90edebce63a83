import XCTest
import LockstepCore
import LockstepNN

/// Loss values against hand-computed numbers and loss gradients against finite differences.
final class LossTests: XCTestCase {
    private func value(_ loss: Loss, _ output: [Float], _ targets: [Float], batch: Int, width: Int) -> Float {
        output.withUnsafeBufferPointer { o in
            targets.withUnsafeBufferPointer { t in loss.forward(output: o.baseAddress!, targets: t.baseAddress!, batch: batch, width: width) }
        }
    }

    private func gradient(_ loss: Loss, _ output: [Float], _ targets: [Float], batch: Int, width: Int, scale: Float) -> [Float] {
        var result = [Float](repeating: .nan, count: output.count)
        output.withUnsafeBufferPointer { o in
            targets.withUnsafeBufferPointer { t in
                result.withUnsafeMutableBufferPointer { g in
                    loss.backward(output: o.baseAddress!, targets: t.baseAddress!, gradient: g.baseAddress!, batch: batch, width: width, scale: scale)
                }
            }
        }
        return result
    }

    func testSoftmaxCrossEntropyGradient() {
        let loss = SoftmaxCrossEntropy()
        XCTAssertEqual(loss.targetWidth(outputWidth: 4), 1)
        GradientCheck.checkLoss(loss, output: TestData.normal(12, seed: 21, scale: 2), targets: [3, 0, 2], batch: 3, width: 4)
        // Uniform logits: loss = log(width).
        XCTAssertEqual(value(loss, [0, 0, 0, 0], [1], batch: 1, width: 4), logf(4), accuracy: 1e-6)
    }

    func testMSEValueAndGradient() {
        let loss = MSELoss()
        XCTAssertEqual(loss.kind, "mse")
        XCTAssertEqual(loss.targetWidth(outputWidth: 3), 3)
        // ((1−0)² + (2−4)² + (−1−(−1))² + (0.5−0)²) / 4 = 5.25 / 4
        XCTAssertEqual(value(loss, [1, 2, -1, 0.5], [0, 4, -1, 0], batch: 2, width: 2), 1.3125, accuracy: 1e-6)
        XCTAssertEqual(gradient(loss, [1, 2, -1, 0.5], [0, 4, -1, 0], batch: 2, width: 2, scale: 0.5), [0.25, -0.5, 0, 0.125])
        GradientCheck.checkLoss(loss, output: TestData.normal(10, seed: 22), targets: TestData.normal(10, seed: 23), batch: 2, width: 5)
    }

    func testBCEWithLogitsValueAndGradient() {
        let loss = BCEWithLogitsLoss()
        XCTAssertEqual(loss.kind, "bce_with_logits")
        XCTAssertEqual(loss.targetWidth(outputWidth: 3), 3)
        // Reference: −t·log σ(x) − (1−t)·log(1−σ(x)) in Double.
        let logits: [Float] = [2, -1, 0.5, -3]
        let targets: [Float] = [1, 0, 0.3, 1]
        var expected = 0.0
        for (x, t) in zip(logits.map(Double.init), targets.map(Double.init)) {
            let s = 1 / (1 + exp(-x))
            expected += -t * log(s) - (1 - t) * log(1 - s)
        }
        XCTAssertEqual(Double(value(loss, logits, targets, batch: 2, width: 2)), expected / 4, accuracy: 1e-6)
        // Huge logits stay finite: the stable form never evaluates exp of a large positive number.
        let extreme = value(loss, [200, -200], [0, 1], batch: 1, width: 2)
        XCTAssertEqual(extreme, 200, accuracy: 1e-3)
        XCTAssertEqual(gradient(loss, [200, -200], [0, 1], batch: 1, width: 2, scale: 1), [0.5, -0.5])
        GradientCheck.checkLoss(loss, output: TestData.normal(12, seed: 24, scale: 2),
                                targets: TestData.normal(12, seed: 25).map { $0 > 0 ? 1 : 0 }, batch: 3, width: 4)
    }

    func testScaleMultipliesEveryGradient() {
        let output = TestData.normal(8, seed: 26)
        let losses: [(Loss, [Float])] = [(SoftmaxCrossEntropy(), [1, 3]), (MSELoss(), TestData.normal(8, seed: 27)),
                                          (BCEWithLogitsLoss(), [1, 0, 1, 1, 0, 0, 1, 0])]
        for (loss, targets) in losses {
            let full = gradient(loss, output, targets, batch: 2, width: 4, scale: 1)
            let quarter = gradient(loss, output, targets, batch: 2, width: 4, scale: 0.25)
            for (f, q) in zip(full, quarter) { XCTAssertEqual(q, f * 0.25, accuracy: 1e-7, loss.kind) }
        }
    }
}
