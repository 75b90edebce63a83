import Foundation
import LockstepComm
import LockstepCore

/// Everything a training run needs, read and validated from YAML before any work starts.
public struct TrainingConfig: Sendable {
    /// Where the samples come from.
    public struct Data: Sendable {
        /// `fashion-mnist`, `mnist`, `cifar10`, `csv`, `linear-synthetic`, `text` or `sequence-synthetic`.
        public var dataset: String
        /// Directory (IDX, CIFAR) or file (CSV).
        public var path: String
        /// Use only the first N training samples (0 = all).
        public var trainSubset: Int
        /// Use only the first N test samples (0 = all).
        public var testSubset: Int
        /// Shuffle every epoch.
        public var shuffle: Bool
        /// Gather the next batch on a background thread: `auto` does when a rank has more than one core.
        public var prefetch: String
        /// `drop_last` or `wrap_pad` for dataset sizes not divisible by the world size.
        public var shardPolicy: String
        /// CSV: label column (index or header name).
        public var labelColumn: String
        /// CSV: first line is a header.
        public var header: Bool
        /// CSV: `classification` (integer labels) or `regression`.
        public var task: String
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
        public var type: String
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
        public var type: String
        public var warmupEpochs: Double
        public var stepEpochs: Double
        public var gamma: Double
        public var minimumLearningRate: Double
    }

    /// Data-parallel behaviour.
    public struct DistributedConfig: Sendable {
        /// Gradient bucket cap in MiB; nil for `auto` (chosen from allreduces timed at start-up).
        public var bucketMiB: Double?
        /// `blocking`, `polling` or `thread`.
        public var overlap: String
        /// How blocking reductions travel: `auto` (node-shared memory when every rank is on one node), `mpi`, `shared_memory`.
        public var transport: String
        /// Fixed reduction order: bit-identical to one rank accumulating the same micro-batches.
        public var deterministic: Bool
        /// Reduce BatchNorm statistics across ranks.
        public var syncBatchNorm: Bool
        /// Compare a parameter checksum across ranks every N steps (0 = only at the end).
        public var checkEvery: Int
        /// Goyal et al.: lr × global_batch / base_batch.
        public var scaleLearningRate: Bool
        /// Batch size the base learning rate was tuned for.
        public var baseBatch: Int
        /// `skip` or `stop` when loss or gradients are non-finite on any rank.
        public var nonFinite: String
        /// Seconds a collective may wait before the watchdog stops the job (0 = off).
        public var timeoutSeconds: Double
    }

    /// Checkpointing.
    public struct CheckpointConfig: Sendable {
        public var everySteps: Int
        public var everyEpoch: Bool
        public var keep: Int
    }

    /// Fault injection for tests of the engine itself.
    public struct DebugConfig: Sendable {
        /// Put a NaN in the gradients of `nanRank` at optimizer step `nanStep` (-1 = never).
        public var nanStep: Int
        public var nanRank: Int
        /// Sleep this many milliseconds per step (lets tests kill a rank mid-run).
        public var stepDelayMilliseconds: Int
        /// Rank `hangRank` stops responding at step `hangStep` (-1 = never): exercises the watchdog.
        public var hangStep: Int
        public var hangRank: Int
        /// A deliberately wrong gradient reduction (tests show their bound catches it).
        public var reductionFault: ReductionFault
        /// Deliver each batch's samples in reverse order (tests measure the float rounding spread with it).
        public var reverseBatches: Bool
    }

    public var seed: UInt64
    public var data: Data
    public var inputShape: [Int]?
    public var layers: [LayerSpec]
    public var loss: String
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
    public var distributed: DistributedConfig
    public var checkpoint: CheckpointConfig
    public var debug: DebugConfig
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

    init(tree: ConfigValue) throws {
        resolved = tree
        let root = try ConfigReader(tree, path: "")
        seed = UInt64(try root.int("seed", default: 0, range: 0...Int.max))

        let d = try root.child("data")
        let dataset = try d.string("dataset", default: "fashion-mnist",
                                   allowed: ["fashion-mnist", "mnist", "cifar10", "csv", "linear-synthetic", "text", "sequence-synthetic"])
        let defaultPath = ["fashion-mnist": "/usr/share/datasets/fashion-mnist", "text": "/usr/share/games/fortunes"][dataset] ?? ""
        let sequenceLength = try d.int("sequence_length", default: dataset == "text" ? 64 : 15, range: 1...100_000)
        data = Data(dataset: dataset,
                    path: try d.string("path", default: defaultPath),
                    trainSubset: try d.int("train_subset", default: 0, range: 0...Int.max),
                    testSubset: try d.int("test_subset", default: 0, range: 0...Int.max),
                    shuffle: try d.bool("shuffle", default: true),
                    prefetch: try d.string("prefetch", default: "auto", allowed: ["auto", "true", "false"]),
                    shardPolicy: try d.string("shard_policy", default: "drop_last", allowed: ["drop_last", "wrap_pad"]),
                    labelColumn: try d.string("label_column", default: "label"),
                    header: try d.bool("header", default: true),
                    task: try d.string("task", default: "classification", allowed: ["classification", "regression"]),
                    testPath: try d.string("test_path", default: ""),
                    syntheticSamples: try d.int("samples", default: 4096, range: 1...10_000_000),
                    syntheticFeatures: try d.int("features", default: 8, range: 1...100_000),
                    syntheticNoise: try d.double("noise", default: 0.01, range: 0...1000),
                    sequenceLength: sequenceLength,
                    stride: try d.int("stride", default: sequenceLength, range: 1...100_000))
        try d.rejectUnknownKeys()
        if ["mnist", "cifar10", "csv"].contains(dataset) && data.path.isEmpty {
            throw ConfigError("key 'data.path': required for dataset '\(dataset)'")
        }

        let m = try root.child("model")
        inputShape = try m.ints("input_shape")
        layers = try m.list("layers").enumerated().map { index, value in
            guard case .map(var options) = value else {
                throw ConfigError("key 'model.layers[\(index)]': expected a mapping like {type: linear, out: 10}")
            }
            guard case .string(let type)? = options.removeValue(forKey: "type") else {
                throw ConfigError("key 'model.layers[\(index)].type': required string is missing")
            }
            return LayerSpec(type: type, options: options, index: index)
        }
        guard !layers.isEmpty else { throw ConfigError("key 'model.layers': the model needs at least one layer") }
        try m.rejectUnknownKeys()

        loss = try root.string("loss", default: "cross_entropy", allowed: ["cross_entropy", "mse", "bce_with_logits", "sequence_cross_entropy"])
        // Layers after the softmax that keep its values probabilities (reshape, or drop some).
        if loss.hasSuffix("cross_entropy"),
           let last = layers.last(where: { !["flatten", "dropout", "last_time_step"].contains($0.type) }), last.type == "softmax" {
            throw ConfigError("key 'model.layers[\(last.index)]': softmax before loss \(loss) applies softmax twice; remove the layer — \(loss) takes logits")
        }

        let o = try root.child("optimizer")
        let optimizerType = try o.string("type", default: "sgd", allowed: ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
        // Options of one optimizer only: naming them for another would be silently ignored.
        for (key, owner) in [("alpha", "rmsprop"), ("centered", "rmsprop"), ("lr_decay", "adagrad"), ("initial_accumulator_value", "adagrad")]
            where o.has(key) && optimizerType != owner {
            throw ConfigError("key '\(o.keyPath(key))': only optimizer.type \(owner) uses it, the type is \(optimizerType)")
        }
        optimizer = OptimizerConfig(type: optimizerType,
                                    learningRate: try o.double("lr", range: 1e-12...1e3),
                                    momentum: try o.double("momentum", default: 0, range: 0...0.9999),
                                    nesterov: try o.bool("nesterov", default: false),
                                    weightDecay: try o.double("weight_decay", default: 0, range: 0...10),
                                    beta1: try o.double("beta1", default: 0.9, range: 0...0.99999),
                                    beta2: try o.double("beta2", default: 0.999, range: 0...0.9999999),
                                    // PyTorch's Adagrad defaults to 1e-10, its other optimizers to 1e-8.
                                    epsilon: try o.double("eps", default: optimizerType == "adagrad" ? 1e-10 : 1e-8, range: 1e-30...1),
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
        schedule = ScheduleConfig(type: try s.string("type", default: "constant", allowed: ["constant", "step", "cosine"]),
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
        try t.rejectUnknownKeys()

        let x = try root.child("distributed")
        var bucketIsAuto = false
        if case .string(let text)? = x.raw("bucket_mb"), Double(text) == nil {
            guard text == "auto" else { throw ConfigError("key '\(x.keyPath("bucket_mb"))': expected a number of MiB or auto, found '\(text)'") }
            bucketIsAuto = true
        }
        distributed = DistributedConfig(bucketMiB: bucketIsAuto ? nil : try x.double("bucket_mb", default: 1, range: 0.001...4096),
                                        overlap: try x.string("overlap", default: "blocking", allowed: ["blocking", "polling", "thread"]),
                                        transport: try x.string("transport", default: "auto", allowed: ["auto", "mpi", "shared_memory"]),
                                        deterministic: try x.bool("deterministic", default: false),
                                        syncBatchNorm: try x.bool("sync_batchnorm", default: false),
                                        checkEvery: try x.int("check_every", default: 100, range: 0...Int.max),
                                        scaleLearningRate: try x.bool("scale_lr", default: false),
                                        baseBatch: try x.int("base_batch", default: 64, range: 1...Int.max),
                                        nonFinite: try x.string("nonfinite", default: "skip", allowed: ["skip", "stop"]),
                                        timeoutSeconds: try x.double("timeout_seconds", default: 300, range: 0...1e6))
        try x.rejectUnknownKeys()

        let c = try root.child("checkpoint")
        checkpoint = CheckpointConfig(everySteps: try c.int("every_steps", default: 0, range: 0...Int.max),
                                      everyEpoch: try c.bool("every_epoch", default: true),
                                      keep: try c.int("keep", default: 3, range: 1...1000))
        try c.rejectUnknownKeys()

        let g = try root.child("debug")
        debug = DebugConfig(nanStep: try g.int("nan_step", default: -1, range: -1...Int.max),
                            nanRank: try g.int("nan_rank", default: 0, range: 0...Int.max),
                            stepDelayMilliseconds: try g.int("step_delay_ms", default: 0, range: 0...60_000),
                            hangStep: try g.int("hang_step", default: -1, range: -1...Int.max),
                            hangRank: try g.int("hang_rank", default: 0, range: 0...Int.max),
                            reductionFault: ReductionFault(rawValue: try g.string("reduction_fault", default: "none",
                                                                                  allowed: ReductionFault.allCases.map(\.rawValue)))!,
                            reverseBatches: try g.bool("reverse_batches", default: false))
        if debug.reductionFault == .skipBucket && distributed.overlap != "blocking" && !distributed.deterministic {
            throw ConfigError("key 'debug.reduction_fault': skip_bucket needs distributed.overlap 'blocking' (the overlap modes start buckets during backward)")
        }
        try g.rejectUnknownKeys()

        try root.rejectUnknownKeys()
    }
}
