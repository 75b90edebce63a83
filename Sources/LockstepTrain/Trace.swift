import Foundation
import LockstepCore
import LockstepComm

/// A per-rank recorder of timed spans in Chrome's Trace Event Format (open in chrome://tracing or ui.perfetto.dev).
///
/// Events go into a ring preallocated at init (oldest overwritten when full), so recording allocates nothing;
/// names are interned up front with `register`. Nothing is formatted until `write`.
public final class ChromeTrace {
    /// An interned span name (index into the name table).
    public struct Name: Sendable, Equatable {
        /// Position in the name table.
        public let index: Int32
    }

    /// One recorded span, timestamps in uptime nanoseconds.
    public struct Event: Sendable, Equatable {
        /// Interned name.
        public var name: Name
        /// Row within the rank (Chrome "tid").
        public var lane: Int
        /// Start, `DispatchTime` uptime nanoseconds.
        public var start: UInt64
        /// Length in nanoseconds.
        public var duration: UInt64
    }

    /// Rank shown as the Chrome "pid".
    public let rank: Int
    /// Events the ring holds at most.
    public let capacity: Int
    /// Events recorded since creation, including overwritten ones.
    public private(set) var recordedCount = 0
    /// Events lost because the ring wrapped.
    public var droppedCount: Int { max(0, recordedCount - capacity) }

    private var names: [String] = []
    private var categories: [String] = []
    private var laneNames: [Int: String] = [:]
    private let nameIndices: UnsafeMutablePointer<Int32>
    private let lanes: UnsafeMutablePointer<Int32>
    private let starts: UnsafeMutablePointer<UInt64>
    private let durations: UnsafeMutablePointer<UInt64>

    /// A ring of `capacity` events for `rank`.
    public init(rank: Int, capacity: Int = 1 << 16) {
        self.rank = rank
        self.capacity = max(1, capacity)
        nameIndices = .allocate(capacity: self.capacity)
        lanes = .allocate(capacity: self.capacity)
        starts = .allocate(capacity: self.capacity)
        durations = .allocate(capacity: self.capacity)
    }

    deinit {
        nameIndices.deallocate(); lanes.deallocate(); starts.deallocate(); durations.deallocate()
    }

    /// Current time on the clock events use (uptime nanoseconds, shared by all processes of one node).
    @inline(__always) public static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Interns `name` (with Chrome category `category`); registering the same pair again returns the same `Name`.
    public func register(_ name: String, category: String) -> Name {
        for index in names.indices where names[index] == name && categories[index] == category {
            return Name(index: Int32(index))
        }
        names.append(name)
        categories.append(category)
        return Name(index: Int32(names.count - 1))
    }

    /// Labels row `lane` (Chrome thread name), e.g. "compute" or "allreduce bucket 0".
    public func nameLane(_ lane: Int, _ label: String) { laneNames[lane] = label }

    /// Text of an interned name.
    public func text(of name: Name) -> String { names[Int(name.index)] }

    /// Records a span from `start` to `end` (uptime nanoseconds) on row `lane`; overwrites the oldest when full.
    @inline(__always) public func record(_ name: Name, start: UInt64, end: UInt64, lane: Int = 0) {
        let slot = recordedCount % capacity
        nameIndices[slot] = name.index
        lanes[slot] = Int32(truncatingIfNeeded: lane)
        starts[slot] = start
        durations[slot] = end >= start ? end - start : 0
        recordedCount += 1
    }

    /// The surviving events, oldest first.
    public var events: [Event] {
        let kept = min(recordedCount, capacity)
        let first = recordedCount - kept
        return (first..<recordedCount).map { position in
            let slot = position % capacity
            return Event(name: Name(index: nameIndices[slot]), lane: Int(lanes[slot]), start: starts[slot], duration: durations[slot])
        }
    }

    /// This rank's events as comma-separated Trace Event objects (no brackets), with `ts` in microseconds after
    /// `origin` (uptime nanoseconds), preceded by metadata naming the process ("rank N") and its rows.
    public func eventObjects(origin: UInt64) -> String {
        var parts: [String] = []
        parts.append("{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":\(rank),\"tid\":0,\"args\":{\"name\":\"rank \(rank)\"}}")
        parts.append("{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":\(rank),\"tid\":0,\"args\":{\"sort_index\":\(rank)}}")
        for (lane, label) in laneNames.sorted(by: { $0.key < $1.key }) {
            parts.append("{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":\(rank),\"tid\":\(lane),\"args\":{\"name\":\(JSONText.quoted(label))}}")
        }
        for event in events {
            // Microseconds with nanosecond resolution; events before the origin (other rank's clock) clamp to 0.
            let ts = Double(Int64(bitPattern: event.start &- origin)) / 1000
            parts.append("{\"name\":\(JSONText.quoted(names[Int(event.name.index)])),\"cat\":\(JSONText.quoted(categories[Int(event.name.index)])),"
                + "\"ph\":\"X\",\"ts\":\(ChromeTrace.format(max(ts, 0))),\"dur\":\(ChromeTrace.format(Double(event.duration) / 1000)),"
                + "\"pid\":\(rank),\"tid\":\(event.lane)}")
        }
        return parts.joined(separator: ",\n")
    }

    /// A complete trace document from ranks' `eventObjects` strings.
    public static func document(_ rankEventObjects: [String]) -> String {
        "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n" + rankEventObjects.filter { !$0.isEmpty }.joined(separator: ",\n") + "\n]}\n"
    }

    /// Collective: every rank calls it; rank 0 writes one file at `path` holding all ranks' events.
    ///
    /// Clocks are aligned at a barrier: each rank's time at barrier exit is taken as equal to rank 0's (exact on
    /// one node, where all ranks read the same monotonic clock; off by the barrier skew, microseconds, across nodes).
    /// Timestamps start at rank 0's earliest event.
    public func write(to path: String, communicator: any Communicator) throws {
        try communicator.barrier()
        let synchronized = ChromeTrace.now()
        let localFirst = events.first?.start ?? synchronized
        // Shared values: this rank's barrier time and its earliest event relative to that time.
        let mine: [Int64] = [Int64(bitPattern: synchronized), Int64(bitPattern: localFirst &- synchronized)]
        let all = try communicator.allgather(mine)
        // Origin on this rank's clock: the earliest event of any rank, mapped through the barrier times.
        let earliestOffset = (0..<communicator.size).map { all[2 * $0 + 1] }.min() ?? 0
        let origin = synchronized &+ UInt64(bitPattern: earliestOffset)
        let texts = try communicator.allgather(text: eventObjects(origin: origin))
        guard communicator.rank == 0 else { return }
        let document = ChromeTrace.document(texts)
        guard FileManager.default.createFile(atPath: path, contents: Data(document.utf8)) else {
            throw ConfigError("--trace \(path): cannot write the file (check the directory exists and is writable)")
        }
    }


    static func format(_ microseconds: Double) -> String { String(format: "%.3f", microseconds) }
}

/// The spans of a training step, recorded into a `ChromeTrace` as a `StepObserver`,
/// one per layer in backward, one per reduced bucket (from `GradientReducer.bucketReduced`).
///
/// Rows: 0 "step" holds a span per step with the phases nested inside it and per-layer backward spans nested in
/// "backward"; row 1 + b holds bucket b's allreduce (its own row, since overlapped buckets may be in flight together).
public final class TrainingTrace: StepObserver {
    /// The underlying event ring.
    public let trace: ChromeTrace
    private let stepName: ChromeTrace.Name
    private let phaseNames: [ChromeTrace.Name]
    private var layerNames: [ChromeTrace.Name] = []
    private var bucketNames: [ChromeTrace.Name] = []
    private var stepStart: UInt64 = 0
    private var phaseStart: UInt64 = 0
    private var layerStart: UInt64 = 0

    /// A trace for `rank` holding up to `capacity` spans (about 8 + layers + buckets per step).
    public init(rank: Int, capacity: Int = 1 << 17) {
        let trace = ChromeTrace(rank: rank, capacity: capacity)
        stepName = trace.register("step", category: "step")
        phaseNames = StepPhase.allCases.map { trace.register($0.name, category: "phase") }
        trace.nameLane(0, "step")
        self.trace = trace
    }

    /// Interns per-layer and per-bucket names (allocates; call before the first step, again is harmless).
    /// `layerKinds[i]` is layer i's kind; `bucketDescriptions[b]` describes bucket b.
    public func prepare(layerKinds: [String], bucketDescriptions: [String]) {
        layerNames = layerKinds.enumerated().map { trace.register("backward layers.\($0.offset) \($0.element)", category: "backward") }
        bucketNames = bucketDescriptions.enumerated().map { trace.register("allreduce bucket \($0.offset) (\($0.element))", category: "allreduce") }
        for bucket in bucketDescriptions.indices { trace.nameLane(1 + bucket, "allreduce bucket \(bucket)") }
    }

    /// Step starts .
    @inline(__always) public func beginStep() {
        stepStart = ChromeTrace.now()
        phaseStart = stepStart
        layerStart = stepStart
    }

    /// `phase` ends now; the next phase starts now.
    @inline(__always) public func lap(_ phase: StepPhase) {
        let now = ChromeTrace.now()
        trace.record(phaseNames[phase.rawValue], start: phaseStart, end: now)
        phaseStart = now
        layerStart = now
    }

    /// Layer `index`'s backward is done (the `layerDone` callback of `Sequential.backward`). The first layer's
    /// span also holds the loss backward, which runs before it.
    @inline(__always) public func layerBackwardDone(_ index: Int) {
        let now = ChromeTrace.now()
        if index >= 0 && index < layerNames.count { trace.record(layerNames[index], start: layerStart, end: now) }
        layerStart = now
    }

    /// Bucket `bucket` was reduced from `start` to `end` (uptime ns); matches `GradientReducer.bucketReduced`.
    @inline(__always) public func bucketReduced(_ bucket: Int, start: UInt64, end: UInt64) {
        guard bucket >= 0 && bucket < bucketNames.count else { return }
        trace.record(bucketNames[bucket], start: start, end: end, lane: 1 + bucket)
    }

    /// Step ends : records the enclosing "step" span.
    @inline(__always) public func endStep() {
        trace.record(stepName, start: stepStart, end: ChromeTrace.now())
    }

    /// Collective: rank 0 writes every rank's spans to `path` (see `ChromeTrace.write`).
    public func write(to path: String, communicator: any Communicator) throws {
        try trace.write(to: path, communicator: communicator)
    }
}
