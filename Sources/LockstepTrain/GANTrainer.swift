import Foundation
import LockstepCheckpoint
import LockstepComm
import LockstepCore
import LockstepData
import LockstepNN

/// One GAN epoch's reduced figures.
public struct GANEpochMetrics: Sendable {
    /// The epoch just finished (1-based).
    public var epoch: Int
    /// Steps completed so far.
    public var step: Int
    /// Mean over the epoch of the discriminator's loss on real plus its loss on generated samples (ln 4 ≈ 1.386
    /// when it cannot tell them apart).
    public var discriminatorLoss: Double
    /// Mean over the epoch of the generator's non-saturating loss, −log D(G(z)).
    public var generatorLoss: Double
    /// Real samples per second over all ranks.
    public var samplesPerSecond: Double
    /// Training time of the epoch.
    public var seconds: Double
    /// The judge's verdict on the fixed-noise samples after this epoch, when a judge is set.
    public var judgement: GANJudgement?

    /// The line the CLI prints per epoch.
    public var line: String {
        String(format: "epoch %d step %d: discriminator loss %.4f generator loss %.4f %.0f samples/s %.1f s",
               epoch, step, discriminatorLoss, generatorLoss, samplesPerSecond, seconds)
            + (judgement.map { "\n  judge: " + $0.line } ?? "")
    }
}

/// What a finished GAN run reports.
public struct GANRunSummary: Sendable {
    /// The last epoch's mean discriminator loss.
    public var discriminatorLoss: Double
    /// The last epoch's mean generator loss.
    public var generatorLoss: Double
    /// Real samples per second over all ranks and the whole run's training time.
    public var samplesPerSecond: Double
    /// Steps completed (each one update of both models).
    public var steps: Int
    /// Steps in which some update was skipped (non-finite loss or gradient).
    public var skippedSteps: Int
    /// Ranks that trained.
    public var worldSize: Int
    /// Wall time of the run.
    public var seconds: Double
    /// FNV-1a hash of the generator's then the discriminator's parameter bytes (equal on every rank).
    public var parameterChecksum: UInt64

    /// The closing line the CLI prints.
    public var line: String {
        String(format: "done: discriminator loss %.4f, generator loss %.4f, %d steps (%d skipped), %.0f samples/s, %.1f s",
               discriminatorLoss, generatorLoss, steps, skippedSteps, samplesPerSecond, seconds)
    }
}

/// Trains a generative adversarial network data-parallel: a generator and a discriminator, each with its own
/// optimizer and its own gradient reducer (buckets, shared memory, overlap as `options.distributed` says), one data
/// shard per rank as in `Trainer`, and one control vector per model update.
///
/// Each step alternates: (1) the discriminator learns to tell this rank's real batch (label 1) from as many generated
/// samples (label 0, the generator not differentiated); its gradients are averaged over ranks and it is updated;
/// (2) the generator learns from fresh noise through the updated discriminator with the non-saturating loss
/// −log D(G(z)): the loss gradient flows through the discriminator into the generated samples (the discriminator's
/// own parameter gradients of this pass are discarded) and back through the generator, whose gradients are averaged
/// and applied. Noise is drawn per global sample position from (seed, step, phase), so a run is reproducible, resume
/// is bit-exact and W ranks × b see the noise 1 rank × W·b sees.
///
///     let gan = try GANTrainer(generator: g, discriminator: d, generatorOptimizer: Adam(parameterCount: …),
///                              discriminatorOptimizer: Adam(parameterCount: …), schedule: ConstantSchedule(learningRate: 2e-4),
///                              data: data, options: options, communicator: session.communicator)
///     let summary = try gan.fit(epochs: 5, onEpoch: { session.say($0.line) })
public final class GANTrainer {
    /// The ranks this trainer runs on.
    public let communicator: Communicator
    /// Maps noise to one sample.
    public let generator: Sequential
    /// Maps one sample to one logit (real or generated).
    public let discriminator: Sequential
    /// Updates the generator (its own state).
    public let generatorOptimizer: Optimizer
    /// Updates the discriminator (its own state).
    public let discriminatorOptimizer: Optimizer
    /// Learning rate of both optimizers per step.
    public let schedule: LearningRateSchedule
    /// The real images (training split; the test split gives the judge's yardstick).
    public let data: TrainingData
    /// How this trainer runs (batch size is real samples per rank; as many generated ones join them).
    public private(set) var options: TrainingOptions
    /// The range the data's pixel values span (the generator's output range), mapped to black…white in sample grids.
    public let pixelRange: ClosedRange<Float>
    /// Scores generated samples after every epoch, when set.
    public var judge: GANJudge?
    /// Generated samples the judge scores per epoch.
    public var judgedSampleCount = 1000
    /// Steps completed (each one discriminator and one generator update).
    public internal(set) var step = 0
    /// Steps in which some update was skipped because a loss or gradient was non-finite on some rank.
    public internal(set) var skippedSteps = 0
    /// Epoch being trained (0-based).
    public internal(set) var epoch = 0
    /// Global sample position within the epoch's permutation where the next step starts (the resume cursor).
    public internal(set) var epochPosition = 0
    /// Whether the run ended early because a rank received SIGINT/SIGTERM.
    public internal(set) var stoppedOnRequest = false
    /// Steps per epoch.
    public let stepsPerEpoch: Int
    /// Checkpointing for this run.
    public var checkpoints: CheckpointSettings { options.checkpoints }
    /// Elements of one noise vector.
    public var noiseDimensions: Int { generator.inputWidth }
    /// Per-rank batch of real samples, and over all ranks.
    public var perRankBatch: Int { options.batchSize }
    public var globalBatch: Int { options.batchSize * communicator.size }

    var lastSavedStep = -1
    var checkpointLock: CheckpointDirectoryLock?
    let hostNames: [String]
    let log: (String) -> Void

    private let generatorReducer: GradientReducer
    private let discriminatorReducer: GradientReducer
    private let loader: BatchLoader
    private let loss = BCEWithLogitsLoss()
    /// Noise for this rank's batch, [batch, noiseDimensions].
    private let noise: FloatBuffer
    /// The discriminator's batch: real samples then generated ones, [2·batch, features], with targets 1 then 0.
    private let discriminatorInput: FloatBuffer
    private let discriminatorTargets: FloatBuffer
    /// All ones: the generator step's targets.
    private let ones: FloatBuffer
    /// dL/dlogit of the discriminator, [2·batch].
    private let logitGradient: FloatBuffer
    /// dL/d(generated sample), [batch, features]: what the generator back-propagates.
    private let sampleGradient: FloatBuffer
    private var control = StepControl.Buffer()
    private var current: (plan: EpochPlan, stepsLeft: Int)?
    /// This epoch's loss sums (discriminator, generator) and real samples on this rank.
    private var epochLoss = (discriminator: 0.0, generator: 0.0), epochSamples = 0

    /// Checks the two models fit the data and each other, checks every rank agrees, initializes both models from
    /// `options.seed` (or the resumed checkpoint) on rank 0 and broadcasts parameters, buffers and optimizer states.
    /// `generator` maps [noise] to one sample, `discriminator` one sample to one logit. Collective.
    public init(generator: Sequential, discriminator: Sequential, generatorOptimizer: Optimizer, discriminatorOptimizer: Optimizer,
                schedule: LearningRateSchedule, data: TrainingData, pixelRange: ClosedRange<Float> = -1...1,
                options: TrainingOptions = TrainingOptions(), communicator: Communicator,
                log: @escaping (String) -> Void = { print($0) }) throws {
        self.generator = generator; self.discriminator = discriminator
        self.generatorOptimizer = generatorOptimizer; self.discriminatorOptimizer = discriminatorOptimizer
        self.schedule = schedule; self.data = data; self.pixelRange = pixelRange
        self.options = options; self.communicator = communicator; self.log = log
        let features = data.train.featureWidth
        guard generator.inputShape.count == 1, generator.inputWidth > 0 else {
            throw ConfigError("key 'model.noise_dimensions': the generator must take a flat noise vector, it takes \(generator.inputShape)")
        }
        guard generator.outputWidth == features else {
            throw ConfigError("key 'model.generator': the generator makes \(generator.outputShape) (\(generator.outputWidth) values) per sample but the data's samples are \(data.train.sampleShape) (\(features) values)")
        }
        guard discriminator.inputWidth == features else {
            throw ConfigError("key 'model.discriminator': the discriminator takes \(discriminator.inputShape) per sample but the data's samples are \(data.train.sampleShape)")
        }
        guard discriminator.outputWidth == 1 else {
            throw ConfigError("key 'model.discriminator': the last layer must give 1 logit per sample (real or generated), it gives \(discriminator.outputShape)")
        }
        guard generatorOptimizer.stateBuffers.allSatisfy({ $0.buffer.count == generator.parameters.count }),
              discriminatorOptimizer.stateBuffers.allSatisfy({ $0.buffer.count == discriminator.parameters.count }) else {
            throw ConfigError("key 'optimizer': each optimizer must be created for its own model's parameter count (generator \(generator.parameters.count), discriminator \(discriminator.parameters.count))")
        }
        guard options.accumulationSteps == 1 else {
            throw ConfigError("key 'training.accumulation_steps': a GAN updates its two models alternately every step; accumulation is not supported, got \(options.accumulationSteps)")
        }
        guard options.batchSize > 0 else { throw ConfigError("key 'training.batch_size': must be positive") }
        let steps = Trainer.epochPlan(options, samples: data.train.count, worldSize: communicator.size, epoch: 0)
            .stepsPerEpoch(perRankBatch: options.batchSize)
        guard steps > 0 else {
            throw ConfigError("key 'training.batch_size': \(data.train.count) training samples are fewer than one step of \(options.batchSize) per rank × \(communicator.size) ranks")
        }
        stepsPerEpoch = steps

        let batch = options.batchSize
        generator.plan(batchSize: max(batch, options.evaluationBatchSize))
        discriminator.plan(batchSize: 2 * batch)
        noise = FloatBuffer(count: max(batch, options.evaluationBatchSize) * generator.inputWidth)
        discriminatorInput = FloatBuffer(count: 2 * batch * features)
        discriminatorTargets = FloatBuffer(count: 2 * batch)
        ones = FloatBuffer([Float](repeating: 1, count: batch))
        logitGradient = FloatBuffer(count: 2 * batch)
        sampleGradient = FloatBuffer(count: batch * features)
        loader = BatchLoader(dataset: data.train, perRankBatch: batch,
                             prefetch: options.prefetch == .on || (options.prefetch == .auto && BLAS.threadCount > 1),
                             reverseOrder: options.faults.reverseBatches)

        // The GAN's optimizers update whole models; sharding their state (ZeRO-1) is Trainer's alone for now.
        if options.distributed.shardOptimizer {
            throw ConfigError("key 'distributed.shard_optimizer': a GAN keeps whole optimizer states; set it to false")
        }
        try Trainer.checkRanksAgree(options: options, model: generator, data: data, communicator: communicator)
        try Trainer.checkRanksAgree(options: options, model: discriminator, data: data, communicator: communicator)
        hostNames = try Watchdog.gatherHostNames(communicator)
        (generatorReducer, _) = try Trainer.makeReducer(options.distributed, model: generator, communicator: communicator,
                                                        frozenLayers: 0, log: log)
        (discriminatorReducer, _) = try Trainer.makeReducer(options.distributed, model: discriminator, communicator: communicator,
                                                            frozenLayers: 0, log: log)
        generator.initialize(rng: RNG(seed: options.seed).split(1).split(1))
        discriminator.initialize(rng: RNG(seed: options.seed).split(1).split(2))
        try prepareCheckpoints()
        for model in [generator, discriminator] {
            try communicator.broadcast(UnsafeMutableRawBufferPointer(model.parameters.values.buffer), root: 0)
            try communicator.broadcast(UnsafeMutableRawBufferPointer(model.state.values.buffer), root: 0)
        }
        for (_, buffer) in generatorOptimizer.stateBuffers + discriminatorOptimizer.stateBuffers {
            try communicator.broadcast(UnsafeMutableRawBufferPointer(buffer.buffer), root: 0)
        }
    }

    // MARK: training

    /// Trains `epochs` epochs (default: `options.epochs`); see `run`.
    public func fit(epochs: Int? = nil, onEpoch: (GANEpochMetrics) throws -> Void = { _ in },
                    onStep: (Int, Int, Float) -> Void = { _, _, _ in }) throws -> GANRunSummary {
        if let epochs { options.epochs = epochs }
        return try run(onEpoch: onEpoch, onStep: onStep)
    }

    /// Trains all epochs (or `maxSteps`); after each epoch `onEpoch` receives the reduced losses and the judge's
    /// verdict, `onStep` (step, step in epoch, this rank's discriminator loss) each step. Checkpoints as configured; a
    /// stop request on any rank ends every rank at the same step. Collective.
    public func run(onEpoch: (GANEpochMetrics) throws -> Void = { _ in },
                    onStep: (Int, Int, Float) -> Void = { _, _, _ in }) throws -> GANRunSummary {
        var trainSeconds = 0.0, trainedSamples = 0
        var last: GANEpochMetrics?
        let start = Date()
        let watchdog = options.distributed.timeoutSeconds > 0
            ? Watchdog(timeout: options.distributed.timeoutSeconds, communicator: communicator,
                       directory: (checkpoints.directory ?? NSTemporaryDirectory() + "lockstep-gan-\(getppid())") + "/flight-recorder",
                       hostNames: hostNames)
            : nil
        defer { watchdog?.stop(); endEpoch() }
        stoppedOnRequest = false
        var reachedMaxSteps = false
        while epoch < options.epochs && !stoppedOnRequest {
            let epochStart = Date()
            var stepInEpoch = 0
            while true {
                if options.maxSteps > 0 && step >= options.maxSteps { reachedMaxSteps = true; break }
                watchdog?.beat(step: step)
                guard let losses = try trainStep() else { break }
                stepInEpoch += 1
                onStep(step, stepInEpoch, losses.discriminator)
                if stoppedOnRequest { break }
                if checkpoints.enabled && checkpoints.everySteps > 0 && step % checkpoints.everySteps == 0 {
                    watchdog?.beat(step: step)
                    try saveCheckpoint()
                }
            }
            let seconds = Date().timeIntervalSince(epochStart)
            trainSeconds += seconds
            watchdog?.beat(step: step)
            var sums = [epochLoss.discriminator, epochLoss.generator, Double(epochSamples)]
            try sums.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0) }
            trainedSamples += Int(sums[2])
            if stoppedOnRequest || (reachedMaxSteps && sums[2] == 0) { break }
            let metrics = GANEpochMetrics(epoch: epoch + 1, step: step, discriminatorLoss: sums[0] / max(sums[2], 1),
                                          generatorLoss: sums[1] / max(sums[2], 1), samplesPerSecond: sums[2] / max(seconds, 1e-9),
                                          seconds: seconds, judgement: judge.map { $0.judge(generatedSamples(count: judgedSampleCount)) })
            last = metrics
            try onEpoch(metrics)
            if reachedMaxSteps { break }
            endEpoch()
            epoch += 1
            epochPosition = 0
            if checkpoints.enabled && checkpoints.everyEpoch { watchdog?.beat(step: step); try saveCheckpoint() }
        }
        watchdog?.beat(step: step)
        try checkParametersAgree()
        if checkpoints.enabled && lastSavedStep != step { try saveCheckpoint() }
        return GANRunSummary(discriminatorLoss: last?.discriminatorLoss ?? .nan, generatorLoss: last?.generatorLoss ?? .nan,
                             samplesPerSecond: Double(trainedSamples) / max(trainSeconds, 1e-9), steps: step,
                             skippedSteps: skippedSteps, worldSize: communicator.size, seconds: Date().timeIntervalSince(start),
                             parameterChecksum: parameterChecksum())
    }

    /// Trains one step (a discriminator update, then a generator update) on the next real batch of the current
    /// epoch; returns this rank's two losses, or nil when the epoch has no batches left. Collective.
    public func trainStep() throws -> (discriminator: Float, generator: Float)? {
        if current == nil { beginEpoch() }
        guard let (plan, left) = current, left > 0 else { return nil }
        current!.stepsLeft -= 1
        let cursor = Int64(epoch) << 40 | Int64(epochPosition)
        guard let batch = loader.next() else {
            throw CollectiveError("rank \(communicator.rank): the data loader ended early at epoch \(epoch) position \(epochPosition)")
        }
        epochPosition = min(epochPosition + plan.globalBatch(perRankBatch: options.batchSize), plan.count)
        let stepRNG = RNG(seed: options.seed).split(3).split(UInt64(step))
        skippedThisStep = false
        let discriminatorLoss = try discriminatorUpdate(batch, cursor: cursor, rng: stepRNG.split(0))
        let generatorLoss = try generatorUpdate(batch, cursor: cursor, rng: stepRNG.split(1))
        step += 1
        if skippedThisStep { skippedSteps += 1 }
        epochLoss.discriminator += Double(discriminatorLoss) * Double(batch.sampleCount)
        epochLoss.generator += Double(generatorLoss) * Double(batch.sampleCount)
        epochSamples += batch.sampleCount
        if options.faults.stepDelayMilliseconds > 0 { usleep(UInt32(options.faults.stepDelayMilliseconds * 1000)) }
        if options.distributed.checkEvery > 0 && step % options.distributed.checkEvery == 0 { try checkParametersAgree() }
        return (discriminatorLoss, generatorLoss)
    }

    /// Fills `noise` with one standard-normal vector per sample of `batch`, each drawn from its global position in the
    /// epoch (in the order the batch holds its samples), so the noise does not depend on the number of ranks.
    private func fillNoise(for batch: Batch, rng: RNG) {
        let width = noiseDimensions, count = batch.sampleCount
        for sample in 0..<count {
            let position = options.faults.reverseBatches ? batch.positions.upperBound - 1 - sample : batch.positions.lowerBound + sample
            var sampleRNG = rng.split(UInt64(position))
            let row = noise.pointer + sample * width
            for i in 0..<width { row[i] = sampleRNG.normal() }
        }
    }

    /// The discriminator's update on real (label 1) and generated (label 0) samples; returns its loss
    /// (mean on real + mean on generated).
    private func discriminatorUpdate(_ batch: Batch, cursor: Int64, rng: RNG) throws -> Float {
        let count = batch.sampleCount, features = data.train.featureWidth, rank = UInt64(communicator.rank)
        fillNoise(for: batch, rng: rng.split(0))
        // The generator runs forward only: its samples are inputs here, not something to differentiate.
        let generated = generator.forward(noise.pointer, batch: count, context: LayerContext(training: true, rng: rng.split(1).split(rank)))
        discriminatorInput.pointer.update(from: batch.features, count: count * features)
        (discriminatorInput.pointer + count * features).update(from: generated, count: count * features)
        discriminatorTargets.pointer.update(repeating: 1, count: count)
        (discriminatorTargets.pointer + count).update(repeating: 0, count: count)
        let logits = discriminator.forward(discriminatorInput.pointer, batch: 2 * count,
                                           context: LayerContext(training: true, rng: rng.split(2).split(rank)))
        // Real and generated halves are equal, so mean-over-both × 2 is the usual sum of the two means (and its gradient).
        let lossValue = 2 * loss.forward(output: logits, targets: discriminatorTargets.pointer, batch: 2 * count, width: 1)
        loss.backward(output: logits, targets: discriminatorTargets.pointer, gradient: logitGradient.pointer, batch: 2 * count,
                      width: 1, scale: 2)
        // Fault injection (`debug.nan_step`): a non-finite gradient on one rank must skip the update on every rank.
        if options.faults.nanStep == step && options.faults.nanRank == communicator.rank { logitGradient.pointer[0] = .nan }
        discriminator.zeroGradients()
        try backward(discriminator, reducer: discriminatorReducer, input: discriminatorInput.pointer,
                     outputGradient: logitGradient.pointer, batch: 2 * count)
        try update(discriminator, optimizer: discriminatorOptimizer, loss: lossValue, cursor: cursor, what: "discriminator")
        return lossValue
    }

    /// The generator's update through the (just updated) discriminator with the non-saturating loss; returns it.
    private func generatorUpdate(_ batch: Batch, cursor: Int64, rng: RNG) throws -> Float {
        let count = batch.sampleCount, rank = UInt64(communicator.rank)
        fillNoise(for: batch, rng: rng.split(0))
        let generated = generator.forward(noise.pointer, batch: count, context: LayerContext(training: true, rng: rng.split(1).split(rank)))
        let logits = discriminator.forward(generated, batch: count, context: LayerContext(training: true, rng: rng.split(2).split(rank)))
        let lossValue = loss.forward(output: logits, targets: ones.pointer, batch: count, width: 1)
        loss.backward(output: logits, targets: ones.pointer, gradient: logitGradient.pointer, batch: count, width: 1, scale: 1)
        // Only the gradient with respect to the samples matters; the discriminator's parameter gradients this pass
        // adds are never reduced or applied (its next update zeroes them first).
        discriminator.backward(input: generated, outputGradient: logitGradient.pointer, batch: count, inputGradient: sampleGradient.pointer)
        generator.zeroGradients()
        try backward(generator, reducer: generatorReducer, input: noise.pointer, outputGradient: sampleGradient.pointer, batch: count)
        try update(generator, optimizer: generatorOptimizer, loss: lossValue, cursor: cursor, what: "generator")
        return lossValue
    }

    /// Backward of `model` with its reducer averaging buckets as layers finish; gradients are averaged on return.
    private func backward(_ model: Sequential, reducer: GradientReducer, input: UnsafePointer<Float>,
                          outputGradient: UnsafePointer<Float>, batch: Int) throws {
        reducer.beginStep(microBatches: 1)
        var reduceError: Error?
        model.backward(input: input, outputGradient: outputGradient, batch: batch) { layer in
            do { try reducer.layerReady(layer) } catch { reduceError = error }
        }
        if let reduceError { throw reduceError }
        reducer.microBatchDone()
        try reducer.finish()
    }

    /// One control vector for `model`'s update: every rank stops if out of lockstep, skips (or stops on) a non-finite
    /// loss or gradient, else updates.
    private func update(_ model: Sequential, optimizer: Optimizer, loss lossValue: Float, cursor: Int64, what: String) throws {
        var mine = StepControl(step: step, cursor: cursor)
        mine.lossNonFinite = !lossValue.isFinite
        mine.gradientsNonFinite = !Kernels.allFinite(model.parameters.gradients!.pointer, count: model.parameters.count)
        mine.stopRequested = stopRequested != 0
        let decision = try control.reduce(mine, rank: communicator.rank, communicator: communicator)
        if let disagreement = decision.disagreement {
            throw CollectiveError("ranks are out of lockstep at step \(step) (\(what) update): " + disagreement)
        }
        if decision.stopRequested && !stoppedOnRequest {
            stoppedOnRequest = true
            if communicator.rank == 0 { log("stop requested: every rank stops at step \(step + 1)") }
        }
        if let nonFinite = decision.nonFinite {
            if options.distributed.nonFinite == .stop {
                throw CollectiveError("step \(step): non-finite \(what) \(nonFinite); stopping as distributed.nonfinite is 'stop'")
            }
            skippedThisStep = true
            if communicator.rank == 0 { log("step \(step): non-finite \(what) \(nonFinite); \(what) update skipped on every rank") }
            return
        }
        let gradients = model.parameters.gradients!.pointer, count = model.parameters.count
        if options.clipGradientNorm > 0 {
            GradientClipping.clipByGlobalNorm(gradients, count: count, maxNorm: Float(options.clipGradientNorm))
        }
        optimizer.step(parameters: model.parameters.values.pointer, gradients: gradients, count: count,
                       learningRate: schedule.learningRate(step: step), l1: Float(options.l1))
    }

    /// Whether an update of the step in progress was skipped (a step counts once however many were).
    private var skippedThisStep = false

    private func beginEpoch() {
        let plan = Trainer.epochPlan(options, samples: data.train.count, worldSize: communicator.size, epoch: epoch)
        loader.start(plan: plan, fromPosition: epochPosition, rank: communicator.rank)
        current = (plan, plan.stepsRemaining(fromPosition: epochPosition, perRankBatch: options.batchSize))
        epochLoss = (0, 0); epochSamples = 0
    }

    private func endEpoch() {
        guard current != nil else { return }
        loader.stop()
        current = nil
    }

    // MARK: samples and agreement

    /// The generator's outputs (inference mode) for `count` fixed noise vectors, [count, features]: the same vectors
    /// every epoch and on every rank, so grids and judge figures of different epochs compare the same inputs.
    public func generatedSamples(count: Int) -> [Float] {
        let width = noiseDimensions, features = generator.outputWidth, chunk = max(options.evaluationBatchSize, options.batchSize)
        var result = [Float](repeating: 0, count: count * features)
        var position = 0
        while position < count {
            let n = min(chunk, count - position)
            for sample in 0..<n {
                var sampleRNG = RNG(seed: options.seed).split(4).split(UInt64(position + sample))
                for i in 0..<width { noise.pointer[sample * width + i] = sampleRNG.normal() }
            }
            let output = generator.forward(noise.pointer, batch: n, context: LayerContext(training: false))
            result.withUnsafeMutableBufferPointer { ($0.baseAddress! + position * features).update(from: output, count: n * features) }
            position += n
        }
        return result
    }

    /// `count` fixed-noise samples as a PNG-ready grid, the data's pixel range mapped to black…white.
    public func sampleGrid(count: Int = 64) throws -> ImageGrid {
        let span = pixelRange.upperBound - pixelRange.lowerBound
        let images = generatedSamples(count: count).map { ($0 - pixelRange.lowerBound) / span }
        return try ImageGrid(images: images, sampleShape: data.train.sampleShape, scaling: .unit, source: "GAN sample grid")
    }

    /// FNV-1a hash of the generator's parameter bytes followed by the discriminator's.
    public func parameterChecksum() -> UInt64 {
        let first = Kernels.fnv1a(UnsafeRawBufferPointer(generator.parameters.values.buffer))
        let second = Kernels.fnv1a(UnsafeRawBufferPointer(discriminator.parameters.values.buffer))
        return first ^ (second &* 0x100_0000_01B3)
    }

    /// Stops every rank, naming the ranks whose parameters differ from rank 0's.
    public func checkParametersAgree() throws {
        let all = try communicator.allgather([parameterChecksum()])
        let diverged = (1..<communicator.size).filter { all[$0] != all[0] }
        if !diverged.isEmpty {
            throw CollectiveError("step \(step): GAN parameters of rank \(diverged.map(String.init).joined(separator: ", ")) differ from rank 0's (checksums \(all.map { String($0, radix: 16) }.joined(separator: ", ")))")
        }
    }
}
