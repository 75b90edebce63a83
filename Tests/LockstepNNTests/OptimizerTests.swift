import XCTest
import LockstepCore
@testable import LockstepNN

/// Expected values come from the PyTorch update rules evaluated in float64 with numpy (by hand for step 1:
/// e.g. plain SGD p = 1 - 0.1·(0.1 + 0.01·1) = 0.989).
final class OptimizerTests: XCTestCase {
    private let initial: [Float] = [1.0, -2.0, 0.5]
    private let gradientSequence: [[Float]] = [[0.1, -0.2, 0.3], [-0.05, 0.4, 0.0], [0.2, 0.1, -0.1]]

    /// Runs `optimizer` over the gradient sequence and returns the parameters after each step.
    private func run(_ optimizer: Optimizer, learningRate: Float) -> [[Float]] {
        let parameters = FloatBuffer(initial)
        var history: [[Float]] = []
        for gradient in gradientSequence {
            let g = FloatBuffer(gradient)
            // Keep the buffer alive across the call: `g.pointer` alone does not retain it.
            withExtendedLifetime(g) {
                optimizer.step(parameters: parameters.pointer, gradients: g.pointer, count: initial.count, learningRate: learningRate)
            }
            history.append(parameters.array)
        }
        return history
    }

    private func assertClose(_ actual: [Float], _ expected: [Double], tolerance: Double = 2e-6,
                             _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, message, file: file, line: line)
        for (a, e) in zip(actual, expected) {
            XCTAssertEqual(Double(a), e, accuracy: tolerance, "\(message): \(actual) vs \(expected)", file: file, line: line)
        }
    }

    func testPlainSGDWithWeightDecay() {
        let optimizer = SGD(parameterCount: 3, weightDecay: 0.01)
        XCTAssertTrue(optimizer.stateBuffers.isEmpty)
        let history = run(optimizer, learningRate: 0.1)
        assertClose(history[0], [0.989, -1.978, 0.4695], "step 1")
        assertClose(history[1], [0.993011, -2.016022, 0.4690305], "step 2")
        assertClose(history[2], [0.972017989, -2.02400598, 0.47856147], "step 3")
        XCTAssertEqual(optimizer.stepCount, 3)
    }

    func testSGDMomentum() {
        let optimizer = SGD(parameterCount: 3, momentum: 0.9)
        let history = run(optimizer, learningRate: 0.1)
        assertClose(history[0], [0.99, -1.98, 0.47], "step 1")
        assertClose(history[1], [0.986, -2.002, 0.443], "step 2")
        assertClose(history[2], [0.9624, -2.0318, 0.4287], "step 3")
        // buf3 = 0.9·(0.9·g1 + g2) + g3
        XCTAssertEqual(optimizer.stateBuffers.map(\.name), ["momentum_buffer"])
        assertClose(optimizer.stateBuffers[0].buffer.array, [0.236, 0.298, 0.143], "momentum buffer")
    }

    func testSGDNesterovWithWeightDecay() {
        let optimizer = SGD(parameterCount: 3, momentum: 0.9, nesterov: true, weightDecay: 0.1)
        let history = run(optimizer, learningRate: 0.1)
        assertClose(history[0], [0.962, -1.924, 0.4335], "step 1")
        assertClose(history[1], [0.937022, -1.931044, 0.3969135], "step 2")
        assertClose(history[2], [0.862896382, -1.90100976, 0.379345793], "step 3")
    }

    func testAdamWithL2WeightDecay() {
        let optimizer = Adam(parameterCount: 3, weightDecay: 0.1)
        XCTAssertEqual(optimizer.kind, "adam")
        let history = run(optimizer, learningRate: 0.01)
        assertClose(history[0], [0.990000001, -1.99, 0.49], "step 1")
        assertClose(history[1], [0.981720481, -1.98735593, 0.482331962], "step 2")
        assertClose(history[2], [0.972827847, -1.98398303, 0.477393982], "step 3")
        XCTAssertEqual(optimizer.stateBuffers.map(\.name), ["exp_avg", "exp_avg_sq"])
        // The L2 term enters the moments: m3 includes wd·p.
        assertClose(optimizer.stateBuffers[0].buffer.array, [0.0504272048, -0.0241835593, 0.0275833196], "exp_avg")
        assertClose(optimizer.stateBuffers[1].buffer.array, [0.000131225209, 0.000209789476, 0.000127333523],
                    tolerance: 1e-9, "exp_avg_sq")
        XCTAssertEqual(optimizer.stepCount, 3)
    }

    func testAdamWDecoupledWeightDecay() {
        let optimizer = Adam.adamW(parameterCount: 3, weightDecay: 0.1)
        XCTAssertEqual(optimizer.kind, "adamw")
        let history = run(optimizer, learningRate: 0.01)
        assertClose(history[0], [0.989000001, -1.988, 0.4895], "step 1")
        assertClose(history[1], [0.985347631, -1.98967304, 0.482309918], "step 2")
        assertClose(history[2], [0.977781168, -1.99183987, 0.478936255], "step 3")
        // Decoupled decay keeps the moments free of wd·p: m3 = 0.81·0.1·g1 + 0.9·0.1·g2 + 0.1·g3.
        assertClose(optimizer.stateBuffers[0].buffer.array, [0.0236, 0.0298, 0.0143], "exp_avg")
    }

    func testAdamEpsilonIsAddedAfterBiasCorrectedSqrt() {
        // A large epsilon makes its placement visible: step 1 moves by lr·g/(|g| + eps), e.g. 0.1·0.1/0.2 = 0.05.
        let optimizer = Adam(parameterCount: 3, epsilon: 0.1)
        let history = run(optimizer, learningRate: 0.1)
        assertClose(history[0], [0.95, -1.93333333, 0.425], "step 1")
        assertClose(history[1], [0.938241714, -1.96114894, 0.379464966], "step 2")
        assertClose(history[2], [0.900757704, -1.99131249, 0.36078627], "step 3")
    }

    func testResumingFromSavedStateMatchesUninterruptedRun() {
        let reference = Adam(parameterCount: 3)
        let expected = run(reference, learningRate: 0.01).last!

        // Two steps, copy state into a fresh optimizer, then the third step.
        let first = Adam(parameterCount: 3)
        let parameters = FloatBuffer(initial)
        let gradients = gradientSequence.map { FloatBuffer($0) }
        for gradient in gradients.prefix(2) {
            first.step(parameters: parameters.pointer, gradients: gradient.pointer, count: 3, learningRate: 0.01)
        }
        let resumed = Adam(parameterCount: 3)
        resumed.stepCount = first.stepCount
        for (source, target) in zip(first.stateBuffers, resumed.stateBuffers) {
            target.buffer.pointer.update(from: source.buffer.pointer, count: 3)
        }
        resumed.step(parameters: parameters.pointer, gradients: gradients[2].pointer, count: 3, learningRate: 0.01)
        withExtendedLifetime(gradients) {}
        XCTAssertEqual(parameters.array, expected)

        resumed.resetState()
        XCTAssertEqual(resumed.stepCount, 0)
        XCTAssertEqual(resumed.stateBuffers[0].buffer.array, [0, 0, 0])
    }

    func testClippingScalesToMaxNormAndReturnsPreClipNorm() {
        let gradients = FloatBuffer([3, 4, 0, 12])
        let norm = GradientClipping.clipByGlobalNorm(gradients.pointer, count: 4, maxNorm: 6.5)
        XCTAssertEqual(norm, 13, accuracy: 1e-6)
        assertClose(gradients.array, [1.49999988, 1.99999985, 0, 5.99999954], "clipped")
        XCTAssertEqual(GradientClipping.globalNorm(gradients.pointer, count: 4), 6.5, accuracy: 1e-5)
    }

    func testClippingLeavesSmallGradientsUntouched() {
        let gradients = FloatBuffer([3, 4])
        let norm = GradientClipping.clipByGlobalNorm(gradients.pointer, count: 2, maxNorm: 10)
        XCTAssertEqual(norm, 5, accuracy: 1e-6)
        XCTAssertEqual(gradients.array, [3, 4])
    }

    func testClippingLargeBufferUsesAllElements() {
        // 5000 elements crosses the 1024-element blocks of sumOfSquares; norm = sqrt(5000 · 0.04) = sqrt(200).
        let gradients = FloatBuffer([Float](repeating: 0.2, count: 5000))
        let norm = GradientClipping.clipByGlobalNorm(gradients.pointer, count: 5000, maxNorm: 1)
        XCTAssertEqual(Double(norm), 200.0.squareRoot(), accuracy: 1e-4)
        XCTAssertEqual(Double(GradientClipping.globalNorm(gradients.pointer, count: 5000)), 1, accuracy: 1e-5)
    }

    func testClippingNonFiniteNormLeavesGradients() {
        let gradients = FloatBuffer([1, .nan, 2])
        let norm = GradientClipping.clipByGlobalNorm(gradients.pointer, count: 3, maxNorm: 1)
        XCTAssertTrue(norm.isNaN)
        XCTAssertEqual(gradients.array[0], 1)
        XCTAssertEqual(gradients.array[2], 2)
    }
}
