import Foundation
import LockstepCheckpoint
import LockstepComm
import LockstepData
import LockstepNN
import LockstepTrain

/// A GAN in YAML: `model.generator` and `model.discriminator` (layer lists in the `model.layers` syntax),
/// `model.noise_dimensions`, and the `gan:` section (sample grids, the judge). Both models share `optimizer` and
/// `schedule` (each gets its own optimizer state).
public struct GANConfig: Sendable {
    /// Layers from noise to one sample.
    public var generator: [TrainingConfig.LayerSpec]
    /// Layers from one sample to one logit.
    public var discriminator: [TrainingConfig.LayerSpec]
    /// Elements of the generator's noise vector.
    public var noiseDimensions: Int
    /// `gan.images`: directory for a PNG grid of generated samples after every epoch (`train --images` overrides).
    public var imagesDirectory: String?
    /// `gan.grid_samples`: samples in each grid.
    public var gridSamples: Int
    /// `gan.judge`: a classifier checkpoint (file or checkpoint directory) that scores generated samples per epoch.
    public var judge: String?
    /// `gan.judge_samples`: generated samples the judge scores.
    public var judgeSamples: Int

    /// Reads the GAN keys of `model` and the `gan` section of `root`; nil when the config names no generator or
    /// discriminator (an ordinary model).
    init?(model m: ConfigReader, root: ConfigReader) throws {
        guard m.has("generator") || m.has("discriminator") else {
            if root.has("gan") { throw ConfigError("key 'gan': only a GAN config (model.generator and model.discriminator) has this section") }
            if m.has("noise_dimensions") { throw ConfigError("key 'model.noise_dimensions': only a GAN config (model.generator and model.discriminator) has it") }
            return nil
        }
        for key in ["generator", "discriminator"] where !m.has(key) {
            throw ConfigError("key 'model.\(key)': required for a GAN (the config names model.\(key == "generator" ? "discriminator" : "generator"))")
        }
        if m.has("layers") {
            throw ConfigError("key 'model.layers': a GAN config names model.generator and model.discriminator instead")
        }
        generator = try TrainingConfig.layerSpecs(m, "generator")
        discriminator = try TrainingConfig.layerSpecs(m, "discriminator")
        noiseDimensions = try m.int("noise_dimensions", default: 64, range: 1...100_000)
        let g = try root.child("gan")
        let images = try g.string("images", default: "")
        imagesDirectory = images.isEmpty ? nil : images
        gridSamples = try g.int("grid_samples", default: 64, range: 1...10_000)
        let judgePath = try g.string("judge", default: "")
        judge = judgePath.isEmpty ? nil : judgePath
        judgeSamples = try g.int("judge_samples", default: 1000, range: 1...1_000_000)
        try g.rejectUnknownKeys()
    }

    /// Rejects the options of a one-model run that a GAN does not have.
    func checkCompatible(with config: TrainingConfig) throws {
        let root = try ConfigReader(config.resolved, path: "")
        if root.has("loss") && config.loss != .bceWithLogits {
            throw ConfigError("key 'loss': a GAN's discriminator learns with bce_with_logits (real 1, generated 0); remove the key or set it to bce_with_logits")
        }
        let refusals: [(Bool, String, String)] = [
            (config.frozenLayers > 0, "model.freeze", "freezing layers"),
            (config.initializeFrom != nil, "model.init_from", "initializing from a checkpoint"),
            (config.earlyStopping != nil, "training.early_stopping", "early stopping (there is no test loss)"),
            (config.data.validationSplit > 0, "data.validation_split", "a validation split"),
            (config.data.target != .label, "data.target", "a target other than the default"),
            (config.accumulationSteps != 1, "training.accumulation_steps", "gradient accumulation (the two models update alternately every step)"),
            (config.distributed.syncBatchNorm, "distributed.sync_batchnorm", "sync BatchNorm"),
        ]
        for (refused, key, what) in refusals where refused {
            throw ConfigError("key '\(key)': a GAN run does not support \(what)")
        }
    }
}

extension TrainingConfig {
    /// The layer list at `model.KEY`, each entry a mapping with a `type`.
    static func layerSpecs(_ m: ConfigReader, _ key: String) throws -> [LayerSpec] {
        let specs = try m.list(key).enumerated().map { index, value in
            guard case .map(var options) = value else {
                throw ConfigError("key 'model.\(key)[\(index)]': expected a mapping like {type: linear, out: 10}")
            }
            guard case .string(let type)? = options.removeValue(forKey: "type") else {
                throw ConfigError("key 'model.\(key)[\(index)].type': required string is missing")
            }
            return LayerSpec(type: type, options: options, index: index)
        }
        if specs.isEmpty && m.has(key) { throw ConfigError("key 'model.\(key)': the model needs at least one layer") }
        return specs
    }

    /// Loads the images (rescaled to [−1, 1], a tanh generator's range), builds both models, their optimizers and the
    /// judge, and starts a `GANTrainer` on `communicator`. Collective.
    public func makeGANTrainer(communicator: Communicator, checkpoints: CheckpointSettings = CheckpointSettings(),
                               log: @escaping (String) -> Void = { print($0) }) throws -> GANTrainer {
        guard let gan else { throw ConfigError("key 'model.generator': this config trains one model, not a GAN") }
        var (train, test, statistics) = try DatasetLoader.loadWithStatistics(data, seed: seed)
        guard let statistics, [.fashionMNIST, .mnist, .cifar10].contains(data.dataset) else {
            throw ConfigError("key 'data.dataset': a GAN generates images (fashion-mnist, mnist, cifar10), not \(data.dataset.rawValue)")
        }
        // Standardized x = (p − m)/s back to pixels p ∈ [0, 1], then to 2p − 1: again a per-channel (x − m′)/s′.
        let means = zip(statistics.means, statistics.standardDeviations).map { (1 - 2 * $0) / (2 * $1) }
        let deviations = statistics.standardDeviations.map { 1 / (2 * $0) }
        train.normalize(channelMeans: means, channelStandardDeviations: deviations)
        test.normalize(channelMeans: means, channelStandardDeviations: deviations)
        let sampleShape = inputShape ?? train.sampleShape
        guard sampleShape.reduce(1, *) == train.featureWidth else {
            throw ConfigError("key 'model.input_shape': \(sampleShape) has \(sampleShape.reduce(1, *)) features but the dataset has \(train.featureWidth) per sample")
        }
        let generator = try ModelBuilder.build(gan.generator, inputShape: [gan.noiseDimensions], key: "model.generator")
        let discriminator = try ModelBuilder.build(gan.discriminator, inputShape: sampleShape, key: "model.discriminator")
        let options = trainingOptions(checkpoints: checkpoints)
        let stepsPerEpoch = Trainer.stepsPerEpoch(samples: train.count, worldSize: communicator.size, options: options)
        let trainer = try GANTrainer(generator: generator, discriminator: discriminator,
                                     generatorOptimizer: Self.makeOptimizer(optimizer, parameterCount: generator.parameters.count),
                                     discriminatorOptimizer: Self.makeOptimizer(optimizer, parameterCount: discriminator.parameters.count),
                                     schedule: makeSchedule(stepsPerEpoch: stepsPerEpoch, globalBatch: batchSize * communicator.size),
                                     data: TrainingData(train: train, test: test), pixelRange: -1...1, options: options,
                                     communicator: communicator, log: log)
        if let path = gan.judge {
            trainer.judge = try Self.makeJudge(path, sampleShape: train.sampleShape, pixelRange: -1...1)
            trainer.judgedSampleCount = gan.judgeSamples
        }
        return trainer
    }

    /// The classifier of checkpoint `path` (its own config, in the checkpoint's metadata, builds the model) with the
    /// input mapping from GAN pixels in `pixelRange` to what it was trained on. Errors name `gan.judge`.
    static func makeJudge(_ path: String, sampleShape: [Int], pixelRange: ClosedRange<Float>) throws -> GANJudge {
        func failure(_ reason: String) -> ConfigError { ConfigError("key 'gan.judge': \(path): \(reason)") }
        let search: CheckpointSearch
        do { search = try CheckpointStore(directory: ".", keep: 1).resolve(resume: path) } catch {
            // The checkpoint error names the file already.
            throw ConfigError("key 'gan.judge': \(error) (train a classifier first, e.g. `lockstep train --config configs/fashion-mlp.yaml --checkpoint-dir \(path)`)")
        }
        guard let file = search.file else { throw failure("no checkpoint found") }
        guard let text = file.metadata[CheckpointMetadataKey.config] else { throw failure("has no config in its metadata") }
        let config = try TrainingConfig.parse(yaml: text, source: path)
        guard config.gan == nil, config.loss == .crossEntropy else {
            throw failure("is not a classifier checkpoint (it was trained with \(config.gan == nil ? "loss \(config.loss.rawValue)" : "a GAN config"); a judge needs cross_entropy)")
        }
        // The classifier's data gives its sample shape (unless its config sets one) and its standardization.
        let judgeData = try DatasetLoader.loadWithStatistics(config.data, seed: config.seed)
        let judgeShape = config.inputShape ?? judgeData.train.sampleShape
        guard judgeShape.reduce(1, *) == sampleShape.reduce(1, *) else {
            throw failure("the classifier takes \(judgeShape) per sample but the GAN makes \(sampleShape)")
        }
        let classifier: Sequential
        do {
            classifier = try ModelBuilder.build(config.layers, inputShape: judgeShape)
            try file.restore(into: classifier.parameters)
            try file.restore(into: classifier.state)
        } catch {
            throw failure("does not fit the model its config describes: \(error)")
        }
        // Pixels p = (x − low)/span in [0, 1], then the judge's own standardization, as one affine map per channel.
        let span = pixelRange.upperBound - pixelRange.lowerBound
        let channels = sampleShape.count == 3 ? sampleShape[0] : 1
        var scale = [Float](repeating: 1 / span, count: channels), offset = [Float](repeating: -pixelRange.lowerBound / span, count: channels)
        if let statistics = judgeData.statistics {
            guard statistics.means.count == channels else { throw failure("the classifier's data has \(statistics.means.count) channels, the GAN's \(channels)") }
            for c in 0..<channels {
                scale[c] /= statistics.standardDeviations[c]
                offset[c] = (offset[c] - statistics.means[c]) / statistics.standardDeviations[c]
            }
        }
        return try GANJudge(classifier: classifier, scale: scale, offset: offset)
    }
}
