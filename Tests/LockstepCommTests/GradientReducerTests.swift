import LockstepComm
import LockstepCore
import XCTest

final class GradientReducerTests: XCTestCase {
    /// MLP 784-256-128-10 with ReLUs between: Linear, ReLU, Linear, ReLU, Linear.
    let mlpOffsets = [0, 200_960, 200_960, 233_856, 233_856]
    let mlpCount = 235_146

    // MARK: Planning

    func testWholeSmallModelFitsOneBucket() throws {
        let buckets = try GradientReducer.planBuckets(layerStartOffsets: mlpOffsets, totalCount: mlpCount,
                                                      bucketCapacityBytes: 1 << 20)
        XCTAssertEqual(buckets, [GradientBucket(elements: 0..<mlpCount, layers: 0...4)])
    }

    func testBucketsCloseOnLayerBoundariesOnceTheyReachTheCap() throws {
        let buckets = try GradientReducer.planBuckets(layerStartOffsets: mlpOffsets, totalCount: mlpCount,
                                                      bucketCapacityBytes: 64 << 10)
        XCTAssertEqual(buckets, [GradientBucket(elements: 200_960..<mlpCount, layers: 2...4),
                                 GradientBucket(elements: 0..<200_960, layers: 0...1)])
    }

    func testTinyCapGivesOneBucketPerParameterLayer() throws {
        let buckets = try GradientReducer.planBuckets(layerStartOffsets: mlpOffsets, totalCount: mlpCount,
                                                      bucketCapacityBytes: 1)
        XCTAssertEqual(buckets.map(\.layers), [4...4, 2...3, 0...1])
        XCTAssertEqual(buckets.map(\.elements), [233_856..<mlpCount, 200_960..<233_856, 0..<200_960])
    }

    func testCapIsInclusiveAndRemainderFormsTheLastBucket() throws {
        // Layers of 4, 4, 4 floats (16 bytes each), cap 32 bytes: top two fill one bucket exactly.
        let buckets = try GradientReducer.planBuckets(layerStartOffsets: [0, 4, 8], totalCount: 12, bucketCapacityBytes: 32)
        XCTAssertEqual(buckets, [GradientBucket(elements: 4..<12, layers: 1...2), GradientBucket(elements: 0..<4, layers: 0...0)])
    }

    func testParameterFreeBottomLayersGetNoBucket() throws {
        let buckets = try GradientReducer.planBuckets(layerStartOffsets: [0, 0, 10], totalCount: 20, bucketCapacityBytes: 4)
        XCTAssertEqual(buckets, [GradientBucket(elements: 10..<20, layers: 2...2), GradientBucket(elements: 0..<10, layers: 1...1)])
        XCTAssertEqual(try GradientReducer.planBuckets(layerStartOffsets: [], totalCount: 0, bucketCapacityBytes: 4), [])
    }

    func testPlanningRejectsInconsistentLayouts() {
        XCTAssertThrowsError(try GradientReducer.planBuckets(layerStartOffsets: [1, 5], totalCount: 9, bucketCapacityBytes: 4))
        XCTAssertThrowsError(try GradientReducer.planBuckets(layerStartOffsets: [0, 6, 5], totalCount: 9, bucketCapacityBytes: 4)) {
            XCTAssertTrue("\($0)".contains("layer 2"), "\($0)")
        }
        XCTAssertThrowsError(try GradientReducer.planBuckets(layerStartOffsets: [0, 10], totalCount: 9, bucketCapacityBytes: 4))
        XCTAssertThrowsError(try GradientReducer.planBuckets(layerStartOffsets: [0], totalCount: 9, bucketCapacityBytes: 0))
        XCTAssertThrowsError(try GradientReducer.planBuckets(layerStartOffsets: [], totalCount: 9, bucketCapacityBytes: 4))
    }

    // MARK: Launching

    /// Five layers of 10, 0, 6, 3, 0 floats with a 12-byte cap: three buckets, two of them holding a parameter-free layer.
    private func makeReducer(_ mode: ReductionMode, size: Int = 4, threadLevel: ThreadLevel = .multiple)
        throws -> (GradientReducer, RecordingCommunicator, FloatBuffer) {
        let comm = RecordingCommunicator(size: size, threadLevel: threadLevel)
        let gradients = FloatBuffer(count: 19)
        comm.base = gradients.pointer
        let reducer = try GradientReducer(communicator: comm, gradients: gradients.buffer,
                                          layerStartOffsets: [0, 10, 10, 16, 19], bucketCapacityBytes: 12, mode: mode)
        XCTAssertEqual(reducer.buckets, [GradientBucket(elements: 16..<19, layers: 3...4),
                                         GradientBucket(elements: 10..<16, layers: 2...2),
                                         GradientBucket(elements: 0..<10, layers: 0...1)])
        return (reducer, comm, gradients)
    }

    private func fill(_ gradients: FloatBuffer) {
        for index in 0..<gradients.count { gradients.pointer[index] = Float(index) - 7.5 }
    }

    private func assertAveraged(_ gradients: FloatBuffer, file: StaticString = #filePath, line: UInt = #line) {
        // The fake's ranks are identical, so the average equals the original values.
        XCTAssertEqual(gradients.array, (0..<gradients.count).map { Float($0) - 7.5 }, file: file, line: line)
    }

    func testPollingLaunchesEachBucketWhenItsLowestLayerIsReady() throws {
        let (reducer, comm, gradients) = try makeReducer(.overlapPolling)
        fill(gradients)
        try reducer.layerReady(4)
        XCTAssertEqual(comm.calls, [])
        try reducer.layerReady(3)
        XCTAssertEqual(comm.calls, [.start(16..<19, handle: 0), .test(handle: 0)])
        try reducer.layerReady(2)
        // Bucket 0 completes on its second test and is not tested again.
        XCTAssertEqual(comm.calls, [.start(16..<19, handle: 0), .test(handle: 0),
                                    .start(10..<16, handle: 1), .test(handle: 0), .test(handle: 1)])
        try reducer.layerReady(1)
        XCTAssertEqual(comm.calls.last, .test(handle: 1))
        comm.clearCalls()
        try reducer.layerReady(0)
        XCTAssertEqual(comm.calls, [], "the last bucket has nothing left to overlap with: no nonblocking start")
        try reducer.finish()
        XCTAssertEqual(comm.calls, [.allreduce(0..<10)], "completed buckets are not waited for; the last one is blocking")
        assertAveraged(gradients)
    }

    func testLargeBucketsAreReducedInMessagesOfAtMostTheMaximumSize() throws {
        let (reducer, comm, gradients) = try makeReducer(.blocking)
        reducer.maximumMessageBytes = 16  // 4 floats
        fill(gradients)
        for layer in stride(from: 4, through: 0, by: -1) { try reducer.layerReady(layer) }
        try reducer.finish()
        XCTAssertEqual(comm.calls, [.allreduce(16..<19), .allreduce(10..<14), .allreduce(14..<16),
                                    .allreduce(0..<4), .allreduce(4..<8), .allreduce(8..<10)])
        assertAveraged(gradients)
    }

    func testBlockingReducesEverythingInFinishTopBucketFirst() throws {
        let (reducer, comm, gradients) = try makeReducer(.blocking)
        fill(gradients)
        for layer in [4, 3, 2, 1, 0] { try reducer.layerReady(layer) }
        XCTAssertEqual(comm.calls, [])
        try reducer.finish()
        XCTAssertEqual(comm.calls, [.allreduce(16..<19), .allreduce(10..<16), .allreduce(0..<10)])
        assertAveraged(gradients)
    }

    func testFinishReducesBucketsNeverReportedAndNextStepStartsClean() throws {
        for mode in [ReductionMode.overlapPolling, .overlapThread] {
            let (reducer, comm, gradients) = try makeReducer(mode)
            for step in 0..<2 {
                comm.clearCalls()
                fill(gradients)
                if step == 1 { try reducer.layerReady(4) }  // a partial report launches nothing by itself
                try reducer.finish()
                XCTAssertEqual(comm.calls, [.allreduce(16..<19), .allreduce(10..<16), .allreduce(0..<10)], "\(mode)")
                assertAveraged(gradients)
            }
        }
    }

    func testPollingOverlapsAllButTheLastBucketAndWaitsForUnfinishedOnes() throws {
        let (reducer, comm, gradients) = try makeReducer(.overlapPolling)
        comm.testsUntilComplete = 100
        fill(gradients)
        for layer in [4, 3, 2, 1, 0] { try reducer.layerReady(layer) }
        comm.clearCalls()
        try reducer.finish()
        XCTAssertEqual(comm.calls, [.wait(handle: 0), .wait(handle: 1), .allreduce(0..<10)])
        assertAveraged(gradients)
    }

    func testDuplicateReadyIsIgnoredAndOutOfRangeThrows() throws {
        let (reducer, comm, gradients) = try makeReducer(.overlapPolling)
        fill(gradients)
        try reducer.layerReady(4)
        try reducer.layerReady(4)
        XCTAssertEqual(comm.calls, [])  // layer 3 is still missing: bucket 0 must not launch
        XCTAssertThrowsError(try reducer.layerReady(5))
        XCTAssertThrowsError(try reducer.layerReady(-1))
        try reducer.finish()
        assertAveraged(gradients)
    }

    func testResetWaitsForLaunchedReductions() throws {
        let (reducer, comm, gradients) = try makeReducer(.overlapPolling)
        comm.testsUntilComplete = 100
        fill(gradients)
        try reducer.layerReady(4)
        try reducer.layerReady(3)
        try reducer.reset()
        XCTAssertEqual(comm.calls.last, .wait(handle: 0))
        comm.clearCalls()
        try reducer.layerReady(4)
        XCTAssertEqual(comm.calls, [], "after reset layer 3 must be reported again")
    }

    func testThreadModeReducesAllBucketsInLaunchOrder() throws {
        let (reducer, comm, gradients) = try makeReducer(.overlapThread)
        for _ in 0..<3 {
            comm.clearCalls()
            fill(gradients)
            for layer in [4, 3, 2, 1, 0] { try reducer.layerReady(layer) }
            try reducer.finish()
            XCTAssertEqual(comm.calls, [.allreduce(16..<19), .allreduce(10..<16), .allreduce(0..<10)])
            assertAveraged(gradients)
        }
    }

    func testThreadModeNeedsSerializedMPI() {
        XCTAssertThrowsError(try makeReducer(.overlapThread, threadLevel: .funneled)) {
            XCTAssertTrue("\($0)".contains("MPI_THREAD_SERIALIZED"), "\($0)")
        }
    }

    func testDeterministicSumsInRankOrder() throws {
        let (reducer, comm, gradients) = try makeReducer(.deterministic, size: 3)
        // 1e8 has an ulp of 8: (1e8 + 3) + 3 rounds back to 1e8 while (3 + 3) + 1e8 gives 1e8 + 8.
        let values: [[Float]] = (0..<3).map { rank in
            (0..<19).map { index in Float(index % 3 == rank ? 1e8 : 3) * (index.isMultiple(of: 2) ? 1 : -1) }
        }
        comm.gatherValue = { rank, element, _ in values[rank][element] }
        for layer in [4, 3, 2, 1, 0] { try reducer.layerReady(layer) }
        try reducer.finish()
        XCTAssertEqual(comm.calls, [.allgather(16..<19), .allgather(10..<16), .allgather(0..<10)])
        let inOrder = (0..<19).map { ((values[0][$0] + values[1][$0]) + values[2][$0]) * (1 / Float(3)) }
        let reversed = (0..<19).map { ((values[2][$0] + values[1][$0]) + values[0][$0]) * (1 / Float(3)) }
        XCTAssertNotEqual(inOrder.map(\.bitPattern), reversed.map(\.bitPattern), "test values must be order-sensitive")
        XCTAssertEqual(gradients.array.map(\.bitPattern), inOrder.map(\.bitPattern))
    }

    func testSharedMemoryModeNeedsTheGradientsInNodeSharedMemory() {
        let gradients = FloatBuffer(count: 8)
        XCTAssertThrowsError(try GradientReducer(communicator: SingleProcessCommunicator(), gradients: gradients.buffer,
                                                 layerStartOffsets: [0], mode: .sharedMemory)) {
            XCTAssertTrue("\($0)".contains("node-shared memory"), "\($0)")
        }
        let elsewhere = FloatBuffer(count: 8)
        let shared = NodeSharedFloats(count: 8, local: elsewhere.pointer, segments: [elsewhere.pointer]) { _ in }
        XCTAssertThrowsError(try GradientReducer(communicator: SingleProcessCommunicator(), gradients: gradients.buffer,
                                                 layerStartOffsets: [0], mode: .sharedMemory, shared: shared)) {
            XCTAssertTrue("\($0)".contains("not these gradients"), "\($0)")
        }
    }

    func testSingleProcessHasNoNodeSharedMemory() throws {
        XCTAssertNil(try SingleProcessCommunicator().allocateNodeShared(floatCount: 100))
    }

    func testEveryModeAveragesOnOneRank() throws {
        // sharedMemory and hierarchical need node-shared memory; the multi-rank self test and ThreadWorld cover them.
        for mode in ReductionMode.allCases where mode != .sharedMemory && mode != .hierarchical {
            let comm = SingleProcessCommunicator()
            let gradients = FloatBuffer([1, -2, 3, 0.5])
            let reducer = try GradientReducer(communicator: comm, gradients: gradients.buffer,
                                              layerStartOffsets: [0, 2], bucketCapacityBytes: 4, mode: mode)
            for layer in [1, 0] { try reducer.layerReady(layer) }
            try reducer.finish()
            XCTAssertEqual(gradients.array, [1, -2, 3, 0.5], "\(mode)")
        }
    }

    func testConvenienceInitReadsFlatTensorLayout() throws {
        let tensors = FlatTensors(layerSpecs: [
            [ParameterSpec(name: "weight", shape: [4, 3], initializer: .zeros), ParameterSpec(name: "bias", shape: [4], initializer: .zeros)],
            [],
            [ParameterSpec(name: "weight", shape: [2, 4], initializer: .zeros)],
        ], withGradients: true)
        let reducer = try GradientReducer(communicator: SingleProcessCommunicator(), parameters: tensors, layerCount: 3,
                                          bucketCapacityBytes: 1, mode: .blocking)
        XCTAssertEqual(reducer.buckets, [GradientBucket(elements: 16..<24, layers: 2...2),
                                         GradientBucket(elements: 0..<16, layers: 0...1)])
    }
}
