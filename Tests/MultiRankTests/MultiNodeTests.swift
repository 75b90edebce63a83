import Foundation
import XCTest

/// Runs the real binary across emulated hosts (network namespaces from launch/testcluster, TCP between them) through
/// the unchanged launch/hostfile: equivalence with one big batch, a host killed, a host's link cut, resume after loss.
final class MultiNodeTests: XCTestCase {
    /// Not the default `lsh`, so a developer's own test cluster is left alone.
    private static let prefix = "lkt"
    /// Fault to exit of mpirun and of every surviving process (OOB keepalive 1 s × 3 probes detects a dead link in 3–6 s).
    private static let faultBound = 60.0
    private static let script = MPIRun.packageRoot.appendingPathComponent("launch/testcluster").path

    private var rootLinksBefore: [String] = []
    private var directory = ""

    override func setUpWithError() throws {
        guard getuid() == 0 else {
            throw XCTSkip("multi-node tests need root: launch/testcluster creates network namespaces (uid \(getuid()))")
        }
        // Skip only when this machine cannot make network namespaces at all (e.g. a container without CAP_SYS_ADMIN).
        let probe = try Self.command(["ip", "netns", "add", "\(Self.prefix)probe"])
        guard probe.status == 0 else {
            throw XCTSkip("cannot create network namespaces here, so no emulated hosts: \(probe.stderr)")
        }
        _ = try Self.command(["ip", "netns", "del", "\(Self.prefix)probe"])
        try MPIRun.requireBinary()
        rootLinksBefore = try Self.rootLinks()
        _ = try cluster("down")  // leftovers of an earlier crashed run
        directory = MPIRun.temporaryPath("multinode")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// Always tears the cluster down (also after a failure) and checks that nothing is left behind.
    override func tearDownWithError() throws {
        guard getuid() == 0, !rootLinksBefore.isEmpty else { return }
        let pids = try namespacePIDs()
        let down = try cluster("down")
        XCTAssertEqual(down.status, 0, "launch/testcluster down failed: \(down.stdout)\(down.stderr)")
        XCTAssertEqual(try Self.namespaces(), [], "namespaces left behind")
        XCTAssertEqual(try Self.rootLinks(), rootLinksBefore, "links in the root namespace changed")
        let alive = pids.filter { kill($0, 0) == 0 }
        XCTAssertEqual(alive, [], "processes of the emulated hosts still running")
        XCTAssertEqual(MPIRun.rankPIDs(matching: directory + "/checkpoints"), [], "lockstep ranks still running")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/tmp/lockstep-testcluster-\(Self.prefix)"), "state directory left")
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: - Tests

    /// 3 hosts × 1 rank × batch 32 over TCP end with the parameters of 1 process × batch 96; the default transport
    /// takes the ring across nodes there too (one rank per node).
    func testThreeHostsMatchOneProcessWithTripleBatch() throws {
        try up(3)
        let base = ["train", "--config", MPIRun.config("fashion-mlp.yaml"), "--set", "data.train_subset=8192",
                    "--set", "data.test_subset=1000", "--set", "training.epochs=10", "--set", "training.max_steps=60",
                    "--set", "distributed.check_every=10"]
        let outcome = try Equivalence.measure(base: base, ranks: 3, batch: 32) { try self.cluster("run", "1", $0) }
        Equivalence.assertHolds(outcome, ranks: 3, "3 hosts × 32 vs 1 × 96")
        XCTAssertTrue(outcome.parallel.stdout.contains("on 3 ranks"), outcome.parallel.stdout)
        XCTAssertTrue(outcome.parallel.stdout.contains("gradient reduction hierarchical"), outcome.parallel.stdout)
    }

    /// 2 hosts × 2 ranks × batch 16 with the default transport, which picks hierarchical reduction there (within each
    /// host through node-shared memory, across hosts one allreduce per local rank over TCP), end within the derived
    /// bound of 1 process × batch 64, and every rank holds the same parameters.
    func testTwoHostsOfTwoRanksHierarchicalMatchesOneProcessWithFourfoldBatch() throws {
        let outcome = try twoHostsOfTwoRanks(transport: "auto")
        Equivalence.assertHolds(outcome, ranks: 4, "2 hosts × 2 ranks × 16 (hierarchical) vs 1 × 64")
        XCTAssertTrue(outcome.parallel.stdout.contains("on 4 ranks"), outcome.parallel.stdout)
        XCTAssertTrue(outcome.parallel.stdout.contains("gradient reduction hierarchical"), outcome.parallel.stdout)
    }

    /// The flat path on the same cluster (`transport: mpi`, one MPI_Allreduce over all 4 ranks) passes the same check.
    func testTwoHostsOfTwoRanksFlatMPIMatchesOneProcessWithFourfoldBatch() throws {
        let outcome = try twoHostsOfTwoRanks(transport: "mpi")
        Equivalence.assertHolds(outcome, ranks: 4, "2 hosts × 2 ranks × 16 (flat MPI) vs 1 × 64")
        XCTAssertTrue(outcome.parallel.stdout.contains("gradient reduction blocking"), outcome.parallel.stdout)
    }

    /// Deterministic mode on 2 hosts × 2 ranks: the default transport chains the nodes in rank order through node-shared
    /// memory, and ends with the very bits of the flat path (transport mpi) and of 1 process accumulating 4 micro-batches;
    /// with 2 micro-batches per rank, chain and flat path still agree bit for bit.
    func testDeterministicChainAcrossTwoHostsIsBitIdenticalToFlatPath() throws {
        try up(2, slotsPerHost: 2)
        let base = ["train", "--config", MPIRun.config("fashion-mlp.yaml"), "--set", "data.train_subset=8192",
                    "--set", "data.test_subset=1000", "--set", "training.epochs=10", "--set", "training.max_steps=40",
                    "--set", "distributed.deterministic=true", "--set", "training.batch_size=16"]
        func parameters(_ extra: [String], ranks: Int, expecting reduction: String? = nil, notExpecting other: String? = nil) throws -> Data {
            let path = MPIRun.temporaryPath("deterministic.f32")
            defer { try? FileManager.default.removeItem(atPath: path) }
            let arguments = base + extra + ["--dump-parameters", path]
            let result = ranks == 0 ? try MPIRun.run(ranks: 0, arguments) : try cluster("run", "2", arguments)
            XCTAssertEqual(result.status, 0, result.stdout + result.stderr)
            if let reduction { XCTAssertTrue(result.stdout.contains("gradient reduction \(reduction)"), result.stdout) }
            if let other { XCTAssertFalse(result.stdout.contains(other), result.stdout) }
            return try Data(contentsOf: URL(fileURLWithPath: path))
        }
        let chain = try parameters(["--set", "distributed.transport=auto"], ranks: 4,
                                   expecting: "deterministic (in rank order through node-shared memory and a chain across nodes)")
        let flat = try parameters(["--set", "distributed.transport=mpi"], ranks: 4, expecting: "deterministic (",
                                  notExpecting: "chain across nodes")
        let single = try parameters(["--set", "training.accumulation_steps=4"], ranks: 0)
        XCTAssertFalse(chain.isEmpty)
        XCTAssertTrue(chain == flat, "2 hosts × 2 ranks deterministic: the chain's parameters differ from the flat path's")
        XCTAssertTrue(chain == single, "2 hosts × 2 ranks deterministic: parameters differ from 1 process × 4 micro-batches")
        let accumulate = ["--set", "training.accumulation_steps=2"]
        let chainAccumulated = try parameters(accumulate + ["--set", "distributed.transport=hierarchical"], ranks: 4)
        let flatAccumulated = try parameters(accumulate + ["--set", "distributed.transport=mpi"], ranks: 4)
        XCTAssertTrue(chainAccumulated == flatAccumulated, "with 2 micro-batches per rank the chain differs from the flat path")
        XCTAssertFalse(chainAccumulated == chain)
    }

    /// 2 hosts × 2 ranks, hierarchical: rank 3 is stopped (so the others block inside the hierarchical reduction, in
    /// the node barrier or the cross-node send-receive) and then killed; the job ends well within the watchdog timeout
    /// with mpirun naming rank 3, the newest checkpoint verifies, and resuming on the same cluster ends bit-identical
    /// to an uninterrupted run.
    func testKilledRankDuringHierarchicalReductionEndsJobThenResumeIsBitIdentical() throws {
        try up(2, slotsPerHost: 2)
        let steps = 60, timeout = 20.0
        let checkpointDirectory = directory + "/checkpoints"
        func arguments(delay: Int, maxSteps: Int) -> [String] {
            ["train", "--config", MPIRun.config("fashion-mlp.yaml"), "--set", "data.train_subset=8192", "--set", "data.test_subset=1000",
             "--set", "training.epochs=10", "--set", "checkpoint.every_steps=5", "--set", "checkpoint.keep=50",
             "--set", "debug.step_delay_ms=\(delay)", "--set", "training.max_steps=\(maxSteps)",
             "--set", "distributed.transport=hierarchical", "--set", "distributed.timeout_seconds=\(Int(timeout))"]
        }
        let fullPath = directory + "/full.f32", resumedPath = directory + "/resumed.f32"
        let reference = try cluster("run", "2", arguments(delay: 0, maxSteps: steps)
                                    + ["--checkpoint-dir", directory + "/reference", "--dump-parameters", fullPath])
        XCTAssertEqual(reference.status, 0, reference.stderr)
        XCTAssertTrue(reference.stdout.contains("gradient reduction hierarchical"), reference.stdout)

        let clock = FaultClock()
        let injector = Thread {
            let deadline = Date().addingTimeInterval(90)
            while Date() < deadline && Self.checkpoints(checkpointDirectory).count < 2 { Thread.sleep(forTimeInterval: 0.05) }
            do {
                let victim = try XCTUnwrap(Self.rankPID(rank: 3, host: "\(Self.prefix)2"), "rank 3 is not running on \(Self.prefix)2")
                kill(victim, SIGSTOP)
                Thread.sleep(forTimeInterval: 1)  // the other ranks reach the reduction and wait there for rank 3
                clock.mark()
                kill(victim, SIGKILL)
            } catch { XCTFail("fault injection failed: \(error)") }
        }
        injector.start()
        // Slowed (50 ms per step) so that the run is still going when the fault comes.
        let killed = try cluster("run", "2", arguments(delay: 50, maxSteps: steps) + ["--checkpoint-dir", checkpointDirectory],
                                 timeout: 90 + Self.faultBound)
        let end = Date()
        let faultTime = try XCTUnwrap(clock.value, "the fault was never injected: \(killed.stdout)\(killed.stderr)")
        let output = killed.stdout + killed.stderr
        XCTAssertNotEqual(killed.status, 0, output)
        XCTAssertFalse(output.contains("done:"), "the run finished before the fault: \(output)")
        XCTAssertLessThan(end.timeIntervalSince(faultTime), timeout, "the job took longer than the watchdog timeout to end: \(output)")
        XCTAssertTrue(output.contains("process rank 3") && output.contains("on node \(Self.prefix)2"),
                      "mpirun should name rank 3 on \(Self.prefix)2: \(output)")

        let newest = try XCTUnwrap(Self.checkpoints(checkpointDirectory).last.map { checkpointDirectory + "/" + $0 })
        let inspection = try MPIRun.run(ranks: 0, ["checkpoint", "inspect", newest])
        XCTAssertTrue(inspection.stdout.contains("checksum: OK"), inspection.stdout + inspection.stderr)
        let resumed = try cluster("run", "2", arguments(delay: 0, maxSteps: steps) + ["--checkpoint-dir", checkpointDirectory,
                                                                                      "--resume", "auto", "--dump-parameters", resumedPath])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stdout.contains("resume: from \(newest)"), resumed.stdout)
        let a = try Data(contentsOf: URL(fileURLWithPath: fullPath)), b = try Data(contentsOf: URL(fileURLWithPath: resumedPath))
        XCTAssertFalse(a.isEmpty)
        XCTAssertTrue(a == b, "resumed parameters differ from the uninterrupted hierarchical run's")
    }

    /// 2 hosts × 2 ranks, hierarchical: rank 3 frozen (SIGSTOP) leaves the others blocked inside the hierarchical
    /// reduction; their watchdogs fire after the timeout and, from the flight records (node barriers and cross-node
    /// send-receives are recorded like every collective), name rank 3 and its host.
    func testFrozenRankDuringHierarchicalReductionIsNamedByTheWatchdog() throws {
        try frozenRankIsNamedByTheWatchdog(["--set", "distributed.transport=hierarchical"], reduction: "hierarchical")
    }

    /// The same in deterministic mode, whose chain across nodes is flight-recorded step by step like the ring.
    func testFrozenRankDuringDeterministicChainIsNamedByTheWatchdog() throws {
        try frozenRankIsNamedByTheWatchdog(["--set", "distributed.deterministic=true"],
                                           reduction: "deterministic (in rank order through node-shared memory and a chain across nodes)")
    }

    private func frozenRankIsNamedByTheWatchdog(_ extra: [String], reduction: String) throws {
        try up(2, slotsPerHost: 2)
        let timeout = 10.0
        let checkpointDirectory = directory + "/checkpoints"
        final class Frozen: @unchecked Sendable { var pid: pid_t? }
        let frozen = Frozen()
        defer { if let pid = frozen.pid { kill(pid, SIGCONT); kill(pid, SIGKILL) } }
        let clock = FaultClock()
        let injector = Thread {
            let deadline = Date().addingTimeInterval(90)
            while Date() < deadline && Self.checkpoints(checkpointDirectory).count < 2 { Thread.sleep(forTimeInterval: 0.05) }
            frozen.pid = Self.rankPID(rank: 3, host: "\(Self.prefix)2")
            if let pid = frozen.pid { kill(pid, SIGSTOP) } else { XCTFail("rank 3 is not running on \(Self.prefix)2") }
            clock.mark()
        }
        injector.start()
        let result = try cluster("run", "2", trainArguments(delay: 50) + extra
                                     + ["--set", "training.max_steps=400", "--set", "distributed.timeout_seconds=\(Int(timeout))"],
                                 timeout: 90 + Self.faultBound)
        let end = Date()
        let faultTime = try XCTUnwrap(clock.value, "the fault was never injected: \(result.stdout)\(result.stderr)")
        let output = result.stdout + result.stderr
        XCTAssertNotEqual(result.status, 0, output)
        XCTAssertTrue(output.contains("gradient reduction \(reduction)"), output)
        XCTAssertLessThanOrEqual(end.timeIntervalSince(faultTime), timeout + 30, output)
        XCTAssertTrue(output.contains("watchdog: no progress"), output)
        XCTAssertTrue(output.contains("rank 3 (host \(Self.prefix)2)"), "the diagnosis should name rank 3 on \(Self.prefix)2: \(output)")
    }

    /// kill -9 of every process of one host mid-run ends the job; the newest checkpoint verifies and training resumes
    /// on the 2 remaining hosts (the README's recovery procedure).
    func testKilledHostEndsJobThenResumeOnRemainingHosts() throws {
        try up(3)
        let victim = "\(Self.prefix)3"
        let failed = try runWithFault { try Self.killEveryProcess(of: victim) }
        try assertEndedByFault(failed, lostHost: victim, lostRank: 2)

        let checkpointDirectory = directory + "/checkpoints"
        let files = Self.checkpoints(checkpointDirectory)
        XCTAssertGreaterThanOrEqual(files.count, 2, "the run should have written checkpoints before the fault")
        let newest = try XCTUnwrap(files.last.map { checkpointDirectory + "/" + $0 })
        let inspection = try MPIRun.run(ranks: 0, ["checkpoint", "inspect", newest])
        XCTAssertEqual(inspection.status, 0, inspection.stdout + inspection.stderr)
        XCTAssertTrue(inspection.stdout.contains("checksum: OK"), inspection.stdout)
        let step = try XCTUnwrap(Int(newest.split(separator: "-").last!.prefix(8)), newest)

        // Recovery: fresh cluster without the lost host, resume from the newest checkpoint, a few more steps.
        _ = try cluster("down")
        try up(2)
        let resumed = try cluster("run", "1", trainArguments(delay: 0) + ["--set", "training.max_steps=\(step + 6)", "--resume", "auto"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stdout.contains("resume: from \(newest)"), resumed.stdout)
        XCTAssertTrue(resumed.stdout.contains("written on 3 ranks, resuming on 2"), resumed.stdout)
        XCTAssertTrue(resumed.stdout.contains("\(step + 6) steps"), "resume should continue to step \(step + 6): \(resumed.stdout)")
    }

    /// One host's link goes down mid-run: mpirun and every process on the other hosts exit non-zero within the bound.
    func testHostLinkDownEndsJob() throws {
        try up(3)
        let victim = "\(Self.prefix)2"
        let failed = try runWithFault {
            let result = try Self.command(["ip", "-n", victim, "link", "set", "eth0", "down"])
            XCTAssertEqual(result.status, 0, result.stderr)
        }
        try assertEndedByFault(failed, lostHost: victim, lostRank: 1)
    }

    /// Every process of one host frozen (SIGSTOP: a kernel lockup, a D-state NFS wait, a paused VM). The healthy
    /// ranks' watchdogs fire after `timeout_seconds`, name the silent rank and its host, and leave on their own; the
    /// launcher ends mpirun, which would otherwise wait on the frozen daemon for ever. Bound: the timeout, 2 s for
    /// the flight records, 5 s abort grace, the launcher's 10 s grace, 3 s TERM→KILL, and slack.
    func testFrozenHostEndsJobWithinTheWatchdogBound() throws {
        try up(3)
        let victim = "\(Self.prefix)3"
        let timeout = 10.0
        final class Frozen: @unchecked Sendable { var pids: [pid_t] = [] }
        let frozen = Frozen()
        defer { for pid in frozen.pids { kill(pid, SIGCONT); kill(pid, SIGKILL) } }
        let failed = try runWithFault(extra: ["--set", "distributed.timeout_seconds=\(Int(timeout))"]) {
            frozen.pids = try Self.command(["ip", "netns", "pids", victim]).stdout.split(separator: "\n").compactMap { pid_t($0) }
            XCTAssertFalse(frozen.pids.isEmpty, "no processes on \(victim) to freeze")
            for pid in frozen.pids { kill(pid, SIGSTOP) }
        }
        let output = failed.result.stdout + failed.result.stderr
        XCTAssertNotEqual(failed.result.status, 0, output)
        XCTAssertLessThanOrEqual(failed.secondsToExit, timeout + 30, "mpirun took \(failed.secondsToExit) s to exit: \(output)")
        XCTAssertTrue(output.contains("watchdog: no progress"), output)
        XCTAssertTrue(output.contains("rank 2 (host \(victim))"), "the diagnosis should name rank 2 on \(victim): \(output)")
        // The healthy hosts' processes are gone; the frozen ones stay until thawed (the defer kills them).
        let deadline = Date().addingTimeInterval(10)
        var healthy = try namespacePIDs().filter { !frozen.pids.contains($0) }
        while !healthy.isEmpty && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.1)
            healthy = try namespacePIDs().filter { !frozen.pids.contains($0) }
        }
        XCTAssertEqual(healthy, [], "processes of the healthy hosts still running 10 s after mpirun ended")
    }

    /// Hosts on 10 Mbit/s links (tc tbf both ways): every step's allreduce takes most of a second, yet the watchdog at
    /// its default timeout stays quiet and the parameters are bit-identical to the same run on unlimited links.
    func testSlowLinksChangeNeitherResultsNorTripTheWatchdog() throws {
        try up(2)
        let base = ["train", "--config", MPIRun.config("fashion-mlp.yaml"), "--set", "data.train_subset=8192",
                    "--set", "data.test_subset=1000", "--set", "training.max_steps=12", "--set", "distributed.check_every=4"]
        let fastPath = directory + "/fast.f32", slowPath = directory + "/slow.f32"
        let fast = try cluster("run", "1", base + ["--dump-parameters", fastPath])
        XCTAssertEqual(fast.status, 0, fast.stderr)
        let limit = try cluster("rate", "10mbit")
        XCTAssertEqual(limit.status, 0, limit.stderr)
        let slow = try cluster("run", "1", base + ["--dump-parameters", slowPath], timeout: 300)
        XCTAssertEqual(slow.status, 0, slow.stderr)
        XCTAssertFalse(slow.stderr.contains("watchdog"), slow.stderr)
        // 12 allreduces of 0.94 MB at 1.25 MB/s: the limit must have been in force.
        XCTAssertGreaterThan(slow.seconds, fast.seconds + 5, "the 10 Mbit/s limit did not slow the run")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: slowPath)), try Data(contentsOf: URL(fileURLWithPath: fastPath)))
    }

    // MARK: - Helpers

    private struct FaultRun {
        var result: MPIRun.Result
        /// Seconds from the fault to mpirun's exit.
        var secondsToExit: Double
    }

    /// Records when the fault thread acted; read after the run.
    private final class FaultClock: @unchecked Sendable {
        private let lock = NSLock()
        private var time: Date?
        func mark() { lock.lock(); time = Date(); lock.unlock() }
        var value: Date? { lock.lock(); defer { lock.unlock() }; return time }
    }

    /// Equivalence of 2 emulated hosts × 2 ranks × batch 16 with 1 process × batch 64 through `transport`.
    private func twoHostsOfTwoRanks(transport: String) throws -> Equivalence.Outcome {
        try up(2, slotsPerHost: 2)
        let base = ["train", "--config", MPIRun.config("fashion-mlp.yaml"), "--set", "data.train_subset=8192",
                    "--set", "data.test_subset=1000", "--set", "training.epochs=10", "--set", "training.max_steps=60",
                    "--set", "distributed.check_every=10", "--set", "distributed.transport=\(transport)"]
        return try Equivalence.measure(base: base, ranks: 4, batch: 16) { try self.cluster("run", "2", $0) }
    }

    private func trainArguments(delay: Int) -> [String] {
        ["train", "--config", MPIRun.config("fashion-mlp.yaml"), "--set", "data.train_subset=8192", "--set", "data.test_subset=1000",
         "--set", "training.epochs=10", "--set", "checkpoint.every_steps=5", "--set", "checkpoint.keep=50",
         "--set", "debug.step_delay_ms=\(delay)", "--checkpoint-dir", directory + "/checkpoints"]
    }

    /// Starts 3 hosts × 1 rank, slowed to ~50 ms per step, and runs `fault` once two checkpoints exist (mid-run).
    private func runWithFault(extra: [String] = [], _ fault: @escaping @Sendable () throws -> Void) throws -> FaultRun {
        let checkpointDirectory = directory + "/checkpoints"
        let clock = FaultClock()
        let injector = Thread {
            let deadline = Date().addingTimeInterval(90)
            while Date() < deadline && Self.checkpoints(checkpointDirectory).count < 2 { Thread.sleep(forTimeInterval: 0.05) }
            do { try fault() } catch { XCTFail("fault injection failed: \(error)") }
            clock.mark()
        }
        injector.start()
        let result = try cluster("run", "1", trainArguments(delay: 50) + ["--set", "training.max_steps=400"] + extra,
                                 timeout: 90 + Self.faultBound)
        let end = Date()
        let faultTime = try XCTUnwrap(clock.value, "the fault was never injected: \(result.stdout)\(result.stderr)")
        return FaultRun(result: result, secondsToExit: end.timeIntervalSince(faultTime))
    }

    private func assertEndedByFault(_ run: FaultRun, lostHost: String, lostRank: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let output = run.result.stdout + run.result.stderr
        XCTAssertNotEqual(run.result.status, 0, "the job must fail when a host is lost: \(output)", file: file, line: line)
        XCTAssertFalse(output.contains("done:"), "the run finished before the fault", file: file, line: line)
        XCTAssertLessThanOrEqual(run.secondsToExit, Self.faultBound, "mpirun took \(run.secondsToExit) s to exit", file: file, line: line)
        XCTAssertTrue(output.contains("on node \(lostHost)") || output.contains("rank \(lostRank)"),
                      "the output should name \(lostHost) or rank \(lostRank): \(output)", file: file, line: line)
        // The surviving hosts' daemons and ranks are gone too, within the same bound counted from the fault.
        let deadline = Date().addingTimeInterval(Self.faultBound - run.secondsToExit)
        var remaining = try namespacePIDs()
        while !remaining.isEmpty && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.1)
            remaining = try namespacePIDs()
        }
        XCTAssertEqual(remaining, [], "processes still running on the emulated hosts \(Self.faultBound) s after the fault",
                       file: file, line: line)
    }

    /// PID of world rank `rank` among the lockstep processes in `host`'s namespace (from OMPI_COMM_WORLD_RANK).
    private static func rankPID(rank: Int, host: String) -> pid_t? {
        guard let pids = try? command(["ip", "netns", "pids", host]).stdout.split(separator: "\n").compactMap({ pid_t($0) }) else { return nil }
        return pids.first { pid in
            guard let command = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
                  String(decoding: command.split(separator: 0).first ?? [], as: UTF8.self).hasSuffix("/lockstep"),
                  let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            return environment.split(separator: 0).contains { String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=\(rank)" }
        }
    }

    private static func killEveryProcess(of host: String) throws {
        let pids = try command(["ip", "netns", "pids", host]).stdout.split(separator: "\n").compactMap { pid_t($0) }
        XCTAssertFalse(pids.isEmpty, "no processes on \(host) to kill")
        for pid in pids { kill(pid, SIGKILL) }
    }

    private func up(_ hosts: Int, slotsPerHost: Int = 1) throws {
        let result = try cluster("up", String(hosts), ["--slots", String(slotsPerHost)])
        XCTAssertEqual(result.status, 0, "launch/testcluster up \(hosts) --slots \(slotsPerHost) failed: \(result.stderr)")
        if result.status != 0 { throw XCTSkip("no cluster") }
    }

    /// `launch/testcluster VERB args…` for this test's cluster, with the binary under test.
    @discardableResult
    private func cluster(_ verb: String, _ first: String? = nil, _ arguments: [String] = [], timeout: Double = 120) throws -> MPIRun.Result {
        let environment = ["LOCKSTEP_TESTCLUSTER_PREFIX=\(Self.prefix)", "LOCKSTEP_BIN=\(MPIRun.binary)"]
        return try MPIRun.execute(environment + [Self.script, verb] + (first.map { [$0] } ?? []) + arguments, timeout: timeout)
    }

    private static func command(_ words: [String]) throws -> MPIRun.Result { try MPIRun.execute(words, timeout: 30) }

    private static func namespaces() throws -> [String] {
        try command(["ip", "netns", "list"]).stdout.split(separator: "\n").map { String($0.split(separator: " ")[0]) }
            .filter { $0.hasPrefix(prefix) }.sorted()
    }

    private func namespacePIDs() throws -> [pid_t] {
        try Self.namespaces().flatMap { name in
            try Self.command(["ip", "netns", "pids", name]).stdout.split(separator: "\n").compactMap { pid_t($0) }
        }
    }

    private static func rootLinks() throws -> [String] {
        try command(["ip", "-o", "link", "show"]).stdout.split(separator: "\n")
            .map { String($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) }.sorted()
    }

    private static func checkpoints(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".safetensors") }.sorted()
    }
}
