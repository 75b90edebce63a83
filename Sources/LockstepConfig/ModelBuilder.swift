import LockstepCore
import LockstepNN
import LockstepTrain

/// Turns the config's layer list into a `Sequential`, inferring each layer's input size from the one before.
public enum ModelBuilder {
    /// Builds the model for per-sample `inputShape`; errors name `model.layers[i]` and the reason. `classCount` (the
    /// dataset's classes, e.g. a text vocabulary) is the default size of `embedding` tables and `sequence_linear` outputs.
    /// `vocabularySize`, when the dataset's token ids are not its classes (labelled text), sizes `embedding` instead.
    /// `key` is the list's config key (`model.generator` for a GAN's generator).
    public static func build(_ specs: [TrainingConfig.LayerSpec], inputShape: [Int], classCount: Int? = nil,
                             vocabularySize: Int? = nil, key: String = "model.layers") throws -> Sequential {
        var layers: [Layer] = []
        var shape = inputShape
        for spec in specs {
            let path = "\(key)[\(spec.index)]"
            let options = try ConfigReader(.map(spec.options), path: path)
            let layer: Layer
            do {
                layer = try makeLayer(spec.type, options: options, inputShape: shape, path: path)
                    ?? makeSequenceLayer(spec.type, options: options, inputShape: shape, path: path, classCount: classCount,
                                     vocabularySize: vocabularySize ?? classCount)
                try options.rejectUnknownKeys()
                shape = try layer.outputShape(inputShape: shape)
            } catch let error as ShapeError {
                throw ConfigError("key '\(path)' (\(spec.type)): impossible shape: \(error.description)")
            }
            layers.append(layer)
        }
        return try Sequential(layers, inputShape: inputShape)
    }

    private static func initializer(_ options: ConfigReader, fanIn: Int, fanOut: Int, default name: String = "he") throws -> Initializer {
        switch try options.string("init", default: name, allowed: ["he", "xavier", "uniform"]) {
        case "xavier": return .xavier(fanIn: fanIn, fanOut: fanOut)
        case "uniform": return .uniform(bound: 1 / Float(fanIn).squareRoot())  // PyTorch's default Linear/Conv init scale
        default: return .he(fanIn: fanIn)
        }
    }

    private static func pair(_ options: ConfigReader, _ key: String, default value: Int) throws -> (Int, Int) {
        guard let list = try options.ints(key, default: [value]) else { return (value, value) }
        switch list.count {
        case 1: return (list[0], list[0])
        case 2: return (list[0], list[1])
        default: throw ConfigError("key '\(options.keyPath(key))': expected one integer or [height, width]")
        }
    }

    private static func makeLayer(_ type: String, options: ConfigReader, inputShape: [Int], path: String) throws -> Layer? {
        let width = inputShape.reduce(1, *)
        func image() throws -> (channels: Int, height: Int, width: Int) {
            guard inputShape.count == 3 else {
                throw ConfigError("key '\(path)' (\(type)): needs [channels, height, width] input, receives \(inputShape)")
            }
            return (inputShape[0], inputShape[1], inputShape[2])
        }
        switch type {
        case "linear":
            let out = try options.int("out", range: 1...1_000_000)
            return Linear(inputDimensions: width, outputDimensions: out, bias: try options.bool("bias", default: true),
                          initializer: try initializer(options, fanIn: width, fanOut: out))
        case "conv2d":
            let input = try image()
            let out = try options.int("out", range: 1...100_000)
            let kernel = try pair(options, "kernel", default: 3)
            let stride = try pair(options, "stride", default: 1)
            let padding = try pair(options, "padding", default: 0)
            let fanIn = input.channels * kernel.0 * kernel.1
            return Conv2D(inputChannels: input.channels, outputChannels: out, kernelSize: kernel, stride: stride,
                          padding: padding, bias: try options.bool("bias", default: true),
                          initializer: try initializer(options, fanIn: fanIn, fanOut: out * kernel.0 * kernel.1),
                          algorithm: try options.word("algorithm", default: ConvolutionAlgorithm.auto))
        case "maxpool2d", "avgpool2d":
            _ = try image()
            let kernel = try pair(options, "kernel", default: 2)
            let stride = options.has("stride") ? try pair(options, "stride", default: 2) : kernel
            return type == "maxpool2d" ? MaxPool2D(kernelSize: kernel, stride: stride) : AvgPool2D(kernelSize: kernel, stride: stride)
        case "flatten": return Flatten()
        case "relu": return ReLU()
        case "leaky_relu": return LeakyReLU(slope: Float(try options.double("slope", default: 0.01, range: 0...1)))
        case "sigmoid": return Sigmoid()
        case "tanh": return Tanh()
        case "softmax": return Softmax()
        case "dropout": return Dropout(probability: Float(try options.double("p", default: 0.5, range: 0...0.99)))
        case "batchnorm":
            let momentum = Float(try options.double("momentum", default: 0.1, range: 0...1))
            let epsilon = Float(try options.double("eps", default: 1e-5, range: 1e-12...1))
            switch inputShape.count {
            case 1: return BatchNorm(features: inputShape[0], spatial: 1, momentum: momentum, epsilon: epsilon)
            case 3: return BatchNorm(features: inputShape[0], spatial: inputShape[1] * inputShape[2], momentum: momentum, epsilon: epsilon)
            default: throw ConfigError("key '\(path)' (batchnorm): needs [features] or [channels, height, width] input, receives \(inputShape)")
            }
        default:
            // Sequence layer kinds live in makeSequenceLayer, which reports unknown kinds.
            return nil
        }
    }

    /// Layers over [time, features] samples (text and sequence models); throws for a kind nobody knows.
    private static func makeSequenceLayer(_ type: String, options: ConfigReader, inputShape: [Int], path: String,
                                          classCount: Int?, vocabularySize: Int?) throws -> Layer {
        func sequence() throws -> (time: Int, features: Int) {
            guard inputShape.count == 2 else {
                throw ConfigError("key '\(path)' (\(type)): needs [time, features] input, receives \(inputShape)"
                                  + (inputShape.count == 1 ? " (put an embedding first for token ids)" : ""))
            }
            return (inputShape[0], inputShape[1])
        }
        func size(_ key: String, default value: Int?) throws -> Int {
            if options.has(key) || value == nil { return try options.int(key, range: 1...10_000_000) }
            return value!  // the dataset's vocabulary / class count
        }
        switch type {
        case "embedding":
            guard inputShape.count == 1 else {
                throw ConfigError("key '\(path)' (embedding): needs [time] token ids, receives \(inputShape)")
            }
            return Embedding(vocabularySize: try size("vocab", default: vocabularySize), dimensions: try options.int("dim", range: 1...100_000))
        case "positional_embedding":
            let shape = try sequence()
            return PositionalEmbedding(length: shape.time, dimensions: shape.features)
        case "rnn", "lstm", "gru":
            let features = try sequence().features
            let hidden = try options.int("hidden", range: 1...100_000)
            switch type {
            case "rnn": return RNN(inputFeatures: features, hidden: hidden)
            case "lstm": return LSTM(inputFeatures: features, hidden: hidden)
            default: return GRU(inputFeatures: features, hidden: hidden)
            }
        case "layernorm":
            guard let last = inputShape.last else { throw ConfigError("key '\(path)' (layernorm): empty input shape") }
            return LayerNorm(features: last, epsilon: Float(try options.double("eps", default: 1e-5, range: 1e-12...1)))
        case "attention":
            return MultiHeadSelfAttention(dimensions: try sequence().features, heads: try options.int("heads", range: 1...4096),
                                          causal: try options.bool("causal", default: true))
        case "transformer_block":
            let features = try sequence().features
            return TransformerBlock(dimensions: features, heads: try options.int("heads", range: 1...4096),
                                    mlpDimensions: try options.int("mlp", default: 4 * features, range: 1...1_000_000),
                                    gelu: try options.string("activation", default: "gelu", allowed: ["gelu", "relu"]) == "gelu",
                                    causal: try options.bool("causal", default: true))
        case "sequence_linear":
            let features = try sequence().features
            let out = try size("out", default: classCount)
            return SequenceLinear(inputDimensions: features, outputDimensions: out, bias: try options.bool("bias", default: true),
                                  initializer: try initializer(options, fanIn: features, fanOut: out, default: "uniform"))
        case "last_time_step":
            _ = try sequence()
            return LastTimeStep()
        case "gelu": return GELU()
        default:
            throw ConfigError("key '\(path).type': unknown layer '\(type)' (known: linear, conv2d, maxpool2d, avgpool2d, flatten, relu, leaky_relu, sigmoid, tanh, softmax, dropout, batchnorm, embedding, positional_embedding, rnn, lstm, gru, layernorm, attention, transformer_block, sequence_linear, last_time_step, gelu)")
        }
    }
}
