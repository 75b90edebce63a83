import Foundation
import LockstepComm
import LockstepCore
import LockstepData
import LockstepTrain

/// The datasets a config can name (`data.dataset`).
public enum DatasetKind: String, Sendable, CaseIterable {
    case fashionMNIST = "fashion-mnist", mnist, cifar10, csv, linearSynthetic = "linear-synthetic", text
    case sequenceSynthetic = "sequence-synthetic", labeledText = "labeled-text"
    /// Linearly separable points with 0/1 labels (the perceptron's problem).
    case separableSynthetic = "separable-synthetic"
}

/// The losses a config can name (`loss`).
public enum LossKind: String, Sendable, CaseIterable {
    case crossEntropy = "cross_entropy", mse, bceWithLogits = "bce_with_logits", sequenceCrossEntropy = "sequence_cross_entropy"
    case hinge
}

/// The optimizers a config can name (`optimizer.type`).
public enum OptimizerKind: String, Sendable, CaseIterable {
    case sgd, adam, adamw, rmsprop, adagrad
}

/// The learning-rate schedules a config can name (`schedule.type`).
public enum ScheduleKind: String, Sendable, CaseIterable {
    case constant, step, cosine
}

/// Everything a training run needs, read and validated from YAML before any work starts.
public struct TrainingConfig: Sendable {
    /// Where the samples come from.
    public struct Data: Sendable {
        /// Which reader (or generator) provides the samples.
        public var dataset: DatasetKind
        /// Directory (IDX, CIFAR) or file (CSV).
        public var path: String
        /// Use only the first N training samples (0 = all).
        public var trainSubset: Int
        /// Use only the first N test samples (0 = all).
        public var testSubset: Int
        /// Shuffle every epoch.
        public var shuffle: Bool
        /// Gather the next batch on a background thread: `auto` does when a rank has more than one core.
        public var prefetch: TrainingOptions.Prefetch
        /// What to do with samples left over when the dataset size does not divide by the world size.
        public var shardPolicy: EpochPlan.Policy
        /// `data.augmentation: {padding, horizontal_flip}`: random shifts and flips of training images.
        public var augmentation: AugmentationSpec
        /// `data.classes`: keep only these classes, relabelled 0, 1, … in this order (empty keeps all).
        public var classes: [Int]
        /// `data.validation_split`: hold out this last fraction of the training set for validation (Keras).
        public var validationSplit: Double
        /// `data.target`: what the model learns to output, the labels or (autoencoders) the input itself.
        public var target: Target

        /// What a sample's target is.
        public enum Target: String, Sendable, CaseIterable {
            case label, input
        }
        /// CSV: label column (index or header name).
        public var labelColumn: String
        /// CSV: first line is a header.
        public var header: Bool
        /// CSV: integer labels or real-valued targets.
        public var task: CSVTask
        /// CSV: test file.
        public var testPath: String
        /// Synthetic: sample count, feature count and noise.
        public var syntheticSamples: Int
        public var syntheticFeatures: Int
        public var syntheticNoise: Double
        /// Text and sequence-synthetic: time steps per sample (T).
        public var sequenceLength: Int
        /// Text: bytes between the starts of consecutive windows (defaults to T: non-overlapping).
        public var stride: Int
    }

    /// One layer of the model as written in the config.
    public struct LayerSpec: Sendable {
        /// Layer kind.
        public var type: String
        /// The raw options, validated by the model builder.
        public var options: [String: ConfigValue]
        /// Index in `model.layers` (for error messages).
        public var index: Int
    }

    /// The optimizer.
    public struct OptimizerConfig: Sendable {
        public var type: OptimizerKind
        public var learningRate: Double
        public var momentum: Double
        public var nesterov: Bool
        public var weightDecay: Double
        public var beta1: Double
        public var beta2: Double
        public var epsilon: Double
        /// RMSprop: decay rate of the squared-gradient average.
        public var alpha: Double
        /// RMSprop: normalize by the gradient's variance estimate instead of its second moment.
        public var centered: Bool
        /// Adagrad: learning rate at step t is lr / (1 + (t-1)·lr_decay).
        public var learningRateDecay: Double
        /// Adagrad: value the sum of squared gradients starts from.
        public var initialAccumulatorValue: Double
        /// L1 penalty: λ·sign(p) is added to the gradient before any optimizer's own weight decay.
        public var l1: Double
    }

    /// The learning-rate schedule.
    public struct ScheduleConfig: Sendable {
        public var type: ScheduleKind
        public var warmupEpochs: Double
        public var stepEpochs: Double
        public var gamma: Double
        public var minimumLearningRate: Double
    }

    /// Checkpointing.
    public struct CheckpointConfig: Sendable {
        public var everySteps: Int
        public var everyEpoch: Bool
        public var keep: Int
    }

    public var seed: UInt64
    public var data: Data
    public var inputShape: [Int]?
    /// `model.freeze`: how many leading layers stay fixed (the config lists their indices, 0…k−1).
    public var frozenLayers: Int
    /// `model.init_from`: a checkpoint whose matching tensors initialize the model.
    public var initializeFrom: String?
    public var layers: [LayerSpec]
    /// `model.generator`, `model.discriminator` and `gan.*`: a GAN instead of one model (nil otherwise).
    public var gan: GANConfig?
    public var loss: LossKind
    public var optimizer: OptimizerConfig
    public var schedule: ScheduleConfig
    /// Samples per rank per micro-batch.
    public var batchSize: Int
    public var epochs: Int
    /// Stop after this many optimizer steps (0 = run all epochs).
    public var maxSteps: Int
    /// Micro-batches accumulated per optimizer step.
    public var accumulationSteps: Int
    /// Global-norm clip (0 = off; defaults to 1 for models with rnn/lstm/gru layers).
    public var clipGradientNorm: Double
    /// Evaluation batch size per rank.
    public var evalBatchSize: Int
    /// `training.early_stopping: {metric, patience, min_delta}`.
    public var earlyStopping: EarlyStopping?
    /// Data-parallel behaviour (`distributed.*` except the two learning-rate keys below).
    public var distributed: DistributedOptions
    /// `distributed.scale_lr`: lr × global batch / `baseBatch` (Goyal et al. 2017).
    public var scaleLearningRate: Bool
    /// `distributed.base_batch`: the batch size the learning rate was tuned for.
    public var baseBatch: Int
    public var checkpoint: CheckpointConfig
    /// `distributed.shard_optimizer`: ZeRO-1 on, off, or `auto` (on where gradients reduce through one node's shared
    /// memory, where it is bit-identical to unsharded training and faster; resolved by `makeTrainer`).
    public var shardOptimizer: ShardOptimizerChoice
    /// The words of `distributed.shard_optimizer`.
    public enum ShardOptimizerChoice: String, Sendable, CaseIterable {
        /// Sharded where the reduction runs through node-shared memory, else not.
        case auto
        /// Always sharded (ZeRO-1).
        case on = "true"
        /// Never sharded.
        case off = "false"
    }
    /// `debug.*`: fault injection for tests of the engine itself.
    public var debug: FaultInjection
    /// The resolved tree (after overrides), as read.
    public var resolved: ConfigValue

    /// FNV-1a hash of the canonical resolved config: equal on every rank that read the same config.
    public var hash: UInt64 {
        Array(resolved.canonicalText.utf8).withUnsafeBytes { Kernels.fnv1a($0) }
    }

    /// Loads `file`, applies `overrides` ("key.path=value"), and validates every key.
    public static func load(file: String, overrides: [String] = []) throws -> TrainingConfig {
        guard let text = FileManager.default.contents(atPath: file).flatMap({ String(data: $0, encoding: .utf8) }) else {
            throw ConfigError("\(file): cannot read config file (missing or not UTF-8)")
        }
        return try parse(yaml: text, source: file, overrides: overrides)
    }

    /// Parses YAML text with overrides; `source` names it in errors.
    public static func parse(yaml: String, source: String, overrides: [String] = []) throws -> TrainingConfig {
        var tree = try ConfigValue.parse(yaml: yaml, source: source)
        for override in overrides {
            guard let equals = override.firstIndex(of: "="), equals != override.startIndex else {
                throw ConfigError("--set '\(override)': expected key.path=value")
            }
            let key = String(override[..<equals])
            let value = ConfigValue.parseScalar(String(override[override.index(after: equals)...]))
            tree = try tree.setting(key.split(separator: ".").map(String.init), to: value)
        }
        do { return try TrainingConfig(tree: tree) } catch let error as ConfigError {
            throw ConfigError("\(source): \(error.description)")
        }
    }

    /// `data.augmentation`, absent meaning none.
    private static func augmentation(_ data: ConfigReader) throws -> AugmentationSpec {
        guard data.has("augmentation") else { return AugmentationSpec() }
        let a = try data.child("augmentation")
        let spec = AugmentationSpec(padding: try a.int("padding", default: 0, range: 0...64),
                                    horizontalFlip: try a.bool("horizontal_flip", default: false))
        try a.rejectUnknownKeys()
        return spec
    }

    init(tree: ConfigValue) throws {
        resolved = tree
        let root = try ConfigReader(tree, path: "")
        seed = UInt64(try root.int("seed", default: 0, range: 0...Int.max))

        let d = try root.child("data")
        let dataset = try d.word("dataset", default: DatasetKind.fashionMNIST)
        let defaultPath = [.fashionMNIST: "/usr/share/datasets/fashion-mnist", .text: "/usr/share/games/fortunes"][dataset] ?? ""
        let sequenceLength = try d.int("sequence_length", default: dataset == .text ? 64 : dataset == .labeledText ? 128 : 15, range: 1...100_000)
        data = Data(dataset: dataset,
                    path: try d.string("path", default: defaultPath),
                    trainSubset: try d.int("train_subset", default: 0, range: 0...Int.max),
                    testSubset: try d.int("test_subset", default: 0, range: 0...Int.max),
                    shuffle: try d.bool("shuffle", default: true),
                    prefetch: try d.word("prefetch", default: TrainingOptions.Prefetch.auto),
                    shardPolicy: try d.word("shard_policy", default: EpochPlan.Policy.dropLast),
                    augmentation: try Self.augmentation(d),
                    classes: try d.ints("classes", default: []) ?? [],
                    validationSplit: try d.double("validation_split", default: 0, range: 0...0.99),
                    target: try d.word("target", default: Data.Target.label),
                    labelColumn: try d.string("label_column", default: "label"),
                    header: try d.bool("header", default: true),
                    task: try d.word("task", default: CSVTask.classification),
                    testPath: try d.string("test_path", default: ""),
                    syntheticSamples: try d.int("samples", default: 4096, range: 1...10_000_000),
                    syntheticFeatures: try d.int("features", default: 8, range: 1...100_000),
                    syntheticNoise: try d.double("noise", default: 0.01, range: 0...1000),
                    sequenceLength: sequenceLength,
                    stride: try d.int("stride", default: sequenceLength, range: 1...100_000))
        try d.rejectUnknownKeys()
        if [.mnist, .cifar10, .csv, .labeledText].contains(dataset) && data.path.isEmpty {
            throw ConfigError("key 'data.path': required for dataset '\(dataset)'")
        }

        let m = try root.child("model")
        inputShape = try m.ints("input_shape")
        // A GAN names two models instead of one (GANConfig.swift).
        gan = try GANConfig(model: m, root: root)
        layers = gan == nil ? try Self.layerSpecs(m, "layers") : []
        guard !layers.isEmpty || gan != nil else { throw ConfigError("key 'model.layers': the model needs at least one layer") }
        let freeze = try m.ints("freeze", default: []) ?? []
        for (position, index) in freeze.enumerated() where index != position || index >= layers.count {
            throw ConfigError(index >= layers.count || index < 0
                ? "key 'model.freeze[\(position)]': layer \(index) does not exist (the model has layers 0…\(layers.count - 1))"
                : "key 'model.freeze': frozen layers must be the first ones in order (0, 1, …, k−1), got \(freeze): the flat parameter buffer keeps them as one prefix")
        }
        frozenLayers = freeze.count
        let initPath = try m.string("init_from", default: "")
        initializeFrom = initPath.isEmpty ? nil : initPath
        try m.rejectUnknownKeys()

        loss = try root.word("loss", default: LossKind.crossEntropy)
        // Layers after the softmax that keep its values probabilities (reshape, or drop some).
        if loss == .crossEntropy || loss == .sequenceCrossEntropy,
           let last = layers.last(where: { !["flatten", "dropout", "last_time_step"].contains($0.type) }), last.type == "softmax" {
            throw ConfigError("key 'model.layers[\(last.index)]': softmax before loss \(loss.rawValue) applies softmax twice; remove the layer — \(loss.rawValue) takes logits")
        }

        let o = try root.child("optimizer")
        let optimizerType = try o.word("type", default: OptimizerKind.sgd)
        // Options of one optimizer only: naming them for another would be silently ignored.
        for (key, owner) in [("alpha", OptimizerKind.rmsprop), ("centered", .rmsprop), ("lr_decay", .adagrad), ("initial_accumulator_value", .adagrad)]
            where o.has(key) && optimizerType != owner {
            throw ConfigError("key '\(o.keyPath(key))': only optimizer.type \(owner.rawValue) uses it, the type is \(optimizerType.rawValue)")
        }
        optimizer = OptimizerConfig(type: optimizerType,
                                    learningRate: try o.double("lr", range: 1e-12...1e3),
                                    momentum: try o.double("momentum", default: 0, range: 0...0.9999),
                                    nesterov: try o.bool("nesterov", default: false),
                                    weightDecay: try o.double("weight_decay", default: 0, range: 0...10),
                                    beta1: try o.double("beta1", default: 0.9, range: 0...0.99999),
                                    beta2: try o.double("beta2", default: 0.999, range: 0...0.9999999),
                                    // PyTorch's Adagrad defaults to 1e-10, its other optimizers to 1e-8.
                                    epsilon: try o.double("eps", default: optimizerType == .adagrad ? 1e-10 : 1e-8, range: 1e-30...1),
                                    alpha: try o.double("alpha", default: 0.99, range: 0...1),
                                    centered: try o.bool("centered", default: false),
                                    learningRateDecay: try o.double("lr_decay", default: 0, range: 0...1e6),
                                    initialAccumulatorValue: try o.double("initial_accumulator_value", default: 0, range: 0...1e6),
                                    l1: try o.double("l1", default: 0, range: 0...10))
        try o.rejectUnknownKeys()
        if optimizer.nesterov && optimizer.momentum == 0 {
            throw ConfigError("key 'optimizer.nesterov': Nesterov needs optimizer.momentum > 0")
        }

        let s = try root.child("schedule")
        schedule = ScheduleConfig(type: try s.word("type", default: ScheduleKind.constant),
                                  warmupEpochs: try s.double("warmup_epochs", default: 0, range: 0...10_000),
                                  stepEpochs: try s.double("step_epochs", default: 10, range: 1e-6...10_000),
                                  gamma: try s.double("gamma", default: 0.1, range: 0...1),
                                  minimumLearningRate: try s.double("min_lr", default: 0, range: 0...1e3))
        try s.rejectUnknownKeys()

        let t = try root.child("training")
        batchSize = try t.int("batch_size", default: 64, range: 1...1_000_000)
        epochs = try t.int("epochs", default: 1, range: 1...100_000)
        maxSteps = try t.int("max_steps", default: 0, range: 0...Int.max)
        accumulationSteps = try t.int("accumulation_steps", default: 1, range: 1...4096)
        // Recurrent models clip at 1 unless told otherwise: BPTT gradients can explode over long sequences.
        let recurrent = layers.contains { ["rnn", "lstm", "gru"].contains($0.type) }
        clipGradientNorm = try t.double("clip_grad_norm", default: recurrent ? 1 : 0, range: 0...1e9)
        evalBatchSize = try t.int("eval_batch_size", default: 1000, range: 1...1_000_000)
        if t.has("early_stopping") {
            let e = try t.child("early_stopping")
            earlyStopping = EarlyStopping(metric: try e.word("metric", default: EarlyStopping.Metric.validationLoss),
                                          patience: try e.int("patience", default: 3, range: 1...10_000),
                                          minimumDelta: try e.double("min_delta", default: 0, range: 0...1e6))
            try e.rejectUnknownKeys()
            if earlyStopping!.metric.rawValue.hasPrefix("validation") && data.validationSplit == 0 {
                throw ConfigError("key 'training.early_stopping.metric': \(earlyStopping!.metric.rawValue) needs data.validation_split > 0")
            }
        } else {
            earlyStopping = nil
        }
        try t.rejectUnknownKeys()

        let x = try root.child("distributed")
        var bucketIsAuto = false
        if case .string(let text)? = x.raw("bucket_mb"), Double(text) == nil {
            guard text == "auto" else { throw ConfigError("key '\(x.keyPath("bucket_mb"))': expected a number of MiB or auto, found '\(text)'") }
            bucketIsAuto = true
        }
        distributed = DistributedOptions()
        distributed.bucketMiB = bucketIsAuto ? nil : try x.double("bucket_mb", default: 1, range: 0.001...4096)
        distributed.overlap = try x.word("overlap", default: DistributedOptions.Overlap.blocking)
        distributed.transport = try x.word("transport", default: DistributedOptions.Transport.auto)
        distributed.deterministic = try x.bool("deterministic", default: false)
        distributed.syncBatchNorm = try x.bool("sync_batchnorm", default: false)
        shardOptimizer = try x.word("shard_optimizer", default: ShardOptimizerChoice.off)
        distributed.shardOptimizer = shardOptimizer == .on
        distributed.checkEvery = try x.int("check_every", default: 100, range: 0...Int.max)
        distributed.nonFinite = try x.word("nonfinite", default: DistributedOptions.NonFinitePolicy.skip)
        distributed.timeoutSeconds = try x.double("timeout_seconds", default: 300, range: 0...1e6)
        scaleLearningRate = try x.bool("scale_lr", default: false)
        baseBatch = try x.int("base_batch", default: 64, range: 1...Int.max)
        try x.rejectUnknownKeys()

        let c = try root.child("checkpoint")
        checkpoint = CheckpointConfig(everySteps: try c.int("every_steps", default: 0, range: 0...Int.max),
                                      everyEpoch: try c.bool("every_epoch", default: true),
                                      keep: try c.int("keep", default: 3, range: 1...1000))
        try c.rejectUnknownKeys()

        let g = try root.child("debug")
        debug = FaultInjection()
        debug.nanStep = try g.int("nan_step", default: -1, range: -1...Int.max)
        debug.nanRank = try g.int("nan_rank", default: 0, range: 0...Int.max)
        debug.stepDelayMilliseconds = try g.int("step_delay_ms", default: 0, range: 0...60_000)
        debug.hangStep = try g.int("hang_step", default: -1, range: -1...Int.max)
        debug.hangRank = try g.int("hang_rank", default: 0, range: 0...Int.max)
        debug.reductionFault = try g.word("reduction_fault", default: ReductionFault.none)
        debug.reverseBatches = try g.bool("reverse_batches", default: false)
        if debug.reductionFault == .skipBucket && distributed.overlap != .blocking && !distributed.deterministic {
            throw ConfigError("key 'debug.reduction_fault': skip_bucket needs distributed.overlap 'blocking' (the overlap modes start buckets during backward)")
        }
        try g.rejectUnknownKeys()

        try root.rejectUnknownKeys()
        try gan?.checkCompatible(with: self)
    }
}
