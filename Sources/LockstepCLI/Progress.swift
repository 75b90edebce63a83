import Foundation
import LockstepTrain

/// Rank 0's progress display: a redrawn bar with loss, samples/s and ETA on a terminal, plain lines otherwise.
final class ProgressDisplay {
    private let totalSteps: Int
    private let samplesPerStep: Int
    private let interactive: Bool
    private let start = Date()
    private var lastDraw = Date.distantPast
    private var runningLoss: Float = .nan

    init(totalSteps: Int, samplesPerStep: Int, enabled: Bool) {
        self.totalSteps = max(totalSteps, 1)
        self.samplesPerStep = samplesPerStep
        interactive = enabled && isatty(STDERR_FILENO) != 0
    }

    /// Called after every optimizer step; redraws at most five times a second.
    func step(_ step: Int, loss: Float) {
        runningLoss = runningLoss.isNaN ? loss : 0.95 * runningLoss + 0.05 * loss
        guard interactive else { return }
        let now = Date()
        guard now.timeIntervalSince(lastDraw) > 0.2 || step == totalSteps else { return }
        lastDraw = now
        let elapsed = now.timeIntervalSince(start)
        let fraction = Double(step) / Double(totalSteps)
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let rate = Double(step * samplesPerStep) / max(elapsed, 1e-9)
        let eta = fraction > 0 ? elapsed / fraction - elapsed : 0
        let line = String(format: "\r[%@] %3.0f%% step %d/%d loss %.4f %.0f samples/s ETA %@ ", bar, fraction * 100,
                          step, totalSteps, Double(runningLoss), rate, ProgressDisplay.duration(eta))
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// Ends the bar line before other output.
    func clearLine() {
        guard interactive else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(s % 3600 / 60)m" : s >= 60 ? "\(s / 60)m\(s % 60)s" : "\(s)s"
    }
}
