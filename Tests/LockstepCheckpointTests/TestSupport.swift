import Foundation
import XCTest
@testable import LockstepCheckpoint

/// A fresh temporary directory per test, removed afterwards.
func makeTemporaryDirectory(_ label: String = "ckpt") throws -> String {
    let path = NSTemporaryDirectory() + "lockstep-\(label)-\(getpid())-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Runs a program, returning exit status, stdout and stderr.
@discardableResult
func runProgram(_ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let output = Pipe(), error = Pipe()
    process.standardOutput = output
    process.standardError = error
    try process.run()
    // Read before waiting so a large output cannot fill the pipe and deadlock.
    let outData = output.fileHandleForReading.readDataToEndOfFile()
    let errData = error.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

/// Reads a file's bytes.
func fileBytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

/// Overwrites a file's bytes.
func writeBytes(_ bytes: [UInt8], to path: String) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

/// The error a throwing call produced, failing the test when it did not throw.
func expectError<T>(_ body: () throws -> T, file: StaticString = #filePath, line: UInt = #line) -> CheckpointError? {
    do {
        _ = try body()
        XCTFail("expected an error, got success", file: file, line: line)
        return nil
    } catch let error as CheckpointError {
        return error
    } catch {
        XCTFail("expected CheckpointError, got \(error)", file: file, line: line)
        return nil
    }
}

/// A handful of F32 tensors with distinctive values, for store tests.
func sampleTensors(seed: Float, count: Int = 12) -> [TensorSource] {
    [TensorSource(name: "layers.0.weight", shape: [3, count / 3], floats: (0..<count).map { Float($0) * 0.25 + seed }),
     TensorSource(name: "layers.0.bias", shape: [3], floats: [seed, -seed, 0.5]),
     TensorSource(name: "optimizer.layers.0.weight.momentum_buffer", shape: [3, count / 3],
                  floats: (0..<count).map { Float($0) * -0.125 + seed })]
}

/// Mounts a tmpfs of `size` (e.g. "64k") on `directory`, or throws XCTSkip saying why it cannot.
func mountTmpfs(_ directory: String, size: String) throws {
    guard geteuid() == 0 else { throw XCTSkip("mounting a tmpfs needs root; this test is skipped when not root") }
    let result = try runProgram(["mount", "-t", "tmpfs", "-o", "size=\(size)", "tmpfs", directory])
    guard result.status == 0 else {
        throw XCTSkip("could not mount a tmpfs on \(directory) (status \(result.status): \(result.error.trimmingCharacters(in: .whitespacesAndNewlines)))")
    }
}
