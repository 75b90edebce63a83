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

    func testRMSpropPlain() {
        // Step 1: v = 0.01·g², so p moves by lr·g/(0.1·|g|) = 0.1 against the gradient's sign (e.g. 1 → 0.9).
        let optimizer = RMSprop(parameterCount: 3)
        XCTAssertEqual(optimizer.kind, "rmsprop")
        XCTAssertEqual(optimizer.stateBuffers.map(\.name), ["square_avg"])
        let history = run(optimizer, learningRate: 0.01)
        assertClose(history[0], [0.9000001, -1.90000005, 0.400000033], "step 1")
        assertClose(history[1], [0.944901385, -1.989532326, 0.400000033], "step 2")
        assertClose(history[2], [0.857427457, -2.011479674, 0.431909843], "step 3")
        assertClose(optimizer.stateBuffers[0].buffer.array, [0.00052276, 0.00207604, 0.00098209], tolerance: 1e-9, "square_avg")
    }

    func testRMSpropMomentumWithWeightDecay() {
        let optimizer = RMSprop(parameterCount: 3, weightDecay: 0.1, momentum: 0.9)
        XCTAssertEqual(optimizer.stateBuffers.map(\.name), ["square_avg", "momentum_buffer"])
        let history = run(optimizer, learningRate: 0.01)
        assertClose(history[0], [0.90000005, -1.900000025, 0.400000029], "step 1")
        assertClose(history[1], [0.790293517, -1.856666703, 0.298588938], "step 2")
        assertClose(history[2], [0.610550301, -1.798874644, 0.227034734], "step 3")
        // The buffer accumulates g/d (of order 1/sqrt(1-α) = 10 per step), not lr·g/d.
        assertClose(optimizer.stateBuffers[1].buffer.array, [17.974321568, -5.779205957, 7.155420359], tolerance: 2e-5, "momentum_buffer")
    }

    func testRMSpropCenteredWithMomentum() {
        // A large eps makes its placement (after the square root) visible.
        let optimizer = RMSprop(parameterCount: 3, alpha: 0.9, epsilon: 1e-3, momentum: 0.5, centered: true)
        XCTAssertEqual(optimizer.stateBuffers.map(\.name), ["square_avg", "momentum_buffer", "grad_avg"])
        let history = run(optimizer, learningRate: 0.01)
        assertClose(history[0], [0.967741935, -1.967213115, 0.467032967], "step 1")
        assertClose(history[1], [0.966032549, -1.979542795, 0.450549451], "step 2")
        assertClose(history[2], [0.935730649, -1.993157175, 0.453306437], "step 3")
        assertClose(optimizer.stateBuffers[0].buffer.array, [0.005035, 0.01864, 0.00829], tolerance: 1e-8, "square_avg")
        assertClose(optimizer.stateBuffers[2].buffer.array, [0.0236, 0.0298, 0.0143], "grad_avg")
        assertClose(optimizer.stateBuffers[1].buffer.array, [3.030189916, 1.361437984, -0.275698676], tolerance: 1e-5, "momentum_buffer")
    }

    func testAdagradPlain() {
        // Step 1: sum = g², so p moves by lr·g/|g| = 0.1 against the gradient's sign.
        let optimizer = Adagrad(parameterCount: 3)
        XCTAssertEqual(optimizer.kind, "adagrad")
        XCTAssertEqual(optimizer.stateBuffers.map(\.name), ["sum"])
        let history = run(optimizer, learningRate: 0.1)
        assertClose(history[0], [0.9, -1.9, 0.4], "step 1")
        assertClose(history[1], [0.94472136, -1.989442719, 0.4], "step 2")
        assertClose(history[2], [0.857434204, -2.011264508, 0.431622777], "step 3")
        assertClose(optimizer.stateBuffers[0].buffer.array, [0.0525, 0.21, 0.1], tolerance: 1e-7, "sum")
    }

    func testAdagradLearningRateDecayWeightDecayAndInitialAccumulator() {
        let optimizer = Adagrad(parameterCount: 3, learningRateDecay: 0.5, weightDecay: 0.1, initialAccumulatorValue: 0.1)
        XCTAssertEqual(optimizer.stateBuffers[0].buffer.array, [0.1, 0.1, 0.1])
        let history = run(optimizer, learningRate: 0.1)
        assertClose(history[0], [0.946547752, -1.921553546, 0.425800148], "step 1")
        assertClose(history[1], [0.938647488, -1.946717763, 0.419806555], "step 2")
        assertClose(history[2], [0.907899516, -1.93824548, 0.42588624], "step 3")
        assertClose(optimizer.stateBuffers[0].buffer.array, [0.22835054, 0.312162142, 0.227679302], tolerance: 1e-7, "sum")
        // A fresh Adagrad's sum holds the initial value, not zero.
        optimizer.resetState()
        XCTAssertEqual(optimizer.stepCount, 0)
        XCTAssertEqual(optimizer.stateBuffers[0].buffer.array, [0.1, 0.1, 0.1])
    }

    func testVectorizedStepsMatchOneParameterAtATime() {
        // 19 parameters: two full 8-lane blocks and a tail of 3; each must equal a 1-parameter optimizer's result.
        let makers: [(Int) -> Optimizer] = [{ RMSprop(parameterCount: $0, weightDecay: 0.1, momentum: 0.9, centered: true) },
                                            { RMSprop(parameterCount: $0) },
                                            { Adagrad(parameterCount: $0, learningRateDecay: 0.1, weightDecay: 0.1) }]
        let initial = (0..<19).map { Float($0) * 0.37 - 3 }
        for make in makers {
            let optimizer = make(19), parameters = FloatBuffer(initial)
            let singles = initial.map { _ in make(1) }, single = initial.map { FloatBuffer([$0]) }
            for step in 0..<4 {
                let gradients = FloatBuffer((0..<19).map { Float(($0 * 7 + step * 3) % 11) * 0.05 - 0.25 })
                optimizer.step(parameters: parameters.pointer, gradients: gradients.pointer, count: 19, learningRate: 0.01)
                for i in 0..<19 {
                    singles[i].step(parameters: single[i].pointer, gradients: gradients.pointer + i, count: 1, learningRate: 0.01)
                }
                withExtendedLifetime(gradients) {}
            }
            XCTAssertEqual(parameters.array, single.map { $0.array[0] }, optimizer.kind)
            for (index, state) in optimizer.stateBuffers.enumerated() {
                XCTAssertEqual(state.buffer.array, singles.map { $0.stateBuffers[index].buffer.array[0] }, "\(optimizer.kind) \(state.name)")
            }
        }
    }

    /// `stepClearingGradients` updates exactly as `step` (SGD's fused loops and the default pass alike) and leaves
    /// the gradients zero.
    func testStepClearingGradientsEqualsStepAndZeroesTheGradients() {
        let makers: [(Int) -> Optimizer] = [{ SGD(parameterCount: $0, weightDecay: 0.1) },
                                            { SGD(parameterCount: $0, momentum: 0.9, weightDecay: 0.1) },
                                            { SGD(parameterCount: $0, momentum: 0.9, nesterov: true) },
                                            { Adam(parameterCount: $0, weightDecay: 0.1) }]
        let initial = (0..<19).map { Float($0) * 0.37 - 3 }
        for make in makers {
            let plain = make(19), fused = make(19)
            let plainParameters = FloatBuffer(initial), fusedParameters = FloatBuffer(initial)
            for step in 0..<3 {
                let values = (0..<19).map { Float(($0 * 7 + step * 3) % 11) * 0.05 - 0.25 }
                let gradients = FloatBuffer(values), cleared = FloatBuffer(values)
                plain.step(parameters: plainParameters.pointer, gradients: gradients.pointer, count: 19, learningRate: 0.01)
                fused.stepClearingGradients(parameters: fusedParameters.pointer, gradients: cleared.pointer, count: 19, learningRate: 0.01)
                XCTAssertEqual(gradients.array, values, "\(plain.kind): step leaves the gradients")
                XCTAssertEqual(cleared.array, [Float](repeating: 0, count: 19), "\(plain.kind) step \(step)")
            }
            XCTAssertEqual(fusedParameters.array.map(\.bitPattern), plainParameters.array.map(\.bitPattern), plain.kind)
            XCTAssertEqual(fused.stepCount, plain.stepCount)
            for (mine, theirs) in zip(fused.stateBuffers, plain.stateBuffers) {
                XCTAssertEqual(mine.buffer.array.map(\.bitPattern), theirs.buffer.array.map(\.bitPattern), "\(plain.kind) \(mine.name)")
            }
        }
    }

    func testL1AddsSignOfParametersBeforeWeightDecay() {
        // p = [1, -2, 0], g = [0.1, -0.2, 0.3], λ = 0.01, wd = 0.1, lr = 0.1:
        // step 1: g + λ·sign(p) + wd·p = [0.21, -0.41, 0.3] (sign(0) = 0) → p = [0.979, -1.959, -0.03];
        // step 2: sign(p3) is now -1 → g = [0.2079, -0.3959, 0.287] → p = [0.95821, -1.91841, -0.0587].
        let optimizer = SGD(parameterCount: 3, weightDecay: 0.1)
        let parameters = FloatBuffer([1, -2, 0])
        var history: [[Float]] = []
        for _ in 0..<2 {
            let gradients = FloatBuffer([0.1, -0.2, 0.3])
            optimizer.step(parameters: parameters.pointer, gradients: gradients.pointer, count: 3, learningRate: 0.1, l1: 0.01)
            withExtendedLifetime(gradients) {}
            history.append(parameters.array)
        }
        assertClose(history[0], [0.979, -1.959, -0.03], "step 1")
        assertClose(history[1], [0.95821, -1.91841, -0.0587], "step 2")

        // Any optimizer: Adagrad's first step moves by lr·sign(g + λ·sign(p)), here [0.11, -0.21, 0.3].
        let adagrad = Adagrad(parameterCount: 3)
        let start = FloatBuffer([1, -2, 0]), gradients = FloatBuffer([0.1, -0.2, 0.3])
        adagrad.step(parameters: start.pointer, gradients: gradients.pointer, count: 3, learningRate: 0.1, l1: 0.01)
        withExtendedLifetime((start, gradients)) {}
        assertClose(gradients.array, [0.11, -0.21, 0.3], "gradients with the L1 term")
        assertClose(start.array, [0.9, -1.9, -0.1], "adagrad step 1")

        // l1 = 0 leaves the gradients untouched.
        let untouched = FloatBuffer([0.1, -0.2, 0.3]), other = FloatBuffer([1, -2, 0])
        SGD(parameterCount: 3).step(parameters: other.pointer, gradients: untouched.pointer, count: 3, learningRate: 0.1, l1: 0)
        withExtendedLifetime(other) {}
        XCTAssertEqual(untouched.array, [0.1, -0.2, 0.3])
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
