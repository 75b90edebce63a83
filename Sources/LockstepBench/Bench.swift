import Foundation
import LockstepComm
import LockstepConfig
import LockstepCore
import LockstepTrain
import LockstepData
import LockstepNN

/// Benchmarks that print numbers (BENCHMARKS.md quotes them); never used as tests.
public enum Bench {
    /// Median seconds of `body` over `trials` runs after `warmup` runs.
    public static func time(trials: Int, warmup: Int = 3, _ body: () throws -> Void) rethrows -> Double {
        for _ in 0..<warmup { try body() }
        var samples: [Double] = []
        samples.reserveCapacity(trials)
        for _ in 0..<trials {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
        }
        return Statistics.median(samples)
    }

    /// One row of the Linear-versus-sgemm comparison.
    public struct LinearRow: Sendable {
        public var shape: String
        public var flops: Double
        public var layerGFLOPs: Double
        public var sgemmGFLOPs: Double
    }

    /// Forward + backward of Linear layers on the fashion-mlp shapes at `batch`, against the same three GEMMs
    /// called directly (the layer adds bias work and the parameter-gradient accumulation).
    public static func linearVersusSgemm(batch: Int, trials: Int) throws -> [LinearRow] {
        var rows: [LinearRow] = []
        for (input, output) in [(784, 256), (256, 128), (128, 10)] {
            let layer = Linear(inputDimensions: input, outputDimensions: output)
            let model = try Sequential([layer], inputShape: [input])
            model.initialize(rng: RNG(seed: 1))
            model.plan(batchSize: batch)
            let x = FloatBuffer(count: batch * input), dy = FloatBuffer(count: batch * output), dx = FloatBuffer(count: batch * input)
            var rng = RNG(seed: 2)
            for i in 0..<x.count { x.pointer[i] = rng.uniform(-1, 1) }
            for i in 0..<dy.count { dy.pointer[i] = rng.uniform(-1, 1) }
            let y = FloatBuffer(count: batch * output)
            let weight = model.parameters.values.pointer, weightGradient = model.parameters.gradients!.pointer
            // Forward, weight gradient and input gradient: three GEMMs of 2·batch·in·out FLOPs each.
            let flops = 3 * 2 * Double(batch * input * output)
            let context = LayerContext(training: true)
            let layerSeconds = time(trials: trials) {
                layer.forward(input: x.pointer, output: y.pointer, batch: batch, context: context)
                layer.backward(input: x.pointer, output: y.pointer, outputGradient: dy.pointer, inputGradient: dx.pointer, batch: batch)
            }
            let sgemmSeconds = time(trials: trials) {
                BLAS.gemm(transposeB: true, m: batch, n: output, k: input, a: x.pointer, lda: input, b: weight, ldb: input,
                          c: y.pointer, ldc: output)
                BLAS.gemm(transposeA: true, m: output, n: input, k: batch, a: dy.pointer, lda: output, b: x.pointer, ldb: input,
                          beta: 1, c: weightGradient, ldc: input)
                BLAS.gemm(m: batch, n: input, k: output, a: dy.pointer, lda: output, b: weight, ldb: input, c: dx.pointer, ldc: input)
            }
            rows.append(LinearRow(shape: "\(batch)x\(input)->\(output)", flops: flops,
                                  layerGFLOPs: flops / layerSeconds / 1e9, sgemmGFLOPs: flops / sgemmSeconds / 1e9))
        }
        return rows
    }

    /// Median forward and backward time of one layer.
    public struct LayerTime: Sendable {
        public var index: Int
        public var kind: String
        public var outputShape: [Int]
        public var forwardSeconds: Double
        public var backwardSeconds: Double
    }

    /// Forward then backward of `model` on `batch` samples at `input`, each layer timed on its own (medians of
    /// `trials` passes after two warm-up passes). Runs the layers as `Sequential` does (no input gradient at or
    /// below the first layer with parameters, no backward below it) with its own activation buffers; adds into the
    /// model's gradients, so use it after training.
    public static func layerTimes(model: Sequential, input: UnsafePointer<Float>, batch: Int, trials: Int) -> [LayerTime] {
        model.plan(batchSize: batch)
        let layers = model.layers
        let widths = ([model.inputShape] + model.shapes).map { $0.reduce(1, *) }
        let activations = model.shapes.map { FloatBuffer(count: batch * $0.reduce(1, *)) }
        let inputGradients = widths.dropLast().map { FloatBuffer(count: batch * $0) }
        let outputGradient = FloatBuffer(count: batch * model.outputWidth)
        var rng = RNG(seed: 5)
        for i in 0..<outputGradient.count { outputGradient.pointer[i] = rng.uniform(-1, 1) / Float(batch) }
        var forward = [[Double]](repeating: [], count: layers.count), backward = forward
        let context = LayerContext(training: true, rng: RNG(seed: 6))
        for pass in 0..<(trials + 2) {
            for (index, layer) in layers.enumerated() {
                // A ReLU fused into the pool after it costs nothing of its own; the pool reads the ReLU's input.
                if model.fusedIntoNextLayer[index] { if pass >= 2 { forward[index].append(0) }; continue }
                let rectified = index > 0 && model.fusedIntoNextLayer[index - 1]
                let x = index == 0 ? input : UnsafePointer(activations[index - (rectified ? 2 : 1)].pointer)
                // A Flatten is its input's memory in training (`Sequential.passesThrough`): copied here, untimed,
                // only because this profile keeps an activation per layer.
                if model.passesThrough[index] {
                    layer.forward(input: x, output: activations[index].pointer, batch: batch, context: context)
                    if pass >= 2 { forward[index].append(0) }
                    continue
                }
                let start = DispatchTime.now().uptimeNanoseconds
                if rectified {
                    (layer as! MaxPool2D).forwardRectified(input: x, output: activations[index].pointer, batch: batch, context: context)
                } else {
                    layer.forward(input: x, output: activations[index].pointer, batch: batch, context: context)
                }
                if pass >= 2 { forward[index].append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9) }
            }
            for index in stride(from: layers.count - 1, through: 0, by: -1) {
                let x = index == 0 ? input : UnsafePointer(activations[index - 1].pointer)
                let dy = index == layers.count - 1 ? UnsafePointer(outputGradient.pointer) : UnsafePointer(inputGradients[index + 1].pointer)
                guard index >= model.firstLayerWithParameters && !model.fusedIntoNextLayer[index] else {
                    if pass >= 2 { backward[index].append(0) }
                    continue
                }
                if model.passesThrough[index] {
                    if index > model.firstLayerWithParameters {
                        layers[index].backward(input: x, output: activations[index].pointer, outputGradient: dy,
                                               inputGradient: inputGradients[index].pointer, batch: batch)
                    }
                    if pass >= 2 { backward[index].append(0) }
                    continue
                }
                let start = DispatchTime.now().uptimeNanoseconds
                if index > 0 && model.fusedIntoNextLayer[index - 1] {
                    // Writes the ReLU input's gradient where the layer below the ReLU reads it.
                    (layers[index] as! MaxPool2D).backwardRectified(output: activations[index].pointer, outputGradient: dy,
                                                                    inputGradient: inputGradients[index - 1].pointer, batch: batch)
                } else {
                    layers[index].backward(input: x, output: activations[index].pointer, outputGradient: dy,
                                           inputGradient: index > model.firstLayerWithParameters ? inputGradients[index].pointer : nil, batch: batch)
                }
                if pass >= 2 { backward[index].append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9) }
            }
        }
        return layers.indices.map {
            let kind = model.fusedIntoNextLayer[$0] ? "relu (fused)" : $0 > 0 && model.fusedIntoNextLayer[$0 - 1] ? "relu+" + layers[$0].kind
                : model.passesThrough[$0] ? layers[$0].kind + " (view)" : layers[$0].kind
            return LayerTime(index: $0, kind: kind, outputShape: model.shapes[$0],
                      forwardSeconds: Statistics.median(forward[$0]), backwardSeconds: Statistics.median(backward[$0]))
        }
    }

    /// One `cblas_sgemm` call a layer makes per step, `repeats` times (Conv2D: once per sample).
    public struct GemmShape: Sendable, Equatable {
        public var transposeA: Bool, transposeB: Bool
        public var m: Int, n: Int, k: Int
        public var repeats: Int
        public var flops: Double { 2 * Double(m) * Double(n) * Double(k) * Double(repeats) }
    }

    /// The GEMMs of one training step of `model`'s Linear and Conv2D layers at `batch`, with the shapes and
    /// transposes the layers call: forward, weight gradient, and the input gradient above the first layer with
    /// parameters. Their FLOPs are `FlopCount(model:)` times `batch`.
    public static func gemmShapes(model: Sequential, batch: Int) -> [GemmShape] {
        var shapes: [GemmShape] = []
        for (index, layer) in model.layers.enumerated() {
            let output = model.shapes[index]
            let inputGradient = index > model.firstLayerWithParameters
            if let (i, o) = linearDimensions(layer) {
                let rows = batch * (output.count > 1 ? output.dropLast().reduce(1, *) : 1)
                if let linear = layer as? Linear, linear.usesTransposedProduct(rows: rows) {
                    shapes.append(GemmShape(transposeA: false, transposeB: true, m: o, n: rows, k: i, repeats: 1))
                } else {
                    shapes.append(GemmShape(transposeA: false, transposeB: true, m: rows, n: o, k: i, repeats: 1))
                }
                shapes.append(GemmShape(transposeA: true, transposeB: false, m: o, n: i, k: rows, repeats: 1))
                if inputGradient { shapes.append(GemmShape(transposeA: false, transposeB: false, m: rows, n: i, k: o, repeats: 1)) }
            } else if let block = layer as? TransformerBlock, output.count == 2 {
                shapes += attentionShapes(dimensions: block.dimensions, heads: block.heads, time: output[0], batch: batch,
                                          inputGradient: true)
                let rows = batch * output[0]
                for (i, o) in [(block.dimensions, block.mlpDimensions), (block.mlpDimensions, block.dimensions)] {
                    shapes.append(GemmShape(transposeA: false, transposeB: true, m: rows, n: o, k: i, repeats: 1))
                    shapes.append(GemmShape(transposeA: true, transposeB: false, m: o, n: i, k: rows, repeats: 1))
                    shapes.append(GemmShape(transposeA: false, transposeB: false, m: rows, n: i, k: o, repeats: 1))
                }
            } else if let attention = layer as? MultiHeadSelfAttention, output.count == 2 {
                shapes += attentionShapes(dimensions: attention.dimensions, heads: attention.heads, time: output[0], batch: batch,
                                          inputGradient: inputGradient)
            } else if let conv = layer as? Conv2D, output.count == 3 {
                let pixels = output[1] * output[2], patch = conv.inputChannels * conv.kernelSize.height * conv.kernelSize.width
                shapes.append(GemmShape(transposeA: false, transposeB: false, m: conv.outputChannels, n: pixels, k: patch, repeats: batch))
                shapes.append(GemmShape(transposeA: false, transposeB: true, m: patch, n: conv.outputChannels, k: pixels, repeats: batch))
                if inputGradient {
                    shapes.append(GemmShape(transposeA: true, transposeB: false, m: patch, n: pixels, k: conv.outputChannels, repeats: batch))
                }
            }
        }
        return shapes
    }

    /// (input, output) features of a Linear or SequenceLinear: the same GEMMs over batch × positions rows.
    static func linearDimensions(_ layer: Layer) -> (Int, Int)? {
        if let linear = layer as? Linear { return (linear.inputDimensions, linear.outputDimensions) }
        if let linear = layer as? SequenceLinear { return (linear.inputDimensions, linear.outputDimensions) }
        return nil
    }

    /// MultiHeadSelfAttention's GEMMs: the QKV and output projections over all rows, and per sample and head the
    /// scores Q·Kᵀ and P·V forward, dP, dV, dQ, dK backward (full T×T, as called: the causal mask zeroes, not skips).
    static func attentionShapes(dimensions d: Int, heads: Int, time t: Int, batch: Int, inputGradient: Bool) -> [GemmShape] {
        let rows = batch * t, dh = d / heads, pairs = batch * heads
        var shapes = [GemmShape(transposeA: false, transposeB: true, m: rows, n: 3 * d, k: d, repeats: 1),
                      GemmShape(transposeA: false, transposeB: true, m: t, n: t, k: dh, repeats: pairs),
                      GemmShape(transposeA: false, transposeB: false, m: t, n: dh, k: t, repeats: pairs),
                      GemmShape(transposeA: false, transposeB: true, m: rows, n: d, k: d, repeats: 1),
                      GemmShape(transposeA: true, transposeB: false, m: d, n: d, k: rows, repeats: 1),
                      GemmShape(transposeA: false, transposeB: false, m: rows, n: d, k: d, repeats: 1),
                      GemmShape(transposeA: false, transposeB: true, m: t, n: t, k: dh, repeats: pairs),
                      GemmShape(transposeA: true, transposeB: false, m: t, n: dh, k: t, repeats: pairs),
                      GemmShape(transposeA: false, transposeB: false, m: t, n: dh, k: t, repeats: pairs),
                      GemmShape(transposeA: true, transposeB: false, m: t, n: dh, k: t, repeats: pairs),
                      GemmShape(transposeA: true, transposeB: false, m: 3 * d, n: d, k: rows, repeats: 1)]
        if inputGradient { shapes.append(GemmShape(transposeA: false, transposeB: false, m: rows, n: d, k: 3 * d, repeats: 1)) }
        return shapes
    }

    /// sgemm rate in GFLOP/s over `shapes` called back to back (the median time of the whole set): the BLAS limit
    /// of a model step, as opposed to the square `sgemmRate`. Operands are reused across repeats, so this is the
    /// rate with each operand warm in cache, as the layers' per-sample buffers are.
    public static func sgemmRate(shapes: [GemmShape], trials: Int) -> Double {
        guard !shapes.isEmpty else { return 0 }
        let largest = shapes.map { max($0.m * $0.k, $0.k * $0.n, $0.m * $0.n) }.max()!
        let a = FloatBuffer(count: largest), b = FloatBuffer(count: largest), c = FloatBuffer(count: largest)
        var rng = RNG(seed: 3)
        for i in 0..<largest { a.pointer[i] = rng.uniform(-1, 1); b.pointer[i] = rng.uniform(-1, 1) }
        let seconds = time(trials: trials) {
            for shape in shapes {
                let lda = shape.transposeA ? shape.m : shape.k, ldb = shape.transposeB ? shape.k : shape.n
                for _ in 0..<shape.repeats {
                    BLAS.gemm(transposeA: shape.transposeA, transposeB: shape.transposeB, m: shape.m, n: shape.n, k: shape.k,
                              a: a.pointer, lda: lda, b: b.pointer, ldb: ldb, c: c.pointer, ldc: shape.n)
                }
            }
        }
        return shapes.reduce(0) { $0 + $1.flops } / seconds / 1e9
    }

    /// One wide Linear layer's forward product timed in both orientations on this CPU.
    public struct ProductOrientation: Sendable {
        public var layer: Int, inputs: Int, outputs: Int, rows: Int
        /// Median seconds of outputᵀ = W · inputᵀ and of output = input · Wᵀ.
        public var transposedSeconds: Double, directSeconds: Double
        /// The orientation `Linear.usesTransposedProduct(rows:)` picks.
        public var usesTransposed: Bool
        /// The chosen orientation's time over the other's: above 1, the rule costs time on this CPU.
        public var chosenOverOther: Double {
            usesTransposed ? transposedSeconds / directSeconds : directSeconds / transposedSeconds
        }
    }

    /// Times both forward orientations of every Linear layer of `model` at least 256 wide both ways (the layers
    /// `Linear.usesTransposedProduct` can pick for), at `batch` rows, alternating the two so host noise falls on
    /// both: the rule was measured on one CPU's OpenBLAS kernels, this shows whether it holds on the one running.
    public static func productOrientations(model: Sequential, batch: Int, rounds: Int = 5) -> [ProductOrientation] {
        var checks: [ProductOrientation] = []
        for (index, layer) in model.layers.enumerated() {
            guard let linear = layer as? Linear, linear.inputDimensions >= 256, linear.outputDimensions >= 256 else { continue }
            let (i, o) = (linear.inputDimensions, linear.outputDimensions)
            let transposed = GemmShape(transposeA: false, transposeB: true, m: o, n: batch, k: i, repeats: 1)
            let direct = GemmShape(transposeA: false, transposeB: true, m: batch, n: o, k: i, repeats: 1)
            let trials = transposed.flops < 1e8 ? 20 : 5
            var transposedTimes: [Double] = [], directTimes: [Double] = []
            for _ in 0..<rounds {
                transposedTimes.append(transposed.flops / (sgemmRate(shapes: [transposed], trials: trials) * 1e9))
                directTimes.append(direct.flops / (sgemmRate(shapes: [direct], trials: trials) * 1e9))
            }
            checks.append(ProductOrientation(layer: index, inputs: i, outputs: o, rows: batch,
                                             transposedSeconds: Statistics.median(transposedTimes),
                                             directSeconds: Statistics.median(directTimes),
                                             usesTransposed: linear.usesTransposedProduct(rows: batch)))
        }
        return checks
    }

    /// Square sgemm rate in GFLOP/s at size n (the machine's reference rate).
    public static func sgemmRate(size n: Int, trials: Int) -> Double {
        let a = FloatBuffer(count: n * n), b = FloatBuffer(count: n * n), c = FloatBuffer(count: n * n)
        var rng = RNG(seed: 3)
        for i in 0..<(n * n) { a.pointer[i] = rng.uniform(-1, 1); b.pointer[i] = rng.uniform(-1, 1) }
        let seconds = time(trials: trials) {
            BLAS.gemm(m: n, n: n, k: n, a: a.pointer, lda: n, b: b.pointer, ldb: n, c: c.pointer, ldc: n)
        }
        return 2 * Double(n * n * n) / seconds / 1e9
    }

    /// Median time of each per-step pass over a flat buffer of `count` floats, with its effective bandwidth.
    public static func flatBufferPasses(count: Int, trials: Int) -> [String] {
        let parameters = FloatBuffer(count: count), gradients = FloatBuffer(count: count)
        var rng = RNG(seed: 4)
        for i in 0..<count { parameters.pointer[i] = rng.uniform(-1, 1); gradients.pointer[i] = rng.uniform(-1, 1) * 1e-3 }
        let sgd = SGD(parameterCount: count, momentum: 0.9, weightDecay: 1e-4)
        let adam = Adam(parameterCount: count)
        let rmsprop = RMSprop(parameterCount: count), adagrad = Adagrad(parameterCount: count)
        var sink = 0.0
        let cases: [(String, Int, () -> Void)] = [
            ("sgd momentum+wd step", 5, { sgd.step(parameters: parameters.pointer, gradients: gradients.pointer, count: count, learningRate: 1e-9) }),
            ("adam step", 7, { adam.step(parameters: parameters.pointer, gradients: gradients.pointer, count: count, learningRate: 1e-9) }),
            ("rmsprop step", 5, { rmsprop.step(parameters: parameters.pointer, gradients: gradients.pointer, count: count, learningRate: 1e-9) }),
            ("adagrad step", 5, { adagrad.step(parameters: parameters.pointer, gradients: gradients.pointer, count: count, learningRate: 1e-9) }),
            ("all finite", 1, { sink += Kernels.allFinite(gradients.pointer, count: count) ? 1 : 0 }),
            ("sum of squares", 1, { sink += Kernels.sumOfSquares(gradients.pointer, count: count) }),
            ("zero", 1, { gradients.zero(); for i in stride(from: 0, to: count, by: 997) { gradients.pointer[i] = 1e-3 } }),
            ("scale", 2, { Kernels.scale(gradients.pointer, by: 0.999, count: count) }),
        ]
        var lines: [String] = []
        for (name, streams, body) in cases {
            let seconds = time(trials: trials, body)
            lines.append(name.padding(toLength: 22, withPad: " ", startingAt: 0) + String(format: " %8.1f µs  %6.1f GB/s", seconds * 1e6, Double(streams * count * 4) / seconds / 1e9))
        }
        if sink.isNaN { lines.append("") }
        return lines
    }
}
