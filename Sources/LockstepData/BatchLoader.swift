import Foundation
import LockstepCore

/// One rank's batch for one step, in buffers owned by a `BatchLoader`.
///
/// The pointers stay valid until the next call to `next()`, `start` or `stop` on the loader that returned it.
public struct Batch {
    /// Features, [sampleCount, featureWidth].
    public let features: UnsafePointer<Float>
    /// Targets, [sampleCount, targetWidth].
    public let targets: UnsafePointer<Float>
    /// Samples in this batch (≤ the loader's per-rank batch size; smaller only on the epoch's last step).
    public let sampleCount: Int
    /// Step index within the epoch.
    public let step: Int
    /// The range of the plan's permutation this batch was gathered from.
    public let positions: Range<Int>
}

/// Gathers one rank's batches of an `EpochPlan` on a background thread, one step ahead of the consumer.
///
/// Two preallocated slots alternate (double buffering): the worker fills step s+1 while the caller trains on step s,
/// so nothing is allocated per batch.
public final class BatchLoader {
    private let shared: Shared

    /// Creates a loader for `dataset` with room for `perRankBatch` samples per slot; starts its worker thread.
    /// `reverseOrder` delivers each batch's samples last to first: the same batch with every sum over it grouped
    /// differently (tests measure float rounding spread with it). `augmenter` transforms every gathered training
    /// sample (on the worker thread, so it overlaps the step); leave it nil for evaluation loaders.
    public init(dataset: Dataset, perRankBatch: Int, prefetch: Bool = true, reverseOrder: Bool = false,
                augmenter: ImageAugmenter? = nil) {
        precondition(perRankBatch > 0, "BatchLoader perRankBatch must be positive, got \(perRankBatch)")
        precondition(augmenter == nil || augmenter!.sampleWidth == dataset.featureWidth,
                     "BatchLoader augmenter expects \(augmenter!.sampleWidth) floats per sample, dataset has \(dataset.featureWidth)")
        shared = Shared(dataset: dataset, perRankBatch: perRankBatch, reverseOrder: reverseOrder, augmenter: augmenter)
        self.prefetch = prefetch
        guard prefetch else { return }
        let shared = self.shared
        let thread = Thread { shared.workerLoop() }
        thread.name = "lockstep.batch-loader"
        thread.start()
    }

    /// Whether a background thread fills the next batch. Without it, `next()` gathers on the caller's thread:
    /// cheaper when the rank has a single core, where the thread only adds two context switches per step.
    public let prefetch: Bool
    private var syncPlan: EpochPlan?
    private var syncRank = 0
    private var syncBase = 0
    private var syncStep = 0
    private var syncEnd = 0

    deinit { shared.shutDown() }

    /// Per-rank batch size the slots hold.
    public var perRankBatch: Int { shared.perRankBatch }

    /// Begins delivering `rank`'s batches of `plan` from `firstStep` to the end of the epoch; cancels any epoch in flight.
    public func start(plan: EpochPlan, firstStep: Int = 0, rank: Int) {
        precondition((0..<plan.worldSize).contains(rank), "rank \(rank) outside 0..<\(plan.worldSize)")
        startAt(plan: plan, firstStep: firstStep, basePosition: 0, rank: rank)
    }

    private func startAt(plan: EpochPlan, firstStep: Int, basePosition: Int, rank: Int) {
        guard prefetch else {
            syncPlan = plan; syncRank = rank; syncBase = basePosition; syncStep = max(firstStep, 0)
            syncEnd = plan.stepsRemaining(fromPosition: basePosition, perRankBatch: shared.perRankBatch)
            return
        }
        shared.start(plan: plan, firstStep: firstStep, basePosition: basePosition, rank: rank)
    }

    /// Begins delivering `rank`'s batches from global `position` of `plan` (a resume cursor that need not fall on a
    /// step boundary of this world size); steps are then numbered from 0 at that position.
    public func start(plan: EpochPlan, fromPosition position: Int, rank: Int) {
        precondition((0..<plan.worldSize).contains(rank), "rank \(rank) outside 0..<\(plan.worldSize)")
        startAt(plan: plan, firstStep: 0, basePosition: position, rank: rank)
    }

    /// The next step's batch, waiting for the worker if needed; nil after the epoch's last step (or before `start`).
    public func next() -> Batch? {
        guard !prefetch else { return shared.next() }
        guard let plan = syncPlan, syncStep < syncEnd else { return nil }
        let position = syncBase + syncStep * plan.globalBatch(perRankBatch: shared.perRankBatch)
        let positions = plan.indices(position: position, perRankBatch: shared.perRankBatch, rank: syncRank)
        let features = shared.featureSlots[0], targets = shared.targetSlots[0]
        shared.gather(plan, positions, into: 0)
        defer { syncStep += 1 }
        return Batch(features: UnsafePointer(features.pointer), targets: UnsafePointer(targets.pointer),
                     sampleCount: positions.count, step: syncStep, positions: positions)
    }

    /// Cancels the current epoch; later `next()` calls return nil until `start`.
    public func stop() {
        syncPlan = nil
        if prefetch { shared.cancel() }
    }
}

/// State shared between the consumer and the worker thread; every field is guarded by `condition`.
private final class Shared: @unchecked Sendable {
    let dataset: Dataset
    let perRankBatch: Int
    let featureSlots: [FloatBuffer]
    let targetSlots: [FloatBuffer]
    let reverseOrder: Bool
    // Only the thread that gathers (the worker, or the caller without prefetch) uses it: one gather at a time.
    let augmenter: ImageAugmenter?

    let condition = NSCondition()
    // Bumped by start/cancel; a fill that began under an older generation is discarded.
    var generation = 0
    var plan: EpochPlan?
    var rank = 0
    var firstStep = 0
    var basePosition = 0
    var endStep = 0
    var nextStepToFill = 0
    var nextStepToDeliver = 0
    // Per slot: the step it holds once filled (nil = free or being filled), and whether the consumer holds it.
    var readyStep: [Int?] = [nil, nil]
    var readyPositions: [Range<Int>] = [0..<0, 0..<0]
    var heldByConsumer: [Bool] = [false, false]
    var fillingSlot: Int?
    var shuttingDown = false

    init(dataset: Dataset, perRankBatch: Int, reverseOrder: Bool, augmenter: ImageAugmenter?) {
        self.dataset = dataset
        self.perRankBatch = perRankBatch
        self.reverseOrder = reverseOrder
        self.augmenter = augmenter
        featureSlots = (0..<2).map { _ in FloatBuffer(count: perRankBatch * dataset.featureWidth) }
        targetSlots = (0..<2).map { _ in FloatBuffer(count: perRankBatch * dataset.targetWidth) }
    }

    private func slot(for step: Int) -> Int { (step - firstStep) & 1 }

    private func resetLocked() {
        generation &+= 1
        readyStep = [nil, nil]
        heldByConsumer = [false, false]
        // A slot still being filled stays busy until the worker notices the new generation.
    }

    func start(plan: EpochPlan, firstStep: Int, basePosition: Int, rank: Int) {
        condition.lock()
        resetLocked()
        self.plan = plan
        self.rank = rank
        self.firstStep = max(firstStep, 0)
        self.basePosition = basePosition
        endStep = plan.stepsRemaining(fromPosition: basePosition, perRankBatch: perRankBatch)
        nextStepToFill = self.firstStep
        nextStepToDeliver = self.firstStep
        condition.broadcast()
        condition.unlock()
    }

    func cancel() {
        condition.lock()
        resetLocked()
        plan = nil
        condition.broadcast()
        condition.unlock()
    }

    func shutDown() {
        condition.lock()
        shuttingDown = true
        plan = nil
        condition.broadcast()
        condition.unlock()
    }

    func next() -> Batch? {
        condition.lock()
        defer { condition.unlock() }
        // Returning for another batch means the caller is done with the one it holds.
        if heldByConsumer.contains(true) {
            for i in 0..<2 where heldByConsumer[i] { heldByConsumer[i] = false; readyStep[i] = nil }
            condition.broadcast()
        }
        guard plan != nil, nextStepToDeliver < endStep else { return nil }
        let step = nextStepToDeliver
        let index = slot(for: step)
        let generationAtEntry = generation
        while readyStep[index] != step {
            condition.wait()
            // start/stop from another thread while waiting ends this wait.
            if generation != generationAtEntry { return nil }
        }
        heldByConsumer[index] = true
        nextStepToDeliver += 1
        let positions = readyPositions[index]
        return Batch(features: UnsafePointer(featureSlots[index].pointer), targets: UnsafePointer(targetSlots[index].pointer),
                     sampleCount: positions.count, step: step, positions: positions)
    }

    /// Copies the samples at `positions` of the plan's permutation into slot `slot`.
    func gather(_ plan: EpochPlan, _ positions: Range<Int>, into slot: Int) {
        let indices = plan.permutation[positions]
        let features = featureSlots[slot].pointer, targets = targetSlots[slot].pointer
        if reverseOrder {
            dataset.gather(indices.reversed(), features: features, targets: targets)
            augmenter?.apply(to: features, sampleIndices: indices.reversed(), epoch: plan.epoch)
        } else {
            dataset.gather(indices, features: features, targets: targets)
            augmenter?.apply(to: features, sampleIndices: indices, epoch: plan.epoch)
        }
    }

    /// Worker: waits for a free slot of the current epoch, fills it outside the lock, publishes it.
    func workerLoop() {
        condition.lock()
        while true {
            var work: (plan: EpochPlan, step: Int, slot: Int, generation: Int, rank: Int, base: Int)?
            while !shuttingDown {
                if let plan, nextStepToFill < endStep {
                    let index = slot(for: nextStepToFill)
                    if readyStep[index] == nil && !heldByConsumer[index] && fillingSlot == nil {
                        work = (plan, nextStepToFill, index, generation, rank, basePosition)
                        break
                    }
                }
                condition.wait()
            }
            guard let job = work, !shuttingDown else { break }
            fillingSlot = job.slot
            condition.unlock()

            let position = job.base + job.step * job.plan.globalBatch(perRankBatch: perRankBatch)
            let positions = job.plan.indices(position: position, perRankBatch: perRankBatch, rank: job.rank)
            gather(job.plan, positions, into: job.slot)

            condition.lock()
            fillingSlot = nil
            if generation == job.generation {
                readyStep[job.slot] = job.step
                readyPositions[job.slot] = positions
                nextStepToFill = job.step + 1
            }
            condition.broadcast()
        }
        condition.unlock()
    }
}
