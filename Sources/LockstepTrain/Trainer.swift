import Foundation
import LockstepCheckpoint
import LockstepComm
import LockstepCore
import LockstepData
import LockstepNN

/// What a finished run reports (the metrics file's summary line).
public struct RunSummary: Sendable {
    public var testAccuracy: Double?
    public var testLoss: Double
    public var trainLoss: Double
    public var samplesPerSecond: Double
    public var steps: Int
    public var skippedSteps: Int
    public var worldSize: Int
    public var seconds: Double
    /// FNV-1a hash of the final parameter bytes (equal on every rank).
    public var parameterChecksum: UInt64
    /// Bytes of optimizer state this rank holds (1/W of it with `distributed.shard_optimizer`).
    public var optimizerStateBytes: Int = 0

    /// The closing line the CLI prints, e.g. `done: test accuracy 0.8971, test loss 0.29511, 7035 steps (0 skipped), …`.
    public var line: String {
        let accuracy = testAccuracy.map { String(format: "test accuracy %.4f, ", $0) } ?? ""
        return String(format: "done: %@test loss %.5f, %d steps (%d skipped), %.0f samples/s, %.1f s, optimizer state %d bytes per rank",
                      accuracy, testLoss, steps, skippedSteps, samplesPerSecond, seconds, optimizerStateBytes)
    }
}

/// One epoch's reduced metrics.
public struct EpochMetrics: Sendable {
    public var epoch: Int
    public var step: Int
    public var trainLoss: Double
    public var testLoss: Double
    public var testAccuracy: Double?
    public var samplesPerSecond: Double
    public var seconds: Double
    /// On the held-out validation set, when there is one.
    public var validation: Evaluation?

    /// The line the CLI prints per epoch, e.g. `epoch 1 step 469: train loss 0.5 test loss 0.4 test accuracy 0.85 …`.
    public var line: String {
        let accuracy = testAccuracy.map { String(format: " test accuracy %.4f", $0) } ?? ""
        let held = validation.map { String(format: " validation loss %.4f", $0.loss) + ($0.accuracy.map { String(format: " validation accuracy %.4f", $0) } ?? "") } ?? ""
        return String(format: "epoch %d step %d: train loss %.4f%@ test loss %.4f%@ %.0f samples/s %.1f s",
                      epoch, step, trainLoss, held, testLoss, accuracy, samplesPerSecond, seconds)
    }

    /// The value of `metric` this epoch, nil when it has none (no validation set, a loss without accuracy).
    public func value(of metric: EarlyStopping.Metric) -> Double? {
        switch metric {
        case .validationLoss: validation?.loss
        case .validationAccuracy: validation?.accuracy
        case .testLoss: testLoss
        case .testAccuracy: testAccuracy
        }
    }
}

/// A model's test-set loss and, for classification losses, accuracy: exact over all samples of all ranks.
public struct Evaluation: Sendable {
    public var loss: Double
    public var accuracy: Double?
}

/// An option or a model that cannot work; the message names the option (its path matches the YAML key).
public struct ConfigError: Error, CustomStringConvertible {
    /// The message.
    public var description: String
    /// Creates an error.
    public init(_ description: String) { self.description = description }
}

/// Set from a signal handler: a rank that received SIGINT/SIGTERM asks every rank to stop at the next step.
nonisolated(unsafe) public var stopRequested: sig_atomic_t = 0

/// Trains one model replica per rank in lockstep: identical start (parameters broadcast from rank 0), gradients
/// averaged over ranks in buckets, one control vector per step, exact metrics, checkpoints and a watchdog.
///
/// Works in one process too (`SingleProcessCommunicator`). The YAML front end builds one with
/// `TrainingConfig.makeTrainer`; Swift code builds one from its own `Sequential`:
///
///     let trainer = try Trainer(model: model, loss: SoftmaxCrossEntropy(), optimizer: SGD(parameterCount: …),
///                               schedule: ConstantSchedule(learningRate: 0.05), data: TrainingData(train: a, test: b),
///                               options: options, communicator: try makeCommunicator())
///     let summary = try trainer.fit(epochs: 5)
public final class Trainer {
    public let communicator: Communicator
    public let model: Sequential
    public let loss: Loss
    public let optimizer: Optimizer
    public let schedule: LearningRateSchedule
    public let data: TrainingData
    /// How this trainer runs.
    public private(set) var options: TrainingOptions
    /// Optimizer steps completed.
    public internal(set) var step = 0
    /// Steps skipped because gradients or loss were non-finite on some rank.
    public internal(set) var skippedSteps = 0
    /// Receives every step's phases, each layer's backward and each bucket's reduction (timings, Chrome trace).
    public var observer: StepObserver?
    /// Whether early stopping ended the run (the monitored metric stopped improving).
    public internal(set) var stoppedEarly = false
    /// Early stopping's best value so far and the epoch it came from, and epochs since (checkpointed).
    var best: (value: Double, epoch: Int)?
    var epochsWithoutImprovement = 0

    /// Whether the run ended early because a rank received SIGINT/SIGTERM (every rank stopped at the same step).
    public internal(set) var stoppedOnRequest = false
    /// Epoch being trained (0-based).
    public internal(set) var epoch = 0
    /// Global sample position within the epoch's permutation where the next step starts (the resume cursor).
    public internal(set) var epochPosition = 0
    /// Checkpointing for this run.
    public var checkpoints: CheckpointSettings { options.checkpoints }
    var lastSavedStep = -1
    /// Each rank's host, in rank order (for diagnoses).
    let hostNames: [String]
    /// Rank 0's claim on the checkpoint directory, held until the trainer goes away.
    var checkpointLock: CheckpointDirectoryLock?

    private let reducer: GradientReducer
    private let loader: BatchLoader
    private let outputGradient: FloatBuffer
    private let evaluationFeatures: FloatBuffer
    private let evaluationTargets: FloatBuffer
    private var control = StepControl.Buffer()
    /// Whether the last update zeroed the gradients as it read them, so the next step need not zero them again.
    private var gradientsCleared = false
    /// Whether the model's parameters are the node's shared copy (`shareParametersWithinNode`).
    private var parametersShared = false
    /// The epoch in progress: its plan and the micro-batches it has left.
    private var current: (plan: EpochPlan, microBatchesLeft: Int)?
    /// This epoch's loss sum and samples on this rank.
    private var epochLoss = 0.0, epochSamples = 0
    /// Optimizer steps per epoch.
    public let stepsPerEpoch: Int
    let log: (String) -> Void

    /// How gradients are averaged over ranks (e.g. `sharedMemory` on one node with the default transport).
    public var gradientReduction: ReductionMode { reducer.mode }
    /// This rank's stores into node-shared memory and the method each uses (`GradientReducer.nodeSharedStoreMethods`).
    public var nodeSharedStoreMethods: [(write: String, method: SliceWriteMethod)] { reducer.nodeSharedStoreMethods }
    /// The reduction as the run's first line names it: the mode, and for deterministic mode the path it takes.
    public var gradientReductionDescription: String {
        reducer.reducesThroughNodesInRankOrder ? "deterministic (in rank order through node-shared memory and a chain across nodes)"
            : reducer.mode.rawValue
    }
    /// The buckets gradients are reduced in, in launch order.
    public var gradientBuckets: [GradientBucket] { reducer.buckets }
    /// Bucket cap in bytes: `distributed.bucketMiB`, or what `auto` measured.
    public let bucketCapacityBytes: Int

    /// Where the trainable parameters start in the flat buffer (after the frozen layers').
    public let trainableOffset: Int
    /// Parameters the optimizer updates (all but the frozen layers').
    public var trainableParameterCount: Int { model.parameters.count - trainableOffset }

    /// Parameters from `frozenLayers` on, given the model: what an optimizer for a transfer-learning run must cover.
    public static func trainableParameterCount(of model: Sequential, frozenLayers: Int) -> Int {
        model.parameters.count - model.parameters.startOffset(ofLayer: frozenLayers)
    }

    /// Parameters this rank's optimizer must keep state for: the trainable ones, or with
    /// `distributed.shard_optimizer` this rank's slice of them (`ShardLayout` over `worldSize` ranks).
    public static func optimizerParameterCount(of model: Sequential, options: TrainingOptions, worldSize: Int, rank: Int) throws -> Int {
        let trainable = trainableParameterCount(of: model, frozenLayers: options.frozenLayers)
        guard options.distributed.shardOptimizer else { return trainable }
        return try ShardLayout(count: trainable, parts: worldSize).range(of: rank).count
    }

    /// Bytes of optimizer state this rank holds.
    public var optimizerStateBytes: Int { optimizer.stateBuffers.reduce(0) { $0 + $1.buffer.count } * MemoryLayout<Float>.stride }

    /// E.g. `optimizer state 470272 bytes per rank (sharded over 4 ranks; 1881168 unsharded)`.
    public var optimizerStateDescription: String {
        let line = "optimizer state \(optimizerStateBytes) bytes per rank"
        guard let layout = reducer.shardLayout else { return line }
        let unsharded = optimizer.stateBuffers.count * layout.count * MemoryLayout<Float>.stride
        return line + " (sharded over \(layout.parts) rank\(layout.parts == 1 ? "" : "s"); \(unsharded) unsharded"
            + (sharesParametersWithinNode ? "; parameters updated in place in node-shared memory)" : ")")
    }

    /// The slice of the trainable parameters this rank updates, when the optimizer is sharded.
    var optimizerShard: (layout: ShardLayout, slice: Range<Int>)? {
        reducer.shardLayout.map { ($0, $0.range(of: communicator.rank)) }
    }

    /// Per-rank batch, global batch (samples per optimizer step over all ranks).
    public var perRankBatch: Int { options.batchSize }
    public var globalBatch: Int { options.batchSize * communicator.size * options.accumulationSteps }

    /// Checks every rank agrees, initializes the model from `options.seed` (or the resumed checkpoint) on rank 0,
    /// and broadcasts parameters, buffers and optimizer state so replicas start identical. Collective.
    public init(model: Sequential, loss: Loss, optimizer: Optimizer, schedule: LearningRateSchedule, data: TrainingData,
                options: TrainingOptions = TrainingOptions(), communicator: Communicator,
                log: @escaping (String) -> Void = { print($0) }) throws {
        self.model = model; self.loss = loss; self.optimizer = optimizer; self.schedule = schedule
        self.data = data.holdingOut(fraction: options.validationFraction)
        self.options = options; self.communicator = communicator; self.log = log
        let data = self.data
        guard (0..<1).contains(options.validationFraction), data.train.count > 0 else {
            throw ConfigError("key 'data.validation_split': \(options.validationFraction) must be at least 0 and below 1, and leave training samples")
        }
        guard model.inputWidth == data.train.featureWidth, data.test.featureWidth == data.train.featureWidth else {
            throw ConfigError("the model takes \(model.inputWidth) features per sample (\(model.inputShape)) but the data has \(data.train.featureWidth) (training) and \(data.test.featureWidth) (test)")
        }
        guard loss.targetWidth(outputWidth: model.outputWidth) == data.train.targetWidth else {
            throw ConfigError("key 'loss': \(loss.kind) expects \(loss.targetWidth(outputWidth: model.outputWidth)) target values per sample but the dataset has \(data.train.targetWidth)")
        }
        guard options.batchSize > 0, options.accumulationSteps > 0, options.evaluationBatchSize > 0 else {
            throw ConfigError("batch size, accumulation steps and evaluation batch size must be positive")
        }
        guard (0..<model.layers.count).contains(options.frozenLayers) || (options.frozenLayers == 0 && model.layers.isEmpty) else {
            throw ConfigError("key 'model.freeze': \(options.frozenLayers) frozen layers leave nothing to train in a model of \(model.layers.count) layers")
        }
        trainableOffset = model.parameters.startOffset(ofLayer: options.frozenLayers)
        let microBatches = Trainer.epochPlan(options, samples: data.train.count, worldSize: communicator.size, epoch: 0)
            .stepsPerEpoch(perRankBatch: options.batchSize)
        guard microBatches > 0 else {
            throw ConfigError("key 'training.batch_size': \(data.train.count) training samples are fewer than one step of \(options.batchSize) per rank × \(communicator.size) ranks")
        }
        stepsPerEpoch = (microBatches + options.accumulationSteps - 1) / options.accumulationSteps

        model.plan(batchSize: max(options.batchSize, options.evaluationBatchSize), trainingBatchSize: options.batchSize)
        outputGradient = FloatBuffer(count: options.batchSize * model.outputWidth)
        evaluationFeatures = FloatBuffer(count: options.evaluationBatchSize * data.test.featureWidth)
        evaluationTargets = FloatBuffer(count: options.evaluationBatchSize * data.test.targetWidth)
        // A prefetch thread only pays off when it has a core of its own (measured: 0.08 ms/step of hand-offs on 1 core).
        // The rank's core budget is its BLAS thread count (OPENBLAS_NUM_THREADS from the launcher, else cores / local ranks).
        let augmenter = options.augmentation.isIdentity ? nil
            : try ImageAugmenter(spec: options.augmentation, sampleShape: data.train.sampleShape, seed: options.seed)
        loader = BatchLoader(dataset: data.train, perRankBatch: options.batchSize,
                             prefetch: options.prefetch == .on || (options.prefetch == .auto && BLAS.threadCount > 1),
                             reverseOrder: options.faults.reverseBatches, augmenter: augmenter)

        try Trainer.checkRanksAgree(options: options, model: model, data: data, communicator: communicator)
        hostNames = try Watchdog.gatherHostNames(communicator)
        // After the agreement check: allocating node-shared memory is collective, so every rank must decide alike.
        (reducer, bucketCapacityBytes) = try Trainer.makeReducer(options.distributed, model: model, communicator: communicator,
                                                                 frozenLayers: options.frozenLayers, log: log)
        sharesParametersWithinNode = Trainer.sharesParameters(model, reducer: reducer)
        if let (_, slice) = optimizerShard {
            for (name, buffer) in optimizer.stateBuffers where buffer.count != slice.count {
                throw ConfigError("key 'distributed.shard_optimizer': the optimizer's \(name) holds \(buffer.count) values but rank \(communicator.rank) updates a slice of \(slice.count) of the \(trainableParameterCount) trainable parameters; create the optimizer with parameterCount: Trainer.optimizerParameterCount(of:options:worldSize:rank:)")
            }
            if options.faults.reductionFault == .skipBucket {
                throw ConfigError("key 'debug.reduction_fault': skip_bucket cannot be combined with distributed.shard_optimizer (the trainable gradients are one reduce-scatter)")
            }
        }
        reducer.fault = options.faults.reductionFault
        reducer.collectiveFollowsFinish = true  // trainStep's control allreduce comes before the next gradient write
        if options.distributed.syncBatchNorm && communicator.size > 1 { try connectSyncBatchNorm() }
        model.initialize(rng: RNG(seed: options.seed).split(1))
        if let path = options.initializeFrom { try initialize(from: path) }
        try prepareCheckpoints()
        try communicator.broadcast(UnsafeMutableRawBufferPointer(model.parameters.values.buffer), root: 0)
        try communicator.broadcast(UnsafeMutableRawBufferPointer(model.state.values.buffer), root: 0)
        // A sharded optimizer's state arrived in prepareCheckpoints (scattered from rank 0) or starts fresh on every rank.
        if optimizerShard == nil {
            for (_, buffer) in optimizer.stateBuffers {
                try communicator.broadcast(UnsafeMutableRawBufferPointer(buffer.buffer), root: 0)
            }
        }
    }

    /// Where each rank writes its flight record when the watchdog fires.
    var flightRecorderDirectory: String {
        if let directory = checkpoints.directory { return directory + "/flight-recorder" }
        let job = ProcessInfo.processInfo.environment["PMIX_NAMESPACE"] ?? ProcessInfo.processInfo.environment["OMPI_MCA_orte_ess_jobid"] ?? "\(getppid())"
        return NSTemporaryDirectory() + "lockstep-flight-" + job.replacingOccurrences(of: "/", with: "_")
    }

    // MARK: start-up

    /// A collective error raised inside a layer hook (sync BatchNorm), rethrown after the pass.
    private var hookError: Error?

    /// BatchNorm layers reduce their per-channel sums over all ranks (statistics of the global batch).
    private func connectSyncBatchNorm() throws {
        guard options.distributed.overlap != .thread else {
            throw ConfigError("key 'distributed.sync_batchnorm': cannot be combined with distributed.overlap 'thread' (both would call MPI from different threads during backward)")
        }
        let reduce: (UnsafeMutablePointer<Double>, Int) -> Void = { [unowned self] pointer, count in
            do { try communicator.allreduceSum(UnsafeMutableBufferPointer(start: pointer, count: count)) } catch { hookError = error }
        }
        for case let layer as BatchNorm in model.layers {
            layer.statisticsReducer = reduce
            layer.gradientStatisticsReducer = reduce
        }
    }

    /// Every rank compares its options (and run description), model layout and dataset sizes with rank 0's; a
    /// mismatch stops all ranks naming both.
    static func checkRanksAgree(options: TrainingOptions, model: Sequential, data: TrainingData, communicator: Communicator) throws {
        func hash(_ text: String) -> UInt64 { Array(text.utf8).withUnsafeBytes { Kernels.fnv1a($0) } }
        let layout = model.parameters.slots.map { "\($0.name)\($0.shape)" }.joined(separator: ";")
        let mine: [UInt64] = [hash(options.runDescription.isEmpty ? "\(options)" : options.runDescription), hash(layout),
                              UInt64(data.train.count), UInt64(data.test.count)]
        let all = try communicator.allgather(mine)
        let names = ["config hash", "model layout hash", "training set size", "test set size"]
        for rank in 1..<communicator.size {
            for field in 0..<mine.count where all[rank * mine.count + field] != all[field] {
                throw CollectiveError("rank \(rank) and rank 0 disagree on the \(names[field]): rank 0 has \(String(all[field], radix: 16)), rank \(rank) has \(String(all[rank * mine.count + field], radix: 16)); every rank must start with the same config, overrides and data")
            }
        }
    }

    /// Whether `d` reduces `gradientCount` gradients through node-shared memory on this `communicator` (every rank on
    /// one node, blocking reduction, transport auto from 8 KiB of gradients or shared_memory): where a sharded update
    /// gives the unsharded parameters bit for bit (`distributed.shard_optimizer: auto` shards exactly then).
    public static func reducesThroughNodeSharedMemory(_ d: DistributedOptions, gradientCount: Int,
                                                       communicator: Communicator) -> Bool {
        communicator.size > 1 && communicator.localSize == communicator.size && !d.deterministic
            && d.overlap == .blocking && d.transport != .mpi && d.transport != .hierarchical
            && sharedMemoryPaysOff(d, gradientCount: gradientCount)
    }

    /// Below ~8 KiB MPI's eager path (0.7–2.4 µs) beats the shared-memory reducer's three node barriers (2.4–3 µs);
    /// from 16 KiB up shared memory is 2–4× faster (`lockstep bench allreduce`, 2 ranks). `shared_memory` asks anyway.
    static func sharedMemoryPaysOff(_ d: DistributedOptions, gradientCount: Int) -> Bool {
        d.transport == .sharedMemory || gradientCount * MemoryLayout<Float>.stride >= 8192
    }

    /// The gradient reducer the options ask for; with transport auto (gradients of 8 KiB or more) or shared_memory
    /// and blocking reduction with every rank on one node, the model's gradients move into node-shared memory first.
    /// `bucketMiB` nil times allreduces first (MPI paths only: shared memory reduces one bucket of everything).
    static func makeReducer(_ d: DistributedOptions, model: Sequential, communicator: Communicator, frozenLayers: Int,
                            log: (String) -> Void) throws -> (reducer: GradientReducer, bucketBytes: Int) {
        if d.shardOptimizer && d.overlap != .blocking {
            throw ConfigError("key 'distributed.shard_optimizer': cannot be combined with distributed.overlap '\(d.overlap.rawValue)' (the sharded update reduce-scatters the gradients after backward); use overlap blocking")
        }
        if d.shardOptimizer && d.transport == .hierarchical {
            throw ConfigError("key 'distributed.shard_optimizer': cannot be combined with distributed.transport 'hierarchical' (gradients are reduce-scattered within one node or through MPI); use transport auto, shared_memory or mpi")
        }
        var mode: ReductionMode
        switch (d.deterministic, d.overlap) {
        case (true, _): mode = .deterministic
        case (false, .blocking): mode = .blocking
        case (false, .polling): mode = .overlapPolling
        case (false, .thread): mode = .overlapThread
        }
        var shared: NodeSharedFloats?
        let worthIt = sharedMemoryPaysOff(d, gradientCount: model.parameters.count)
        if reducesThroughNodeSharedMemory(d, gradientCount: model.parameters.count, communicator: communicator) {
            shared = try communicator.allocateNodeShared(floatCount: model.parameters.count)
        }
        // Across nodes (any equal number of ranks on each): within the node through shared memory, across it per
        // local rank. With one rank per node too: the ring measured 1.14× (2 hosts) and 2.4× (3 hosts) OpenMPI's
        // flat allreduce in training at 1 Gbit/s (BENCHMARKS.md).
        // Decided from every rank's node size (one collective), so all ranks choose alike.
        // Deterministic mode too: its chain across nodes sums in rank order, the same bits as the flat path.
        if communicator.size > 1 && shared == nil && (mode == .blocking || mode == .deterministic) && !d.shardOptimizer
            && (d.transport == .hierarchical || d.transport == .auto && worthIt),
           let perNode = try GradientReducer.ranksPerNode(communicator: communicator),
           d.transport == .hierarchical || perNode < communicator.size {
            let floats = GradientReducer.hierarchicalSharedCount(gradientCount: model.parameters.count, localSize: perNode,
                                                                 nodeCount: communicator.size / perNode)
            shared = try communicator.allocateSharedWithinNode(floatCount: floats)
            if shared != nil && mode == .blocking { mode = .hierarchical }
        }
        if let shared {
            model.useGradientStorage(FloatBuffer(borrowing: shared.local, count: model.parameters.count, owner: shared))
            if mode == .blocking { mode = .sharedMemory }
        } else if d.transport == .hierarchical && communicator.size > 1 {
            let reason = mode != .blocking && mode != .deterministic
                ? "distributed.overlap '\(d.overlap.rawValue)' reduces through MPI"
                : "the nodes hold different numbers of ranks (rank \(communicator.rank)'s node has \(communicator.localSize) of \(communicator.size))"
            throw ConfigError("key 'distributed.transport': hierarchical needs blocking or deterministic reduction and the same number of ranks on every node, but \(reason); use transport auto or mpi")
        } else if d.transport == .sharedMemory && communicator.size > 1 {
            let reason = mode != .blocking
                ? "distributed.\(d.deterministic ? "deterministic" : "overlap '\(d.overlap.rawValue)'") reduces through MPI"
                : "rank \(communicator.rank) shares its node with \(communicator.localSize) of the \(communicator.size) ranks"
            throw ConfigError("key 'distributed.transport': shared_memory needs every rank on one node and blocking reduction, but \(reason); use transport auto or mpi")
        }
        var bucketBytes = Int((d.bucketMiB ?? 1) * 1_048_576)
        if d.bucketMiB == nil && shared == nil && !d.shardOptimizer && communicator.size > 1 {
            let measured = try BucketSizing.measure(communicator: communicator, scratch: model.parameters.gradients!.buffer)
            bucketBytes = measured.bytes
            if communicator.rank == 0 { log(measured.line) }
        }
        let reducer = try GradientReducer(communicator: communicator, parameters: model.parameters, layerCount: model.layers.count,
                                          bucketCapacityBytes: bucketBytes, mode: mode, shared: shared, frozenLayers: frozenLayers,
                                          shardOptimizer: d.shardOptimizer)
        return (reducer, bucketBytes)
    }

    /// The global sample order of `epoch` (the same for every world size).
    static func epochPlan(_ options: TrainingOptions, samples: Int, worldSize: Int, epoch: Int) -> EpochPlan {
        EpochPlan(sampleCount: samples, worldSize: worldSize, seed: options.seed, epoch: epoch, shuffle: options.shuffle,
                  policy: options.shardPolicy)
    }

    /// Optimizer steps in one epoch of `samples` on `worldSize` ranks (schedules are built from it before a Trainer).
    public static func stepsPerEpoch(samples: Int, worldSize: Int, options: TrainingOptions) -> Int {
        let microBatches = epochPlan(options, samples: samples, worldSize: worldSize, epoch: 0).stepsPerEpoch(perRankBatch: options.batchSize)
        return (microBatches + options.accumulationSteps - 1) / options.accumulationSteps
    }

    // MARK: training

    /// Trains `epochs` epochs (default: `options.epochs`), like Keras' `fit`; see `run`.
    public func fit(epochs: Int? = nil, onEpoch: (EpochMetrics) -> Void = { _ in },
                    onStep: (Int, Int, Float) -> Void = { _, _, _ in }) throws -> RunSummary {
        if let epochs { options.epochs = epochs }
        return try run(onEpoch: onEpoch, onStep: onStep)
    }

    /// Trains all epochs (or `maxSteps`), evaluating after each epoch; `onEpoch` receives each epoch's metrics and
    /// `onStep` (step, step in epoch, this rank's loss) each step. Checkpoints as configured; a stop request on any
    /// rank ends every rank at the same step.
    public func run(onEpoch: (EpochMetrics) -> Void = { _ in }, onStep: (Int, Int, Float) -> Void = { _, _, _ in }) throws -> RunSummary {
        var trainSeconds = 0.0, trainedSamples = 0
        var lastMetrics: EpochMetrics?
        let start = Date()
        let watchdog = options.distributed.timeoutSeconds > 0
            ? Watchdog(timeout: options.distributed.timeoutSeconds, communicator: communicator, directory: flightRecorderDirectory,
                       hostNames: hostNames)
            : nil
        defer { watchdog?.stop() }
        stoppedOnRequest = false
        var reachedMaxSteps = false
        if let observer {
            observer.prepare(layerKinds: model.layers.map(\.kind), bucketDescriptions: reducer.buckets.map(\.description))
            reducer.bucketReduced = { [unowned observer] bucket, start, end in observer.bucketReduced(bucket, start: start, end: end) }
        }
        defer { reducer.bucketReduced = nil; endEpoch(); leaveSharedParameters() }

        while epoch < options.epochs && !stoppedOnRequest {
            let epochStart = Date()
            var stepInEpoch = 0
            while true {
                if options.maxSteps > 0 && step >= options.maxSteps { reachedMaxSteps = true; break }
                watchdog?.beat(step: step)
                guard let stepLoss = try trainStep() else { break }
                stepInEpoch += 1
                onStep(step, stepInEpoch, stepLoss)
                if stoppedOnRequest { break }
                if checkpoints.enabled && checkpoints.everySteps > 0 && step % checkpoints.everySteps == 0 {
                    watchdog?.beat(step: step)
                    try saveCheckpoint()
                }
            }
            let seconds = Date().timeIntervalSince(epochStart)
            trainSeconds += seconds
            watchdog?.beat(step: step)
            var sums = [epochLoss, Double(epochSamples)]
            try sums.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0) }
            trainedSamples += Int(sums[1])
            if stoppedOnRequest || (reachedMaxSteps && sums[1] == 0) { break }
            let evaluation = try evaluate()
            let metrics = EpochMetrics(epoch: epoch + 1, step: step, trainLoss: sums[0] / max(sums[1], 1),
                                       testLoss: evaluation.loss, testAccuracy: evaluation.accuracy,
                                       samplesPerSecond: sums[1] / max(seconds, 1e-9), seconds: seconds,
                                       validation: try data.validation.map { try evaluate($0) })
            lastMetrics = metrics
            onEpoch(metrics)
            if reachedMaxSteps { break }
            endEpoch()
            epoch += 1
            epochPosition = 0
            let improved = try watchEarlyStopping(metrics)
            if checkpoints.enabled && (checkpoints.everyEpoch || improved) { watchdog?.beat(step: step); try saveCheckpoint() }
            if improved && checkpoints.enabled {
                try communicator.rootActs("keep the best checkpoint") { try CheckpointStore(directory: checkpoints.directory!, keep: checkpoints.keep).markBest(step: step) }
            }
            if stoppedEarly { break }
        }
        watchdog?.beat(step: step)
        try checkParametersAgree()
        if checkpoints.enabled && lastSavedStep != step { try saveCheckpoint() }
        let evaluation: Evaluation
        if let lastMetrics, !stoppedOnRequest { evaluation = Evaluation(loss: lastMetrics.testLoss, accuracy: lastMetrics.testAccuracy) } else { evaluation = try evaluate() }
        return RunSummary(testAccuracy: evaluation.accuracy, testLoss: evaluation.loss, trainLoss: lastMetrics?.trainLoss ?? .nan,
                          samplesPerSecond: Double(trainedSamples) / max(trainSeconds, 1e-9), steps: step,
                          skippedSteps: skippedSteps, worldSize: communicator.size, seconds: Date().timeIntervalSince(start),
                          parameterChecksum: parameterChecksum(), optimizerStateBytes: optimizerStateBytes)
    }

    /// Trains one optimizer step on the next batches of the current epoch (starting the epoch's data when none is
    /// in progress) and returns this rank's mean loss, or nil when the epoch has no batches left. Collective.
    public func trainStep() throws -> Float? {
        if current == nil { beginEpoch() }
        guard let (plan, left) = current, left > 0 else { return nil }
        let microBatches = min(options.accumulationSteps, left)
        current!.microBatchesLeft -= microBatches
        if options.faults.hangStep == step && options.faults.hangRank == communicator.rank { Thread.sleep(forTimeInterval: 3600) }
        var mine = StepControl(step: step, cursor: Int64(epoch) << 40 | Int64(epochPosition))
        let stepRNG = RNG(seed: options.seed).split(2).split(UInt64(step))
        var lossSum = 0.0, samples = 0
        observer?.beginStep()
        if !gradientsCleared { model.zeroGradients() }
        gradientsCleared = false
        reducer.beginStep(microBatches: microBatches)
        for micro in 0..<microBatches {
            let (microLoss, count) = try trainMicroBatch(micro, plan: plan, rng: stepRNG)
            lossSum += microLoss; samples += count
        }
        try reducer.finish()
        observer?.lap(.allreduceWait)
        if let hookError { throw hookError }
        mine.lossNonFinite = !lossSum.isFinite
        // Sharded, only this rank's slice is reduced; a non-finite gradient on any rank lands in some owner's slice.
        // Through shared memory each rank checked its slice while averaging it; the control vector combines them.
        if let sliceFinite = reducer.ownSliceFinite {
            mine.gradientsNonFinite = !sliceFinite
        } else {
            mine.gradientsNonFinite = optimizerShard == nil
                ? !Kernels.allFinite(model.parameters.gradients!.pointer, count: model.parameters.count)
                : !Kernels.allFinite(reducer.shardGradients.baseAddress!, count: reducer.shardGradients.count)
        }
        mine.stopRequested = stopRequested != 0
        let decision = try control.reduce(mine, rank: communicator.rank, communicator: communicator)
        try apply(decision)
        observer?.lap(.optimizer)
        observer?.endStep()
        try endStep(lossSum: lossSum, samples: samples, stopRequested: decision.stopRequested)
        return Float(lossSum / Double(max(samples, 1)))
    }

    /// Forward and backward of micro-batch `micro` of this step; returns its loss sum and sample count.
    private func trainMicroBatch(_ micro: Int, plan: EpochPlan, rng stepRNG: RNG) throws -> (Double, Int) {
        let rank = communicator.rank
        guard let batch = loader.next() else {
            throw CollectiveError("rank \(rank): the data loader ended early at epoch \(epoch) position \(epochPosition)")
        }
        epochPosition = min(epochPosition + plan.globalBatch(perRankBatch: options.batchSize), plan.count)
        observer?.lap(.data)
        // Dropout keys by global micro-batch position, so W ranks × b and 1 rank × W micro-batches match.
        let context = LayerContext(training: true, rng: stepRNG.split(UInt64(micro * communicator.size + rank)))
        let output = model.forward(batch.features, batch: batch.sampleCount, context: context)
        let lossSum = Double(loss.forward(output: output, targets: batch.targets, batch: batch.sampleCount, width: model.outputWidth))
            * Double(batch.sampleCount)
        observer?.lap(.forward)
        let faults = options.faults
        try backward(output: output, batch: batch, poisoned: faults.nanStep == step && faults.nanRank == rank && reducer.isLastMicroBatch)
        observer?.lap(.backward)
        return (lossSum, batch.sampleCount)
    }

    /// Counts the step, checks the replicas agree every `checkEvery` steps, and stops every rank on a stop request.
    private func endStep(lossSum: Double, samples: Int, stopRequested: Bool) throws {
        step += 1
        epochLoss += lossSum; epochSamples += samples
        if options.faults.stepDelayMilliseconds > 0 { usleep(UInt32(options.faults.stepDelayMilliseconds * 1000)) }
        if options.distributed.checkEvery > 0 && step % options.distributed.checkEvery == 0 { try checkParametersAgree() }
        if stopRequested {
            if communicator.rank == 0 { log("stop requested: every rank stops at step \(step)") }
            stoppedOnRequest = true
        }
    }

    /// Backward of one micro-batch; the reducer starts averaging buckets as their layers finish. `poisoned` puts a
    /// NaN into the loss gradient (fault injection: a non-finite gradient on this rank).
    private func backward(output: UnsafeMutablePointer<Float>, batch: Batch, poisoned: Bool) throws {
        loss.backward(output: output, targets: batch.targets, gradient: outputGradient.pointer, batch: batch.sampleCount,
                      width: model.outputWidth, scale: reducer.microBatchScale)
        if poisoned { outputGradient.pointer[0] = .nan }
        var reduceError: Error?
        model.backward(input: batch.features, outputGradient: outputGradient.pointer, batch: batch.sampleCount,
                       firstTrainableLayer: options.frozenLayers) { layer in
            observer?.layerBackwardDone(layer)
            do { try reducer.layerReady(layer) } catch { reduceError = error }
        }
        if let reduceError { throw reduceError }
        reducer.microBatchDone()
    }

    /// Every rank takes the same decision from the same reduced control vector: stop if out of lockstep, skip (or
    /// stop on) a non-finite step, else clip and update.
    private func apply(_ decision: StepControl.Decision) throws {
        if let disagreement = decision.disagreement {
            throw CollectiveError("ranks are out of lockstep at step \(step): " + disagreement)
        }
        if let what = decision.nonFinite {
            if options.distributed.nonFinite == .stop {
                throw CollectiveError("step \(step): non-finite \(what); stopping as distributed.nonfinite is 'stop'")
            }
            skippedSteps += 1
            if communicator.rank == 0 { log("step \(step): non-finite \(what); step skipped on every rank") }
            return
        }
        if let (_, slice) = optimizerShard {
            // ZeRO-1: update this rank's slice from its reduced gradients, then every rank sends its slice to all.
            let gradients = reducer.shardGradients.baseAddress!
            if options.clipGradientNorm > 0 {
                // The global norm from every slice's sum of squares.
                let squares = try communicator.allreduceSum(Kernels.sumOfSquares(gradients, count: slice.count))
                GradientClipping.clip(gradients, count: slice.count, norm: Float(squares.squareRoot()),
                                      maxNorm: Float(options.clipGradientNorm))
            }
            // Through node-shared memory the owners have cleared the other slices while summing: clearing this one
            // in the update leaves no gradient for the next step's memset.
            let clearing = reducer.clearsGradientsOutsideShard
            try shareParametersWithinNode()
            let trainable = model.parameters.values.pointer + trainableOffset
            optimizer.step(parameters: trainable + slice.lowerBound, gradients: gradients, count: slice.count,
                           learningRate: schedule.learningRate(step: step), l1: Float(options.l1), clearingGradients: clearing)
            gradientsCleared = clearing
            try reducer.allgatherParameterSlices(trainable)
            return
        }
        // Frozen layers come first in the flat buffers: the optimizer sees the trainable suffix only.
        let gradients = model.parameters.gradients!.pointer + trainableOffset, count = trainableParameterCount
        if options.clipGradientNorm > 0 {
            GradientClipping.clipByGlobalNorm(gradients, count: count, maxNorm: Float(options.clipGradientNorm))
        }
        // The update clears the trainable gradients (the frozen ones are never written after the first zeroing),
        // except in node-shared memory: peers have just read those lines, and the update's scattered stores then
        // wait for each line's ownership (2 ranks: optimizer phase 0.12 → 0.18 ms), where the next step's memset
        // takes them cheaply.
        let clearing = reducer.mode != .sharedMemory && reducer.mode != .hierarchical
        optimizer.step(parameters: model.parameters.values.pointer + trainableOffset, gradients: gradients, count: count,
                       learningRate: schedule.learningRate(step: step), l1: Float(options.l1), clearingGradients: clearing)
        gradientsCleared = clearing
    }

    /// Whether the model trains on the node's one shared copy of its parameters (`shareParametersWithinNode`).
    public let sharesParametersWithinNode: Bool

    /// Sharded through node-shared memory, parameters that outgrow a core's L2 cache are trained on the node's one
    /// shared copy: each owner updates its slice in place and no rank copies the others' slices. Measured, 2 ranks:
    /// fashion-cnn (13 MB) step −8% (the optimizer phase 3.0–3.7 → 1.4–1.8 ms, the copies' memory traffic gone);
    /// fashion-mlp (0.94 MB, L2-resident between steps) +7%, as its forward then reads each line the peer just
    /// wrote, where one bulk copy was cheaper. The same CPU on every rank of the node, so every rank decides alike.
    static func sharesParameters(_ model: Sequential, reducer: GradientReducer) -> Bool {
        reducer.offersSharedParameters && model.parameters.count * MemoryLayout<Float>.stride > CPUInfo.level2CacheBytes
    }

    /// Moves the model onto the node's shared parameters (`sharesParametersWithinNode`) at the first update, after
    /// every write of a whole parameter set (initialization, resume, broadcast, a user's own); `run` ends with the
    /// model on a private copy again. Collective.
    private func shareParametersWithinNode() throws {
        guard sharesParametersWithinNode, !parametersShared,
              let shared = try reducer.shareParameters(from: model.parameters.values.pointer) else { return }
        model.useParameterStorage(FloatBuffer(borrowing: shared.baseAddress!, count: shared.count, owner: reducer))
        parametersShared = true
    }

    /// Gives the model a private copy of the node-shared parameters (they live until the communicator finalizes).
    private func leaveSharedParameters() {
        guard parametersShared else { return }
        let copy = FloatBuffer(count: model.parameters.count)
        copy.pointer.update(from: model.parameters.values.pointer, count: model.parameters.count)
        model.useParameterStorage(copy)
        parametersShared = false
    }

    /// Records `metrics` for early stopping (identical on every rank: the metrics are reduced); returns whether the
    /// watched metric improved, and sets `stoppedEarly` when it has not for `patience` epochs.
    private func watchEarlyStopping(_ metrics: EpochMetrics) throws -> Bool {
        guard let rule = options.earlyStopping else { return false }
        guard let value = metrics.value(of: rule.metric) else {
            throw ConfigError("key 'training.early_stopping.metric': \(rule.metric.rawValue) is not measured in this run (a validation metric needs data.validation_split, an accuracy a classification loss)")
        }
        let improvement = best.map { rule.metric.higherIsBetter ? value - $0.value : $0.value - value } ?? .infinity
        if improvement > rule.minimumDelta {
            best = (value, metrics.epoch)
            epochsWithoutImprovement = 0
            return true
        }
        epochsWithoutImprovement += 1
        if epochsWithoutImprovement >= rule.patience {
            stoppedEarly = true
            if communicator.rank == 0, let best {
                log("early stopping: \(rule.metric.rawValue) has not improved by more than \(rule.minimumDelta) for \(rule.patience) epochs; best \(best.value) at epoch \(best.epoch)" + (checkpoints.enabled ? " (best.safetensors)" : ""))
            }
        }
        return false
    }

    /// Starts the data of the current epoch at `epochPosition`.
    private func beginEpoch() {
        let plan = Trainer.epochPlan(options, samples: data.train.count, worldSize: communicator.size, epoch: epoch)
        loader.start(plan: plan, fromPosition: epochPosition, rank: communicator.rank)
        current = (plan, plan.stepsRemaining(fromPosition: epochPosition, perRankBatch: options.batchSize))
        epochLoss = 0; epochSamples = 0
    }

    private func endEpoch() {
        guard current != nil else { return }
        loader.stop()
        current = nil
    }

    /// FNV-1a hash of the parameter bytes.
    public func parameterChecksum() -> UInt64 {
        Kernels.fnv1a(UnsafeRawBufferPointer(model.parameters.values.buffer))
    }

    /// Stops every rank, naming the ranks whose parameters differ from rank 0's.
    public func checkParametersAgree() throws {
        // Every `checkEvery` steps: the word hash (≈ 0.1 ms for fashion-mlp) instead of byte-wise FNV-1a (≈ 1.2 ms).
        let all = try communicator.allgather([Kernels.wordHash(UnsafeRawBufferPointer(model.parameters.values.buffer))])
        let diverged = (1..<communicator.size).filter { all[$0] != all[0] }
        if !diverged.isEmpty {
            throw CollectiveError("step \(step): parameters of rank \(diverged.map(String.init).joined(separator: ", ")) differ from rank 0's (checksums \(all.map { String($0, radix: 16) }.joined(separator: ", ")))")
        }
    }

    /// Evaluates the test set sharded over ranks; loss and accuracy are exact sums over all samples. Collective.
    public func evaluate() throws -> Evaluation { try evaluate(data.test) }

    /// Evaluates `dataset` (same sample shape as the test set) sharded over ranks. Collective.
    public func evaluate(_ dataset: Dataset) throws -> Evaluation {
        let width = model.outputWidth
        var sums = [0.0, 0.0, 0.0]  // loss sum, correct, count
        forEachShardBatch(of: dataset) { output, targets, count in
            sums[0] += Double(loss.forward(output: output, targets: targets, batch: count, width: width)) * Double(count)
            sums[1] += loss.correctCount(output: output, targets: targets, batch: count, width: width) ?? 0
            sums[2] += Double(count)
        }
        try sums.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0) }
        return Evaluation(loss: sums[0] / max(sums[2], 1), accuracy: loss.measuresAccuracy ? sums[1] / max(sums[2], 1) : nil)
    }

    /// Runs the model (inference mode) on this rank's 1/W share of `dataset`, in evaluation-sized batches, and hands
    /// each batch's outputs, targets and size to `body`.
    private func forEachShardBatch(of dataset: Dataset, _ body: (UnsafePointer<Float>, UnsafePointer<Float>, Int) -> Void) {
        let world = communicator.size, rank = communicator.rank
        var position = dataset.count * rank / world
        let end = dataset.count * (rank + 1) / world
        while position < end {
            let count = min(options.evaluationBatchSize, end - position)
            dataset.gather(position..<(position + count), features: evaluationFeatures.pointer, targets: evaluationTargets.pointer)
            let output = model.forward(evaluationFeatures.pointer, batch: count, context: LayerContext(training: false))
            body(output, evaluationTargets.pointer, count)
            position += count
        }
    }

    /// Confusion matrix and per-class precision, recall and F1 over the whole test set, counted on every rank's
    /// shard and summed; nil for losses without accuracy. Collective.
    public func classificationReport() throws -> ClassificationReport? {
        guard loss.measuresAccuracy else { return nil }
        let binary = loss is BCEWithLogitsLoss
        var report = ClassificationReport(classCount: binary ? 2 : model.outputWidth)
        forEachShardBatch(of: data.test) { output, targets, count in
            if binary {
                report.add(binaryLogits: output, targets: targets, count: count * model.outputWidth)
            } else {
                report.add(logits: output, targets: targets, batch: count)
            }
        }
        var counts = report.counts
        try counts.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0) }
        return ClassificationReport(classCount: report.classCount, counts: counts)
    }

    /// Class scores (the model's outputs) for `count` samples of `features` ([count, inputWidth]), in batches of
    /// the evaluation batch size; local to this rank (no communication), like Keras' `predict`.
    public func predict(_ features: UnsafePointer<Float>, count: Int) -> [Float] {
        var result = [Float](repeating: 0, count: count * model.outputWidth)
        var position = 0
        while position < count {
            let n = min(options.evaluationBatchSize, count - position)
            let output = model.forward(features + position * model.inputWidth, batch: n, context: LayerContext(training: false))
            for i in 0..<(n * model.outputWidth) { result[position * model.outputWidth + i] = output[i] }
            position += n
        }
        return result
    }
}
