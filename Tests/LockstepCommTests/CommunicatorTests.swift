import LockstepComm
import LockstepCore
import XCTest

final class CommunicatorTests: XCTestCase {
    func testSingleProcessTopology() {
        let comm = SingleProcessCommunicator()
        XCTAssertEqual([comm.rank, comm.size, comm.localRank, comm.localSize], [0, 1, 0, 1])
        XCTAssertEqual(comm.threadLevel, .multiple)
    }

    func testSingleProcessReductionsLeaveValuesUnchanged() throws {
        let comm = SingleProcessCommunicator()
        let floats = FloatBuffer([1.5, -2, 3])
        try comm.allreduceSum(floats.buffer)
        XCTAssertEqual(floats.array, [1.5, -2, 3])
        var doubles: [Double] = [0.25, 7]
        try doubles.withUnsafeMutableBufferPointer { try comm.allreduceSum($0) }
        XCTAssertEqual(doubles, [0.25, 7])
        for operation in ReduceOperation.allCases {
            XCTAssertEqual(try comm.allreduce(Int64(-9), operation: operation), -9)
        }
        let pending = try comm.startAllreduceSum(floats.buffer)
        XCTAssertTrue(try pending.test())
        try pending.wait()
        XCTAssertEqual(floats.array, [1.5, -2, 3])
    }

    func testSingleProcessAllgatherCopiesAndChecksSizes() throws {
        let comm = SingleProcessCommunicator()
        let send: [UInt8] = [1, 2, 3]
        var receive = [UInt8](repeating: 0, count: 3)
        try send.withUnsafeBytes { s in try receive.withUnsafeMutableBytes { try comm.allgather(send: s, receive: $0) } }
        XCTAssertEqual(receive, send)
        var tooBig = [UInt8](repeating: 0, count: 4)
        XCTAssertThrowsError(try send.withUnsafeBytes { s in
            try tooBig.withUnsafeMutableBytes { try comm.allgather(send: s, receive: $0) }
        }) { error in
            XCTAssertTrue("\(error)".contains("4 bytes"), "message should name the wrong size: \(error)")
        }
    }

    func testSingleProcessBroadcastRejectsOtherRoots() throws {
        let comm = SingleProcessCommunicator()
        var bytes: [UInt8] = [5, 6]
        try bytes.withUnsafeMutableBytes { try comm.broadcast($0, root: 0) }
        XCTAssertEqual(bytes, [5, 6])
        XCTAssertThrowsError(try bytes.withUnsafeMutableBytes { try comm.broadcast($0, root: 1) }) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("broadcast") && text.contains("root 1") && text.contains("rank 0"), text)
        }
    }

    func testFlightRecorderNamesCallSitesInOrder() throws {
        let comm = SingleProcessCommunicator()
        let floats = FloatBuffer(count: 12)
        try comm.allreduceSum(floats.buffer); let reduceLine = #line
        try comm.barrier(); let barrierLine = #line
        XCTAssertEqual(comm.sequenceNumber, 2)
        let lines = comm.recentCollectives(limit: 10)
        XCTAssertEqual(lines.count, 2)
        XCTAssertEqual(lines[0], "#1 allreduceSum float32 × 12 at LockstepCommTests/CommunicatorTests.swift:\(reduceLine)")
        XCTAssertEqual(lines[1], "#2 barrier at LockstepCommTests/CommunicatorTests.swift:\(barrierLine)")
    }

    func testFlightRecorderRingKeepsTheNewest() {
        let recorder = FlightRecorder(capacity: 4)
        for count in 1...10 { recorder.record(.allgather, .bytes, count: count, at: CallSite()) }
        XCTAssertEqual(recorder.sequenceNumber, 10)
        XCTAssertEqual(recorder.recent(limit: 100).map(\.sequence), [7, 8, 9, 10])
        XCTAssertEqual(recorder.recent(limit: 2).map(\.count), [9, 10])
        XCTAssertEqual(recorder.recent(limit: 0).count, 0)
        let broadcast = FlightRecorder(capacity: 2)
        broadcast.record(.broadcast, .bytes, count: 8, root: 3, at: CallSite(file: "A/B.swift", line: 7))
        XCTAssertEqual(broadcast.recentLines(limit: 1), ["#1 broadcast bytes × 8 root 3 at A/B.swift:7"])
    }

    func testMakeCommunicatorWithoutLauncherIsSingleProcess() throws {
        try XCTSkipIf(isLaunchedByMPI(), "running under mpirun")
        let comm = try makeCommunicator()
        XCTAssertTrue(comm is SingleProcessCommunicator)
        XCTAssertEqual(comm.size, 1)
    }

    func testErrorMessageCarriesOperationRankAndMPIText() {
        // MPI is not initialized here: OpenMPI would abort in MPI_Error_string, so the shim answers itself.
        let text = CommunicationError.mpiErrorString(15)
        XCTAssertEqual(text, "MPI error 15 (no text: MPI is not initialized)")
        let error = CommunicationError(operation: "allreduceSum(float32 × 4)", rank: 3, mpiErrorCode: 15, message: text)
        XCTAssertEqual(error.description, "allreduceSum(float32 × 4) failed on rank 3: \(text) (MPI error 15)")
    }

    func testThreadLevelsAreOrderedAndRoundTrip() {
        XCTAssertLessThan(ThreadLevel.funneled, ThreadLevel.serialized)
        for level in ThreadLevel.allCases { XCTAssertEqual(ThreadLevel(mpiValue: level.mpiValue), level) }
        XCTAssertEqual(ThreadLevel.serialized.description, "MPI_THREAD_SERIALIZED")
    }

    func testSelfTestPassesOnOneRank() throws {
        let summary = try runCommunicatorSelfTest(SingleProcessCommunicator())
        XCTAssertTrue(summary.hasPrefix("comm selftest passed on rank 0 of 1"), summary)
    }

    func testSelfTestCatchesABrokenCommunicator() {
        // Pretends to be 2 identical ranks: sums double, but allgather does not vary by rank, so checks must fail.
        let broken = RecordingCommunicator(size: 2)
        XCTAssertThrowsError(try runCommunicatorSelfTest(broken)) { error in
            XCTAssertTrue(error is CommunicatorSelfTestError, "\(error)")
        }
    }
}
