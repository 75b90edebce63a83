import Foundation
import XCTest

/// Runs the built `lockstep` binary under `mpirun` (or alone) and captures its output.
enum MPIRun {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        var seconds: Double
    }

    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The release binary the README's build produces (override with LOCKSTEP_BIN). Under a bare `swift test`,
    /// where no release build exists, it is built once into `.build-tests/` (a separate scratch path: the running
    /// `swift test` holds `.build`).
    static let binary: String = {
        if let path = ProcessInfo.processInfo.environment["LOCKSTEP_BIN"] { return path }
        let release = packageRoot.appendingPathComponent(".build/release/lockstep").path
        if FileManager.default.isExecutableFile(atPath: release) { return release }
        let scratch = packageRoot.appendingPathComponent(".build-tests").path
        buildOnce(["swift", "build", "-c", "release", "--product", "lockstep", "--package-path", packageRoot.path, "--scratch-path", scratch])
        return scratch + "/release/lockstep"
    }()

    /// Runs a build command, its output going to this process's stderr so a failure shows why.
    static func buildOnce(_ command: [String]) {
        FileHandle.standardError.write(Data("MultiRankTests: building what the tests run: \(command.joined(separator: " "))\n".utf8))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = command
        try? process.run()
        process.waitUntilExit()
    }

    static func requireBinary() throws {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            XCTFail("\(binary) not found and could not be built: build it with `swift build -c release` (the README's test command does)")
            throw XCTSkip("no binary")
        }
    }

    static func config(_ name: String) -> String { packageRoot.appendingPathComponent("configs/\(name)").path }

    /// `mpirun -np ranks lockstep args…` with one BLAS thread per rank; `ranks == 0` runs the binary without mpirun.
    static func run(ranks: Int, _ arguments: [String], timeout: Double = 300) throws -> Result {
        try requireBinary()
        var command: [String]
        if ranks == 0 {
            command = [binary] + arguments
        } else {
            command = ["mpirun", "-np", String(ranks), "--mca", "pml", "ob1", "--bind-to", "none",
                       "-x", "OPENBLAS_NUM_THREADS=1"]
            if ranks > ProcessInfo.processInfo.activeProcessorCount {
                command += ["--oversubscribe", "--mca", "mpi_yield_when_idle", "1"]
            }
            command += [binary] + arguments
        }
        return try execute(command, timeout: timeout)
    }

    /// Multiple-program launch: each element is one rank's argument list (`mpirun -np 1 a : -np 1 b`).
    static func runPerRank(_ perRank: [[String]], timeout: Double = 120) throws -> Result {
        try requireBinary()
        var command = ["mpirun", "--mca", "pml", "ob1", "--bind-to", "none", "-x", "OPENBLAS_NUM_THREADS=1"]
        for (index, arguments) in perRank.enumerated() {
            if index > 0 { command.append(":") }
            command += ["-np", "1", binary] + arguments
        }
        return try execute(command, timeout: timeout)
    }

    /// Runs `command` to its end (killing it after `timeout`); `onStart` receives its PID once it runs.
    static func execute(_ command: [String], timeout: Double, onStart: ((pid_t) -> Void)? = nil) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = command
        var environment = ProcessInfo.processInfo.environment
        environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        environment["OPENBLAS_NUM_THREADS"] = "1"
        environment["LOCKSTEP_BIN"] = binary  // the launchers run the binary under test
        process.environment = environment
        let outputFile = FileManager.default.temporaryDirectory.appendingPathComponent("lockstep-out-\(UUID().uuidString)")
        let errorFile = FileManager.default.temporaryDirectory.appendingPathComponent("lockstep-err-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        FileManager.default.createFile(atPath: errorFile.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outputFile); try? FileManager.default.removeItem(at: errorFile) }
        process.standardOutput = try FileHandle(forWritingTo: outputFile)
        process.standardError = try FileHandle(forWritingTo: errorFile)
        let start = Date()
        try process.run()
        onStart?(process.processIdentifier)
        while process.isRunning {
            if Date().timeIntervalSince(start) > timeout {
                process.terminate()
                Thread.sleep(forTimeInterval: 2)
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                XCTFail("timed out after \(timeout) s: \(command.joined(separator: " "))")
                break
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        process.waitUntilExit()
        let result = Result(status: process.terminationStatus,
                            stdout: (try? String(contentsOf: outputFile, encoding: .utf8)) ?? "",
                            stderr: (try? String(contentsOf: errorFile, encoding: .utf8)) ?? "",
                            seconds: Date().timeIntervalSince(start))
        return result
    }

    /// PIDs of running `lockstep` ranks whose command line contains `marker` (e.g. their checkpoint directory).
    static func rankPIDs(matching marker: String) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            let words = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            return words.first.map { $0.hasSuffix("/lockstep") } == true && words.contains(marker)
        }.sorted()
    }

    /// Reads a raw float32 file written by `--dump-parameters`.
    static func floats(_ path: String) throws -> [Float] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    /// max|a − b| / max|b|: the normwise relative difference of two parameter vectors.
    static func relativeDifference(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count)
        var difference = 0.0, scale = 0.0
        for i in a.indices {
            difference = max(difference, Double(abs(a[i] - b[i])))
            scale = max(scale, Double(abs(b[i])))
        }
        return difference / max(scale, 1e-30)
    }

    static func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("lockstep-\(UUID().uuidString)-\(name)").path
    }
}

/// A test case with a fresh temporary `directory` per test, removed afterwards.
class ScratchDirectoryTestCase: XCTestCase {
    /// Created empty before each test.
    var directory = ""

    override func setUp() {
        directory = MPIRun.temporaryPath("\(type(of: self))")
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: directory) }
}
