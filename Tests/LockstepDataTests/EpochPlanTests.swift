import LockstepCore
import XCTest
@testable import LockstepData

final class EpochPlanTests: XCTestCase {
    /// Every rank's sample indices for a whole epoch, step by step.
    private func shards(_ plan: EpochPlan, perRankBatch: Int) -> [[Int]] {
        (0..<plan.worldSize).map { rank in
            (0..<plan.stepsPerEpoch(perRankBatch: perRankBatch)).flatMap {
                plan.permutation[plan.indices(step: $0, perRankBatch: perRankBatch, rank: rank)]
            }
        }
    }

    func testDropLastShardsAreDisjointEqualAndCoverTheKeptSamples() {
        for (n, world, batch) in [(10, 3, 2), (10, 4, 1), (10, 4, 3), (12, 3, 5), (7, 1, 3)] {
            let plan = EpochPlan(sampleCount: n, worldSize: world, seed: 42, epoch: 0, shuffle: true, policy: .dropLast)
            XCTAssertEqual(plan.count, n - n % world, "n=\(n) W=\(world)")
            let perRank = shards(plan, perRankBatch: batch)
            XCTAssertEqual(Set(perRank.map(\.count)), [n / world], "equal shard length for n=\(n) W=\(world)")
            let all = perRank.flatMap { $0 }
            XCTAssertEqual(Set(all).count, all.count, "disjoint for n=\(n) W=\(world)")
            XCTAssertEqual(all.sorted(), plan.permutation.sorted(), "cover for n=\(n) W=\(world)")
            XCTAssertTrue(all.allSatisfy { (0..<n).contains($0) })
        }
    }

    func testWrapPadCoversEverySampleWithEqualShards() {
        for (n, world, batch) in [(10, 3, 2), (10, 4, 3), (2, 3, 1), (9, 3, 4)] {
            let plan = EpochPlan(sampleCount: n, worldSize: world, seed: 7, epoch: 2, shuffle: true, policy: .wrapPad)
            let padded = (n + world - 1) / world * world
            XCTAssertEqual(plan.count, padded)
            let perRank = shards(plan, perRankBatch: batch)
            XCTAssertEqual(Set(perRank.map(\.count)), [padded / world], "n=\(n) W=\(world)")
            let all = perRank.flatMap { $0 }
            XCTAssertEqual(Set(all), Set(0..<n), "every sample seen for n=\(n) W=\(world)")
            // The padding repeats the start of the shuffled order.
            XCTAssertEqual(Array(plan.permutation[n...]), (0..<(padded - n)).map { plan.permutation[$0 % n] })
        }
    }

    func testTenSamplesThreeRanksExactLayout() {
        let plan = EpochPlan(sampleCount: 10, worldSize: 3, seed: 1, epoch: 0, shuffle: false, policy: .dropLast)
        XCTAssertEqual(plan.permutation, Array(0..<9))
        XCTAssertEqual(plan.stepsPerEpoch(perRankBatch: 2), 2)
        // Step 0 covers positions 0..<6, rank r gets [2r, 2r+2); step 1 covers 6..<9, one sample each.
        XCTAssertEqual((0..<3).map { plan.indices(step: 0, perRankBatch: 2, rank: $0) }, [0..<2, 2..<4, 4..<6])
        XCTAssertEqual((0..<3).map { plan.indices(step: 1, perRankBatch: 2, rank: $0) }, [6..<7, 7..<8, 8..<9])
    }

    func testPermutationDependsOnSeedAndEpochOnly() {
        let a = EpochPlan(sampleCount: 100, worldSize: 4, seed: 9, epoch: 3)
        let b = EpochPlan(sampleCount: 100, worldSize: 4, seed: 9, epoch: 3)
        XCTAssertEqual(a.permutation, b.permutation)
        XCTAssertNotEqual(a.permutation, Array(0..<100))
        XCTAssertNotEqual(a.permutation, EpochPlan(sampleCount: 100, worldSize: 4, seed: 9, epoch: 4).permutation)
        XCTAssertNotEqual(a.permutation, EpochPlan(sampleCount: 100, worldSize: 4, seed: 10, epoch: 3).permutation)
        // World size only truncates: the global order is the same prefix for any W.
        let three = EpochPlan(sampleCount: 100, worldSize: 3, seed: 9, epoch: 3)
        XCTAssertEqual(Array(a.permutation.prefix(99)), three.permutation)
        // The documented derivation.
        var order = Array(0..<100)
        var rng = RNG(seed: 9).split(3)
        rng.shuffle(&order)
        XCTAssertEqual(a.permutation, order)
    }

    func testOneRankWithGlobalBatchSeesTheUnionOfAllRanks() {
        for (n, world, batch) in [(48, 4, 5), (64, 2, 8), (46, 4, 3), (10, 3, 2)] {
            let distributed = EpochPlan(sampleCount: n, worldSize: world, seed: 5, epoch: 1, policy: .dropLast)
            let single = EpochPlan(sampleCount: n, worldSize: 1, seed: 5, epoch: 1, policy: .dropLast)
            let steps = distributed.stepsPerEpoch(perRankBatch: batch)
            XCTAssertEqual(steps, single.stepsPerEpoch(perRankBatch: batch * world), "n=\(n) W=\(world)")
            for step in 0..<steps {
                let union = (0..<world).flatMap { distributed.permutation[distributed.indices(step: step, perRankBatch: batch, rank: $0)] }
                let whole = Array(single.permutation[single.indices(step: step, perRankBatch: batch * world, rank: 0)])
                // Identical windows, except that W ranks drop the (n mod W) samples a single rank keeps at the very end.
                let dropped = step == steps - 1 ? n % world : 0
                XCTAssertEqual(union, Array(whole.dropLast(dropped)), "n=\(n) W=\(world) step \(step)")
            }
        }
    }

    func testResumeOnDifferentWorldSizeContinuesTheGlobalOrder() {
        // Two ranks × 3 ran 2 steps (cursor 12); three ranks × 2 resume at the same global position.
        let before = EpochPlan(sampleCount: 30, worldSize: 2, seed: 11, epoch: 0)
        let cursor = before.position(step: 2, perRankBatch: 3)
        XCTAssertEqual(cursor, 12)
        let after = EpochPlan(sampleCount: 30, worldSize: 3, seed: 11, epoch: 0)
        XCTAssertEqual(after.stepsRemaining(fromPosition: cursor, perRankBatch: 2), 3)
        var seen: [Int] = []
        var position = cursor
        for _ in 0..<after.stepsRemaining(fromPosition: cursor, perRankBatch: 2) {
            for rank in 0..<3 { seen += after.permutation[after.indices(position: position, perRankBatch: 2, rank: rank)] }
            position += after.globalBatch(perRankBatch: 2)
        }
        let consumed = (0..<2).flatMap { step in
            (0..<2).flatMap { before.permutation[before.indices(step: step, perRankBatch: 3, rank: $0)] }
        }
        XCTAssertEqual(consumed + seen, after.permutation, "the two runs together visit the epoch once, in order")
    }

    func testFewerSamplesThanRanks() {
        let dropped = EpochPlan(sampleCount: 2, worldSize: 3, seed: 0, epoch: 0, policy: .dropLast)
        XCTAssertEqual(dropped.count, 0)
        XCTAssertEqual(dropped.stepsPerEpoch(perRankBatch: 4), 0)
        let padded = EpochPlan(sampleCount: 2, worldSize: 5, seed: 0, epoch: 0, policy: .wrapPad)
        XCTAssertEqual(padded.count, 5)
        XCTAssertEqual(padded.stepsPerEpoch(perRankBatch: 4), 1)
        XCTAssertEqual((0..<5).map { padded.indices(step: 0, perRankBatch: 4, rank: $0).count }, [1, 1, 1, 1, 1])
    }
}
