import LockstepComm
import LockstepCore
import XCTest

/// `.sharedMemory` on a fake node of threads (`ThreadWorld`): each rank learns whether the slice it averaged is
/// finite, so the trainer needs no second pass over all gradients, and a following collective replaces a barrier.
extension GradientReducerTests {
    func testSharedMemoryReportsWhetherEachRanksSliceIsFinite() {
        let world = ThreadWorld(nodeSizes: [2])
        let count = 1001
        // Per step: where rank 1 puts a non-finite value (nil: nowhere); index 5 lies in rank 0's slice (0..<496),
        // index 1000 in rank 1's slice, in the scalar tail.
        let poisons: [(index: Int, value: Float)?] = [nil, (5, .nan), (1000, .infinity), nil]
        final class Reports: @unchecked Sendable { var values: [[Bool?]] = [[], []] }
        let reports = Reports()
        let lock = NSLock()
        let errors = world.run { comm in
            let shared = try XCTUnwrap(try comm.allocateSharedWithinNode(floatCount: count))
            let gradients = UnsafeMutableBufferPointer(start: shared.local, count: count)
            let reducer = try GradientReducer(communicator: comm, gradients: gradients, layerStartOffsets: [0],
                                              mode: .sharedMemory, shared: shared)
            for poison in poisons {
                for index in 0..<count { gradients[index] = Float(index % 7) }
                if comm.rank == 1, let poison { gradients[poison.index] = poison.value }
                reducer.beginStep(microBatches: 1)
                try reducer.layerReady(0)
                try reducer.finish()
                lock.lock(); reports.values[comm.rank].append(reducer.ownSliceFinite); lock.unlock()
            }
        }
        XCTAssertEqual(errors, [nil, nil])
        XCTAssertEqual(reports.values[0], [true, false, true, true])
        XCTAssertEqual(reports.values[1], [true, true, false, true])
    }

    /// Three node barriers per step on their own; two when the caller promises a collective after `finish`.
    func testSharedMemorySkipsItsLastBarrierWhenACollectiveFollows() {
        for follows in [false, true] {
            let world = ThreadWorld(nodeSizes: [2])
            final class Counts: @unchecked Sendable { var barriers = [0, 0] }
            let counts = Counts()
            let lock = NSLock()
            let errors = world.run { comm in
                let shared = try XCTUnwrap(try comm.allocateSharedWithinNode(floatCount: 64))
                let gradients = UnsafeMutableBufferPointer(start: shared.local, count: 64)
                let reducer = try GradientReducer(communicator: comm, gradients: gradients, layerStartOffsets: [0],
                                                  mode: .sharedMemory, shared: shared)
                reducer.collectiveFollowsFinish = follows
                for step in 0..<2 {
                    for index in 0..<64 { gradients[index] = Float(comm.rank * 64 + index + step) }
                    reducer.beginStep(microBatches: 1)
                    try reducer.layerReady(0)
                    try reducer.finish()
                    for index in 0..<64 where gradients[index] != Float(32 + index + step) {
                        throw ReducerConfigurationError("rank \(comm.rank) [\(index)] = \(gradients[index])")
                    }
                    if follows { try comm.barrier() }  // the promised collective
                }
                let barriers = comm.recentCollectives(limit: 64).filter { $0.contains("sharedBarrier") }.count
                lock.lock(); counts.barriers[comm.rank] = barriers; lock.unlock()
            }
            XCTAssertEqual(errors, [nil, nil])
            XCTAssertEqual(counts.barriers, [2 * (follows ? 2 : 3), 2 * (follows ? 2 : 3)], "collectiveFollowsFinish \(follows)")
        }
    }

    /// A sharded reducer over `count` gradients in node-shared memory, the first `frozen` of them a frozen layer.
    private static func shardedReducer(_ comm: ThreadRankCommunicator, count: Int, frozen: Int) throws
        -> (GradientReducer, UnsafeMutableBufferPointer<Float>) {
        let shared = try XCTUnwrap(try comm.allocateSharedWithinNode(floatCount: count))
        let gradients = UnsafeMutableBufferPointer(start: shared.local, count: count)
        let reducer = try GradientReducer(communicator: comm, gradients: gradients, layerStartOffsets: [0, frozen],
                                          mode: .sharedMemory, shared: shared, frozenLayers: 1, shardOptimizer: true)
        return (reducer, gradients)
    }

    /// Throws unless every trainable parameter holds its owner's "update" of `step` (a value naming step, owner and place).
    private static func checkOwners(_ trainable: UnsafePointer<Float>, layout: ShardLayout, step: Int, rank: Int) throws {
        for owner in 0..<layout.parts {
            for i in layout.range(of: owner) where trainable[i] != Float(step * 10_000 + owner * 1_000) + Float(i % 97) {
                throw ReducerConfigurationError("rank \(rank) step \(step) parameter [\(i)] = \(trainable[i]) not owner \(owner)'s")
            }
        }
    }

    /// ZeRO-1 through node-shared memory, 3 ranks with a frozen prefix: each rank's `shardGradients` is the average
    /// of its slice (in rank order, as the unsharded path sums), and `allgatherParameterSlices` gives every rank every
    /// owner's updated slice; two steps, so the second reads gradients written after the first's parameter exchange.
    func testShardedSharedMemoryAveragesEachSliceAndSharesUpdatedParameters() {
        let world = ThreadWorld(nodeSizes: [3])
        let count = 1001, frozen = 40
        let errors = world.run { comm in
            let (reducer, gradients) = try Self.shardedReducer(comm, count: count, frozen: frozen)
            let layout = try XCTUnwrap(reducer.shardLayout)
            let mine = layout.range(of: comm.rank)
            XCTAssertEqual(reducer.shardGradients.count, mine.count)
            var parameters = [Float](repeating: -1, count: count - frozen)
            for step in 0..<2 {
                for index in 0..<count { gradients[index] = Float(comm.rank * 3 + index % 11 + step) }
                reducer.beginStep(microBatches: 1)
                try reducer.layerReady(1)
                try reducer.finish()
                XCTAssertEqual(reducer.ownSliceFinite, true)
                for (offset, value) in reducer.shardGradients.enumerated() {
                    let index = frozen + mine.lowerBound + offset
                    let sum = (0..<3).reduce(Float(0)) { $0 + Float($1 * 3 + index % 11 + step) }
                    guard value == sum * (1 / Float(3)) else {
                        throw ReducerConfigurationError("rank \(comm.rank) step \(step) gradient [\(index)] = \(value), expected \(sum / 3)")
                    }
                }
                // The owner's "update": a value naming the step, the owner and the position.
                for i in mine { parameters[i] = Float(step * 10_000 + comm.rank * 1_000) + Float(i % 97) }
                try parameters.withUnsafeMutableBufferPointer { try reducer.allgatherParameterSlices($0.baseAddress!) }
                try parameters.withUnsafeBufferPointer { try Self.checkOwners($0.baseAddress!, layout: layout, step: step, rank: comm.rank) }
            }
        }
        XCTAssertEqual(errors, [nil, nil, nil])
    }

    /// Parameters moved into the node's shared copy (`shareParameters`): each owner updates its slice in place, the
    /// gather is a barrier, and every rank reads every owner's values (frozen prefix included) without copying.
    func testSharedParametersAreUpdatedInPlaceByTheirOwners() {
        let world = ThreadWorld(nodeSizes: [3])
        let count = 1001, frozen = 40
        let errors = world.run { comm in
            let (reducer, gradients) = try Self.shardedReducer(comm, count: count, frozen: frozen)
            XCTAssertTrue(reducer.offersSharedParameters)
            let layout = try XCTUnwrap(reducer.shardLayout)
            let mine = layout.range(of: comm.rank)
            let start = (0..<count).map { Float($0) }
            let parameters = try XCTUnwrap(try start.withUnsafeBufferPointer { try reducer.shareParameters(from: $0.baseAddress!) })
            guard Array(parameters) == start else { throw ReducerConfigurationError("rank \(comm.rank): shared copy \(Array(parameters.prefix(8)))… is not the values") }
            let trainable = parameters.baseAddress! + frozen
            for step in 0..<2 {
                for index in 0..<count { gradients[index] = Float(comm.rank + index % 5) }
                reducer.beginStep(microBatches: 1)
                try reducer.layerReady(1)
                try reducer.finish()
                for i in mine { trainable[i] = Float(step * 10_000 + comm.rank * 1_000) + Float(i % 97) }
                try reducer.allgatherParameterSlices(trainable)
                try Self.checkOwners(trainable, layout: layout, step: step, rank: comm.rank)
                for i in 0..<frozen where parameters[i] != Float(i) {
                    throw ReducerConfigurationError("rank \(comm.rank): frozen parameter [\(i)] = \(parameters[i])")
                }
            }
        }
        XCTAssertEqual(errors, [nil, nil, nil])
    }

    func testOtherModesLeaveTheSliceCheckToTheCaller() throws {
        let gradients = FloatBuffer(count: 40)
        let reducer = try GradientReducer(communicator: SingleProcessCommunicator(),
                                          gradients: UnsafeMutableBufferPointer(start: gradients.pointer, count: 40),
                                          layerStartOffsets: [0], mode: .blocking)
        reducer.beginStep(microBatches: 1)
        try reducer.layerReady(0)
        try reducer.finish()
        XCTAssertNil(reducer.ownSliceFinite)
    }
}
