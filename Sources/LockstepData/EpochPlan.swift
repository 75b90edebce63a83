import LockstepCore

/// The global sample order of one epoch and how it is cut into per-rank batches.
///
/// The permutation depends only on (seed, epoch, sampleCount), never on the world size, so every rank builds the
/// same plan without communicating, and a run can resume on a different world size at the same global position.
/// Step s covers permutation positions [s·G, min((s+1)·G, count)) with G = perRankBatch · worldSize; rank r takes
/// the r-th of worldSize equal contiguous slices of that window.
public struct EpochPlan: Sendable, Equatable {
    /// What to do with the samples left over when the dataset size is not a multiple of the world size.
    public enum Policy: String, Sendable, CaseIterable {
        /// Drop the last (sampleCount mod worldSize) samples of the shuffled order.
        case dropLast = "drop_last"
        /// Repeat samples from the start of the shuffled order until the length is a multiple of the world size.
        case wrapPad = "wrap_pad"
    }

    /// Samples in the dataset.
    public let sampleCount: Int
    /// Number of ranks sharing the epoch.
    public let worldSize: Int
    /// Run seed.
    public let seed: UInt64
    /// Epoch index (0-based).
    public let epoch: Int
    /// Whether the order is shuffled (identity order otherwise).
    public let shuffle: Bool
    /// Remainder policy.
    public let policy: Policy
    /// Dataset indices in global visiting order; its length is a multiple of `worldSize`.
    public let permutation: [Int]

    /// Builds the plan; the shuffle uses `RNG(seed: seed).split(UInt64(epoch))`.
    public init(sampleCount: Int, worldSize: Int, seed: UInt64, epoch: Int, shuffle: Bool = true, policy: Policy = .dropLast) {
        precondition(sampleCount >= 0, "EpochPlan sampleCount must be non-negative, got \(sampleCount)")
        precondition(worldSize > 0, "EpochPlan worldSize must be positive, got \(worldSize)")
        self.sampleCount = sampleCount; self.worldSize = worldSize; self.seed = seed
        self.epoch = epoch; self.shuffle = shuffle; self.policy = policy
        var order = Array(0..<sampleCount)
        if shuffle {
            var rng = RNG(seed: seed).split(UInt64(truncatingIfNeeded: epoch))
            rng.shuffle(&order)
        }
        let remainder = sampleCount % worldSize
        if remainder != 0 {
            switch policy {
            case .dropLast:
                order.removeLast(remainder)
            case .wrapPad:
                // Wrap around the shuffled order (cycling if there are fewer samples than ranks).
                let padding = worldSize - remainder
                for i in 0..<padding { order.append(order[i % sampleCount]) }
            }
        }
        permutation = order
    }

    /// Positions in the epoch (permutation length).
    public var count: Int { permutation.count }

    /// Samples each rank sees in the whole epoch.
    public var samplesPerRank: Int { count / worldSize }

    /// Samples all ranks together consume per step.
    public func globalBatch(perRankBatch: Int) -> Int {
        precondition(perRankBatch > 0, "perRankBatch must be positive, got \(perRankBatch)")
        return perRankBatch * worldSize
    }

    /// Steps in the epoch; the last one may be shorter (but still equal across ranks).
    public func stepsPerEpoch(perRankBatch: Int) -> Int {
        let global = globalBatch(perRankBatch: perRankBatch)
        return (count + global - 1) / global
    }

    /// Global position where step `step` starts (the resume cursor), clamped to the end of the epoch.
    public func position(step: Int, perRankBatch: Int) -> Int {
        min(step * globalBatch(perRankBatch: perRankBatch), count)
    }

    /// Steps left when resuming at global `position` with this plan's world size.
    public func stepsRemaining(fromPosition position: Int, perRankBatch: Int) -> Int {
        let global = globalBatch(perRankBatch: perRankBatch)
        return (max(count - position, 0) + global - 1) / global
    }

    /// Range of `permutation` that `rank` uses in step `step`.
    public func indices(step: Int, perRankBatch: Int, rank: Int) -> Range<Int> {
        indices(position: position(step: step, perRankBatch: perRankBatch), perRankBatch: perRankBatch, rank: rank)
    }

    /// Range of `permutation` that `rank` uses in the step starting at global `position`.
    ///
    /// The window is [position, min(position + G, count)) and each rank takes an equal contiguous share; when a resume
    /// position is not a multiple of the world size, the last window's (length mod worldSize) leftovers are skipped.
    public func indices(position: Int, perRankBatch: Int, rank: Int) -> Range<Int> {
        precondition((0..<worldSize).contains(rank), "rank \(rank) outside 0..<\(worldSize)")
        let start = min(max(position, 0), count)
        let window = min(globalBatch(perRankBatch: perRankBatch), count - start)
        let share = window / worldSize
        let lower = start + rank * share
        return lower..<(lower + share)
    }
}
