/// The phases of one training step, in order.
public enum StepPhase: Int, CaseIterable, Sendable {
    case data, forward, backward, allreduceWait, optimizer
    /// Name used in reports and JSON.
    public var name: String { ["data", "forward", "backward", "allreduce_wait", "optimizer"][rawValue] }
}

/// Watches a `Trainer`'s steps from its training thread (benchmark timings, the Chrome trace). Calls must cost
/// next to nothing and allocate nothing.
public protocol StepObserver: AnyObject {
    /// Once before training: the layers' kinds and the gradient buckets, in launch order.
    func prepare(layerKinds: [String], bucketDescriptions: [String])
    /// A step starts.
    func beginStep()
    /// `phase` ends now (it began where the previous phase ended).
    func lap(_ phase: StepPhase)
    /// Layer `layer` finished its backward.
    func layerBackwardDone(_ layer: Int)
    /// Bucket `bucket`'s reduction ran from `start` to `end` (DispatchTime uptime nanoseconds).
    func bucketReduced(_ bucket: Int, start: UInt64, end: UInt64)
    /// The step ends.
    func endStep()
}

extension StepObserver {
    public func prepare(layerKinds: [String], bucketDescriptions: [String]) {}
    public func layerBackwardDone(_ layer: Int) {}
    public func bucketReduced(_ bucket: Int, start: UInt64, end: UInt64) {}
}

/// Several observers as one (e.g. timings and a trace in `bench train --trace`).
public final class StepObservers: StepObserver {
    private let observers: [StepObserver]
    /// Forwards every call to each of `observers`, in order.
    public init(_ observers: [StepObserver]) { self.observers = observers }
    public func prepare(layerKinds: [String], bucketDescriptions: [String]) {
        for observer in observers { observer.prepare(layerKinds: layerKinds, bucketDescriptions: bucketDescriptions) }
    }
    public func beginStep() { for observer in observers { observer.beginStep() } }
    public func lap(_ phase: StepPhase) { for observer in observers { observer.lap(phase) } }
    public func layerBackwardDone(_ layer: Int) { for observer in observers { observer.layerBackwardDone(layer) } }
    public func bucketReduced(_ bucket: Int, start: UInt64, end: UInt64) {
        for observer in observers { observer.bucketReduced(bucket, start: start, end: end) }
    }
    public func endStep() { for observer in observers { observer.endStep() } }
}
