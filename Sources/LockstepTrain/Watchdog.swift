import Foundation
import LockstepComm
import Synchronization

/// Bounds how long a rank may go without progress (a collective that never completes, a stuck peer, a blocked read).
///
/// The training thread calls `beat()` at every step and around long phases. If no beat arrives within the
/// timeout, this rank writes its recent collectives to `directory/flight-rank-R.txt`, waits briefly for the other
/// ranks' files, names the first collective where the ranks' records disagree (or the rank that fell behind),
/// and aborts the whole job — a clear failure instead of a hang. A single process (no peers) just reports the step
/// it is stuck in and exits.
final class Watchdog: @unchecked Sendable {
    private let lastBeat = Atomic<UInt64>(0)
    private let step = Atomic<Int>(0)
    private let running = Atomic<Bool>(true)
    private let timeout: Double
    private let communicator: Communicator
    private let directory: String
    private let hostNames: [String]

    /// `hostNames[r]` is rank r's host (from `gatherHostNames`), so a diagnosis names where a silent rank runs.
    init(timeout: Double, communicator: Communicator, directory: String, hostNames: [String]) {
        self.timeout = timeout
        self.communicator = communicator
        self.directory = directory
        self.hostNames = hostNames
        beat(step: 0)
        let thread = Thread { [self] in self.watch() }
        thread.name = "lockstep.watchdog"
        thread.start()
    }

    /// Records progress at `step`.
    @inline(__always) func beat(step value: Int) {
        lastBeat.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed)
        step.store(value, ordering: .relaxed)
    }

    /// Stops watching (end of training).
    func stop() { running.store(false, ordering: .relaxed) }

    private func watch() {
        while running.load(ordering: .relaxed) {
            Thread.sleep(forTimeInterval: min(0.5, timeout / 4))
            let idle = Double(DispatchTime.now().uptimeNanoseconds - lastBeat.load(ordering: .relaxed)) * 1e-9
            if idle > timeout && running.load(ordering: .relaxed) { fire(idle: idle) }
        }
    }

    private func fire(idle: Double) -> Never {
        let rank = communicator.rank
        guard communicator.size > 1 else {
            let message = "lockstep: error: watchdog: no progress for \(Int(idle)) s at step \(step.load(ordering: .relaxed)) "
                + "(distributed.timeout_seconds = \(timeout)): this process is stuck outside any collective "
                + "(a blocked read from the data or checkpoint directory, a deadlock); ending it\n"
            FileHandle.standardError.write(Data(message.utf8))
            communicator.abort(code: 3)
        }
        let records = communicator.recentCollectives(limit: 32)
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let mine = "\(directory)/flight-rank-\(rank).txt"
        try? records.joined(separator: "\n").write(toFile: mine, atomically: true, encoding: .utf8)
        var message = "[rank \(rank)] lockstep: error: watchdog: no progress for \(Int(idle)) s at step \(step.load(ordering: .relaxed)) "
            + "(distributed.timeout_seconds = \(timeout)); last collective on this rank: \(records.last ?? "none")\n"
        // The other ranks' watchdogs fire at about the same time; give them a moment to write their records.
        Thread.sleep(forTimeInterval: 2)
        var perRank: [Int: [String]] = [:]
        for other in 0..<communicator.size {
            if let text = try? String(contentsOfFile: "\(directory)/flight-rank-\(other).txt", encoding: .utf8) {
                perRank[other] = text.split(separator: "\n").map(String.init)
            }
        }
        message += "[rank \(rank)] " + Watchdog.diagnose(perRank, worldSize: communicator.size, hostNames: hostNames) + "\n"
        message += "[rank \(rank)] recent collectives (flight recorder, \(mine)):\n" + records.suffix(8).map { "  \($0)" }.joined(separator: "\n") + "\n"
        FileHandle.standardError.write(Data(message.utf8))
        communicator.abort(code: 3)
    }

    /// Every rank's host name, in rank order (collective: every rank calls it at the same point).
    static func gatherHostNames(_ communicator: Communicator) throws -> [String] {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count - 1)
        return try communicator.allgather(text: String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    /// Names the first sequence number where ranks' recorded collectives differ, or the ranks that fell behind
    /// (with their hosts when `hostNames` has one per rank).
    static func diagnose(_ perRank: [Int: [String]], worldSize: Int, hostNames: [String] = []) -> String {
        func ranks(_ list: [Int]) -> String {
            list.map { hostNames.count == worldSize ? "\($0) (host \(hostNames[$0]))" : String($0) }.joined(separator: ", ")
        }
        func parse(_ line: String) -> (UInt64, String)? {
            guard line.hasPrefix("#"), let space = line.firstIndex(of: " "),
                  let sequence = UInt64(line[line.index(after: line.startIndex)..<space]) else { return nil }
            return (sequence, String(line[line.index(after: space)...]))
        }
        let missing = (0..<worldSize).filter { perRank[$0] == nil }
        var tables: [Int: [UInt64: String]] = [:]
        var last: [Int: (UInt64, String)] = [:]
        for (rank, lines) in perRank {
            let parsed = lines.compactMap(parse)
            tables[rank] = Dictionary(parsed, uniquingKeysWith: { $1 })
            last[rank] = parsed.last
        }
        var common: Set<UInt64>?
        for table in tables.values { common = common.map { $0.intersection(table.keys) } ?? Set(table.keys) }
        for sequence in (common ?? []).sorted() {
            let texts = Set(tables.values.compactMap { $0[sequence] })
            if texts.count > 1 {
                let detail = tables.keys.sorted().map { "rank \($0): \(tables[$0]![sequence]!)" }.joined(separator: "; ")
                return "ranks disagree at collective #\(sequence): \(detail)"
            }
        }
        let furthest = last.values.map(\.0).max() ?? 0
        let behind = last.filter { $0.value.0 < furthest }.keys.sorted()
        var parts: [String] = []
        if !behind.isEmpty {
            let ahead = last.first { $0.value.0 == furthest }!
            parts.append("rank \(ranks(behind)) never reached collective #\(furthest) "
                         + "(\(ahead.value.1), where rank \(ahead.key) waits); its last is "
                         + behind.map { "#\(last[$0]!.0) \(last[$0]!.1)" }.joined(separator: ", "))
        }
        if !missing.isEmpty {
            parts.append("no flight record from rank \(ranks(missing)) (dead, frozen, or its watchdog has not fired)")
        }
        return parts.isEmpty ? "every rank is in the same collective (#\(furthest)): a peer or the network stopped responding"
                             : parts.joined(separator: "; ")
    }
}
