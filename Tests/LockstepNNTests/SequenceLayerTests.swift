import XCTest
import LockstepCore
import LockstepNN

/// Finite-difference checks and behaviour of the sequence layers ([time, features] per sample) and the per-step loss.
final class SequenceLayerTests: XCTestCase {
    // batch 2, 4 time steps, 3 features: several recurrent steps, small enough for full finite differences.
    private let batch = 2, time = 4, features = 3
    /// These layers compute in Float through several curved stages (sigmoid, tanh, softmax, normalization), so a
    /// difference quotient carries ~1e-3 relative noise; a wrong gradient is off by far more than the 5e-3 allowed.
    private let smoothStep: Float = 1e-2, smoothTolerance = 5e-3, smoothFloor = 5e-2

    func testEmbeddingLooksUpRowsAndAccumulatesGradients() throws {
        let harness = try LayerHarness(Embedding(vocabularySize: 5, dimensions: 3), inputShape: [time], batch: batch)
        XCTAssertEqual(harness.outputShape, [time, 3])
        let ids: [Float] = [0, 4, 4, 2, 1, 3, 0, 4]
        let output = harness.forward(ids, context: LayerContext(training: true))
        let table = harness.parameters.values.array
        for (row, id) in ids.enumerated() {
            XCTAssertEqual(Array(output[(row * 3)..<(row * 3 + 3)]), Array(table[(Int(id) * 3)..<(Int(id) * 3 + 3)]))
        }
        // Ids are constants, so only the table is checked: dL/dtable[v] = Σ over positions holding v of R.
        let weights = TestData.normal(harness.outputCount, seed: 3)
        let analytic = harness.gradients(input: ids, outputGradient: weights, context: LayerContext(training: true))
        XCTAssertEqual(analytic.input, [Float](repeating: 0, count: ids.count))
        let values = harness.parameters.values.pointer
        let numeric = (0..<harness.parameters.count).map { index in
            GradientCheck.numericDerivative(values, index: index, step: 1e-2) {
                zip(harness.forward(ids, context: LayerContext(training: true)), weights).reduce(0) { $0 + Double($1.0) * Double($1.1) }
            }
        }
        GradientCheck.assertMatch(analytic.parameters, numeric, label: "embedding weight", tolerance: 1e-3, floor: 1e-2,
                                  file: #filePath, line: #line)
    }

    func testPositionalEmbedding() throws {
        let harness = try LayerHarness(PositionalEmbedding(length: time, dimensions: features), inputShape: [time, features],
                                       batch: batch, randomParameters: true)
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 1))
        XCTAssertThrowsError(try PositionalEmbedding(length: time, dimensions: features).outputShape(inputShape: [time + 1, features]))
    }

    func testLastTimeStepSelectsTheFinalStep() throws {
        let harness = try LayerHarness(LastTimeStep(), inputShape: [time, features], batch: batch)
        XCTAssertEqual(harness.outputShape, [features])
        let input = TestData.normal(harness.inputCount, seed: 2)
        GradientCheck.checkLayer(harness, input: input)
        let output = harness.forward(input, context: LayerContext(training: false))
        XCTAssertEqual(Array(output[0..<3]), Array(input[9..<12]))
        XCTAssertEqual(Array(output[3..<6]), Array(input[21..<24]))
    }

    func testSequenceLinear() throws {
        let harness = try LayerHarness(SequenceLinear(inputDimensions: features, outputDimensions: 5), inputShape: [time, features],
                                       batch: batch, randomParameters: true)
        XCTAssertEqual(harness.outputShape, [time, 5])
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 3))
    }

    func testLayerNorm() throws {
        let harness = try LayerHarness(LayerNorm(features: 5), inputShape: [time, 5], batch: batch, randomParameters: true)
        let input = TestData.normal(harness.inputCount, seed: 4, scale: 2)
        GradientCheck.checkLayer(harness, input: input)
        // With γ = 1, β = 0 every row has mean 0 and variance 1 (up to ε).
        let plain = try LayerHarness(LayerNorm(features: 5), inputShape: [time, 5], batch: batch)
        let output = plain.forward(input.map { $0 + 100 }, context: LayerContext(training: false))
        for row in 0..<(batch * time) {
            let values = output[(row * 5)..<(row * 5 + 5)].map(Double.init)
            let mean = values.reduce(0, +) / 5
            XCTAssertEqual(mean, 0, accuracy: 1e-4)
            XCTAssertEqual(values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 5, 1, accuracy: 1e-3)
        }
    }

    func testGELU() throws {
        let harness = try LayerHarness(GELU(), inputShape: [time, features], batch: batch)
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 5, scale: 2))
        let values = harness.forward([0, 1, -1, 3, -3, 0.5] + [Float](repeating: 0, count: 18), context: LayerContext(training: false))
        for (value, expected) in zip(values[0..<6], [0, 0.841192, -0.158808, 2.996363, -0.003637, 0.345714] as [Float]) {
            XCTAssertEqual(value, expected, accuracy: 1e-5)
        }
    }

    func testRNNOverSeveralSteps() throws {
        let harness = try LayerHarness(RNN(inputFeatures: features, hidden: 3), inputShape: [time, features], batch: batch,
                                       randomParameters: true)
        XCTAssertEqual(harness.outputShape, [time, 3])
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 6), step: smoothStep, tolerance: smoothTolerance, floor: smoothFloor)
    }

    func testLSTMOverSeveralSteps() throws {
        let harness = try LayerHarness(LSTM(inputFeatures: features, hidden: 3), inputShape: [time, features], batch: batch,
                                       randomParameters: true)
        XCTAssertEqual(harness.parameters.slots.map(\.shape), [[12, 3], [12, 3], [12]])
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 7), step: smoothStep, tolerance: smoothTolerance, floor: smoothFloor)
    }

    func testGRUOverSeveralSteps() throws {
        let harness = try LayerHarness(GRU(inputFeatures: features, hidden: 3), inputShape: [time, features], batch: batch,
                                       randomParameters: true)
        XCTAssertEqual(harness.parameters.slots.map(\.name), ["layers.0.weight_ih", "layers.0.weight_hh", "layers.0.bias_ih", "layers.0.bias_hh"])
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 8), step: smoothStep, tolerance: smoothTolerance, floor: smoothFloor)
    }

    func testRecurrentOutputsAreCausalAndCarryState() throws {
        for layer in [RNN(inputFeatures: features, hidden: 3), LSTM(inputFeatures: features, hidden: 3), GRU(inputFeatures: features, hidden: 3)] as [Layer] {
            let harness = try LayerHarness(layer, inputShape: [time, features], batch: batch, randomParameters: true)
            try assertCausal(harness, changesFutureOnly: true)
        }
    }

    func testGRUMatchesHandComputedSingleUnit() throws {
        // One input, one unit, one step per sample: h = (1 − z)·n with h₀ = 0.
        let harness = try LayerHarness(GRU(inputFeatures: 1, hidden: 1), inputShape: [1, 1], batch: 1)
        // weight_ih [r, z, n], weight_hh, bias_ih, bias_hh
        let values: [Float] = [0.5, -0.25, 1.5, 0.3, 0.2, 0.1, 0.1, 0.2, 0.3, 0.4, -0.5, 0.6]
        for (index, value) in values.enumerated() { harness.parameters.values.pointer[index] = value }
        let x: Float = 0.8
        let r = 1 / (1 + exp(-(0.5 * x + 0.1 + 0.4))), z = 1 / (1 + exp(-(-0.25 * x + 0.2 - 0.5)))
        let n = tanh(1.5 * x + 0.3 + r * 0.6)
        XCTAssertEqual(harness.forward([x], context: LayerContext(training: false))[0], (1 - z) * n, accuracy: 1e-6)
    }

    func testCausalAttention() throws {
        let harness = try LayerHarness(MultiHeadSelfAttention(dimensions: 4, heads: 2), inputShape: [time, 4], batch: batch,
                                       randomParameters: true)
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 9), step: smoothStep, tolerance: smoothTolerance, floor: smoothFloor)
        try assertCausal(harness, changesFutureOnly: true)
    }

    func testNonCausalAttentionSeesTheFuture() throws {
        let harness = try LayerHarness(MultiHeadSelfAttention(dimensions: 4, heads: 2, causal: false), inputShape: [time, 4],
                                       batch: batch, randomParameters: true)
        GradientCheck.checkLayer(harness, input: TestData.normal(harness.inputCount, seed: 10), step: smoothStep, tolerance: smoothTolerance, floor: smoothFloor)
        try assertCausal(harness, changesFutureOnly: false)
        XCTAssertThrowsError(try MultiHeadSelfAttention(dimensions: 6, heads: 4).outputShape(inputShape: [time, 6]))
    }

    func testTransformerBlockWithGELUAndReLU() throws {
        for gelu in [true, false] {
            let harness = try LayerHarness(TransformerBlock(dimensions: 4, heads: 2, mlpDimensions: 6, gelu: gelu),
                                           inputShape: [time, 4], batch: batch, randomParameters: true)
            XCTAssertEqual(harness.parameters.slots.first?.name, "layers.0.ln1.weight")
            let input = TestData.normal(harness.inputCount, seed: gelu ? 11 : 12)
            // ReLU's kink makes coarse differences unreliable where a pre-activation sits near 0: a finer step there.
            GradientCheck.checkLayer(harness, input: input, step: gelu ? smoothStep : 2e-3, tolerance: gelu ? smoothTolerance : 2e-2,
                                     floor: smoothFloor)
            try assertCausal(harness, changesFutureOnly: true)
        }
    }

    func testSequenceCrossEntropy() throws {
        let loss = SequenceCrossEntropy(classes: 3)
        XCTAssertEqual(loss.targetWidth(outputWidth: 4 * 3), 4)
        let output = TestData.normal(2 * 4 * 3, seed: 13, scale: 2)
        let targets: [Float] = [0, 2, 1, 1, 2, 2, 0, 1]
        GradientCheck.checkLoss(loss, output: output, targets: targets, batch: 2, width: 12, step: smoothStep, tolerance: smoothTolerance, floor: smoothFloor)
        // Mean over batch × time of −log softmax[target], computed directly in Double.
        var expected = 0.0
        for row in 0..<8 {
            let logits = output[(row * 3)..<(row * 3 + 3)].map(Double.init)
            expected += log(logits.map(exp).reduce(0, +)) - logits[Int(targets[row])]
        }
        let value = output.withUnsafeBufferPointer { o in
            targets.withUnsafeBufferPointer { loss.forward(output: o.baseAddress!, targets: $0.baseAddress!, batch: 2, width: 12) }
        }
        XCTAssertEqual(Double(value), expected / 8, accuracy: 1e-5)
        // Huge logits stay finite.
        let extreme: [Float] = [1000, -1000, 0]
        let big = extreme.withUnsafeBufferPointer { o in
            [Float(1)].withUnsafeBufferPointer { loss.forward(output: o.baseAddress!, targets: $0.baseAddress!, batch: 1, width: 3) }
        }
        XCTAssertEqual(big, 2000, accuracy: 1e-2)
    }

    /// Perturbs every input at steps > t and checks outputs at steps ≤ t are unchanged (or, when `changesFutureOnly` is
    /// false, that some earlier output does change: the layer sees the future).
    private func assertCausal(_ harness: LayerHarness, changesFutureOnly: Bool, file: StaticString = #filePath, line: UInt = #line) throws {
        let steps = harness.inputShape[0], inputWidth = harness.inputShape[1], outputWidth = harness.outputShape[1]
        let input = TestData.normal(harness.inputCount, seed: 21)
        let reference = harness.forward(input, context: LayerContext(training: false))
        var sawFutureInfluence = false
        for t in 0..<(steps - 1) {
            var changed = input
            for b in 0..<harness.batch {
                for s in (t + 1)..<steps {
                    for f in 0..<inputWidth { changed[(b * steps + s) * inputWidth + f] += 1.5 }
                }
            }
            let output = harness.forward(changed, context: LayerContext(training: false))
            for b in 0..<harness.batch {
                let range = (b * steps * outputWidth)..<((b * steps + t + 1) * outputWidth)
                if changesFutureOnly {
                    XCTAssertEqual(Array(output[range]), Array(reference[range]),
                                   "\(harness.layer.kind): output up to step \(t) changed when later inputs changed", file: file, line: line)
                } else if Array(output[range]) != Array(reference[range]) {
                    sawFutureInfluence = true
                }
            }
            // Some later output must move, or the check could not fail.
            XCTAssertNotEqual(output, reference, "\(harness.layer.kind): perturbation had no effect", file: file, line: line)
        }
        if !changesFutureOnly { XCTAssertTrue(sawFutureInfluence, "non-causal layer ignored later steps", file: file, line: line) }
    }
}
