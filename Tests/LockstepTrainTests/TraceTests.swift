import Foundation
import XCTest
import LockstepComm
import LockstepCore
@testable import LockstepTrain
@testable import LockstepConfig
@testable import LockstepBench
@testable import LockstepCLI

final class TraceTests: XCTestCase {
    private func parse(_ text: String) throws -> [[String: Any]] {
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        return try XCTUnwrap(object?["traceEvents"] as? [[String: Any]])
    }

    private func spans(_ events: [[String: Any]]) -> [[String: Any]] { events.filter { $0["ph"] as? String == "X" } }

    func testRingKeepsNewestEventsInOrder() {
        let trace = ChromeTrace(rank: 0, capacity: 4)
        let name = trace.register("work", category: "test")
        XCTAssertEqual(trace.register("work", category: "test"), name, "registering again returns the same name")
        for i in 0..<6 { trace.record(name, start: UInt64(i * 10), end: UInt64(i * 10 + 5)) }
        XCTAssertEqual(trace.recordedCount, 6)
        XCTAssertEqual(trace.droppedCount, 2)
        XCTAssertEqual(trace.events.map(\.start), [20, 30, 40, 50])
        XCTAssertEqual(trace.events.map(\.duration), [5, 5, 5, 5])
    }

    func testEventObjectsAreValidTraceEventFormat() throws {
        let trace = ChromeTrace(rank: 3, capacity: 8)
        let name = trace.register("layer \"quoted\"\\path", category: "backward")
        trace.nameLane(2, "allreduce bucket 1")
        trace.record(name, start: 1_000_000 + 2_500, end: 1_000_000 + 4_000, lane: 2)
        let events = try parse(ChromeTrace.document([trace.eventObjects(origin: 1_000_000)]))
        let span = try XCTUnwrap(spans(events).first)
        XCTAssertEqual(span["name"] as? String, "layer \"quoted\"\\path")
        XCTAssertEqual(span["cat"] as? String, "backward")
        XCTAssertEqual(span["pid"] as? Int, 3)
        XCTAssertEqual(span["tid"] as? Int, 2)
        XCTAssertEqual(try XCTUnwrap(span["ts"] as? Double), 2.5, accuracy: 1e-9)  // microseconds
        XCTAssertEqual(try XCTUnwrap(span["dur"] as? Double), 1.5, accuracy: 1e-9)
        let metadata = events.filter { $0["ph"] as? String == "M" }
        XCTAssertTrue(metadata.contains { ($0["args"] as? [String: Any])?["name"] as? String == "rank 3" })
        XCTAssertTrue(metadata.contains { ($0["args"] as? [String: Any])?["name"] as? String == "allreduce bucket 1" && $0["tid"] as? Int == 2 })
    }

    func testTrainingTraceNestsLayersInBackwardAndPhasesInStep() throws {
        let training = TrainingTrace(rank: 0, capacity: 64)
        training.prepare(layerKinds: ["linear", "relu", "linear"], bucketDescriptions: ["layers 0...2"])
        training.beginStep()
        training.lap(.data)
        training.lap(.forward)
        for layer in [2, 1, 0] { training.layerBackwardDone(layer) }
        training.lap(.backward)
        let start = ChromeTrace.now()
        training.bucketReduced(0, start: start, end: start + 1000)
        training.lap(.allreduceWait)
        training.lap(.optimizer)
        training.endStep()

        let events = training.trace.events
        let names = events.map { training.trace.text(of: $0.name) }
        XCTAssertEqual(names, ["data", "forward", "backward layers.2 linear", "backward layers.1 relu", "backward layers.0 linear",
                               "backward", "allreduce bucket 0 (layers 0...2)", "allreduce_wait", "optimizer", "step"])
        let step = try XCTUnwrap(events.last)
        for event in events.dropLast() where event.lane == 0 {
            XCTAssertGreaterThanOrEqual(event.start, step.start)
            XCTAssertLessThanOrEqual(event.start + event.duration, step.start + step.duration)
        }
        let backward = events[5]
        for layer in events[2...4] {
            XCTAssertGreaterThanOrEqual(layer.start, backward.start)
            XCTAssertLessThanOrEqual(layer.start + layer.duration, backward.start + backward.duration)
        }
        XCTAssertEqual(events[6].lane, 1, "bucket 0 has its own row")
        XCTAssertEqual(events[6].duration, 1000)
    }

    func testWriteProducesOneFileStartingAtZero() throws {
        let training = TrainingTrace(rank: 0, capacity: 16)
        training.prepare(layerKinds: ["linear"], bucketDescriptions: [])
        for _ in 0..<3 {
            training.beginStep()
            training.lap(.forward)
            training.endStep()
        }
        let path = NSTemporaryDirectory() + "lockstep-trace-\(getpid()).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try training.write(to: path, communicator: SingleProcessCommunicator())
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let written = spans(try parse(text))
        XCTAssertEqual(written.count, 6)
        XCTAssertEqual(written.compactMap { $0["ts"] as? Double }.min(), 0)
        XCTAssertEqual(Set(written.compactMap { $0["pid"] as? Int }), [0])
    }

    func testGradientReducerReportsEachBucketOnce() throws {
        let gradients = FloatBuffer(count: 300)
        let reducer = try GradientReducer(communicator: SingleProcessCommunicator(), gradients: gradients.buffer,
                                          layerStartOffsets: [0, 100, 200], bucketCapacityBytes: 400)
        var reported: [(Int, UInt64, UInt64)] = []
        reducer.bucketReduced = { reported.append(($0, $1, $2)) }
        for step in 0..<2 {
            for layer in [2, 1, 0] { try reducer.layerReady(layer) }
            try reducer.finish()
            XCTAssertEqual(reported.count, reducer.buckets.count * (step + 1))
        }
        XCTAssertEqual(Set(reported.map(\.0)), Set(0..<reducer.buckets.count))
        XCTAssertGreaterThan(reducer.buckets.count, 1)
        for (_, start, end) in reported { XCTAssertLessThanOrEqual(start, end) }
    }
}
