import LockstepComm
import XCTest

/// The choice between ordinary and streaming stores for a parameter slice, driven by made-up timings.
final class SliceWriteTunerTests: XCTestCase {
    /// Runs one trial cycle: `cached` and `streaming` nanoseconds for whichever method each write uses.
    private func cycle(_ tuner: inout SliceWriteTuner, cached: UInt64, streaming: UInt64) -> [SliceWriteMethod] {
        (0..<tuner.period).map { _ in
            let method = tuner.methodForNextWrite
            tuner.record(nanoseconds: method == .cached ? cached : streaming)
            return method
        }
    }

    func testStartsCachedAndTriesStreamingForOneTrialPerCycle() {
        var tuner = SliceWriteTuner(period: 32, trialLength: 4)
        XCTAssertEqual(tuner.method, .cached)
        let methods = cycle(&tuner, cached: 75_000, streaming: 90_000)
        XCTAssertEqual(methods.indices.filter { methods[$0] == .streaming }, [4, 5, 6, 7])
        XCTAssertEqual(tuner.method, .cached, "streaming was slower")
    }

    func testSwitchesToStreamingWhenOrdinaryStoresWaitForTheOtherCaches() {
        var tuner = SliceWriteTuner(period: 32, trialLength: 4)
        _ = cycle(&tuner, cached: 250_000, streaming: 90_000)
        XCTAssertEqual(tuner.method, .streaming)
        // Now the trials use ordinary stores, and the tuner returns to them once they are cheap again.
        let methods = cycle(&tuner, cached: 250_000, streaming: 90_000)
        XCTAssertEqual(methods.indices.filter { methods[$0] == .cached }, [4, 5, 6, 7])
        XCTAssertEqual(tuner.method, .streaming)
        _ = cycle(&tuner, cached: 11_000, streaming: 90_000)
        XCTAssertEqual(tuner.method, .cached)
    }

    /// Streaming's readers pay for reading from memory, which the writer's timing does not see: a small lead is not
    /// enough to switch.
    func testStreamingMustWinByTheMargin() {
        var tuner = SliceWriteTuner(period: 32, trialLength: 4, streamingMargin: 1.25)
        _ = cycle(&tuner, cached: 100_000, streaming: 85_000)
        XCTAssertEqual(tuner.method, .cached, "100 µs against 85 × 1.25")
        _ = cycle(&tuner, cached: 100_000, streaming: 70_000)
        XCTAssertEqual(tuner.method, .streaming, "100 µs against 70 × 1.25")
    }

    /// `timedWrite` hands the write the method `methodForNextWrite` names and counts it (which method wins these
    /// empty writes is up to the clock, so only the schedule is checked).
    func testTimedWriteRunsTheWriteWithTheMethodForThisStep() {
        var tuner = SliceWriteTuner(period: 8, trialLength: 2)
        var used: [SliceWriteMethod] = []
        for _ in 0..<8 { tuner.timedWrite { used.append($0) } }
        XCTAssertEqual(Array(used[0..<4]), [.cached, .cached, .streaming, .streaming])
        XCTAssertEqual(Array(used[4..<8]), Array(repeating: tuner.method, count: 4))
        XCTAssertEqual(tuner.writes, 8)
    }

    /// The median of each trial decides: one slow write (a preemption) does not flip the choice.
    func testOneOutlierDoesNotDecide() {
        var tuner = SliceWriteTuner(period: 32, trialLength: 5)
        var timings: [UInt64] = [75_000, 75_000, 9_000_000, 75_000, 75_000]  // the current method's five, one preempted
        for step in 0..<32 {
            let method = tuner.methodForNextWrite
            tuner.record(nanoseconds: step < 5 ? timings.removeFirst() : (method == .cached ? 75_000 : 90_000))
        }
        XCTAssertEqual(tuner.method, .cached)
    }
}
