import LockstepCore

/// Layers applied in order, with all parameters in one flat buffer and all activations planned once.
public final class Sequential {
    /// The layers, first to last.
    public let layers: [Layer]
    /// Per-sample input shape.
    public let inputShape: [Int]
    /// Per-sample output shape of each layer (`shapes[i]` is layer i's output).
    public let shapes: [[Int]]
    /// Trainable parameters and their gradients, laid out layer by layer.
    public let parameters: FlatTensors
    /// Non-trainable state (BatchNorm running statistics), laid out layer by layer.
    public let state: FlatTensors

    private var plannedBatch = 0
    private var plannedTrainingBatch = 0
    /// Index of the first layer with trainable parameters (the layer count when there is none); backward stops there.
    public let firstLayerWithParameters: Int
    /// Per layer: a ReLU that the MaxPool2D right after it applies itself (`MaxPool2D.forwardRectified`), so the
    /// full-size ReLU output is never written, read or kept.
    public let fusedIntoNextLayer: [Bool]
    /// Per layer: a pure reshape (Flatten) whose output is its input's memory, so forward copies nothing and
    /// backward passes the gradient through.
    public let passesThrough: [Bool]
    private var activations: [FloatBuffer] = []
    private var gradientA = FloatBuffer(count: 0)
    private var gradientB = FloatBuffer(count: 0)

    /// Validates shapes through the stack and lays out parameters; throws naming the first bad layer.
    public init(_ layers: [Layer], inputShape: [Int]) throws {
        self.layers = layers
        self.inputShape = inputShape
        var shapes: [[Int]] = []
        var shape = inputShape
        for (index, layer) in layers.enumerated() {
            do { shape = try layer.outputShape(inputShape: shape) } catch let error as ShapeError {
                throw ShapeError("layer \(index) (\(layer.kind)): \(error.description)")
            }
            shapes.append(shape)
        }
        self.shapes = shapes
        firstLayerWithParameters = layers.firstIndex { !$0.parameterSpecs.isEmpty } ?? layers.count
        fusedIntoNextLayer = layers.indices.map { $0 + 1 < layers.count && layers[$0] is ReLU && layers[$0 + 1] is MaxPool2D }
        passesThrough = layers.map { $0 is Flatten }
        parameters = FlatTensors(layerSpecs: layers.map(\.parameterSpecs), withGradients: true)
        state = FlatTensors(layerSpecs: layers.map(\.stateSpecs), withGradients: false)
        bindLayers()
    }

    /// Layers written one per line in a closure, like Keras' or MLX's `Sequential`:
    ///
    ///     let model = try Sequential(inputShape: [784]) {
    ///         Linear(inputDimensions: 784, outputDimensions: 256)
    ///         ReLU()
    ///         Linear(inputDimensions: 256, outputDimensions: 10)
    ///     }
    public convenience init(inputShape: [Int], @LayerBuilder _ layers: () -> [Layer]) throws {
        try self.init(layers(), inputShape: inputShape)
    }

    /// Gives every layer its views into the flat buffers.
    private func bindLayers() {
        for (index, layer) in layers.enumerated() {
            let slots = parameters.slots.filter { $0.layerIndex == index }
            let stateSlots = state.slots.filter { $0.layerIndex == index }
            layer.bind(parameters: slots.map(parameters.valuePointer), gradients: slots.map(parameters.gradientPointer),
                       state: stateSlots.map(state.valuePointer))
        }
    }

    /// Moves the gradients into `buffer` (same layout; e.g. node-shared memory) and re-binds every layer to it.
    public func useGradientStorage(_ buffer: FloatBuffer) {
        parameters.replaceGradients(with: buffer)
        bindLayers()
    }

    /// Moves the parameter values into `buffer` (same layout, already holding them; e.g. node-shared memory) and
    /// re-binds every layer to it.
    public func useParameterStorage(_ buffer: FloatBuffer) {
        parameters.replaceValues(with: buffer)
        bindLayers()
    }

    /// Per-sample output shape of the whole model.
    public var outputShape: [Int] { shapes.last ?? inputShape }
    /// Elements per sample of the model output.
    public var outputWidth: Int { outputShape.reduce(1, *) }
    /// Elements per sample of the input.
    public var inputWidth: Int { inputShape.reduce(1, *) }

    /// Fills parameters and state from their initializers, each layer from its own split of `rng`.
    public func initialize(rng: RNG) {
        for (index, layer) in layers.enumerated() {
            var layerRNG = rng.split(UInt64(index))
            for (spec, slot) in zip(layer.parameterSpecs, parameters.slots.filter({ $0.layerIndex == index })) {
                spec.initializer.fill(parameters.valuePointer(slot), count: slot.count, rng: &layerRNG)
            }
            for (spec, slot) in zip(layer.stateSpecs, state.slots.filter({ $0.layerIndex == index })) {
                spec.initializer.fill(state.valuePointer(slot), count: slot.count, rng: &layerRNG)
            }
        }
    }

    /// Allocates activations and layer workspace for forward batches of up to `batchSize`, and backward's gradient
    /// buffers for batches of up to `trainingBatchSize` (default: `batchSize`), so that evaluating in batches larger
    /// than the training batch does not pay for gradient buffers that size; a no-op when already planned.
    public func plan(batchSize: Int, trainingBatchSize: Int? = nil) {
        let training = min(trainingBatchSize ?? batchSize, batchSize)
        if training > plannedTrainingBatch {
            plannedTrainingBatch = training
            let widest = ([inputShape] + shapes).map { $0.reduce(1, *) }.max() ?? 0
            gradientA = FloatBuffer(count: training * widest)
            gradientB = FloatBuffer(count: training * widest)
        }
        guard batchSize > plannedBatch else { return }
        plannedBatch = batchSize
        activations = shapes.indices.map {
            FloatBuffer(count: fusedIntoNextLayer[$0] || passesThrough[$0] ? 0 : batchSize * shapes[$0].reduce(1, *))
        }
        var shape = inputShape
        for (index, layer) in layers.enumerated() {
            layer.plan(batchSize: batchSize, inputShape: shape)
            shape = shapes[index]
        }
    }

    /// Runs the stack on `batch` samples at `input` ([batch, inputWidth]); returns the output ([batch, outputWidth]).
    @discardableResult
    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: LayerContext) -> UnsafeMutablePointer<Float> {
        precondition(batch <= plannedBatch, "batch \(batch) exceeds planned batch \(plannedBatch); call plan(batchSize:)")
        var x = input
        for (index, layer) in layers.enumerated() {
            // x stays the ReLU's input, which the pool below rectifies, or the reshaped input itself.
            if fusedIntoNextLayer[index] || passesThrough[index] { continue }
            var layerContext = context
            layerContext.rng = context.rng.split(UInt64(index))
            if index > 0 && fusedIntoNextLayer[index - 1] {
                (layer as! MaxPool2D).forwardRectified(input: x, output: activations[index].pointer, batch: batch, context: layerContext)
            } else {
                layer.forward(input: x, output: activations[index].pointer, batch: batch, context: layerContext)
            }
            x = UnsafePointer(activations[index].pointer)
        }
        return UnsafeMutablePointer(mutating: x)
    }

    /// Where layer `index`'s forward output is (`input` for index −1 and for reshapes of it).
    private func output(ofLayer index: Int, input: UnsafePointer<Float>) -> UnsafePointer<Float> {
        var layer = index
        while layer >= 0 && passesThrough[layer] { layer -= 1 }
        return layer < 0 ? input : UnsafePointer(activations[layer].pointer)
    }

    /// Back-propagates `outputGradient` ([batch, outputWidth]) after `forward(input, batch)`, adding into the
    /// gradient buffer. `layerDone(i)` runs right after layer i's gradients are complete (reverse order), so
    /// the caller can start reducing the contiguous gradient range from layer i to the end. Layers below
    /// `firstTrainableLayer` (frozen) get no gradient and cost nothing. With `inputGradient` ([batch, inputWidth]),
    /// every layer runs backward and dL/dinput is written there (a GAN's generator learns through its discriminator).
    public func backward(input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>, batch: Int,
                         firstTrainableLayer: Int = 0, inputGradient: UnsafeMutablePointer<Float>? = nil,
                         layerDone: (Int) -> Void = { _ in }) {
        precondition(batch <= plannedTrainingBatch, "backward batch \(batch) exceeds planned training batch \(plannedTrainingBatch); call plan(batchSize:trainingBatchSize:)")
        guard !layers.isEmpty else {
            inputGradient?.update(from: outputGradient, count: batch * inputWidth)
            return
        }
        var dy = outputGradient
        var target = gradientA
        // No gradient is needed below the first trainable layer (the first with parameters, or above the frozen
        // ones): that layer skips its input gradient (in fashion-mlp, Linear 784→256 behind Flatten: a third of the
        // backward FLOPs) and the layers before it do no backward work at all — unless the caller wants dL/dinput.
        let first = inputGradient == nil ? max(firstTrainableLayer, firstLayerWithParameters) : 0
        for index in stride(from: layers.count - 1, through: 0, by: -1) {
            // A fused ReLU's gradient was already written by the pool above it (dy is the ReLU input's gradient).
            guard index >= first && !fusedIntoNextLayer[index] else { layerDone(index); continue }
            // The layer whose input gradient this pass writes: the fused ReLU's when the pool applied it.
            let fused = index > 0 && fusedIntoNextLayer[index - 1]
            let producer = fused ? index - 1 : index
            let destination = producer == 0 ? inputGradient : (producer > first ? target.pointer : nil)
            if passesThrough[index] {
                // The gradient of a reshape is the same memory: dy stays; only the caller's buffer needs a copy.
                if producer == 0, let inputGradient { inputGradient.update(from: dy, count: batch * inputWidth) }
                layerDone(index)
                continue
            }
            if fused {
                if let destination {
                    (layers[index] as! MaxPool2D).backwardRectified(output: activations[index].pointer, outputGradient: dy,
                                                                    inputGradient: destination, batch: batch)
                }
            } else {
                layers[index].backward(input: output(ofLayer: index - 1, input: input), output: activations[index].pointer,
                                       outputGradient: dy, inputGradient: destination, batch: batch)
            }
            layerDone(index)
            if producer > 0 && destination != nil {
                dy = UnsafePointer(target.pointer)
                target = target === gradientA ? gradientB : gradientA
            }
        }
    }

    /// Zeroes every gradient.
    public func zeroGradients() { parameters.gradients!.zero() }
}

/// Collects the layers written in a `Sequential { … }` closure, with `if`, `if`/`else` and `for` allowed.
@resultBuilder
public enum LayerBuilder {
    public static func buildExpression(_ layer: Layer) -> [Layer] { [layer] }
    public static func buildExpression(_ layers: [Layer]) -> [Layer] { layers }
    public static func buildBlock(_ parts: [Layer]...) -> [Layer] { parts.flatMap { $0 } }
    public static func buildOptional(_ part: [Layer]?) -> [Layer] { part ?? [] }
    public static func buildEither(first part: [Layer]) -> [Layer] { part }
    public static func buildEither(second part: [Layer]) -> [Layer] { part }
    public static func buildArray(_ parts: [[Layer]]) -> [Layer] { parts.flatMap { $0 } }
}
