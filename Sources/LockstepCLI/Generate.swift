import Foundation
import LockstepCheckpoint
import LockstepConfig
import LockstepCore
import LockstepData
import LockstepNN
import LockstepTrain

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Samples text from a trained character-level language model (a `data.dataset: text` config).
///
/// The model takes windows of exactly T ids. While the context is shorter than T it sits at the start of the window
/// (the rest padded with id 0) and the prediction is read at the context's last position: the model is causal, so the
/// padding after that position cannot influence it, and the state starts from zero as in training. Longer contexts
/// use their last T ids and read position T − 1.
public final class TextGenerator {
    /// The dataset whose vocabulary maps ids to bytes.
    public let text: TextDataset
    /// The model, built from the config.
    public let model: Sequential
    private let window: FloatBuffer

    /// Builds the model of `config` and the vocabulary of its corpus; `parameters` (raw float32) must match the model.
    public init(config: TrainingConfig, parameters: Data) throws {
        guard config.data.dataset == .text else {
            throw ConfigError("key 'data.dataset': generation needs a text language model config, this one is '\(config.data.dataset.rawValue)'")
        }
        text = try TextDataset.load(path: config.data.path, sequenceLength: config.data.sequenceLength, stride: config.data.stride)
        let length = config.data.sequenceLength
        model = try ModelBuilder.build(config.layers, inputShape: config.inputShape ?? [length], classCount: text.vocabularySize)
        guard model.outputShape == [length, text.vocabularySize] else {
            throw ConfigError("key 'model.layers': a language model must output [\(length), \(text.vocabularySize)] logits per window, this one gives \(model.outputShape)")
        }
        let values = model.parameters.values
        guard parameters.count == values.count * MemoryLayout<Float>.size else {
            throw ConfigError("parameters have \(parameters.count / 4) floats but the model has \(values.count)")
        }
        parameters.withUnsafeBytes { UnsafeMutableRawBufferPointer(values.buffer).copyMemory(from: $0) }
        model.plan(batchSize: 1)
        window = FloatBuffer(count: length)
    }

    /// Window length T.
    public var sequenceLength: Int { window.count }

    /// `prompt` followed by `length` sampled bytes. Temperature 0 takes the most likely byte; otherwise bytes are drawn
    /// from softmax(logits / temperature) with a generator seeded by `seed`, so the same inputs give the same text.
    public func generate(prompt: String, length: Int, temperature: Double, seed: UInt64) throws -> String {
        guard temperature >= 0 && temperature.isFinite else { throw ConfigError("--temperature must be ≥ 0, got \(temperature)") }
        guard length >= 0 else { throw ConfigError("--length must be ≥ 0, got \(length)") }
        var context = try text.encode(prompt)
        guard !context.isEmpty else { throw ConfigError("--prompt must not be empty: the model needs at least one byte to condition on") }
        var rng = RNG(seed: seed)
        let vocabulary = text.vocabularySize, t = sequenceLength
        var probabilities = [Double](repeating: 0, count: vocabulary)
        for _ in 0..<length {
            let visible = context.suffix(t)
            window.zero()
            for (position, id) in visible.enumerated() { window.pointer[position] = Float(id) }
            let output = model.forward(window.pointer, batch: 1, context: LayerContext(training: false))
            let logits = output + (visible.count - 1) * vocabulary
            context.append(TextGenerator.sample(logits, count: vocabulary, temperature: temperature, rng: &rng, scratch: &probabilities))
        }
        return text.decode(context)
    }

    /// One id from `logits`: arg-max at temperature 0, else a draw from the tempered softmax.
    static func sample(_ logits: UnsafePointer<Float>, count: Int, temperature: Double, rng: inout RNG, scratch: inout [Double]) -> Int {
        var best = 0
        for i in 1..<count where logits[i] > logits[best] { best = i }
        guard temperature > 0 else { return best }
        // Shifted by the maximum so exp never overflows, whatever the temperature.
        var total = 0.0
        for i in 0..<count {
            scratch[i] = exp((Double(logits[i]) - Double(logits[best])) / temperature)
            total += scratch[i]
        }
        var threshold = Double(rng.next() >> 11) * (1.0 / 9_007_199_254_740_992.0) * total
        for i in 0..<count {
            threshold -= scratch[i]
            if threshold < 0 { return i }
        }
        return best  // only reachable through rounding at the very top of the range
    }
}

extension Session {
    /// The checkpoint at `checkpointPath` (a file or directory) and the config it was trained with (from its
    /// metadata), or the one at `configPath` when given.
    static func checkpointConfig(_ checkpointPath: String, configPath: String?, overrides: [String]) throws -> (TrainingConfig, SafeTensorsFile) {
        let search = try CheckpointStore(directory: ".", keep: 1).resolve(resume: checkpointPath)
        guard let file = search.file else { throw ConfigError("--checkpoint \(checkpointPath): no checkpoint found") }
        if let configPath { return (try TrainingConfig.load(file: configPath, overrides: overrides), file) }
        guard let text = file.metadata[CheckpointMetadataKey.config] else {
            throw ConfigError("--checkpoint \(checkpointPath): has no config in its metadata; pass --config")
        }
        return (try TrainingConfig.parse(yaml: text, source: checkpointPath, overrides: overrides), file)
    }

    /// `lockstep predict`: the model of a checkpoint on the samples of `inputPath` (IDX images, a PGM or PNG image, CSV
    /// rows), normalized as in training; prints class probabilities (softmax, or sigmoid for BCE; raw outputs for
    /// regression) as CSV or JSON lines on rank 0.
    public func predict(checkpointPath: String, configPath: String?, overrides: [String], inputPath: String, jsonLines: Bool) throws {
        let (config, _) = try Self.checkpointConfig(checkpointPath, configPath: configPath, overrides: overrides)
        let (train, test, statistics) = try DatasetLoader.loadWithStatistics(config.data, seed: config.seed)
        let trainer = try config.makeTrainer(communicator: communicator, checkpoints: CheckpointSettings(resume: checkpointPath),
                                             data: TrainingData(train: train, test: test), log: { _ in })
        let input = try PredictionInput.load(inputPath)
        guard input.count > 0, input.features.count / input.count == trainer.model.inputWidth else {
            throw ConfigError("\(inputPath): samples of shape \(input.sampleShape) (\(input.features.count / max(input.count, 1)) values) do not fit the model, which takes \(trainer.model.inputShape)")
        }
        var samples = Dataset(features: input.features, targets: [Float](repeating: 0, count: input.count), sampleShape: train.sampleShape)
        if let statistics { samples.normalize(channelMeans: statistics.means, channelStandardDeviations: statistics.standardDeviations) }
        var scores = samples.features.withUnsafeBufferPointer { trainer.predict($0.baseAddress!, count: input.count) }
        let width = trainer.model.outputWidth
        scores.withUnsafeMutableBufferPointer { buffer in
            for row in 0..<input.count {
                let values = buffer.baseAddress! + row * width
                switch config.loss {
                case .crossEntropy: Kernels.softmax(values, into: values, count: width)
                case .bceWithLogits: for i in 0..<width { values[i] = 1 / (1 + exp(-values[i])) }
                case .mse, .hinge, .sequenceCrossEntropy: break
                }
            }
        }
        guard isLeader else { return }
        let name = config.loss == .crossEntropy || config.loss == .bceWithLogits ? "p" : "y"
        if !jsonLines { print((["sample"] + (0..<width).map { "\(name)\($0)" }).joined(separator: ",")) }
        for row in 0..<input.count {
            let values = scores[(row * width)..<((row + 1) * width)].map { String(format: "%.6g", $0) }
            if jsonLines {
                let best = (0..<width).max { scores[row * width + $0] < scores[row * width + $1] } ?? 0
                print("{\"sample\":\(row),\"prediction\":\(best),\"\(name == "p" ? "probabilities" : "outputs")\":[\(values.joined(separator: ","))]}")
            } else {
                print(([String(row)] + values).joined(separator: ","))
            }
        }
    }

    /// `lockstep generate`: loads a checkpoint (its own config) or raw float32 parameters with a config, and prints
    /// prompt + sampled continuation (rank 0).
    public func generate(configPath: String?, overrides: [String], parametersPath: String?, checkpointPath: String?,
                         prompt: String, length: Int, temperature: Double, seed: UInt64) throws {
        let config: TrainingConfig
        let data: Data
        let parametersPath = parametersPath ?? checkpointPath ?? ""
        if let checkpointPath {
            // The checkpoint carries its resolved config and the parameters in layout order.
            let file: SafeTensorsFile
            (config, file) = try Self.checkpointConfig(checkpointPath, configPath: configPath, overrides: overrides)
            var bytes = Data()
            for tensor in file.tensors where tensor.name.hasPrefix("layers.") && !tensor.name.hasSuffix("running_mean") && !tensor.name.hasSuffix("running_var") {
                tensor.floats.withUnsafeBytes { bytes.append(contentsOf: $0) }
            }
            data = bytes
        } else {
            guard let configPath, !parametersPath.isEmpty else {
                throw ConfigError("generate: pass --checkpoint PATH, or --config FILE with --parameters FILE")
            }
            config = try TrainingConfig.load(file: configPath, overrides: overrides)
            guard let bytes = FileManager.default.contents(atPath: parametersPath) else {
                throw ConfigError("--parameters \(parametersPath): cannot read the file")
            }
            data = bytes
        }
        let generator: TextGenerator
        do { generator = try TextGenerator(config: config, parameters: data) } catch let error as ConfigError where error.description.hasPrefix("parameters") {
            throw ConfigError("--parameters \(parametersPath): \(error.description)")
        }
        let sample = try generator.generate(prompt: prompt, length: length, temperature: temperature, seed: seed)
        if isLeader { print(sample) }
    }
}
