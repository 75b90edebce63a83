import LockstepComm
import LockstepData

/// The data a `Trainer` trains on and evaluates on.
public struct TrainingData: Sendable {
    /// Sharded over ranks every epoch.
    public var train: Dataset
    /// Evaluated after every epoch, sharded over ranks, metrics reduced exactly.
    public var test: Dataset
    /// Held out from training and evaluated after every epoch (early stopping watches it), if any.
    public var validation: Dataset?

    /// Pairs a training and a test set (and optionally a validation set) with the same sample and target shapes.
    public init(train: Dataset, test: Dataset, validation: Dataset? = nil) {
        self.train = train; self.test = test; self.validation = validation
    }

    /// Keras' `validation_split`: the last `fraction` of the training samples (before any shuffling) become the
    /// validation set, the rest stays training data.
    public func holdingOut(fraction: Double) -> TrainingData {
        guard fraction > 0 else { return self }
        let held = Int((Double(train.count) * fraction).rounded())
        return TrainingData(train: train.range(0..<(train.count - held)), test: test, validation: train.range((train.count - held)..<train.count))
    }
}

/// Stop training once a monitored metric stops improving, keeping the best checkpoint (Keras' EarlyStopping).
public struct EarlyStopping: Sendable {
    /// The metrics early stopping can watch.
    public enum Metric: String, Sendable, CaseIterable {
        case validationLoss = "validation_loss", validationAccuracy = "validation_accuracy", testLoss = "test_loss", testAccuracy = "test_accuracy"
        /// Whether larger values are better.
        public var higherIsBetter: Bool { self == .validationAccuracy || self == .testAccuracy }
    }
    /// What to watch.
    public var metric = Metric.validationLoss
    /// Epochs without an improvement of at least `minimumDelta` before training stops.
    public var patience = 3
    /// The least change that counts as an improvement.
    public var minimumDelta = 0.0

    /// Watches `metric` with `patience` and `minimumDelta`.
    public init(metric: Metric = .validationLoss, patience: Int = 3, minimumDelta: Double = 0) {
        self.metric = metric; self.patience = patience; self.minimumDelta = minimumDelta
    }
}

/// How a `Trainer` runs, apart from the model, loss, optimizer, schedule and data it is given.
public struct TrainingOptions: Sendable {
    /// Seeds initialization, shuffling, dropout and every other random stream.
    public var seed: UInt64 = 1
    /// Samples per rank per micro-batch.
    public var batchSize = 64
    /// Passes over the training set.
    public var epochs = 1
    /// Stop after this many optimizer steps (0 = run all epochs).
    public var maxSteps = 0
    /// Micro-batches accumulated per optimizer step.
    public var accumulationSteps = 1
    /// Global-norm gradient clip (0 = off).
    public var clipGradientNorm = 0.0
    /// L1 penalty: λ·sign(p) is added to the gradient before the optimizer's step (0 = off).
    public var l1 = 0.0
    /// Samples per rank per evaluation batch.
    public var evaluationBatchSize = 1000
    /// Shuffle the training set every epoch (seeded by seed and epoch, the same on every world size).
    public var shuffle = true
    /// Samples left over when the training set does not divide by the world size.
    public var shardPolicy = EpochPlan.Policy.dropLast
    /// Whether a background thread gathers the next batch.
    public var prefetch = Prefetch.auto
    /// Random shifts and flips of training images, seeded by (seed, epoch, sample): the same on every world size.
    public var augmentation = AugmentationSpec()
    /// Data-parallel behaviour.
    public var distributed = DistributedOptions()
    /// Where and when checkpoints are written, and what to resume from.
    public var checkpoints = CheckpointSettings()
    /// Transfer learning: the first `frozenLayers` layers stay as initialized or loaded (no gradient, no reduction,
    /// no optimizer state); give the optimizer the parameters from that layer on (`Trainer.trainableParameterCount`).
    public var frozenLayers = 0
    /// Transfer learning: a checkpoint whose tensors initialize every parameter and buffer with the same name and
    /// shape (rank 0 reads it and reports what it loaded and skipped); a resumed checkpoint takes precedence.
    public var initializeFrom: String?
    /// Keras' `validation_split`: hold out this fraction of the training set as validation data (0 = none).
    public var validationFraction = 0.0
    /// Stop when a metric stops improving; the best epoch's checkpoint is kept as `best.safetensors`.
    public var earlyStopping: EarlyStopping?
    /// Deliberate faults, for tests of the engine itself.
    public var faults = FaultInjection()
    /// Text every rank must agree on and every checkpoint records: the YAML front end puts the resolved config here.
    public var runDescription = ""

    /// The defaults: one epoch of batches of 64 per rank, blocking reduction through node-shared memory where possible.
    public init() {}

    /// Whether a background thread gathers the next batch while the current one trains.
    public enum Prefetch: String, Sendable, CaseIterable {
        /// When the rank has more than one core (a thread on a rank's only core costs more than it hides).
        case auto
        /// Always.
        case on = "true"
        /// Never.
        case off = "false"
    }
}

/// How ranks reduce gradients and keep each other in step.
public struct DistributedOptions: Sendable {
    /// The path blocking gradient reductions take.
    public enum Transport: String, Sendable, CaseIterable {
        /// Gradients of at least 8 KiB reduced blocking: node-shared memory when every rank is on one node,
        /// hierarchical when ranks span several nodes with the same number on each; MPI otherwise.
        case auto
        /// Always MPI allreduce.
        case mpi
        /// Node-shared memory or an error naming why it cannot be used.
        case sharedMemory = "shared_memory"
        /// Within each node through shared memory, across nodes a ring (or in deterministic mode a chain) per local
        /// rank on its slice; an error names why it cannot be used (overlap, unequal ranks per node).
        case hierarchical
    }

    /// Whether gradient reduction overlaps backward.
    public enum Overlap: String, Sendable, CaseIterable {
        /// Reduce after backward (the default: on a few cores overlap measured no gain).
        case blocking
        /// Nonblocking allreduces driven by MPI_Test between layers.
        case polling
        /// A communication thread runs the allreduces.
        case thread
    }

    /// What every rank does when some rank's loss or gradients are not finite.
    public enum NonFinitePolicy: String, Sendable, CaseIterable {
        /// Skip the step on every rank and report it once.
        case skip
        /// Stop every rank, naming the step.
        case stop
    }

    /// Gradient bucket cap in MiB; nil chooses it from allreduces timed at start-up.
    public var bucketMiB: Double? = 1
    /// Overlap of reduction and backward.
    public var overlap = Overlap.blocking
    /// Path of blocking reductions.
    public var transport = Transport.auto
    /// Reduce in rank order: bit-identical to one rank accumulating the same micro-batches.
    public var deterministic = false
    /// ZeRO-1: each rank keeps optimizer state for its 1/W slice of the trainable parameters, updates that slice
    /// after a reduce-scatter of the gradients and allgathers the parameters (blocking or deterministic reduction).
    public var shardOptimizer = false
    /// BatchNorm statistics over the global batch.
    public var syncBatchNorm = false
    /// Compare a parameter checksum across ranks every N steps (0 = only at the end).
    public var checkEvery = 100
    /// Reaction to a non-finite loss or gradient.
    public var nonFinite = NonFinitePolicy.skip
    /// Seconds without progress before the watchdog ends the job (0 = off).
    public var timeoutSeconds = 300.0

    /// The defaults.
    public init() {}
}

/// Deliberate faults for the engine's own tests; all off by default.
public struct FaultInjection: Sendable {
    /// Put a NaN in the gradients of `nanRank` at optimizer step `nanStep` (-1 = never).
    public var nanStep = -1
    public var nanRank = 0
    /// Sleep this many milliseconds per step (lets tests act mid-run).
    public var stepDelayMilliseconds = 0
    /// Rank `hangRank` stops responding at step `hangStep` (-1 = never): exercises the watchdog.
    public var hangStep = -1
    public var hangRank = 0
    /// A deliberately wrong gradient reduction (tests show their bound catches it).
    public var reductionFault = ReductionFault.none
    /// Deliver each batch's samples in reverse order (tests measure the float rounding spread with it).
    public var reverseBatches = false

    /// No faults.
    public init() {}
}
