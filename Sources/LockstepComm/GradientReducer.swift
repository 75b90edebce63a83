import Foundation
import LockstepCore

/// How `GradientReducer` moves gradients between ranks.
///
/// No overlap is the default: on one node the reduction is itself CPU work (copies and sums) on the cores that run
/// backward, so overlapping gained nothing in measurements on a 2-core machine, while MPI_Iallreduce took about 2×
/// as long as the blocking call. The Trainer picks `.sharedMemory` when every rank is on one node, `.hierarchical`
/// when ranks span several nodes with the same number on each, and `.blocking` otherwise. The overlap modes are for
/// nodes with idle cores or network offload.
public enum ReductionMode: String, Sendable, CaseIterable {
    /// Everything reduced in `finish()`, one blocking allreduce per bucket: the no-overlap baseline.
    case blocking
    /// Nonblocking allreduce at bucket launch; `layerReady` polls (MPI_Test) to drive progress during backward.
    /// The bucket launched last (no backward left to hide it) uses the blocking call, which is about 2× faster.
    case overlapPolling
    /// A dedicated thread runs blocking allreduces on launched buckets; needs MPI_THREAD_SERIALIZED or better.
    /// The bucket launched last is reduced on the calling thread in `finish()`, saving the hand-off.
    case overlapThread
    /// Allgather each bucket and sum in rank order 0, 1, 2…: bitwise reproducible, independent of MPI's algorithm.
    /// Given node-shared gradients across nodes (as `.hierarchical` takes them), the same sum is built along a chain
    /// of nodes instead, with the same bits and the same link traffic as the 2-node ring.
    case deterministic
    /// All ranks on one node, gradients in node-shared memory (`NodeSharedFloats`): each rank sums its 1/W slice
    /// of every rank's gradients (in rank order) and then copies the other slices; three node barriers (two when
    /// `collectiveFollowsFinish`), no message copies. Measured 30 µs against 107 µs for `MPI_Allreduce` of 918 KiB
    /// on 2 ranks here.
    case sharedMemory
    /// Ranks on several nodes, the same number L on each, gradients in node-shared memory of each node
    /// (`allocateSharedWithinNode`): local rank l sums slice l of its node's gradients (in local-rank order), sums
    /// that slice with the local rank l of every other node (`CrossNodeGroup`: a ring reduce-scatter and allgather
    /// of send-receives, so every rank's link works and each link carries the minimal 2(N−1)/N of the slice each
    /// way; OpenMPI's own 2-rank allreduce took twice as long at 1 Gbit/s), scales by 1/W, and then copies the
    /// other slices from their owners on its node. On one node it is bit-identical to `.sharedMemory` (same sums,
    /// same order, same scaling).
    case hierarchical
}

/// A deliberately wrong reduction, for tests that must show they catch one.
public enum ReductionFault: String, Sendable, CaseIterable {
    /// Reduce correctly.
    case none
    /// Leave the sum over ranks instead of the mean.
    case sum
    /// Never reduce the bucket launched first (the top layers): each rank keeps its own gradients there.
    /// Blocking, deterministic, shared-memory and hierarchical modes only (the overlap modes start buckets during
    /// backward).
    case skipBucket = "skip_bucket"
}

/// A contiguous run of gradients covering whole layers, reduced as one message.
public struct GradientBucket: Sendable, Equatable, CustomStringConvertible {
    /// Element range in the flat gradient buffer.
    public var elements: Range<Int>
    /// Layers whose gradients it holds; it launches once all of them (in backward order: the lowest) are ready.
    public var layers: ClosedRange<Int>

    /// Creates a bucket.
    public init(elements: Range<Int>, layers: ClosedRange<Int>) { self.elements = elements; self.layers = layers }

    /// E.g. `layers 1...2 elements 200960..<235146`.
    public var description: String { "layers \(layers) elements \(elements)" }
}

/// A reducer set up with inconsistent layout or an unsupported mode.
public struct ReducerConfigurationError: Error, CustomStringConvertible, LocalizedError, Sendable {
    /// What is wrong and how to fix it.
    public var description: String
    /// Creates an error with a message.
    public init(_ description: String) { self.description = description }
    /// Same as `description`.
    public var errorDescription: String? { description }
}

/// Averages a flat gradient buffer over ranks in layer-aligned buckets, overlapping communication with backward.
///
/// Per step: `beginStep(microBatches:)`; for each micro-batch scale the loss gradient by `microBatchScale`, call
/// `layerReady(i)` as each layer's gradients complete (backward runs top layer first; only the last micro-batch's
/// calls launch buckets) and `microBatchDone()`; then `finish()`, which waits for every bucket and leaves the
/// average over ranks and micro-batches. Accumulation is the reducer's, so the step has one path in every mode:
/// in place (gradients add up across micro-batches) or, in `.deterministic` mode, as a sum in a fixed order. Calling
/// `layerReady` and `finish` alone is one micro-batch. Buffers and threads are planned once in init; steps allocate
/// nothing. In `.overlapThread` mode no other thread may call MPI between the first `layerReady`
/// and the end of `finish()`.
public final class GradientReducer {
    /// Transport strategy.
    public let mode: ReductionMode
    /// Buckets in planning order (top layers first), which is also their launch order in a normal backward.
    public let buckets: [GradientBucket]
    /// Number of layers the offsets described.
    public let layerCount: Int
    /// Communicator used for every bucket.
    public let communicator: any Communicator
    /// The gradients being averaged.
    public let gradients: UnsafeMutableBufferPointer<Float>
    /// Optional observer (tracing): called in `finish()` on the calling thread with (bucket, start, end) in
    /// `DispatchTime` uptime nanoseconds for each bucket; start is the blocking call's start, or the launch time
    /// for buckets reduced in the background (end = when `finish()` saw them complete). Nil costs nothing.
    public var bucketReduced: ((Int, UInt64, UInt64) -> Void)?
    /// Set when every rank, after `finish` and before it writes gradients again, calls a collective that no rank
    /// leaves before all have entered (the Trainer's control allreduce): `.sharedMemory` then skips its last node
    /// barrier, whose only job is to keep a rank from writing gradients a peer is still copying.
    public var collectiveFollowsFinish = false
    /// Fault injection for tests; `.none` unless a test asks.
    public var fault = ReductionFault.none {
        didSet {
            precondition(fault != .skipBucket || [.blocking, .deterministic, .sharedMemory, .hierarchical].contains(mode),
                         "reduction fault skip_bucket needs a reduction mode without overlap, have \(mode)")
            precondition(fault != .skipBucket || shardLayout == nil, "reduction fault skip_bucket has no bucket to skip with a sharded optimizer")
        }
    }

    private let bucketOfLayer: [Int]  // -1 for parameter-free layers below the last bucket
    private var layerDone: [Bool]
    private var layersPending: [Int]
    private var launched: [Bool]
    private var completed: [Bool]
    private var pending: [PendingReduction]
    private var deferred: [Bool]  // launched with no backward left: reduced blocking in finish()
    private var launchOrder: [Int]
    private var launchNanoseconds: [UInt64]  // only written while `bucketReduced` is set
    private var launchedCount = 0
    private var handedToThread = 0
    private let gatherBuffer: FloatBuffer?  // [size × largest bucket] for `.deterministic`
    private let worker: CommunicationWorker?
    private let shared: NodeSharedFloats?  // `.sharedMemory`: every rank's gradients; `.hierarchical`: this node's
    private let crossNode: CrossNodeGroup?  // `.hierarchical`, `.deterministic` through nodes: this local rank on every node
    private let ringChunk: FloatBuffer?  // over several nodes: the chunk received in a ring or chain step
    private let hierarchicalSlice: Int  // `.hierarchical`: floats each local rank reduces (equal for all)
    private let accumulator: FloatBuffer?  // `.deterministic`: the step's micro-batch gradients, summed in order
    private var accumulated = false
    /// With a sharded optimizer (ZeRO-1): the trainable gradients cut into one slice per rank. `finish` leaves only
    /// this rank's slice of the average, in `shardGradients`; the rest of `gradients` is then unreduced.
    public let shardLayout: ShardLayout?
    private let shardBuffer: FloatBuffer?
    /// Where the trainable gradients (and so `shardLayout`'s element 0) start in `gradients`.
    public let trainableStart: Int
    private var microBatches = 1
    private var microBatch = 0
    /// After `finish` in `.sharedMemory` mode: whether the slice of the averaged gradients this rank computed is
    /// finite. The slices of all ranks cover every trainable gradient (frozen ones stay zero), so combining the
    /// ranks' answers (the step's control vector does) spares each rank a second pass over all of them. Nil in
    /// other modes and when not measured.
    public private(set) var ownSliceFinite: Bool?

    /// Splits layers into buckets from the top layer down, closing a bucket once it holds at least
    /// `bucketCapacityBytes`; the remaining bottom layers form the last (possibly smaller) bucket.
    /// `layerStartOffsets` holds one ascending start offset per layer, the first 0; `totalCount` ends the last layer.
    public static func planBuckets(layerStartOffsets: [Int], totalCount: Int,
                                   bucketCapacityBytes: Int) throws -> [GradientBucket] {
        guard bucketCapacityBytes > 0 else {
            throw ReducerConfigurationError("bucket capacity must be positive, got \(bucketCapacityBytes) bytes")
        }
        guard let first = layerStartOffsets.first else {
            guard totalCount == 0 else {
                throw ReducerConfigurationError("no layer start offsets given for \(totalCount) gradient elements")
            }
            return []
        }
        guard first == 0 else {
            throw ReducerConfigurationError("layer 0 must start at offset 0, got \(first): every gradient must belong to a layer")
        }
        for index in 1..<layerStartOffsets.count where layerStartOffsets[index] < layerStartOffsets[index - 1] {
            throw ReducerConfigurationError(
                "layer start offsets must not decrease: layer \(index) starts at \(layerStartOffsets[index]), before layer \(index - 1) at \(layerStartOffsets[index - 1])")
        }
        guard layerStartOffsets.last! <= totalCount else {
            throw ReducerConfigurationError(
                "layer \(layerStartOffsets.count - 1) starts at \(layerStartOffsets.last!), past the \(totalCount) gradient elements")
        }
        var buckets: [GradientBucket] = []
        var topLayer = layerStartOffsets.count - 1
        var bucketEnd = totalCount
        for layer in stride(from: layerStartOffsets.count - 1, through: 0, by: -1) {
            let start = layerStartOffsets[layer]
            if (bucketEnd - start) * MemoryLayout<Float>.stride >= bucketCapacityBytes {
                buckets.append(GradientBucket(elements: start..<bucketEnd, layers: layer...topLayer))
                topLayer = layer - 1
                bucketEnd = start
            }
        }
        // Leftover bottom layers; parameter-free ones alone need no message.
        if topLayer >= 0 && bucketEnd > 0 {
            buckets.append(GradientBucket(elements: 0..<bucketEnd, layers: 0...topLayer))
        }
        return buckets
    }

    /// Floats of node-shared memory per rank that `.hierarchical` needs for `gradientCount` gradients on
    /// `nodeCount` nodes of `localSize` ranks: the gradients padded so that every local rank's slice has the same
    /// length and splits into `nodeCount` equal ring chunks of whole cache lines (16 floats). Equal pieces make every
    /// rank issue the very same cross-node messages, so the flight records of all ranks agree and the watchdog can
    /// compare them.
    public static func hierarchicalSharedCount(gradientCount: Int, localSize: Int, nodeCount: Int) -> Int {
        let parts = max(localSize, 1)
        let unit = 16 * max(nodeCount, 1)
        let slice = ((gradientCount + parts - 1) / parts + unit - 1) / unit * unit
        return slice * parts
    }

    /// The number of ranks on every node, or nil when nodes hold different numbers of ranks. Collective over the
    /// world (one small allreduce), so every rank gets the same answer.
    public static func ranksPerNode(communicator: any Communicator) throws -> Int? {
        var extremes: [Int64] = [Int64(communicator.localSize), -Int64(communicator.localSize)]
        try extremes.withUnsafeMutableBufferPointer { try communicator.allreduce($0, operation: .max) }
        return extremes[0] == -extremes[1] ? Int(extremes[0]) : nil
    }

    /// Plans buckets over `gradients` (one start offset per layer, ascending from 0) and, for
    /// `.overlapThread`, starts the communication thread; `bucketCapacityBytes` trades overlap for message count.
    /// `.sharedMemory` needs `shared`, whose local segment must be `gradients`; it reduces one bucket of everything
    /// (there is no overlap to gain from several). `.hierarchical` needs `shared` from `allocateSharedWithinNode` of
    /// `hierarchicalSharedCount` floats and the same number of ranks on every node; it splits the communicator
    /// across nodes here (collective: every rank must create its reducer at the same point).
    /// Layers below `frozenLayers` (a frozen prefix: no gradient) belong to no bucket and are never reduced.
    /// `shardOptimizer` (modes `.blocking` and `.deterministic`) reduces the trainable gradients as one bucket to
    /// their slice owners only (`shardLayout`, `shardGradients`): a reduce-scatter, or in `.deterministic` mode every
    /// rank's copy of the slice summed in rank order, bit-identical to the unsharded deterministic mean.
    public init(communicator: any Communicator, gradients: UnsafeMutableBufferPointer<Float>, layerStartOffsets: [Int],
                bucketCapacityBytes: Int = 1 << 20, mode: ReductionMode = .blocking, shared: NodeSharedFloats? = nil,
                frozenLayers: Int = 0, shardOptimizer: Bool = false) throws {
        if shardOptimizer && mode != .blocking && mode != .deterministic && mode != .sharedMemory {
            throw ReducerConfigurationError(
                "a sharded optimizer needs reduction mode blocking, deterministic or sharedMemory (gradients are reduce-scattered after backward), got \(mode)")
        }
        if mode == .overlapThread && communicator.threadLevel < .serialized {
            throw ReducerConfigurationError(
                "reduction mode overlapThread calls MPI from a second thread and needs MPI_THREAD_SERIALIZED, but MPI provided \(communicator.threadLevel); start MPI with threadLevel .serialized or use overlapPolling")
        }
        if mode == .sharedMemory {
            guard let shared, shared.segments.count == communicator.size, shared.local == gradients.baseAddress,
                  gradients.count <= shared.count else {
                throw ReducerConfigurationError(
                    "reduction mode sharedMemory needs the gradients in node-shared memory of every rank (allocateNodeShared), got \(shared == nil ? "none" : "a segment that is not these gradients")")
            }
        }
        var crossNode: CrossNodeGroup?
        var hierarchicalSlice = 0
        var ringChunk: FloatBuffer?
        // `.deterministic` given node-shared gradients reduces through them too, chaining nodes in rank order.
        let throughNodes = mode == .hierarchical || mode == .deterministic && shared != nil && !shardOptimizer
        if throughNodes {
            let localSize = communicator.localSize
            // Collective, so every rank refuses alike and none is left waiting in a later collective.
            guard let perNode = try Self.ranksPerNode(communicator: communicator) else {
                throw ReducerConfigurationError(
                    "reduction mode hierarchical needs the same number of ranks on every node, but rank \(communicator.rank) shares its node with \(localSize) of the \(communicator.size) ranks and another node has a different count; launch the same number of ranks per node (launch/hostfile HOSTFILE RANKS_PER_NODE) or use transport mpi")
            }
            let nodeCount = communicator.size / perNode
            let needed = Self.hierarchicalSharedCount(gradientCount: gradients.count, localSize: localSize, nodeCount: nodeCount)
            guard let shared, shared.segments.count == localSize, shared.local == gradients.baseAddress,
                  shared.count >= needed else {
                throw ReducerConfigurationError(
                    "reduction mode hierarchical needs the gradients in node-shared memory of the \(localSize) ranks on rank \(communicator.rank)'s node with room for \(needed) floats (allocateSharedWithinNode(floatCount: hierarchicalSharedCount(gradientCount: \(gradients.count), localSize: \(localSize), nodeCount: \(nodeCount)))), got \(shared.map { "\($0.segments.count) segments of \($0.count) floats" + ($0.local == gradients.baseAddress ? "" : " that are not these gradients") } ?? "none")")
            }
            guard let group = try communicator.splitAcrossNodes(), group.size * perNode == communicator.size else {
                throw ReducerConfigurationError(
                    "reduction mode hierarchical needs a communicator that can split its \(communicator.size) ranks across nodes (\(perNode) per node), which this one (\(type(of: communicator))) cannot")
            }
            hierarchicalSlice = needed / localSize
            if mode == .deterministic {
                // The chain sums in world rank order only if each node holds a consecutive block of ranks in node
                // order (mpirun's default by-slot mapping); otherwise every rank's gradients go the flat way.
                let consecutive = communicator.rank == group.nodeIndex * perNode + communicator.localRank
                var anyOutOfOrder: [Int64] = [consecutive ? 0 : 1]
                try anyOutOfOrder.withUnsafeMutableBufferPointer { try communicator.allreduce($0, operation: .max) }
                if anyOutOfOrder[0] == 0 {
                    crossNode = group
                    if nodeCount > 1 { ringChunk = FloatBuffer(count: min(Self.chainPieceFloats, hierarchicalSlice)) }
                }
            } else {
                crossNode = group
                if nodeCount > 1 { ringChunk = FloatBuffer(count: hierarchicalSlice / nodeCount) }
            }
        }
        self.crossNode = crossNode
        self.ringChunk = ringChunk
        self.hierarchicalSlice = hierarchicalSlice
        let oneBucket = mode == .sharedMemory || throughNodes || shardOptimizer
        // Plan over the trainable layers only: shift their offsets to start at 0, then back.
        let frozen = min(max(frozenLayers, 0), layerStartOffsets.count)
        let trainableStart = frozen < layerStartOffsets.count ? layerStartOffsets[frozen] : gradients.count
        buckets = try Self.planBuckets(layerStartOffsets: layerStartOffsets[frozen...].map { $0 - trainableStart },
                                       totalCount: gradients.count - trainableStart,
                                       bucketCapacityBytes: oneBucket ? Int.max : bucketCapacityBytes).map {
            GradientBucket(elements: ($0.elements.lowerBound + trainableStart)..<($0.elements.upperBound + trainableStart),
                           layers: ($0.layers.lowerBound + frozen)...($0.layers.upperBound + frozen))
        }
        self.trainableStart = trainableStart
        let shardLayout = shardOptimizer ? try ShardLayout(count: gradients.count - trainableStart, parts: communicator.size) : nil
        self.shardLayout = shardLayout
        // Through node-shared memory the shard is averaged in place (`shardView`); otherwise into a buffer of its own.
        shardBuffer = mode == .sharedMemory ? nil : shardLayout.map { FloatBuffer(count: $0.range(of: communicator.rank).count) }
        shardView = mode == .sharedMemory ? shardLayout.map {
            let range = $0.range(of: communicator.rank)
            return UnsafeMutableBufferPointer(start: gradients.baseAddress! + trainableStart + range.lowerBound, count: range.count)
        } : nil
        self.shared = mode == .sharedMemory || throughNodes ? shared : nil
        // `.sharedMemory` means every rank is on this node, so the node's segments are indexed by rank. Without them
        // (a communicator that cannot share memory) the slices go through `allgatherSlices` and nothing is cleared.
        sharedParameters = mode == .sharedMemory && shardLayout != nil
            ? try communicator.allocateOneSegmentWithinNode(floatCount: gradients.count) : nil
        self.mode = mode
        self.communicator = communicator
        self.gradients = gradients
        layerCount = layerStartOffsets.count
        var bucketOfLayer = [Int](repeating: -1, count: layerCount)
        for (index, bucket) in buckets.enumerated() { for layer in bucket.layers { bucketOfLayer[layer] = index } }
        self.bucketOfLayer = bucketOfLayer
        layerDone = [Bool](repeating: false, count: layerCount)
        layersPending = buckets.map(\.layers.count)
        launched = [Bool](repeating: false, count: buckets.count)
        completed = [Bool](repeating: false, count: buckets.count)
        pending = [PendingReduction](repeating: .completed, count: buckets.count)
        deferred = [Bool](repeating: false, count: buckets.count)
        launchOrder = [Int](repeating: -1, count: buckets.count)
        launchNanoseconds = [UInt64](repeating: 0, count: buckets.count)
        let largest = buckets.map(\.elements.count).max() ?? 0
        // Sharded, each rank gathers only its own slice from every rank: W × 1/W of the gradients.
        gatherBuffer = mode == .deterministic ? FloatBuffer(count: (shardLayout?.largest ?? largest) * communicator.size) : nil
        accumulator = mode == .deterministic ? FloatBuffer(count: gradients.count) : nil
        if mode == .overlapThread {
            let slices = buckets.map { UnsafeMutableBufferPointer(rebasing: gradients[$0.elements]) }
            let worker = CommunicationWorker(communicator: communicator, buckets: slices)
            worker.start()
            self.worker = worker
        } else {
            worker = nil
        }
    }

    /// Convenience over a model's `FlatTensors` gradients with `layerCount` layers (parameter-free ones included).
    public convenience init(communicator: any Communicator, parameters: FlatTensors, layerCount: Int,
                            bucketCapacityBytes: Int = 1 << 20, mode: ReductionMode = .blocking,
                            shared: NodeSharedFloats? = nil, frozenLayers: Int = 0, shardOptimizer: Bool = false) throws {
        guard let gradients = parameters.gradients else {
            throw ReducerConfigurationError("these tensors have no gradient buffer; create them with withGradients: true")
        }
        try self.init(communicator: communicator, gradients: gradients.buffer,
                      layerStartOffsets: (0..<layerCount).map { parameters.startOffset(ofLayer: $0) },
                      bucketCapacityBytes: bucketCapacityBytes, mode: mode, shared: shared, frozenLayers: frozenLayers,
                      shardOptimizer: shardOptimizer)
    }

    /// This rank's slice of the averaged trainable gradients after `finish` (sharded optimizer; empty otherwise):
    /// element i is gradient `trainableStart + shardLayout.range(of: rank).lowerBound + i`.
    public var shardGradients: UnsafeMutableBufferPointer<Float> {
        shardView ?? shardBuffer?.buffer ?? UnsafeMutableBufferPointer(start: nil, count: 0)
    }
    /// Through node-shared memory, the shard is averaged in place in this rank's segment: this views it.
    private let shardView: UnsafeMutableBufferPointer<Float>?
    /// Sharded through node-shared memory: one copy of all parameters (the gradients' layout) in one segment for
    /// the node, apart from the gradients so that those can be cleared as they are summed. Every owner writes its
    /// updated slice there: in place once the model uses it (`shareParameters`), else copied in and out.
    private let sharedParameters: NodeSharedFloats?

    /// Sharded through node-shared memory, `finish` leaves every trainable gradient outside this rank's shard at 0
    /// (each owner clears the slices it sums, in the same pass), so an update that clears `shardGradients` leaves all
    /// of them cleared for the next step. Every rank has finished clearing once the step's next collective returns.
    public var clearsGradientsOutsideShard: Bool { sharedParameters != nil }

    deinit { worker?.stop() }

    /// Starts an optimizer step of `count` micro-batches; the caller has zeroed the gradients.
    public func beginStep(microBatches count: Int) {
        microBatches = max(count, 1)
        microBatch = 0
    }

    /// Factor for each micro-batch's loss gradient: 1/micro-batches when gradients accumulate in place, 1 in
    /// `.deterministic` mode (the micro-batch sums are added in order and scaled once in `finish`, exactly as W
    /// ranks' gradients are, so W ranks × b match 1 rank × W micro-batches bit for bit).
    public var microBatchScale: Float { mode == .deterministic ? 1 : 1 / Float(microBatches) }

    /// Whether the current micro-batch is the step's last (the one whose backward launches buckets).
    public var isLastMicroBatch: Bool { microBatch == microBatches - 1 }

    /// Ends the current micro-batch's backward. In `.deterministic` mode its gradients join the ordered sum and the
    /// gradient buffer is cleared for the next one; otherwise the next backward adds to them in place.
    public func microBatchDone() {
        if let accumulator {
            Kernels.add(gradients.baseAddress!, into: accumulator.pointer, count: gradients.count)
            accumulated = true
            if !isLastMicroBatch { gradients.update(repeating: 0) }
        }
        microBatch += 1
    }

    /// Marks layer `index`'s gradients complete, launching its bucket once all the bucket's layers are ready (only
    /// in the step's last micro-batch, and never in `.deterministic` mode, where `finish` reduces the sum);
    /// in `.overlapPolling` also tests outstanding reductions so MPI makes progress.
    public func layerReady(_ index: Int) throws {
        guard index >= 0 && index < layerCount else {
            throw ReducerConfigurationError("layerReady(\(index)) is outside the \(layerCount) layers this reducer was planned for")
        }
        guard isLastMicroBatch && accumulator == nil else { return }
        if !layerDone[index] {
            layerDone[index] = true
            let bucket = bucketOfLayer[index]
            if bucket >= 0 {
                layersPending[bucket] -= 1
                if layersPending[bucket] == 0 { try launch(bucket, inFinish: false) }
            }
        }
        if mode == .overlapPolling { try poll() }
    }

    /// Lets MPI progress outstanding nonblocking reductions (`.overlapPolling`); call it inside long backward
    /// passes for more overlap. Does nothing in other modes.
    public func poll() throws {
        guard mode == .overlapPolling else { return }
        for position in 0..<launchedCount {
            let bucket = launchOrder[position]
            if !completed[bucket] && !deferred[bucket] { completed[bucket] = try pending[bucket].test() }
        }
    }

    /// Launches buckets whose layers were never reported, waits for all, and leaves averages in `gradients`;
    /// the reducer is then ready for the next step.
    public func finish() throws {
        ownSliceFinite = nil
        if accumulated {
            gradients.baseAddress!.update(from: accumulator!.pointer, count: gradients.count)
            accumulator!.zero()
            accumulated = false
        }
        if let shardLayout {
            let start = bucketReduced == nil ? 0 : DispatchTime.now().uptimeNanoseconds
            try reduceToShard(shardLayout)
            if let bucketReduced, !buckets.isEmpty { bucketReduced(0, start, DispatchTime.now().uptimeNanoseconds) }
            clearStep()
            return
        }
        for bucket in 0..<buckets.count where !launched[bucket] { try launch(bucket, inFinish: true) }
        let scale = fault == .sum ? 1 : 1 / Float(communicator.size)
        // Deferred buckets sit at the end of the launch order, after every nonblocking start or hand-off,
        // so all ranks issue collectives in the same order.
        for position in 0..<launchedCount {
            let bucket = launchOrder[position]
            let waitStart = bucketReduced == nil ? 0 : DispatchTime.now().uptimeNanoseconds
            if fault == .skipBucket && position == 0 { continue }
            switch mode {
            case .blocking:
                try allreduceInChunks(slice(bucket))
            case .deterministic:
                if crossNode != nil { try reduceHierarchicallyInRankOrder() } else { try reduceInRankOrder(bucket) }
            case .sharedMemory:
                try reduceThroughSharedMemory(bucket)
            case .hierarchical:
                try reduceHierarchically()
            case .overlapPolling:
                if deferred[bucket] {
                    try allreduceInChunks(slice(bucket))
                } else if !completed[bucket] {
                    try pending[bucket].wait()
                }
                completed[bucket] = true
            case .overlapThread:
                if deferred[bucket] {
                    // MPI_THREAD_SERIALIZED: the thread must be idle before this thread calls MPI.
                    worker!.waitForCompletion(count: handedToThread)
                    if let error = worker!.takeError() { throw error }
                    try allreduceInChunks(slice(bucket))
                } else {
                    worker!.waitForCompletion(count: position + 1)
                }
            }
            if let bucketReduced {
                let background = (mode == .overlapPolling || mode == .overlapThread) && !deferred[bucket]
                bucketReduced(bucket, background ? launchNanoseconds[bucket] : waitStart, DispatchTime.now().uptimeNanoseconds)
            }
            // Scaling each bucket as it lands overlaps the multiply with the buckets still in flight; the
            // shared-memory reduction averages as it sums (and must not write its gradients again: peers may still
            // be copying them), the hierarchical one scales before its slices are shared.
            let factor = mode == .sharedMemory || mode == .hierarchical ? 1 : scale
            if communicator.size > 1 && factor != 1 {
                Kernels.scale(gradients.baseAddress! + buckets[bucket].elements.lowerBound, by: factor,
                              count: buckets[bucket].elements.count)
            }
        }
        if let error = worker?.takeError() { throw error }
        if accumulator != nil && microBatches > 1 {
            Kernels.scale(gradients.baseAddress!, by: 1 / Float(microBatches), count: gradients.count)
        }
        clearStep()
    }

    /// Abandons the current step: waits out reductions already in flight (every rank must do the same), then clears.
    public func reset() throws {
        switch mode {
        case .overlapPolling:
            for position in 0..<launchedCount where !completed[launchOrder[position]] {
                try pending[launchOrder[position]].wait()
            }
        case .overlapThread:
            worker!.waitForCompletion(count: handedToThread)
            _ = worker!.takeError()
        case .blocking, .deterministic, .sharedMemory, .hierarchical:
            break
        }
        if accumulated { accumulator!.zero(); accumulated = false }
        clearStep()
    }

    // MARK: Internals

    /// Largest single blocking allreduce: a bucket holding one big layer is reduced in pieces of this size.
    /// Measured on 2 ranks over shared memory: 4 MiB runs at ~8 GB/s bus bandwidth, 16 MiB at ~2.8 GB/s
    /// (the message no longer fits in cache), so 12.5 MiB of fashion-cnn gradients go faster as four pieces.
    public var maximumMessageBytes = 4 << 20

    /// Sums `buffer` over every rank.
    private func allreduceInChunks(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        let chunk = max(maximumMessageBytes / MemoryLayout<Float>.stride, 1)
        var start = 0
        while start < buffer.count {
            let end = min(start + chunk, buffer.count)
            try communicator.allreduceSum(UnsafeMutableBufferPointer(rebasing: buffer[start..<end]))
            start = end
        }
    }

    private func slice(_ bucket: Int) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(rebasing: gradients[buckets[bucket].elements])
    }

    private func launch(_ bucket: Int, inFinish: Bool) throws {
        // Once every bucket is launched no backward compute remains to overlap with.
        let nothingLeftToOverlap = inFinish || launchedCount == buckets.count - 1
        launched[bucket] = true
        if bucketReduced != nil { launchNanoseconds[bucket] = DispatchTime.now().uptimeNanoseconds }
        launchOrder[launchedCount] = bucket
        launchedCount += 1
        switch mode {
        case .overlapPolling where !nothingLeftToOverlap:
            pending[bucket] = try communicator.startAllreduceSum(slice(bucket))
        case .overlapThread where !nothingLeftToOverlap:
            worker!.enqueue(bucket)
            handedToThread += 1
        case .overlapPolling, .overlapThread:
            deferred[bucket] = true
        case .blocking, .deterministic, .sharedMemory, .hierarchical:
            break  // reduced in finish()
        }
    }

    /// out = ((g0 + g1) + g2) + …, identical on every rank and for any MPI algorithm.
    private func reduceInRankOrder(_ bucket: Int) throws {
        let target = slice(bucket)
        let count = target.count
        let gather = gatherBuffer!.pointer
        try communicator.allgather(send: UnsafeRawBufferPointer(target),
                                   receive: UnsafeMutableRawBufferPointer(start: gather,
                                                                          count: count * communicator.size * MemoryLayout<Float>.stride))
        // Start from rank 0's values, not zero: 0 + (-0) would flip the sign bit of negative zeros.
        target.baseAddress!.update(from: gather, count: count)
        for rank in 1..<max(communicator.size, 1) {
            Kernels.add(gather + rank * count, into: target.baseAddress!, count: count)
        }
    }

    /// Sums the trainable gradients of every rank into this rank's slice (`shardGradients`), scaled like the
    /// unsharded modes: × 1/W after the sum over ranks, then × 1/micro-batches in `.deterministic` mode.
    private func reduceToShard(_ layout: ShardLayout) throws {
        if mode == .sharedMemory { return try reduceToShardThroughSharedMemory(layout) }
        let source = gradients.baseAddress! + trainableStart
        let mine = shardBuffer!.pointer, count = shardBuffer!.count, size = communicator.size
        if mode == .deterministic {
            let gather = gatherBuffer!.pointer
            try communicator.alltoallSlices(source, into: gather, layout: layout)
            // In rank order from rank 0's values, exactly as `reduceInRankOrder` sums a bucket.
            mine.update(from: gather, count: count)
            for rank in 1..<max(size, 1) { Kernels.add(gather + rank * count, into: mine, count: count) }
        } else {
            try communicator.reduceScatterSum(source, into: mine, layout: layout)
        }
        if size > 1 && fault != .sum { Kernels.scale(mine, by: 1 / Float(size), count: count) }
        if accumulator != nil && microBatches > 1 { Kernels.scale(mine, by: 1 / Float(microBatches), count: count) }
    }

    /// This rank's shard as offsets into `gradients` (and into the node-shared segments).
    private func shardElements(_ layout: ShardLayout, rank: Int) -> Range<Int> {
        let range = layout.range(of: rank)
        return (trainableStart + range.lowerBound)..<(trainableStart + range.upperBound)
    }

    /// The reduce-scatter of a sharded optimizer through node-shared memory: this rank averages its slice of every
    /// rank's gradients into its own segment (peers read only their own slices there), checks it is finite, and
    /// zeroes that slice in the peers' segments in the same pass (`clearsGradientsOutsideShard`; those lines sit in
    /// the peers' caches, so the stores are ordinary or non-temporal as `SliceWriteTuner` times them). No copy phase:
    /// the slice owners share updated parameters instead (`allgatherParameterSlices`).
    private func reduceToShardThroughSharedMemory(_ layout: ShardLayout) throws {
        let shared = shared!
        let mine = shardElements(layout, rank: communicator.rank)
        try shared.synchronize()  // every rank's backward has written its gradients
        func sum(clearing method: SliceWriteMethod?) -> Bool {
            shared.segments.withUnsafeBufferPointer {
                Kernels.sum($0.baseAddress!, sourceCount: communicator.size, range: mine,
                            scaledBy: fault == .sum ? 1 : 1 / Float(communicator.size), into: shared.local,
                            clearingSources: method != nil, streamingClears: method == .streaming)
            }
        }
        ownSliceFinite = clearsGradientsOutsideShard ? peerGradientClears.timedWrite { sum(clearing: $0) } : sum(clearing: nil)
    }

    /// Whether `shareParameters` can give the model the node's one shared copy of its parameters (sharded through
    /// node-shared memory).
    public var offersSharedParameters: Bool { sharedParameters != nil }

    /// This rank's writes into node-shared memory that a `SliceWriteTuner` has timed so far, with the method each
    /// uses outside trials: the parameter slice (`allgatherParameterSlices`), the zeroing of its slice in the peers'
    /// gradients (sharded), its averaged share and the peers' shares it copies (unsharded).
    public var nodeSharedStoreMethods: [(write: String, method: SliceWriteMethod)] {
        [("parameter slice", sliceWrites), ("peer gradient clears", peerGradientClears),
         ("averaged share", averageWrites), ("copied shares", averageCopies)]
            .filter { $0.1.writes > 0 }.map { ($0.0, $0.1.method) }
    }
    private var sliceWrites = SliceWriteTuner(), peerGradientClears = SliceWriteTuner()
    private var averageWrites = SliceWriteTuner(), averageCopies = SliceWriteTuner()

    /// destination[i] = source[i] with ordinary (memmove) or non-temporal stores.
    private static func copy(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, count: Int,
                             _ method: SliceWriteMethod) {
        switch method {
        case .cached: destination.update(from: source, count: count)
        case .streaming: Kernels.copyStreaming(source, into: destination, count: count)
        }
    }

    /// Sharded through node-shared memory: copies `values` (all parameters in the gradients' layout, the same on
    /// every rank) into the node's one shared copy and returns it, for the model to read and update in place of its
    /// own: each owner's update then lands where every rank reads, and `allgatherParameterSlices` only
    /// synchronizes. Nil in every other mode. Collective.
    public func shareParameters(from values: UnsafePointer<Float>) throws -> UnsafeMutableBufferPointer<Float>? {
        guard let sharedParameters, let layout = shardLayout else { return nil }
        let destination = sharedParameters.segments[0]
        // Each rank copies its own slice, rank 0 the frozen parameters before the slices too: each element once.
        let mine = layout.range(of: communicator.rank)
        let start = communicator.rank == 0 ? 0 : trainableStart + mine.lowerBound, end = trainableStart + mine.upperBound
        (destination + start).update(from: values + start, count: end - start)
        try sharedParameters.synchronize()  // every slice is written
        return UnsafeMutableBufferPointer(start: destination, count: gradients.count)
    }

    /// After a sharded update of this rank's slice of `parameters` (the trainable ones, element 0 = the first trainable
    /// parameter): gives every rank every slice. Through node-shared memory, parameters that are the shared copy
    /// (`shareParameters`) need only a barrier; otherwise each owner writes its slice into the shared copy and every
    /// rank copies the others' slices from there. Without node-shared memory, an MPI allgather. Collective.
    public func allgatherParameterSlices(_ parameters: UnsafeMutablePointer<Float>) throws {
        guard let layout = shardLayout else { return }
        guard let sharedParameters else {
            return try communicator.allgatherSlices(parameters, layout: layout)
        }
        let shared = sharedParameters.segments[0] + trainableStart
        // In place: the owners' updates are the only writes; after this barrier every rank reads them.
        if parameters == shared { return try sharedParameters.synchronize() }
        let mine = layout.range(of: communicator.rank)
        sliceWrites.timedWrite { Self.copy(parameters + mine.lowerBound, into: shared + mine.lowerBound, count: mine.count, $0) }
        try sharedParameters.synchronize()  // every slice is written
        for peer in 0..<communicator.size where peer != communicator.rank {
            let slice = layout.range(of: peer)
            (parameters + slice.lowerBound).update(from: shared + slice.lowerBound, count: slice.count)
        }
        // No barrier after the copies: an owner next writes its slice after the next step's gradient barrier, which
        // every rank reaches only after its copies.
    }

    /// Rank r's slice of `elements` when split W ways on 16-float (cache-line) boundaries.
    private func share(of elements: Range<Int>, rank: Int) -> Range<Int> {
        let size = communicator.size
        func boundary(_ r: Int) -> Int {
            r == size ? elements.upperBound : elements.lowerBound + ((elements.count * r / size) & ~15)
        }
        return boundary(rank)..<boundary(rank + 1)
    }

    /// Reduce-scatter then allgather through node-shared memory: this rank writes the average of its slice
    /// into its own segment, then copies every other rank's averaged slice from that rank's segment. Both write
    /// lines the peers read in the previous step, so each uses ordinary or non-temporal stores as a
    /// `SliceWriteTuner` times them.
    private func reduceThroughSharedMemory(_ bucket: Int) throws {
        let shared = shared!
        let elements = buckets[bucket].elements
        let size = communicator.size
        try shared.synchronize()  // every rank's backward has written its gradients
        let finite = averageWrites.timedWrite { method in
            shared.segments.withUnsafeBufferPointer {
                Kernels.sum($0.baseAddress!, sourceCount: size, range: share(of: elements, rank: communicator.rank),
                            scaledBy: fault == .sum ? 1 : 1 / Float(size), into: shared.local,
                            streamingOut: method == .streaming)
            }
        }
        // One bucket covers every gradient, and the slice holds its final values (also under the `.sum` fault).
        ownSliceFinite = buckets.count == 1 ? finite : nil
        try shared.synchronize()  // every slice is averaged
        averageCopies.timedWrite { method in
            for peer in 0..<size where peer != communicator.rank {
                let slice = share(of: elements, rank: peer)
                Self.copy(shared.segments[peer] + slice.lowerBound, into: shared.local + slice.lowerBound,
                          count: slice.count, method)
            }
        }
        // No rank changes its gradients (next step) while another still copies them.
        if !collectiveFollowsFinish { try shared.synchronize() }
    }

    /// Reduce-scatter through this node's shared memory, sum of this rank's slice with the same slice on every
    /// other node (`sumAcrossNodes`), then allgather through shared memory. Covers the padded range (the padding stays zero), so every
    /// local rank sends slices of the same length.
    private func reduceHierarchically() throws {
        let shared = shared!, crossNode = crossNode!
        let localSize = communicator.localSize
        let mine = (communicator.localRank * hierarchicalSlice)..<((communicator.localRank + 1) * hierarchicalSlice)
        try shared.synchronize()  // every local rank's backward has written its gradients
        _ = shared.segments.withUnsafeBufferPointer {
            Kernels.sum($0.baseAddress!, sourceCount: localSize, range: mine, scaledBy: 1, into: shared.local)
        }
        let slice = UnsafeMutableBufferPointer(start: shared.local + mine.lowerBound, count: mine.count)
        if crossNode.size > 1 { try sumAcrossNodes(slice, over: crossNode) }
        // Scaled after the sum over nodes, as the other modes scale after theirs: the mean is (Σ g) × 1/W.
        if fault != .sum { Kernels.scale(slice.baseAddress!, by: 1 / Float(communicator.size), count: slice.count) }
        try copySlicesWithinNode(shared)
    }

    /// Once every local rank has reduced its own slice: copies the other slices from their owners' segments.
    private func copySlicesWithinNode(_ shared: NodeSharedFloats) throws {
        try shared.synchronize()  // every slice is reduced
        for peer in 0..<communicator.localSize where peer != communicator.localRank {
            let start = peer * hierarchicalSlice
            (shared.local + start).update(from: shared.segments[peer] + start, count: hierarchicalSlice)
        }
        try shared.synchronize()  // no rank changes its gradients (next step) while another still copies them
    }

    /// Floats per message across nodes, in the ring and the deterministic chain (256 KiB): OpenMPI's TCP transport
    /// sends larger messages only after a handshake that queues behind data on a busy link (whole ring chunks ran at
    /// 55–65% of 1 Gbit/s, these pieces at 86%), and the chain's pipeline fills in 2N − 3 steps of one piece.
    public static let chainPieceFloats = 1 << 16

    /// Whether `.deterministic` mode reduces through node-shared memory and a rank-order chain across nodes
    /// (bit-identical to the flat allgather path), rather than allgathering every rank's gradients through MPI.
    public var reducesThroughNodesInRankOrder: Bool { mode == .deterministic && crossNode != nil }

    /// `.deterministic` across nodes: the same sum ((g0 + g1) + g2) + … as `reduceInRankOrder`, over the same bits.
    /// Local rank l owns slice l. Node 0 sums its ranks' slice in local-rank order; each later node receives that
    /// partial sum piece by piece, adds its own ranks in order and passes it on, so the last node ends with the sum in
    /// world rank order (ranks are consecutive per node, checked at init). The sums travel back down the chain, and
    /// the slices are then shared within each node. Each step moves one piece forward and one back on every link,
    /// so a link carries the slice once each way, as a 2-node ring does. Scaling by 1/W is left to `finish`, as for
    /// the flat path.
    private func reduceHierarchicallyInRankOrder() throws {
        let shared = shared!, group = crossNode!
        let localSize = communicator.localSize
        let mine = (communicator.localRank * hierarchicalSlice)..<((communicator.localRank + 1) * hierarchicalSlice)
        try shared.synchronize()  // every local rank's backward has written its gradients
        let nodes = group.size, me = group.nodeIndex, local = shared.local
        if me == 0 || nodes == 1 {
            _ = shared.segments.withUnsafeBufferPointer {
                Kernels.sum($0.baseAddress!, sourceCount: localSize, range: mine, scaledBy: 1, into: local)
            }
        }
        if nodes > 1 {
            let incoming = ringChunk!.pointer
            let pieceLength = Self.chainPieceFloats
            let pieces = (mine.count + pieceLength - 1) / pieceLength
            func piece(_ index: Int) -> Range<Int>? {
                guard index >= 0 && index < pieces else { return nil }
                return (mine.lowerBound + index * pieceLength)..<min(mine.lowerBound + (index + 1) * pieceLength, mine.upperBound)
            }
            // Step t: piece t − me goes forward to the next node, piece t − me + 1 arrives from the previous one;
            // the sum of piece t − 2N + 3 + me arrives from the next node and t − 2N + 2 + me goes back. Every send
            // meets its receive in the same step of the neighbour, so no step waits on a later one.
            for step in 0..<(pieces + 2 * nodes - 3) {
                var transfers = NeighborTransfers()
                let arriving = me > 0 ? piece(step - me + 1) : nil
                if me < nodes - 1, let range = piece(step - me) {
                    transfers.toNext = UnsafeBufferPointer(start: local + range.lowerBound, count: range.count)
                }
                if let range = arriving {
                    transfers.fromPrevious = UnsafeMutableBufferPointer(start: incoming, count: range.count)
                }
                if me < nodes - 1, let range = piece(step - 2 * nodes + 3 + me) {
                    transfers.fromNext = UnsafeMutableBufferPointer(start: local + range.lowerBound, count: range.count)
                }
                if me > 0, let range = piece(step - 2 * nodes + 2 + me) {
                    transfers.toPrevious = UnsafeBufferPointer(start: local + range.lowerBound, count: range.count)
                }
                try group.exchangeWithNeighbors(transfers, recordedCount: pieceLength)
                if let range = arriving {
                    // partial + this node's ranks in local-rank order, written only after all are read (own slice).
                    for source in 0..<localSize {
                        Kernels.add(shared.segments[source] + range.lowerBound, into: incoming, count: range.count)
                    }
                    (local + range.lowerBound).update(from: incoming, count: range.count)
                }
            }
        }
        try copySlicesWithinNode(shared)
    }

    /// Ring reduce-scatter then ring allgather of `slice` (N equal chunks) over the group's N nodes: each step sends
    /// one chunk to the next node while receiving one from the previous, so each link carries 2(N−1)/N of the slice
    /// in each direction at once, the least an allreduce can move. Every chunk is summed once, in ring order starting
    /// at its owner's successor, and then copied to every node, so all nodes hold the same bits.
    private func sumAcrossNodes(_ slice: UnsafeMutableBufferPointer<Float>, over group: CrossNodeGroup) throws {
        let nodes = group.size, me = group.nodeIndex
        let next = (me + 1) % nodes, previous = (me + nodes - 1) % nodes
        let length = slice.count / nodes  // exact: hierarchicalSharedCount pads the slice to N whole chunks
        let base = slice.baseAddress!, received = ringChunk!.pointer
        func chunk(_ index: Int) -> UnsafeMutablePointer<Float> { base + ((index % nodes + nodes) % nodes) * length }
        // Reduce-scatter: in step k this node adds the previous node's partial sum of chunk me − k − 1 to its own;
        // after N − 1 steps it holds the complete sum of chunk me + 1.
        let piece = Self.chainPieceFloats
        for step in 0..<(nodes - 1) {
            for start in stride(from: 0, to: length, by: piece) {
                let count = min(piece, length - start)
                try group.sendReceive(UnsafeBufferPointer(start: chunk(me - step) + start, count: count), to: next,
                                      receive: UnsafeMutableBufferPointer(start: received + start, count: count), from: previous)
            }
            Kernels.add(received, into: chunk(me - step - 1), count: length)
        }
        // Allgather: pass complete chunks on around the ring, received straight into place.
        for step in 0..<(nodes - 1) {
            for start in stride(from: 0, to: length, by: piece) {
                let count = min(piece, length - start)
                try group.sendReceive(UnsafeBufferPointer(start: chunk(me + 1 - step) + start, count: count), to: next,
                                      receive: UnsafeMutableBufferPointer(start: chunk(me - step) + start, count: count), from: previous)
            }
        }
    }

    private func clearStep() {
        for index in 0..<layerCount { layerDone[index] = false }
        for bucket in 0..<buckets.count {
            layersPending[bucket] = buckets[bucket].layers.count
            launched[bucket] = false
            completed[bucket] = false
            deferred[bucket] = false
            pending[bucket] = .completed
        }
        launchedCount = 0
        handedToThread = 0
        microBatches = 1
        microBatch = 0
        worker?.resetCounts()
    }
}

/// The `.overlapThread` communication thread: runs blocking allreduces on buckets in the order they are handed over.
///
/// The condition variable both wakes the thread and orders its MPI calls and flight-recorder writes before
/// the main thread's next MPI use (the happens-before MPI_THREAD_SERIALIZED needs).
private final class CommunicationWorker: @unchecked Sendable {
    private let communicator: any Communicator
    private let buckets: [UnsafeMutableBufferPointer<Float>]
    private let condition = NSCondition()
    private var queue: [Int]  // launch order; preallocated to one entry per bucket
    private var enqueued = 0
    private var finished = 0
    private var stopping = false
    private var firstError: (any Error)?

    init(communicator: any Communicator, buckets: [UnsafeMutableBufferPointer<Float>]) {
        self.communicator = communicator
        self.buckets = buckets
        queue = [Int](repeating: -1, count: buckets.count)
    }

    func start() {
        let thread = Thread { [self] in run() }
        thread.name = "lockstep-comm"
        thread.start()
    }

    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    func enqueue(_ bucket: Int) {
        condition.lock()
        queue[enqueued] = bucket
        enqueued += 1
        condition.broadcast()
        condition.unlock()
    }

    func waitForCompletion(count: Int) {
        condition.lock()
        while finished < count { condition.wait() }
        condition.unlock()
    }

    func takeError() -> (any Error)? {
        condition.lock()
        defer { firstError = nil; condition.unlock() }
        return firstError
    }

    /// Only called when nothing is in flight.
    func resetCounts() {
        condition.lock()
        enqueued = 0
        finished = 0
        condition.unlock()
    }

    private func run() {
        condition.lock()
        while true {
            while !stopping && finished == enqueued { condition.wait() }
            if stopping { break }
            let bucket = queue[finished]
            let skip = firstError != nil  // after a failure MPI state is suspect; just release the waiter
            condition.unlock()
            var failure: (any Error)?
            if !skip {
                do { try communicator.allreduceSum(buckets[bucket]) } catch { failure = error }
            }
            condition.lock()
            if let failure, firstError == nil { firstError = failure }
            finished += 1
            condition.broadcast()
        }
        condition.unlock()
    }
}
