import LockstepComm

/// One rank's contribution to a step's collective decision, reduced over ranks with one MAX allreduce, so that
/// every rank skips, stops or detects a rank out of step at the same step.
struct StepControl {
    /// The optimizer step this rank is at.
    var step: Int
    /// This rank's data position: epoch << 40 | position in the epoch's global sample order.
    var cursor: Int64
    var lossNonFinite = false
    var gradientsNonFinite = false
    var stopRequested = false

    /// What every rank decides from the reduced vector (identical on all ranks).
    struct Decision {
        /// Each rank's step and data position, when they differ between ranks.
        var disagreement: String?
        /// What was not finite on some rank, if anything.
        var nonFinite: String?
        /// Some rank received SIGINT/SIGTERM.
        var stopRequested: Bool
    }

    /// Slots of the encoded vector. Minima travel as negated maxima, so one MAX allreduce yields both.
    private enum Slot: Int, CaseIterable {
        case lossNonFiniteRank  // highest rank + 1 with a non-finite loss, 0 for none
        case gradientsNonFinite, stopRequested, maximumStep, negatedMinimumStep, maximumCursor, negatedMinimumCursor
    }

    private func encode(into slots: inout [Int64], rank: Int) {
        slots[Slot.lossNonFiniteRank.rawValue] = lossNonFinite ? Int64(rank + 1) : 0
        slots[Slot.gradientsNonFinite.rawValue] = gradientsNonFinite ? 1 : 0
        slots[Slot.stopRequested.rawValue] = stopRequested ? 1 : 0
        slots[Slot.maximumStep.rawValue] = Int64(step)
        slots[Slot.negatedMinimumStep.rawValue] = -Int64(step)
        slots[Slot.maximumCursor.rawValue] = cursor
        slots[Slot.negatedMinimumCursor.rawValue] = -cursor
    }

    /// Preallocated storage for the vector, so a step allocates nothing unless ranks disagree.
    struct Buffer {
        private var slots = [Int64](repeating: 0, count: Slot.allCases.count)

        /// Reduces `mine` over all ranks and decodes the common decision. Collective.
        mutating func reduce(_ mine: StepControl, rank: Int, communicator: Communicator) throws -> Decision {
            mine.encode(into: &slots, rank: rank)
            try slots.withUnsafeMutableBufferPointer { try communicator.allreduce($0, operation: .max) }
            func slot(_ s: Slot) -> Int64 { slots[s.rawValue] }
            var decision = Decision(stopRequested: slot(.stopRequested) != 0)
            if slot(.maximumStep) != -slot(.negatedMinimumStep) || slot(.maximumCursor) != -slot(.negatedMinimumCursor) {
                // Rare path: learn every rank's position to name them.
                let all = try communicator.allgather([Int64(mine.step), mine.cursor])
                decision.disagreement = (0..<communicator.size).map {
                    "rank \($0): step \(all[2 * $0]), data position \(all[2 * $0 + 1] & 0xFF_FFFF_FFFF) of epoch \(all[2 * $0 + 1] >> 40)"
                }.joined(separator: "; ")
            }
            if slot(.lossNonFiniteRank) != 0 {
                decision.nonFinite = "loss on rank \(slot(.lossNonFiniteRank) - 1)"
            } else if slot(.gradientsNonFinite) != 0 {
                decision.nonFinite = "gradients (after averaging over ranks)"
            }
            return decision
        }
    }
}
