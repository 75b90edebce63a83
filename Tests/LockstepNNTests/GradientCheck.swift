import XCTest
import LockstepCore
import LockstepNN

/// One layer bound to its own flat parameter and state buffers and planned for a batch, driven with arrays.
final class LayerHarness {
    let layer: Layer
    let inputShape: [Int]
    let outputShape: [Int]
    let batch: Int
    let parameters: FlatTensors
    let state: FlatTensors

    /// Binds and plans `layer`; parameters come from their initializers, or random normals when `randomParameters`.
    init(_ layer: Layer, inputShape: [Int], batch: Int, seed: UInt64 = 7, randomParameters: Bool = false) throws {
        self.layer = layer
        self.inputShape = inputShape
        self.batch = batch
        outputShape = try layer.outputShape(inputShape: inputShape)
        parameters = FlatTensors(layerSpecs: [layer.parameterSpecs], withGradients: true)
        state = FlatTensors(layerSpecs: [layer.stateSpecs], withGradients: false)
        layer.bind(parameters: parameters.slots.map(parameters.valuePointer), gradients: parameters.slots.map(parameters.gradientPointer),
                   state: state.slots.map(state.valuePointer))
        var rng = RNG(seed: seed)
        for (spec, slot) in zip(layer.parameterSpecs, parameters.slots) {
            let initializer: Initializer = randomParameters ? .normal(standardDeviation: 0.5) : spec.initializer
            initializer.fill(parameters.valuePointer(slot), count: slot.count, rng: &rng)
        }
        for (spec, slot) in zip(layer.stateSpecs, state.slots) {
            spec.initializer.fill(state.valuePointer(slot), count: slot.count, rng: &rng)
        }
        layer.plan(batchSize: batch, inputShape: inputShape)
    }

    var inputCount: Int { batch * inputShape.reduce(1, *) }
    var outputCount: Int { batch * outputShape.reduce(1, *) }

    /// Runs forward on `input` ([batch, inputShape]).
    func forward(_ input: [Float], context: LayerContext) -> [Float] {
        precondition(input.count == inputCount)
        var output = [Float](repeating: .nan, count: outputCount)
        input.withUnsafeBufferPointer { x in
            output.withUnsafeMutableBufferPointer { y in
                layer.forward(input: x.baseAddress!, output: y.baseAddress!, batch: batch, context: context)
            }
        }
        return output
    }

    /// Forward then backward with `outputGradient`; returns dL/dinput and the (zeroed-then-accumulated) parameter gradients.
    func gradients(input: [Float], outputGradient: [Float], context: LayerContext) -> (input: [Float], parameters: [Float]) {
        parameters.gradients!.zero()
        var output = [Float](repeating: .nan, count: outputCount)
        var inputGradient = [Float](repeating: .nan, count: inputCount)
        input.withUnsafeBufferPointer { x in
            output.withUnsafeMutableBufferPointer { y in
                layer.forward(input: x.baseAddress!, output: y.baseAddress!, batch: batch, context: context)
                outputGradient.withUnsafeBufferPointer { dy in
                    inputGradient.withUnsafeMutableBufferPointer { dx in
                        layer.backward(input: x.baseAddress!, output: y.baseAddress!, outputGradient: dy.baseAddress!,
                                       inputGradient: dx.baseAddress!, batch: batch)
                    }
                }
            }
        }
        return (inputGradient, parameters.gradients!.array)
    }
}

/// Central finite differences against analytic gradients.
///
/// Layers are checked on the scalar objective L = Σ output·R with a fixed random R, accumulated in Double so the only
/// Float error is in the layer itself. An entry passes when |analytic − numeric| ≤ tolerance·max(|analytic|, |numeric|,
/// floor): relative error for ordinary gradients, absolute error (tolerance·floor) for near-zero ones.
enum GradientCheck {
    /// Difference quotient of `objective` along coordinate `index` of `values`, using the step actually representable in Float.
    static func numericDerivative(_ values: UnsafeMutablePointer<Float>, index: Int, step: Float, objective: () -> Double) -> Double {
        let original = values[index]
        let plus = original + step, minus = original - step
        values[index] = plus
        let high = objective()
        values[index] = minus
        let low = objective()
        values[index] = original
        return (high - low) / Double(plus - minus)
    }

    /// Asserts that `analytic` matches `numeric` entry by entry; `label` names the tensor in failures.
    static func assertMatch(_ analytic: [Float], _ numeric: [Double], label: String, tolerance: Double, floor: Double,
                            file: StaticString, line: UInt) {
        XCTAssertEqual(analytic.count, numeric.count, "\(label): size", file: file, line: line)
        var worst = 0.0
        for (index, (a, n)) in zip(analytic, numeric).enumerated() {
            let error = abs(Double(a) - n) / max(abs(Double(a)), abs(n), floor)
            worst = max(worst, error)
            if !(error <= tolerance) {
                XCTFail("\(label)[\(index)]: analytic \(a) vs numeric \(n) (relative error \(error))", file: file, line: line)
                return
            }
        }
        // A check that compared only zeros could not fail; require some signal.
        XCTAssertGreaterThan(numeric.map(abs).max() ?? 0, floor, "\(label): every numeric derivative is ~0", file: file, line: line)
    }

    /// Checks dL/dinput and every parameter gradient of the harnessed layer at `input`.
    static func checkLayer(_ harness: LayerHarness, input: [Float], context: LayerContext = LayerContext(training: true),
                           step: Float = 1e-2, tolerance: Double = 1e-3, floor: Double = 1e-2, seed: UInt64 = 99,
                           file: StaticString = #filePath, line: UInt = #line) {
        var rng = RNG(seed: seed)
        let weights = (0..<harness.outputCount).map { _ in rng.normal() }
        let analytic = harness.gradients(input: input, outputGradient: weights, context: context)

        // A buffer, not an array: the objective reads the input while the derivative perturbs it.
        let x = FloatBuffer(input)
        func objective() -> Double {
            zip(harness.forward(x.array, context: context), weights).reduce(0) { $0 + Double($1.0) * Double($1.1) }
        }
        let numericInput = (0..<x.count).map { numericDerivative(x.pointer, index: $0, step: step, objective: objective) }
        assertMatch(analytic.input, numericInput, label: "\(harness.layer.kind) input gradient", tolerance: tolerance,
                    floor: floor, file: file, line: line)

        for slot in harness.parameters.slots {
            let values = harness.parameters.valuePointer(slot)
            let numeric = (0..<slot.count).map { numericDerivative(values, index: $0, step: step, objective: objective) }
            let computed = Array(analytic.parameters[slot.offset..<(slot.offset + slot.count)])
            assertMatch(computed, numeric, label: "\(harness.layer.kind) \(slot.name) gradient", tolerance: tolerance,
                        floor: floor, file: file, line: line)
        }
    }

    /// Checks a loss's gradient (scale 1) against finite differences of its mean value.
    static func checkLoss(_ loss: Loss, output: [Float], targets: [Float], batch: Int, width: Int,
                          step: Float = 1e-2, tolerance: Double = 1e-3, floor: Double = 1e-3,
                          file: StaticString = #filePath, line: UInt = #line) {
        var analytic = [Float](repeating: .nan, count: output.count)
        var x = output
        x.withUnsafeBufferPointer { o in
            targets.withUnsafeBufferPointer { t in
                analytic.withUnsafeMutableBufferPointer { g in
                    loss.backward(output: o.baseAddress!, targets: t.baseAddress!, gradient: g.baseAddress!, batch: batch, width: width, scale: 1)
                }
            }
        }
        let numeric = (0..<x.count).map { index in
            x.withUnsafeMutableBufferPointer { pointer in
                numericDerivative(pointer.baseAddress!, index: index, step: step) {
                    targets.withUnsafeBufferPointer { t in
                        Double(loss.forward(output: pointer.baseAddress!, targets: t.baseAddress!, batch: batch, width: width))
                    }
                }
            }
        }
        assertMatch(analytic, numeric, label: "\(loss.kind) gradient", tolerance: tolerance, floor: floor, file: file, line: line)
    }
}

/// Random test data.
enum TestData {
    /// Standard normal values.
    static func normal(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var rng = RNG(seed: seed)
        return (0..<count).map { _ in rng.normal() * scale }
    }

    /// Values at least `gap` away from zero (for ReLU-like kinks).
    static func awayFromZero(_ count: Int, seed: UInt64, gap: Float = 0.1) -> [Float] {
        var rng = RNG(seed: seed)
        return (0..<count).map { _ in
            let magnitude = gap + abs(rng.normal())
            return rng.uniform() < 0.5 ? -magnitude : magnitude
        }
    }

    /// Distinct values spaced `spacing` apart in random order (no ties for max pooling).
    static func distinct(_ count: Int, seed: UInt64, spacing: Float = 0.05) -> [Float] {
        var rng = RNG(seed: seed)
        var values = (0..<count).map { Float($0) * spacing - Float(count) * spacing / 2 }
        rng.shuffle(&values)
        return values
    }
}
