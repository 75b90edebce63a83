import Foundation
import LockstepComm

/// A fake world of `size` identical ranks that logs every call, so tests can check which ranges the reducer
/// sends and when, without MPI. A sum over identical ranks is `size × value`.
final class RecordingCommunicator: Communicator, PendingReductionOwner, @unchecked Sendable {
    enum Call: Equatable, CustomStringConvertible {
        case allreduce(Range<Int>)
        case start(Range<Int>, handle: Int)
        case test(handle: Int)
        case wait(handle: Int)
        case allgather(Range<Int>)
        case other(String)

        var description: String {
            switch self {
            case .allreduce(let range): "allreduce \(range)"
            case .start(let range, let handle): "start \(range) #\(handle)"
            case .test(let handle): "test #\(handle)"
            case .wait(let handle): "wait #\(handle)"
            case .allgather(let range): "allgather \(range)"
            case .other(let text): text
            }
        }
    }

    let size: Int
    let threadLevel: ThreadLevel
    var rank: Int { 0 }
    var localRank: Int { 0 }
    var localSize: Int { size }
    /// Buffer whose offsets calls are logged against.
    var base: UnsafeMutablePointer<Float>?
    /// Number of `test()` calls a request needs before it reports completion.
    var testsUntilComplete = 2
    /// Value rank `r` contributes at element `i` of an allgather (default: this rank's own value).
    var gatherValue: ((_ rank: Int, _ element: Int, _ own: Float) -> Float)?

    private let lock = NSLock()
    private var log: [Call] = []
    private var testCounts: [Int: Int] = [:]
    private var nextHandle = 0
    private let recorder = FlightRecorder(capacity: 16)

    init(size: Int, threadLevel: ThreadLevel = .multiple) { self.size = size; self.threadLevel = threadLevel }

    var calls: [Call] { lock.lock(); defer { lock.unlock() }; return log }
    func clearCalls() { lock.lock(); log.removeAll(); lock.unlock() }
    var sequenceNumber: UInt64 { recorder.sequenceNumber }
    func recentCollectives(limit: Int) -> [String] { recorder.recentLines(limit: limit) }

    private func append(_ call: Call) { lock.lock(); log.append(call); lock.unlock() }

    private func range(_ buffer: UnsafeMutableBufferPointer<Float>) -> Range<Int> {
        let start = base.map { buffer.baseAddress! - $0 } ?? 0
        return start..<(start + buffer.count)
    }

    private func sumIdentical(_ buffer: UnsafeMutableBufferPointer<Float>) {
        for index in buffer.indices { buffer[index] *= Float(size) }
    }

    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>, at site: CallSite) throws {
        append(.allreduce(range(buffer)))
        sumIdentical(buffer)
    }

    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>, at site: CallSite) throws {
        append(.other("allreduce double"))
    }

    func allreduce(_ buffer: UnsafeMutableBufferPointer<Int64>, operation: ReduceOperation, at site: CallSite) throws {
        append(.other("allreduce int64 \(operation)"))
    }

    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int, at site: CallSite) throws {
        append(.other("broadcast"))
    }

    func allgather(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, at site: CallSite) throws {
        guard receive.count == send.count * size else {
            throw CommunicationError(operation: "allgather", rank: 0, message: "fake: receive size mismatch")
        }
        let floats = send.count / MemoryLayout<Float>.stride
        let sendFloats = send.assumingMemoryBound(to: Float.self)
        let receiveFloats = receive.assumingMemoryBound(to: Float.self)
        let start = base.map { sendFloats.baseAddress! - UnsafePointer($0) } ?? 0
        append(.allgather(start..<(start + floats)))
        for source in 0..<size {
            for element in 0..<floats {
                let own = sendFloats[element]
                receiveFloats[source * floats + element] = gatherValue?(source, start + element, own) ?? own
            }
        }
    }

    func barrier(at site: CallSite) throws { append(.other("barrier")) }

    func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>, at site: CallSite) throws -> PendingReduction {
        lock.lock()
        let handle = nextHandle
        nextHandle += 1
        testCounts[handle] = 0
        lock.unlock()
        append(.start(range(buffer), handle: handle))
        sumIdentical(buffer)
        return PendingReduction(owner: self, handle: handle)
    }

    func testReduction(handle: Int) throws -> Bool {
        append(.test(handle: handle))
        lock.lock(); defer { lock.unlock() }
        testCounts[handle, default: 0] += 1
        return testCounts[handle]! >= testsUntilComplete
    }

    func waitReduction(handle: Int) throws { append(.wait(handle: handle)) }

    func abort(code: Int32) -> Never { fatalError("fake abort \(code)") }

    func finalize() throws { append(.other("finalize")) }
}
