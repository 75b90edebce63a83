import Foundation
import XCTest

/// The rest of the fault matrix on one node: a hung single process, graceful stops through the launchers, load,
/// a data directory that vanishes, a disk that fills between checkpoints, two jobs on one checkpoint directory.
final class FaultMatrixTests: ScratchDirectoryTestCase {
    private func arguments(steps: Int = 200, delay: Int = 0) -> [String] {
        ["train", "--config", MPIRun.config("fashion-mlp.yaml"), "--set", "data.train_subset=8192", "--set", "data.test_subset=1000",
         "--set", "training.epochs=10", "--set", "training.max_steps=\(steps)", "--set", "checkpoint.every_steps=10",
         "--set", "checkpoint.keep=50", "--set", "debug.step_delay_ms=\(delay)"]
    }

    private static func checkpoints(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".safetensors") }.sorted()
    }

    /// Waits (up to 60 s) until `dir` holds `count` checkpoints.
    private static func waitForCheckpoints(_ dir: String, count: Int) {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && checkpoints(dir).count < count { Thread.sleep(forTimeInterval: 0.05) }
    }

    /// A single process stuck inside a step (no peers, no collective) is ended by its own watchdog, naming the step.
    func testWatchdogEndsAHungSingleProcess() throws {
        let result = try MPIRun.run(ranks: 0, arguments() + ["--set", "debug.hang_step=30", "--set", "distributed.timeout_seconds=3"],
                                    timeout: 60)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertLessThan(result.seconds, 30)
        XCTAssertTrue(result.stderr.contains("watchdog: no progress for 3 s at step 30"), result.stderr)
    }

    /// SIGTERM to a launcher (what Slurm's time limit or scancel sends to the batch script) stops every rank at the
    /// same step with a final checkpoint, and the launcher exits 0 although mpirun exits 1 after a forwarded signal.
    func testSIGTERMToTheLaunchersIsAGracefulStop() throws {
        let local = [MPIRun.packageRoot.appendingPathComponent("launch/local").path, "2"]
        // No Slurm here: the batch script runs as sbatch would start it, with the variables Slurm would set.
        let slurm = ["env", "SLURM_NTASKS_PER_NODE=2", "SLURM_CPUS_PER_TASK=1", "SLURM_SUBMIT_DIR=\(MPIRun.packageRoot.path)",
                     "bash", MPIRun.packageRoot.appendingPathComponent("launch/slurm.sbatch").path]
        for launcher in [local, slurm] {
            let checkpointDirectory = directory + "/\(launcher.count)"
            let run = try runAndSignal(launcher + arguments(steps: 2000, delay: 15) + ["--checkpoint-dir", checkpointDirectory],
                                       signal: SIGTERM, whenCheckpoints: 2, in: checkpointDirectory)
            let name = launcher.last!
            XCTAssertEqual(run.status, 0, "\(name): \(run.stderr)")
            XCTAssertTrue(run.stderr.contains("every rank stopped on SIGTERM"), "\(name): \(run.stderr)")
            let stop = try XCTUnwrap(run.stdout.split(separator: "\n").first { $0.contains("stop requested: every rank stops at step") },
                                     "\(name): \(run.stdout)")
            let step = try XCTUnwrap(Int(stop.split(separator: " ").last!))
            XCTAssertTrue(Self.checkpoints(checkpointDirectory).contains(String(format: "step-%08d.safetensors", step)),
                          "\(name): final checkpoint at step \(step) missing: \(Self.checkpoints(checkpointDirectory))")
        }
    }

    /// A failing job still fails through the launcher: its exit code is mpirun's, not the graceful 0.
    func testLauncherKeepsTheExitCodeOfAFailedJob() throws {
        let local = [MPIRun.packageRoot.appendingPathComponent("launch/local").path, "2"]
        let result = try MPIRun.execute(local + arguments(steps: 20) + ["--set", "debug.nan_step=3", "--set", "distributed.nonfinite=stop"],
                                        timeout: 120)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("step 3: non-finite"), result.stderr)
    }

    /// A third process saturating a core slows the ranks but neither trips a tight watchdog nor changes the result.
    func testLoadedCoreNeitherTripsTheWatchdogNorChangesResults() throws {
        let quiet = directory + "/quiet.f32", loaded = directory + "/loaded.f32"
        let base = arguments(steps: 300) + ["--set", "distributed.timeout_seconds=10", "--set", "checkpoint.every_steps=0"]
        let first = try MPIRun.run(ranks: 2, base + ["--dump-parameters", quiet])
        XCTAssertEqual(first.status, 0, first.stderr)
        let hog = Process()
        hog.executableURL = URL(fileURLWithPath: "/bin/sh")
        hog.arguments = ["-c", "while :; do :; done"]
        try hog.run()
        defer { hog.terminate(); hog.waitUntilExit() }
        let second = try MPIRun.run(ranks: 2, base + ["--dump-parameters", loaded])
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertFalse(second.stderr.contains("watchdog"), second.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: loaded)), try Data(contentsOf: URL(fileURLWithPath: quiet)),
                       "the same run under load must end with the same bits")
    }

    /// The dataset is read into memory at start-up: removing its directory mid-run changes nothing for the run, and a
    /// later resume without it fails before training, naming the missing file.
    func testDataDirectoryRemovedMidRun() throws {
        let data = directory + "/fashion", checkpointDirectory = directory + "/checkpoints"
        try FileManager.default.copyItem(atPath: "/usr/share/datasets/fashion-mnist", toPath: data)
        let base = arguments(steps: 120, delay: 10) + ["--set", "data.path=\(data)", "--checkpoint-dir", checkpointDirectory]
        let remover = Thread {
            Self.waitForCheckpoints(checkpointDirectory, count: 2)
            try? FileManager.default.removeItem(atPath: data)
        }
        remover.start()
        let run = try MPIRun.run(ranks: 2, base, timeout: 120)
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: data), "the directory should be gone before the run ends")
        XCTAssertTrue(run.stdout.contains("120 steps"), run.stdout)
        let resumed = try MPIRun.run(ranks: 2, base + ["--set", "training.max_steps=130", "--resume", "auto"], timeout: 60)
        XCTAssertNotEqual(resumed.status, 0)
        XCTAssertTrue(resumed.stderr.contains(data), resumed.stderr)
    }

    /// The disk fills up (another writer) between two checkpoints: the next checkpoint fails with a clear error, the
    /// previous one and `latest` stay intact, no temporary file is left.
    func testDiskFilledBetweenCheckpointsKeepsThePreviousOne() throws {
        let mountPoint = directory + "/tinyfs"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        defer { _ = try? MPIRun.execute(["umount", mountPoint], timeout: 30) }
        let mount = try MPIRun.execute(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mountPoint], timeout: 30)
        if mount.status != 0 { throw XCTSkip("cannot mount a tmpfs here (needs root): \(mount.stderr)") }
        let checkpointDirectory = mountPoint + "/checkpoints"
        let filler = Thread {
            Self.waitForCheckpoints(checkpointDirectory, count: 1)
            // Fill what is left; the write stops at ENOSPC.
            _ = try? MPIRun.execute(["dd", "if=/dev/zero", "of=\(mountPoint)/filler", "bs=1M", "count=64"], timeout: 30)
        }
        filler.start()
        let run = try MPIRun.run(ranks: 2, arguments(steps: 200, delay: 30) + ["--checkpoint-dir", checkpointDirectory], timeout: 120)
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.stderr.lowercased().contains("no space"), run.stderr)
        let files = Self.checkpoints(checkpointDirectory)
        XCTAssertFalse(files.isEmpty)
        XCTAssertFalse(((try? FileManager.default.contentsOfDirectory(atPath: checkpointDirectory)) ?? []).contains { $0.contains(".tmp") },
                       "no temporary file may be left behind")
        let latest = try String(contentsOfFile: checkpointDirectory + "/latest", encoding: .utf8)
        XCTAssertTrue(latest.contains(files.last!.replacingOccurrences(of: ".safetensors", with: "")), "\(latest) vs \(files)")
        let inspection = try MPIRun.run(ranks: 0, ["checkpoint", "inspect", checkpointDirectory + "/" + files.last!])
        XCTAssertTrue(inspection.stdout.contains("checksum: OK"), inspection.stdout)
    }

    /// A second job on a checkpoint directory in use refuses to start, naming the first; the first is undisturbed.
    func testSecondJobOnTheSameCheckpointDirectoryRefuses() throws {
        let checkpointDirectory = directory + "/checkpoints"
        final class Box: @unchecked Sendable { var result: MPIRun.Result? }
        let first = Box()
        let firstArguments = arguments(steps: 150, delay: 20) + ["--checkpoint-dir", checkpointDirectory]
        let firstJob = Thread { first.result = try? MPIRun.run(ranks: 2, firstArguments, timeout: 120) }
        firstJob.start()
        Self.waitForCheckpoints(checkpointDirectory, count: 1)
        let second = try MPIRun.run(ranks: 0, arguments(steps: 150) + ["--checkpoint-dir", checkpointDirectory], timeout: 60)
        XCTAssertNotEqual(second.status, 0)
        XCTAssertTrue(second.stderr.contains("checkpoint directory is in use by another job (pid"), second.stderr)
        while !firstJob.isFinished { Thread.sleep(forTimeInterval: 0.1) }
        let result = try XCTUnwrap(first.result)
        XCTAssertEqual(result.status, 0, result.stderr)
        let latest = try String(contentsOfFile: checkpointDirectory + "/latest", encoding: .utf8)
        XCTAssertTrue(latest.contains("step-00000150"), latest)
    }

    /// Runs `command`, sends `signal` to it once `dir` holds `count` checkpoints, and returns how it ended.
    private func runAndSignal(_ command: [String], signal: Int32, whenCheckpoints count: Int, in dir: String) throws -> MPIRun.Result {
        final class PID: @unchecked Sendable { var value: pid_t = 0 }
        let pid = PID()
        let sender = Thread {
            Self.waitForCheckpoints(dir, count: count)
            if pid.value > 0 { kill(pid.value, signal) }
        }
        return try MPIRun.execute(command, timeout: 180) { started in
            pid.value = started
            sender.start()
        }
    }
}
