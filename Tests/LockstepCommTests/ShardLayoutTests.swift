import LockstepComm
import LockstepCore
import XCTest

/// The slice arithmetic of the sharded optimizer, and the sharded reducer on one process.
final class ShardLayoutTests: XCTestCase {
    /// Slices tile 0..<count in rank order, start on multiples of 16 and differ from count/parts by less than 16.
    func testSlicesTileTheRangeOnSixteenFloatBoundaries() throws {
        for (count, parts) in [(235_146, 2), (235_146, 4), (34_186, 3), (1000, 7), (16, 1), (0, 3), (100_000_007, 5)] {
            let layout = try ShardLayout(count: count, parts: parts)
            var next = 0
            for rank in 0..<parts {
                let slice = layout.range(of: rank)
                XCTAssertEqual(slice.lowerBound, next, "\(count)/\(parts) rank \(rank)")
                XCTAssertEqual(slice.lowerBound % 16, 0, "\(count)/\(parts) rank \(rank) starts at \(slice.lowerBound)")
                XCTAssertLessThan(abs(slice.count - count / parts), 16 + count % parts, "\(count)/\(parts) rank \(rank): \(slice.count)")
                next = slice.upperBound
            }
            XCTAssertEqual(next, count)
            XCTAssertEqual(layout.counts.map(Int.init).reduce(0, +), count)
            XCTAssertEqual(layout.largest, (0..<parts).map { layout.range(of: $0).count }.max())
        }
    }

    func testExactValuesForTheMLP() throws {
        let layout = try ShardLayout(count: 235_146, parts: 4)
        // 58786.5 → 58784, 117573 → 117568, 176359.5 → 176352.
        XCTAssertEqual(layout.offsets, [0, 58_784, 117_568, 176_352])
        XCTAssertEqual(layout.counts, [58_784, 58_784, 58_784, 58_794])
    }

    /// Fewer elements than 16 per part: the leading slices are empty and the last one takes the rest.
    func testTinyRangesLeaveLeadingSlicesEmpty() throws {
        let layout = try ShardLayout(count: 20, parts: 4)
        XCTAssertEqual(layout.counts, [0, 0, 0, 20])
        XCTAssertEqual(layout.range(of: 3), 0..<20)
    }

    func testRefusesNoPartsAndCountsBeyondMPIInts() {
        XCTAssertThrowsError(try ShardLayout(count: 10, parts: 0))
        XCTAssertThrowsError(try ShardLayout(count: Int(Int32.max) + 1, parts: 2)) { error in
            XCTAssertTrue("\(error)".contains("exceeds MPI's int count"), "\(error)")
        }
    }

    /// One rank owns everything: the reducer leaves the (unscaled) trainable gradients in `shardGradients`, frozen
    /// prefix excluded, and accumulation in deterministic mode still divides by the micro-batches.
    func testSingleProcessShardHoldsTheTrainableGradients() throws {
        let gradients = FloatBuffer((0..<40).map { Float($0) })
        for mode in [ReductionMode.blocking, .deterministic] {
            gradients.pointer.update(from: (0..<40).map { Float($0) }, count: 40)
            let reducer = try GradientReducer(communicator: SingleProcessCommunicator(), gradients: gradients.buffer,
                                              layerStartOffsets: [0, 8, 24], mode: mode, frozenLayers: 1, shardOptimizer: true)
            XCTAssertEqual(reducer.shardLayout, try ShardLayout(count: 32, parts: 1))
            XCTAssertEqual(reducer.trainableStart, 8)
            XCTAssertEqual(reducer.buckets.count, 1)
            reducer.beginStep(microBatches: 2)
            reducer.microBatchDone()
            reducer.microBatchDone()
            try reducer.finish()
            // Blocking accumulates in place (the loss gradient is pre-scaled), deterministic sums then halves:
            // the second micro-batch of deterministic mode saw a cleared buffer, so the sum is the first alone.
            let expected = (8..<40).map { Float($0) * (mode == .deterministic ? 0.5 : 1) }
            XCTAssertEqual(Array(reducer.shardGradients), expected, "\(mode)")
        }
    }

    func testOverlapModesRefuseASharding() {
        XCTAssertThrowsError(try GradientReducer(communicator: SingleProcessCommunicator(), gradients: FloatBuffer(count: 8).buffer,
                                                 layerStartOffsets: [0], mode: .overlapPolling, shardOptimizer: true)) { error in
            XCTAssertTrue("\(error)".contains("sharded optimizer needs reduction mode blocking, deterministic or sharedMemory"), "\(error)")
        }
    }
}
