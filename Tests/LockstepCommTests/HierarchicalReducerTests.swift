import LockstepComm
import LockstepCore
import XCTest

/// `.hierarchical` on fake multi-node worlds of threads (`ThreadWorld`): the two-stage sum, its flight records and
/// its configuration errors, without MPI.
extension GradientReducerTests {
    /// Integer values: every order of float additions gives the same sum, so the expected mean is known exactly.
    private static func value(rank: Int, index: Int, step: Int) -> Float { Float((index * 7 + rank * 13 + step * 5) % 64 - 20) }

    /// Two steps of `mode` through node-shared memory on a thread world of `nodeSizes`, each rank's gradient i at step s
    /// being `value(rank, i, s)`; checks the result bit for bit against `expected[s][i]` and the padding stays zero.
    /// Returns each rank's error (nil when it matched) and its flight records.
    private func reduceTwoSteps(nodeSizes: [Int], count: Int, mode: ReductionMode, value: @escaping @Sendable (Int, Int, Int) -> Float,
                                expected: [[Float]]) -> (errors: [String?], records: [[String]]) {
        let world = ThreadWorld(nodeSizes: nodeSizes)
        final class Records: @unchecked Sendable { var lines: [[String]]; init(_ n: Int) { lines = .init(repeating: [], count: n) } }
        let records = Records(world.size)
        let lock = NSLock()
        let errors = world.run { comm in
            let floats = GradientReducer.hierarchicalSharedCount(gradientCount: count, localSize: comm.localSize,
                                                                 nodeCount: nodeSizes.count)
            let shared = try XCTUnwrap(try comm.allocateSharedWithinNode(floatCount: floats))
            let gradients = UnsafeMutableBufferPointer(start: shared.local, count: count)
            let reducer = try GradientReducer(communicator: comm, gradients: gradients, layerStartOffsets: [0, count / 3],
                                              mode: mode, shared: shared)
            guard mode != .deterministic || reducer.reducesThroughNodesInRankOrder && reducer.buckets.count == 1 else {
                throw ReducerConfigurationError("rank \(comm.rank): deterministic mode does not reduce through nodes in one bucket")
            }
            for step in 0..<2 {
                reducer.beginStep(microBatches: 1)
                for index in 0..<count { gradients[index] = value(comm.rank, index, step) }
                reducer.microBatchDone()
                try reducer.layerReady(1)
                try reducer.layerReady(0)
                try reducer.finish()
                for index in 0..<count where gradients[index].bitPattern != expected[step][index].bitPattern {
                    throw ReducerConfigurationError("rank \(comm.rank) step \(step) [\(index)] = \(gradients[index]), expected \(expected[step][index])")
                }
                // The padding past the gradients stays zero (it is summed, never written by backward).
                for index in count..<floats where shared.local[index] != 0 {
                    throw ReducerConfigurationError("rank \(comm.rank) padding [\(index)] = \(shared.local[index])")
                }
            }
            lock.lock(); records.lines[comm.rank] = comm.recentCollectives(limit: 256); lock.unlock()
        }
        return (errors, records.lines)
    }

    private func checkHierarchical(nodeSizes: [Int], count: Int, file: StaticString = #filePath, line: UInt = #line) {
        let size = nodeSizes.reduce(0, +)
        let expected = (0..<2).map { step in
            (0..<count).map { index in Float((0..<size).reduce(0) { $0 + Int(Self.value(rank: $1, index: index, step: step)) }) * (1 / Float(size)) }
        }
        let (errors, records) = reduceTwoSteps(nodeSizes: nodeSizes, count: count, mode: .hierarchical,
                                               value: { Self.value(rank: $0, index: $1, step: $2) }, expected: expected)
        XCTAssertEqual(errors, [String?](repeating: nil, count: size), "\(nodeSizes)", file: file, line: line)
        // Equal slices: every rank issued the very same collectives, so the watchdog can compare flight records.
        XCTAssertEqual(Set(records).count, 1, "flight records differ: \(records)", file: file, line: line)
        // The ring: per step 2(N − 1) passes of one chunk (1/N of the rank's slice) each, sent in pieces of at most
        // `chainPieceFloats`; none on one node.
        let nodes = nodeSizes.count
        let chunk = GradientReducer.hierarchicalSharedCount(gradientCount: count, localSize: nodeSizes[0], nodeCount: nodes)
            / nodeSizes[0] / nodes
        let piece = GradientReducer.chainPieceFloats, pieces = (chunk + piece - 1) / piece
        let exchanges = records[0].filter { $0.contains("sendReceiveAcrossNodes") }
        let floats = exchanges.map { Int($0.split(separator: " ")[4])! }.reduce(0, +)
        XCTAssertEqual(exchanges.count, nodes > 1 ? 2 * 2 * (nodes - 1) * pieces : 0, "\(records[0])", file: file, line: line)
        XCTAssertEqual(floats, nodes > 1 ? 2 * 2 * (nodes - 1) * chunk : 0, "\(records[0])", file: file, line: line)
    }

    /// Values whose float sums depend on the order of additions, so only the rank-order sum matches.
    private static func inexactValue(rank: Int, index: Int, step: Int) -> Float {
        Float(sin(Double(index * 31 + rank * 977 + step * 13))) * Float(1 + rank * 3) * 0.37
    }

    /// `.deterministic` given node-shared gradients on several nodes: the chain across nodes ends with exactly the
    /// flat path's bits, ((g0 + g1) + g2) + … × 1/W, on every rank, and all ranks issue the same collectives.
    private func checkDeterministicChain(nodeSizes: [Int], count: Int, file: StaticString = #filePath, line: UInt = #line) {
        let size = nodeSizes.reduce(0, +)
        let expected = (0..<2).map { step in
            (0..<count).map { index in
                var total = Self.inexactValue(rank: 0, index: index, step: step)
                for rank in 1..<size { total += Self.inexactValue(rank: rank, index: index, step: step) }
                return total * (1 / Float(size))
            }
        }
        let (errors, records) = reduceTwoSteps(nodeSizes: nodeSizes, count: count, mode: .deterministic,
                                               value: { Self.inexactValue(rank: $0, index: $1, step: $2) }, expected: expected)
        XCTAssertEqual(errors, [String?](repeating: nil, count: size), "\(nodeSizes)", file: file, line: line)
        XCTAssertEqual(Set(records).count, 1, "flight records differ: \(records)", file: file, line: line)
        // Per step: one exchange per piece plus 2N − 3 to fill and drain the pipeline; none on one node.
        let nodes = nodeSizes.count
        let slice = GradientReducer.hierarchicalSharedCount(gradientCount: count, localSize: nodeSizes[0], nodeCount: nodes) / nodeSizes[0]
        let pieces = (slice + GradientReducer.chainPieceFloats - 1) / GradientReducer.chainPieceFloats
        let chainSteps = records[0].filter { $0.contains("chainAcrossNodes float32 × \(GradientReducer.chainPieceFloats) ") }
        XCTAssertEqual(chainSteps.count, nodes > 1 ? 2 * (pieces + 2 * nodes - 3) : 0, "\(records[0])", file: file, line: line)
    }

    func testDeterministicChainMatchesRankOrderSumOverTwoNodesOfTwoRanks() {
        checkDeterministicChain(nodeSizes: [2, 2], count: 1001)
        checkDeterministicChain(nodeSizes: [2, 2], count: 300_000)  // 3 pieces per slice
    }

    func testDeterministicChainMatchesRankOrderSumOverThreeAndFourNodes() {
        checkDeterministicChain(nodeSizes: [3, 3, 3], count: 400_000)  // middle node: both directions both ways
        checkDeterministicChain(nodeSizes: [1, 1, 1, 1], count: 200_000)
    }

    func testDeterministicChainOnOneNodeIsTheSharedSumInRankOrder() {
        checkDeterministicChain(nodeSizes: [4], count: 77)
    }

    func testHierarchicalAveragesOverTwoNodesOfTwoRanks() {
        checkHierarchical(nodeSizes: [2, 2], count: 1001)
    }

    func testHierarchicalAveragesOverThreeNodesOfThreeRanks() {
        // W = 9: 1/W is inexact, so scaling must happen once, after both sums, as the expected mean does.
        checkHierarchical(nodeSizes: [3, 3, 3], count: 250)
    }

    func testHierarchicalAveragesOverFourNodesOfTwoRanks() {
        checkHierarchical(nodeSizes: [2, 2, 2, 2], count: 3000)
    }

    func testHierarchicalRingSendsLargeChunksInPieces() {
        checkHierarchical(nodeSizes: [2, 2], count: 600_000)  // chunks of 150,016 floats: 3 pieces each
    }

    func testHierarchicalWorksWithOneRankPerNodeAndOnOneNode() {
        checkHierarchical(nodeSizes: [1, 1, 1], count: 77)
        checkHierarchical(nodeSizes: [4], count: 77)
    }

    func testHierarchicalNeedsTheSameNumberOfRanksOnEveryNode() {
        let world = ThreadWorld(nodeSizes: [1, 2])
        let errors = world.run { comm in
            let shared = try comm.allocateSharedWithinNode(floatCount: 64)!
            _ = try GradientReducer(communicator: comm, gradients: UnsafeMutableBufferPointer(start: shared.local, count: 10),
                                    layerStartOffsets: [0], mode: .hierarchical, shared: shared)
        }
        // Every rank refuses (a collective answer), so none is left waiting in a later collective.
        for (rank, error) in errors.enumerated() {
            XCTAssertTrue(error?.contains("same number of ranks on every node") == true, "rank \(rank): \(error ?? "no error")")
        }
    }

    func testHierarchicalNeedsNodeSharedGradientsWithRoomForEqualSlices() {
        let gradients = FloatBuffer(count: 40)
        XCTAssertThrowsError(try GradientReducer(communicator: RecordingCommunicator(size: 2), gradients: gradients.buffer,
                                                 layerStartOffsets: [0], mode: .hierarchical)) {
            XCTAssertTrue($0 is ReducerConfigurationError && "\($0)".contains("node-shared memory"), "\($0)")
        }
        // Room for the gradients but not for two equal 16-float-aligned slices (2 × 32 = 64 floats).
        let segments = (0..<2).map { _ in FloatBuffer(count: 40) }
        let shared = NodeSharedFloats(count: 40, local: segments[0].pointer, segments: segments.map(\.pointer)) { _ in }
        XCTAssertThrowsError(try GradientReducer(communicator: RecordingCommunicator(size: 2),
                                                 gradients: UnsafeMutableBufferPointer(start: segments[0].pointer, count: 40),
                                                 layerStartOffsets: [0], mode: .hierarchical, shared: shared)) {
            XCTAssertTrue("\($0)".contains("room for 64 floats"), "\($0)")
        }
    }

    func testHierarchicalSlicesAreEqualAndCacheLineSized() {
        XCTAssertEqual(GradientReducer.hierarchicalSharedCount(gradientCount: 40, localSize: 2, nodeCount: 1), 64)
        XCTAssertEqual(GradientReducer.hierarchicalSharedCount(gradientCount: 64, localSize: 2, nodeCount: 1), 64)
        XCTAssertEqual(GradientReducer.hierarchicalSharedCount(gradientCount: 235_146, localSize: 3, nodeCount: 1), 3 * 78_384)
        XCTAssertEqual(GradientReducer.hierarchicalSharedCount(gradientCount: 5, localSize: 1, nodeCount: 1), 16)
        XCTAssertEqual(GradientReducer.hierarchicalSharedCount(gradientCount: 0, localSize: 4, nodeCount: 3), 0)
        // Slices of whole ring chunks: 2 nodes → multiples of 32 floats, 3 nodes → of 48.
        XCTAssertEqual(GradientReducer.hierarchicalSharedCount(gradientCount: 40, localSize: 2, nodeCount: 2), 64)
        XCTAssertEqual(GradientReducer.hierarchicalSharedCount(gradientCount: 100, localSize: 2, nodeCount: 3), 2 * 96)
        XCTAssertEqual(GradientReducer.hierarchicalSharedCount(gradientCount: 2_660_000, localSize: 2, nodeCount: 2), 2 * 1_330_016)
    }
}
