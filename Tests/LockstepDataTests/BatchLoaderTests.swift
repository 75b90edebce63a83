import LockstepCore
import XCTest
@testable import LockstepData

final class BatchLoaderTests: XCTestCase {
    /// 23 samples of 3 features; sample i has features [i, i + 0.25, i + 0.5] and target 100 + i.
    private let dataset = Dataset(features: (0..<23).flatMap { i in [Float(i), Float(i) + 0.25, Float(i) + 0.5] },
                                  targets: (0..<23).map { Float(100 + $0) }, sampleShape: [3], targetWidth: 1)

    private func directBatch(_ plan: EpochPlan, step: Int, perRankBatch: Int, rank: Int) -> (features: [Float], targets: [Float]) {
        let range = plan.indices(step: step, perRankBatch: perRankBatch, rank: rank)
        let features = FloatBuffer(count: max(range.count, 1) * dataset.featureWidth)
        let targets = FloatBuffer(count: max(range.count, 1))
        dataset.gather(plan.permutation[range], features: features.pointer, targets: targets.pointer)
        return (Array(features.array.prefix(range.count * 3)), Array(targets.array.prefix(range.count)))
    }

    func testPrefetchedBatchesEqualDirectlyGatheredOnes() {
        checkLoaderMatchesDirectGathering(BatchLoader(dataset: dataset, perRankBatch: 4))
    }

    func testSynchronousLoaderMatchesDirectGathering() {
        let loader = BatchLoader(dataset: dataset, perRankBatch: 4, prefetch: false)
        checkLoaderMatchesDirectGathering(loader)
        // A resume position that is not a step boundary of this world size.
        let plan = EpochPlan(sampleCount: 23, worldSize: 2, seed: 3, epoch: 0, policy: .wrapPad)
        loader.start(plan: plan, fromPosition: 6, rank: 1)
        let batch = loader.next()
        XCTAssertEqual(batch?.positions, plan.indices(position: 6, perRankBatch: 4, rank: 1))
        loader.stop()
        XCTAssertNil(loader.next())
    }

    private func checkLoaderMatchesDirectGathering(_ loader: BatchLoader) {
        for rank in 0..<2 {
            for epoch in 0..<2 {
                let plan = EpochPlan(sampleCount: 23, worldSize: 2, seed: 3, epoch: epoch, policy: .wrapPad)
                loader.start(plan: plan, rank: rank)
                var steps: [Int] = []
                while let batch = loader.next() {
                    let expected = directBatch(plan, step: batch.step, perRankBatch: 4, rank: rank)
                    XCTAssertEqual(Array(UnsafeBufferPointer(start: batch.features, count: batch.sampleCount * 3)), expected.features)
                    XCTAssertEqual(Array(UnsafeBufferPointer(start: batch.targets, count: batch.sampleCount)), expected.targets)
                    XCTAssertEqual(batch.positions, plan.indices(step: batch.step, perRankBatch: 4, rank: rank))
                    steps.append(batch.step)
                }
                // 24 padded positions / (4 × 2) = 3 steps, then nil (and nil again).
                XCTAssertEqual(steps, [0, 1, 2])
                XCTAssertNil(loader.next())
            }
        }
    }

    func testShortLastStepAndFirstStepResume() {
        let plan = EpochPlan(sampleCount: 23, worldSize: 3, seed: 8, epoch: 0, policy: .dropLast)
        let loader = BatchLoader(dataset: dataset, perRankBatch: 4)
        // 21 kept samples, G = 12: step 0 has 4 per rank, step 1 has 3 per rank.
        loader.start(plan: plan, firstStep: 1, rank: 2)
        let batch = loader.next()
        XCTAssertEqual(batch?.step, 1)
        XCTAssertEqual(batch?.sampleCount, 3)
        if let batch {
            let expected = directBatch(plan, step: 1, perRankBatch: 4, rank: 2)
            XCTAssertEqual(Array(UnsafeBufferPointer(start: batch.targets, count: 3)), expected.targets)
        }
        XCTAssertNil(loader.next())
    }

    func testRestartMidEpochAndStop() {
        let plan = EpochPlan(sampleCount: 23, worldSize: 1, seed: 1, epoch: 0, shuffle: false)
        let loader = BatchLoader(dataset: dataset, perRankBatch: 2)
        XCTAssertNil(loader.next(), "nothing before start")
        loader.start(plan: plan, rank: 0)
        XCTAssertEqual(loader.next()?.step, 0)
        XCTAssertEqual(loader.next()?.step, 1)
        // Restarting abandons the epoch in flight and begins again where asked.
        loader.start(plan: plan, firstStep: 5, rank: 0)
        let batch = loader.next()
        XCTAssertEqual(batch?.step, 5)
        XCTAssertEqual(batch.map { Array(UnsafeBufferPointer(start: $0.targets, count: $0.sampleCount)) }, [110, 111])
        loader.stop()
        XCTAssertNil(loader.next())
        // A run to the end: 23 samples in steps of 2 → 12 steps, the last holding one sample.
        loader.start(plan: plan, rank: 0)
        var count = 0, last = 0
        while let batch = loader.next() { count += 1; last = batch.sampleCount }
        XCTAssertEqual(count, 12)
        XCTAssertEqual(last, 1)
    }

    func testLoaderIsReleasedWithItsThread() {
        weak var released: BatchLoader?
        do {
            let loader = BatchLoader(dataset: dataset, perRankBatch: 3)
            loader.start(plan: EpochPlan(sampleCount: 23, worldSize: 1, seed: 0, epoch: 0), rank: 0)
            _ = loader.next()
            released = loader
        }
        XCTAssertNil(released, "the worker thread must not keep the loader alive")
    }
}
