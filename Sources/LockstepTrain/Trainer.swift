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
}

/// A failure every rank detects at the same collective, so ranks can exit together without MPI_Abort.
public struct CollectiveError: Error, CustomStringConvertible {
    /// The message, naming ranks and step.
    public var description: String
    /// Creates the error.
    public init(_ description: String) { self.description = description }
}

/// Set from a signal handler: a rank that received SIGINT/SIGTERM asks every rank to stop at the next step.
nonisolated(unsafe) public var stopRequested: sig_atomic_t = 0

/// Keeps N replicas in lockstep: identical start, averaged gradients, one control vector per step, exact metrics.
public final class Trainer {
    public let config: TrainingConfig
    public let communicator: Communicator
    public let model: Sequential
    public let loss: Loss
    public let optimizer: Optimizer
    public let trainSet: Dataset
    public let testSet: Dataset
    /// Optimizer steps completed.
    public internal(set) var step = 0
    /// Steps skipped because gradients or loss were non-finite on some rank.
    public internal(set) var skippedSteps = 0
    /// When set, every step's phases are timed into it (benchmarks).
    public var timings: StepTimings?
    /// When set, every step's phases, each layer's backward and each bucket's allreduce are recorded (Chrome trace).
    public var trace: TrainingTrace?
    /// Whether the run ended early because a rank received SIGINT/SIGTERM (every rank stopped at the same step).
    public internal(set) var stoppedOnRequest = false
    /// Epoch being trained (0-based).
    public internal(set) var epoch = 0
    /// Global sample position within the epoch's permutation where the next step starts (the resume cursor).
    public internal(set) var epochPosition = 0
    /// Checkpointing for this run.
    public let checkpoints: CheckpointSettings
    var lastSavedStep = -1
    /// Each rank's host, in rank order (for diagnoses).
    let hostNames: [String]
    /// Rank 0's claim on the checkpoint directory, held until the trainer goes away.
    var checkpointLock: CheckpointDirectoryLock?

    private let schedule: LearningRateSchedule
    private let reducer: GradientReducer
    private let loader: BatchLoader
    private let outputGradient: FloatBuffer
    private let accumulator: FloatBuffer
    private let evalFeatures: FloatBuffer
    private let evalTargets: FloatBuffer
    /// Optimizer steps per epoch.
    public let stepsPerEpoch: Int
    let log: (String) -> Void

    /// How gradients are averaged over ranks (e.g. `sharedMemory` on one node with the default transport).
    public var gradientReduction: ReductionMode { reducer.mode }
    /// The buckets gradients are reduced in, in launch order.
    public var gradientBuckets: [GradientBucket] { reducer.buckets }
    /// Bucket cap in bytes: `distributed.bucket_mb`, or what `auto` measured.
    public let bucketCapacityBytes: Int

    /// Per-rank batch, global batch (samples per optimizer step over all ranks).
    public var perRankBatch: Int { config.batchSize }
    public var globalBatch: Int { config.batchSize * communicator.size * config.accumulationSteps }

    /// Builds model, optimizer and data for this rank, checks every rank agrees, and makes replicas identical.
    public init(config: TrainingConfig, communicator: Communicator, trainSet: Dataset, testSet: Dataset,
                checkpoints: CheckpointSettings = CheckpointSettings(), log: @escaping (String) -> Void = { print($0) }) throws {
        self.config = config
        self.checkpoints = checkpoints
        self.communicator = communicator
        self.trainSet = trainSet
        self.testSet = testSet
        self.log = log
        let inputShape = config.inputShape ?? trainSet.sampleShape
        guard inputShape.reduce(1, *) == trainSet.featureWidth else {
            throw ConfigError("key 'model.input_shape': \(inputShape) has \(inputShape.reduce(1, *)) features but the dataset has \(trainSet.featureWidth) per sample")
        }
        model = try ModelBuilder.build(config.layers, inputShape: inputShape, classCount: trainSet.classCount)
        loss = try Trainer.makeLoss(config.loss, outputShape: model.outputShape)
        let width = model.outputWidth
        if config.loss == "cross_entropy", let classes = trainSet.classCount, classes > width {
            throw ConfigError("key 'model.layers': the last layer has \(width) outputs but the dataset has \(classes) classes")
        }
        if config.loss == "sequence_cross_entropy", let classes = trainSet.classCount, classes > model.outputShape[1] {
            throw ConfigError("key 'model.layers': the last layer has \(model.outputShape[1]) outputs per step but the dataset has \(classes) classes")
        }
        if loss.targetWidth(outputWidth: width) != trainSet.targetWidth {
            throw ConfigError("key 'loss': \(config.loss) expects \(loss.targetWidth(outputWidth: width)) target values per sample but the dataset has \(trainSet.targetWidth)")
        }
        optimizer = Trainer.makeOptimizer(config.optimizer, parameterCount: model.parameters.count)

        let plan = Trainer.epochPlan(config, samples: trainSet.count, worldSize: communicator.size, epoch: 0)
        let microSteps = plan.stepsPerEpoch(perRankBatch: config.batchSize)
        guard microSteps > 0 else {
            throw ConfigError("key 'training.batch_size': \(trainSet.count) training samples are fewer than one step of \(config.batchSize) per rank × \(communicator.size) ranks")
        }
        stepsPerEpoch = (microSteps + config.accumulationSteps - 1) / config.accumulationSteps
        schedule = Trainer.makeSchedule(config, stepsPerEpoch: stepsPerEpoch,
                                        globalBatch: config.batchSize * communicator.size * config.accumulationSteps)

        let b = config.batchSize
        model.plan(batchSize: max(b, config.evalBatchSize))
        outputGradient = FloatBuffer(count: b * width)
        accumulator = FloatBuffer(count: config.distributed.deterministic ? model.parameters.count : 0)
        evalFeatures = FloatBuffer(count: config.evalBatchSize * testSet.featureWidth)
        evalTargets = FloatBuffer(count: config.evalBatchSize * testSet.targetWidth)

        // A prefetch thread only pays off when it has a core of its own (measured: 0.08 ms/step of hand-offs on 1 core).
        // The rank's core budget is its BLAS thread count (OPENBLAS_NUM_THREADS from the launcher, else cores / local ranks).
        let coresPerRank = BLAS.threadCount
        loader = BatchLoader(dataset: trainSet, perRankBatch: config.batchSize,
                             prefetch: config.data.prefetch == "true" || (config.data.prefetch == "auto" && coresPerRank > 1),
                             reverseOrder: config.debug.reverseBatches)

        try Trainer.checkRanksAgree(config: config, model: model, trainSet: trainSet, testSet: testSet, communicator: communicator)
        hostNames = try Watchdog.gatherHostNames(communicator)
        // After the agreement check: allocating node-shared memory is collective, so every rank must decide alike.
        (reducer, bucketCapacityBytes) = try Trainer.makeReducer(config.distributed, model: model, communicator: communicator, log: log)
        reducer.fault = config.debug.reductionFault
        if config.distributed.syncBatchNorm && communicator.size > 1 { try connectSyncBatchNorm() }
        model.initialize(rng: RNG(seed: config.seed).split(1))
        try prepareCheckpoints()
        try communicator.broadcast(UnsafeMutableRawBufferPointer(model.parameters.values.buffer), root: 0)
        try communicator.broadcast(UnsafeMutableRawBufferPointer(model.state.values.buffer), root: 0)
        for (_, buffer) in optimizer.stateBuffers {
            try communicator.broadcast(UnsafeMutableRawBufferPointer(buffer.buffer), root: 0)
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
        guard config.distributed.overlap != "thread" else {
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

    /// Every rank compares its config hash, model layout and dataset size with rank 0's; a mismatch stops all ranks.
    private static func checkRanksAgree(config: TrainingConfig, model: Sequential, trainSet: Dataset, testSet: Dataset,
                                        communicator: Communicator) throws {
        let layout = Array(model.parameters.slots.map { "\($0.name)\($0.shape)" }.joined(separator: ";").utf8)
        let mine: [UInt64] = [config.hash, layout.withUnsafeBytes { Kernels.fnv1a($0) }, UInt64(trainSet.count), UInt64(testSet.count)]
        let all = try allgather(mine, communicator)
        let names = ["config hash", "model layout hash", "training set size", "test set size"]
        for rank in 1..<communicator.size {
            for field in 0..<mine.count where all[rank * mine.count + field] != all[field] {
                throw CollectiveError("rank \(rank) and rank 0 disagree on the \(names[field]): rank 0 has \(String(all[field], radix: 16)), rank \(rank) has \(String(all[rank * mine.count + field], radix: 16)); every rank must start with the same config, overrides and data")
            }
        }
    }

    private func allgather(_ values: [UInt64]) throws -> [UInt64] { try Self.allgather(values, communicator) }

    private static func allgather(_ values: [UInt64], _ communicator: Communicator) throws -> [UInt64] {
        var result = [UInt64](repeating: 0, count: values.count * communicator.size)
        try values.withUnsafeBytes { send in
            try result.withUnsafeMutableBytes { try communicator.allgather(send: send, receive: $0) }
        }
        return result
    }

    // MARK: factories

    static func makeLoss(_ name: String, outputShape: [Int] = []) throws -> Loss {
        switch name {
        case "sequence_cross_entropy":
            // Classes per step = the last axis of the [time, classes] output.
            guard outputShape.count == 2 else {
                throw ConfigError("key 'loss': sequence_cross_entropy needs a [time, classes] model output, the model gives \(outputShape)")
            }
            return SequenceCrossEntropy(classes: outputShape[1])
        case "mse": return MSELoss()
        case "bce_with_logits": return BCEWithLogitsLoss()
        default: return SoftmaxCrossEntropy()
        }
    }

    static func makeOptimizer(_ o: TrainingConfig.OptimizerConfig, parameterCount: Int) -> Optimizer {
        switch o.type {
        case "adam", "adamw":
            return Adam(parameterCount: parameterCount, beta1: Float(o.beta1), beta2: Float(o.beta2), epsilon: Float(o.epsilon),
                        weightDecay: Float(o.weightDecay), decoupledWeightDecay: o.type == "adamw")
        case "rmsprop":
            return RMSprop(parameterCount: parameterCount, alpha: Float(o.alpha), epsilon: Float(o.epsilon), weightDecay: Float(o.weightDecay),
                           momentum: Float(o.momentum), centered: o.centered)
        case "adagrad":
            return Adagrad(parameterCount: parameterCount, learningRateDecay: Float(o.learningRateDecay), weightDecay: Float(o.weightDecay),
                           initialAccumulatorValue: Float(o.initialAccumulatorValue), epsilon: Float(o.epsilon))
        default:
            return SGD(parameterCount: parameterCount, momentum: Float(o.momentum), nesterov: o.nesterov, weightDecay: Float(o.weightDecay))
        }
    }

    static func makeSchedule(_ config: TrainingConfig, stepsPerEpoch: Int, globalBatch: Int) -> LearningRateSchedule {
        var lr = Float(config.optimizer.learningRate)
        if config.distributed.scaleLearningRate { lr *= Float(globalBatch) / Float(config.distributed.baseBatch) }
        let totalSteps = config.maxSteps > 0 ? min(config.maxSteps, stepsPerEpoch * config.epochs) : stepsPerEpoch * config.epochs
        let warmup = Int((config.schedule.warmupEpochs * Double(stepsPerEpoch)).rounded())
        let base: LearningRateSchedule
        switch config.schedule.type {
        case "step": base = StepDecaySchedule(learningRate: lr, stepSize: max(1, Int(config.schedule.stepEpochs * Double(stepsPerEpoch))),
                                              gamma: Float(config.schedule.gamma))
        case "cosine": base = CosineSchedule(learningRate: lr, totalSteps: max(1, totalSteps - warmup),
                                             minimumLearningRate: Float(config.schedule.minimumLearningRate))
        default: base = ConstantSchedule(learningRate: lr)
        }
        return warmup > 0 ? WarmupSchedule(warmupSteps: warmup, warmupStartFactor: 1 / Float(max(warmup, 1)), base: base) : base
    }

    /// The gradient reducer the config asks for; with transport auto (gradients of 8 KiB or more) or shared_memory
    /// and blocking reduction with every rank on one node, the model's gradients move into node-shared memory first.
    /// `bucket_mb: auto` times allreduces first (MPI paths only: shared memory reduces one bucket of everything).
    static func makeReducer(_ d: TrainingConfig.DistributedConfig, model: Sequential, communicator: Communicator,
                            log: (String) -> Void) throws -> (reducer: GradientReducer, bucketBytes: Int) {
        var mode: ReductionMode = d.deterministic ? .deterministic
            : ["polling": .overlapPolling, "thread": .overlapThread][d.overlap] ?? .blocking
        var shared: NodeSharedFloats?
        // Below ~8 KiB MPI's eager path (0.7–2.4 µs) beats the shared-memory reducer's three node barriers (2.4–3 µs);
        // from 16 KiB up shared memory is 2–4× faster (`lockstep bench allreduce`, 2 ranks).
        let worthIt = d.transport == "shared_memory" || model.parameters.count * MemoryLayout<Float>.stride >= 8192
        if mode == .blocking && d.transport != "mpi" && worthIt {
            shared = try communicator.allocateNodeShared(floatCount: model.parameters.count)
        }
        if let shared {
            model.useGradientStorage(FloatBuffer(borrowing: shared.local, count: model.parameters.count, owner: shared))
            mode = .sharedMemory
        } else if d.transport == "shared_memory" && communicator.size > 1 {
            let reason = mode != .blocking
                ? "distributed.\(d.deterministic ? "deterministic" : "overlap '\(d.overlap)'") reduces through MPI"
                : "rank \(communicator.rank) shares its node with \(communicator.localSize) of the \(communicator.size) ranks"
            throw ConfigError("key 'distributed.transport': shared_memory needs every rank on one node and blocking reduction, but \(reason); use transport auto or mpi")
        }
        var bucketBytes = Int((d.bucketMiB ?? 1) * 1_048_576)
        if d.bucketMiB == nil && mode != .sharedMemory && communicator.size > 1 {
            let measured = try BucketSizing.measure(communicator: communicator, scratch: model.parameters.gradients!.buffer)
            bucketBytes = measured.bytes
            if communicator.rank == 0 { log(measured.line) }
        }
        let reducer = try GradientReducer(communicator: communicator, parameters: model.parameters, layerCount: model.layers.count,
                                          bucketCapacityBytes: bucketBytes, mode: mode, shared: shared)
        return (reducer, bucketBytes)
    }

    static func epochPlan(_ config: TrainingConfig, samples: Int, worldSize: Int, epoch: Int) -> EpochPlan {
        EpochPlan(sampleCount: samples, worldSize: worldSize, seed: config.seed, epoch: epoch, shuffle: config.data.shuffle,
                  policy: config.data.shardPolicy == "wrap_pad" ? .wrapPad : .dropLast)
    }

    // MARK: training

    /// Trains all epochs (or `maxSteps`), evaluating after each epoch; `onEpoch` receives each epoch's metrics.
    public func run(onEpoch: (EpochMetrics) -> Void = { _ in }, onStep: (Int, Int, Float) -> Void = { _, _, _ in }) throws -> RunSummary {
        let rank = communicator.rank
        let world = communicator.size
        let b = config.batchSize
        let k = config.accumulationSteps
        let width = model.outputWidth
        let gradients = model.parameters.gradients!
        let parameterCount = model.parameters.count
        var trainSeconds = 0.0
        var trainedSamples = 0
        var lastMetrics: EpochMetrics?
        let start = Date()
        var control = [Int64](repeating: 0, count: 9)
        let watchdog = config.distributed.timeoutSeconds > 0
            ? Watchdog(timeout: config.distributed.timeoutSeconds, communicator: communicator, directory: flightRecorderDirectory,
                       hostNames: hostNames)
            : nil
        defer { watchdog?.stop() }
        stoppedOnRequest = false
        var reachedMaxSteps = false
        if let trace {
            trace.prepare(layerKinds: model.layers.map(\.kind), bucketDescriptions: reducer.buckets.map(\.description))
            reducer.bucketReduced = { [unowned trace] bucket, start, end in trace.bucketReduced(bucket, start, end) }
        }
        defer { reducer.bucketReduced = nil }

        epochs: while epoch < config.epochs && !stoppedOnRequest {
            let plan = Trainer.epochPlan(config, samples: trainSet.count, worldSize: world, epoch: epoch)
            let window = plan.globalBatch(perRankBatch: b)
            let microSteps = plan.stepsRemaining(fromPosition: epochPosition, perRankBatch: b)
            let optimizerSteps = (microSteps + k - 1) / k
            loader.start(plan: plan, fromPosition: epochPosition, rank: rank)
            defer { loader.stop() }
            var epochLoss = 0.0, epochSamples = 0
            let epochStart = Date()
            for stepInEpoch in 0..<optimizerSteps {
                if config.maxSteps > 0 && step >= config.maxSteps { reachedMaxSteps = true; break }
                watchdog?.beat(step: step)
                let micros = min(k, microSteps - stepInEpoch * k)
                let cursor = Int64(epoch) << 40 | Int64(epochPosition)
                let stepRNG = RNG(seed: config.seed).split(2).split(UInt64(step))
                let injectNaN = config.debug.nanStep == step && config.debug.nanRank == rank
                if config.debug.hangStep == step && config.debug.hangRank == rank { Thread.sleep(forTimeInterval: 3600) }
                var lossSum = 0.0, localSamples = 0
                var reduceError: Error?
                timings?.begin()
                trace?.beginStep()
                model.zeroGradients()
                if config.distributed.deterministic { accumulator.zero() }
                for micro in 0..<micros {
                    guard let batch = loader.next() else {
                        throw CollectiveError("rank \(rank): the data loader ended early at epoch \(epoch) position \(epochPosition)")
                    }
                    let n = batch.sampleCount
                    epochPosition = min(epochPosition + window, plan.count)
                    timings?.lap(.data)
                    trace?.lap(.data)
                    // Dropout keys by global micro-batch position, so W ranks × b and 1 rank × W micro-batches match.
                    let context = LayerContext(training: true, rng: stepRNG.split(UInt64(micro * world + rank)))
                    let output = model.forward(batch.features, batch: n, context: context)
                    lossSum += Double(loss.forward(output: output, targets: batch.targets, batch: n, width: width)) * Double(n)
                    localSamples += n
                    timings?.lap(.forward)
                    trace?.lap(.forward)
                    if config.distributed.deterministic {
                        if micro > 0 { gradients.zero() }
                        loss.backward(output: output, targets: batch.targets, gradient: outputGradient.pointer, batch: n, width: width, scale: 1)
                        model.backward(input: batch.features, outputGradient: outputGradient.pointer, batch: n) { trace?.layerBackwardDone($0) }
                        Kernels.add(gradients.pointer, into: accumulator.pointer, count: parameterCount)
                    } else {
                        let last = micro == micros - 1
                        loss.backward(output: output, targets: batch.targets, gradient: outputGradient.pointer, batch: n,
                                      width: width, scale: 1 / Float(micros))
                        model.backward(input: batch.features, outputGradient: outputGradient.pointer, batch: n) { layer in
                            trace?.layerBackwardDone(layer)
                            guard last else { return }
                            if injectNaN && layer == 0 { gradients.pointer[0] = .nan }
                            do { try reducer.layerReady(layer) } catch { reduceError = error }
                        }
                        if let reduceError { throw reduceError }
                    }
                    timings?.lap(.backward)
                    trace?.lap(.backward)
                }
                if config.distributed.deterministic {
                    gradients.pointer.update(from: accumulator.pointer, count: parameterCount)
                    if injectNaN { gradients.pointer[0] = .nan }
                    for layer in stride(from: model.layers.count - 1, through: 0, by: -1) { try reducer.layerReady(layer) }
                }
                try reducer.finish()
                if config.distributed.deterministic && micros > 1 { Kernels.scale(gradients.pointer, by: 1 / Float(micros), count: parameterCount) }
                timings?.lap(.allreduceWait)
                trace?.lap(.allreduceWait)
                if let hookError { throw hookError }

                // One control vector per step: every rank takes the same decision from the same reduced values.
                let lossFinite = lossSum.isFinite
                let gradientsFinite = Kernels.allFinite(gradients.pointer, count: parameterCount)
                control[0] = 1; control[1] = -1
                control[2] = lossFinite ? 0 : Int64(rank + 1)
                control[3] = gradientsFinite ? 0 : 1
                control[4] = stopRequested != 0 ? 1 : 0
                control[5] = Int64(step); control[6] = -Int64(step)
                control[7] = cursor; control[8] = -cursor
                let local = control
                try control.withUnsafeMutableBufferPointer { try communicator.allreduce($0, operation: .max) }
                if control[5] != -control[6] || control[7] != -control[8] {
                    let all = try allgather(local.map { UInt64(bitPattern: $0) })
                    let described = (0..<world).map { "rank \($0): step \(Int64(bitPattern: all[$0 * 9 + 5])), data position \(Int64(bitPattern: all[$0 * 9 + 7]) & 0xFF_FFFF_FFFF) of epoch \(Int64(bitPattern: all[$0 * 9 + 7]) >> 40)" }
                    throw CollectiveError("ranks are out of lockstep at step \(step): " + described.joined(separator: "; "))
                }
                if control[2] != 0 || control[3] != 0 {
                    let what = control[2] != 0 ? "loss on rank \(control[2] - 1)" : "gradients (after averaging over ranks)"
                    if config.distributed.nonFinite == "stop" {
                        throw CollectiveError("step \(step): non-finite \(what); stopping as distributed.nonfinite is 'stop'")
                    }
                    skippedSteps += 1
                    if rank == 0 { log("step \(step): non-finite \(what); step skipped on every rank") }
                } else {
                    if config.clipGradientNorm > 0 {
                        GradientClipping.clipByGlobalNorm(gradients.pointer, count: parameterCount, maxNorm: Float(config.clipGradientNorm))
                    }
                    optimizer.step(parameters: model.parameters.values.pointer, gradients: gradients.pointer,
                                   count: parameterCount, learningRate: schedule.learningRate(step: step), l1: Float(config.optimizer.l1))
                }
                timings?.lap(.optimizer)
                trace?.lap(.optimizer)
                timings?.end()
                trace?.endStep()
                step += 1
                epochLoss += lossSum; epochSamples += localSamples
                if config.debug.stepDelayMilliseconds > 0 { usleep(UInt32(config.debug.stepDelayMilliseconds * 1000)) }
                if config.distributed.checkEvery > 0 && step % config.distributed.checkEvery == 0 { try checkParametersAgree() }
                onStep(step, stepInEpoch + 1, Float(lossSum / Double(max(localSamples, 1))))
                if control[4] != 0 {
                    if rank == 0 { log("stop requested: every rank stops at step \(step)") }
                    stoppedOnRequest = true
                    break
                }
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
                                       samplesPerSecond: sums[1] / max(seconds, 1e-9), seconds: seconds)
            lastMetrics = metrics
            onEpoch(metrics)
            if reachedMaxSteps { break }
            epoch += 1
            epochPosition = 0
            if checkpoints.enabled && checkpoints.everyEpoch { watchdog?.beat(step: step); try saveCheckpoint() }
        }
        watchdog?.beat(step: step)
        try checkParametersAgree()
        if checkpoints.enabled && lastSavedStep != step { try saveCheckpoint() }
        let evaluation: (loss: Double, accuracy: Double?)
        if let lastMetrics, !stoppedOnRequest { evaluation = (lastMetrics.testLoss, lastMetrics.testAccuracy) } else { evaluation = try evaluate() }
        return RunSummary(testAccuracy: evaluation.accuracy, testLoss: evaluation.loss, trainLoss: lastMetrics?.trainLoss ?? .nan,
                          samplesPerSecond: Double(trainedSamples) / max(trainSeconds, 1e-9), steps: step,
                          skippedSteps: skippedSteps, worldSize: world, seconds: Date().timeIntervalSince(start),
                          parameterChecksum: parameterChecksum())
    }

    /// FNV-1a hash of the parameter bytes.
    public func parameterChecksum() -> UInt64 {
        Kernels.fnv1a(UnsafeRawBufferPointer(model.parameters.values.buffer))
    }

    /// Stops every rank, naming the ranks whose parameters differ from rank 0's.
    public func checkParametersAgree() throws {
        let all = try allgather([parameterChecksum()])
        let diverged = (1..<communicator.size).filter { all[$0] != all[0] }
        if !diverged.isEmpty {
            throw CollectiveError("step \(step): parameters of rank \(diverged.map(String.init).joined(separator: ", ")) differ from rank 0's (checksums \(all.map { String($0, radix: 16) }.joined(separator: ", ")))")
        }
    }

    /// Evaluates the test set sharded over ranks; loss and accuracy are exact sums over all samples.
    public func evaluate() throws -> (loss: Double, accuracy: Double?) {
        let world = communicator.size, rank = communicator.rank
        let n = testSet.count
        let begin = n * rank / world, end = n * (rank + 1) / world
        let width = model.outputWidth
        var sums = [0.0, 0.0, 0.0]  // loss sum, correct, count
        var position = begin
        while position < end {
            let count = min(config.evalBatchSize, end - position)
            testSet.gather(position..<(position + count), features: evalFeatures.pointer, targets: evalTargets.pointer)
            let output = model.forward(evalFeatures.pointer, batch: count, context: LayerContext(training: false))
            sums[0] += Double(loss.forward(output: output, targets: evalTargets.pointer, batch: count, width: width)) * Double(count)
            if config.loss == "cross_entropy" {
                sums[1] += Double(countCorrect(output: output, targets: evalTargets.pointer, batch: count, width: width))
            } else if config.loss == "bce_with_logits" {
                // Per-label decisions, counted in samples (width labels each) so one denominator serves both losses.
                sums[1] += Double(countCorrectBinary(logits: output, targets: evalTargets.pointer, count: count * width)) / Double(width)
            }
            sums[2] += Double(count)
            position += count
        }
        try sums.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0) }
        let accuracy: Double? = ["cross_entropy", "bce_with_logits"].contains(config.loss) ? sums[1] / max(sums[2], 1) : nil
        return (sums[0] / max(sums[2], 1), accuracy)
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
}

extension Trainer: TrainingTraceHost {}
