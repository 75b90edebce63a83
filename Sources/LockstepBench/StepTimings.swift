import Foundation
import LockstepCore
import LockstepTrain

/// Per-step wall time of each phase of a training step, recorded into preallocated storage (benchmarks).
public final class StepTimings: StepObserver {
    /// The phases of one step, in order.
    public typealias Phase = StepPhase

    private var seconds: [[Double]]
    private var current = [Double](repeating: 0, count: Phase.allCases.count)
    private var mark: UInt64 = 0
    /// Steps recorded so far (at most the capacity).
    public private(set) var count = 0
    /// Steps to ignore before recording (warm-up).
    public let warmupSteps: Int
    private var seen = 0

    /// Room for `capacity` steps after `warmupSteps` ignored ones.
    public init(capacity: Int, warmupSteps: Int) {
        seconds = Array(repeating: [Double](repeating: 0, count: capacity), count: Phase.allCases.count)
        self.warmupSteps = warmupSteps
    }

    /// Starts timing a step.
    @inline(__always) public func beginStep() {
        for i in current.indices { current[i] = 0 }
        mark = DispatchTime.now().uptimeNanoseconds
    }

    /// Charges the time since the last mark to `phase`.
    @inline(__always) public func lap(_ phase: Phase) {
        let now = DispatchTime.now().uptimeNanoseconds
        current[phase.rawValue] += Double(now - mark) * 1e-9
        mark = now
    }

    /// Ends the step; stored if past warm-up and there is room.
    @inline(__always) public func endStep() {
        seen += 1
        guard seen > warmupSteps, count < seconds[0].count else { return }
        for phase in 0..<current.count { seconds[phase][count] = current[phase] }
        count += 1
    }

    /// Median seconds of `phase` over the recorded steps.
    public func median(_ phase: Phase) -> Double { Statistics.median(Array(seconds[phase.rawValue][0..<count])) }

    /// Median of the per-step totals.
    public func medianTotal() -> Double {
        Statistics.median((0..<count).map { step in seconds.reduce(0) { $0 + $1[step] } })
    }
}
