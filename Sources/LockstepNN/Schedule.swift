/// A learning rate as a pure function of the optimizer step (0-based index of the update about to run),
/// so a resumed run gets exactly the rate it would have had.
public protocol LearningRateSchedule: Sendable {
    /// Learning rate for update number `step` (0 for the first update).
    func learningRate(step: Int) -> Float
}

/// The same rate at every step.
public struct ConstantSchedule: LearningRateSchedule, Equatable {
    /// The rate.
    public var baseLearningRate: Float
    /// Creates a constant schedule.
    public init(learningRate: Float) { baseLearningRate = learningRate }
    /// The rate for update number `step`.
    public func learningRate(step: Int) -> Float { baseLearningRate }
}

/// lr · gamma^⌊step / stepSize⌋ (PyTorch StepLR counted in optimizer steps).
public struct StepDecaySchedule: LearningRateSchedule, Equatable {
    /// Rate before the first decay.
    public var baseLearningRate: Float
    /// Steps between decays.
    public var stepSize: Int
    /// Multiplier applied at each decay.
    public var gamma: Float

    /// Creates a step-decay schedule; `stepSize` must be positive.
    public init(learningRate: Float, stepSize: Int, gamma: Float) {
        precondition(stepSize > 0, "StepDecaySchedule stepSize must be positive, got \(stepSize)")
        baseLearningRate = learningRate; self.stepSize = stepSize; self.gamma = gamma
    }

    /// The rate for update number `step`.
    public func learningRate(step: Int) -> Float {
        let decays = max(step, 0) / stepSize
        // Double power avoids drift from repeated Float multiplication over many decays.
        return Float(Double(baseLearningRate) * _power(Double(gamma), Double(decays)))
    }
}

/// Cosine annealing from lr at step 0 to `minimumLearningRate` at `totalSteps`, then held at the minimum:
/// min + (lr - min) · (1 + cos(π · step / totalSteps)) / 2.
public struct CosineSchedule: LearningRateSchedule, Equatable {
    /// Rate at step 0.
    public var baseLearningRate: Float
    /// Steps over which the rate falls to the minimum.
    public var totalSteps: Int
    /// Rate from `totalSteps` on.
    public var minimumLearningRate: Float

    /// Creates a cosine schedule; `totalSteps` must be positive.
    public init(learningRate: Float, totalSteps: Int, minimumLearningRate: Float = 0) {
        precondition(totalSteps > 0, "CosineSchedule totalSteps must be positive, got \(totalSteps)")
        baseLearningRate = learningRate; self.totalSteps = totalSteps; self.minimumLearningRate = minimumLearningRate
    }

    /// The rate for update number `step`.
    public func learningRate(step: Int) -> Float {
        let progress = Double(min(max(step, 0), totalSteps)) / Double(totalSteps)
        let cosine = (1 + _cosine(Double.pi * progress)) / 2
        let low = Double(minimumLearningRate)
        return Float(low + (Double(baseLearningRate) - low) * cosine)
    }
}

/// Linear warmup in front of any schedule (PyTorch LinearLR followed by the base schedule, as SequentialLR does).
///
/// For step < warmupSteps the rate is base(0) · (startFactor + (1 - startFactor) · step / warmupSteps), rising from
/// startFactor·lr toward lr; from then on it is base(step - warmupSteps), so the base schedule starts fresh after
/// warmup (give a cosine base `totalSteps` = run length − warmupSteps to end at the run's last step).
public struct WarmupSchedule: LearningRateSchedule {
    /// Number of warmup steps (0 disables warmup).
    public var warmupSteps: Int
    /// Fraction of the base rate used at step 0.
    public var warmupStartFactor: Float
    /// Schedule that runs after warmup.
    public var base: any LearningRateSchedule

    /// Wraps `base` with `warmupSteps` of linear warmup starting at `warmupStartFactor` · base(0).
    public init(warmupSteps: Int, warmupStartFactor: Float = 0, base: any LearningRateSchedule) {
        precondition(warmupSteps >= 0, "WarmupSchedule warmupSteps must be non-negative, got \(warmupSteps)")
        self.warmupSteps = warmupSteps; self.warmupStartFactor = warmupStartFactor; self.base = base
    }

    /// The rate for update number `step`.
    public func learningRate(step: Int) -> Float {
        let step = max(step, 0)
        guard step < warmupSteps else { return base.learningRate(step: step - warmupSteps) }
        let fraction = Double(step) / Double(warmupSteps)
        let factor = Double(warmupStartFactor) + (1 - Double(warmupStartFactor)) * fraction
        return Float(Double(base.learningRate(step: 0)) * factor)
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) private func _power(_ x: Double, _ y: Double) -> Double { Glibc.pow(x, y) }
@inline(__always) private func _cosine(_ x: Double) -> Double { Glibc.cos(x) }
#else
import Darwin
@inline(__always) private func _power(_ x: Double, _ y: Double) -> Double { Darwin.pow(x, y) }
@inline(__always) private func _cosine(_ x: Double) -> Double { Darwin.cos(x) }
#endif
