import Foundation
import XCTest
@testable import LockstepCheckpoint

/// Checks files against the reference `safetensors` Python package (skipped when it cannot be installed).
final class PythonInteropTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws { directory = try makeTemporaryDirectory("py") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("scripts/read_safetensors.py").path

    /// Runs the reader script, installing `safetensors`/`numpy` once if the script says they are missing.
    private func readWithPython(_ path: String) throws -> [String: Any] {
        guard (try? runProgram(["python3", "--version"]))?.status == 0 else { throw XCTSkip("python3 is not available") }
        var result = try runProgram(["python3", Self.script, path])
        if result.status == 3 {
            let install = try runProgram(["python3", "-m", "pip", "install", "--quiet", "safetensors", "numpy"])
            guard install.status == 0 else {
                throw XCTSkip("could not install the safetensors package: \(install.error.suffix(300))")
            }
            result = try runProgram(["python3", Self.script, path])
        }
        if result.status == 3 { throw XCTSkip("safetensors/numpy still not importable: \(result.error)") }
        XCTAssertEqual(result.status, 0, "reference reader rejected \(path): \(result.error)")
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any], result.output)
    }

    func testReferenceImplementationReadsOurFiles() throws {
        let weight = (0..<24).map { Float($0) * 0.1 - 1.1 }
        let bias: [Float] = [1e-30, -0.0, 3.4e38]
        let tensors = [TensorSource(name: "layers.0.weight", shape: [2, 3, 4], floats: weight),
                       TensorSource(name: "layers.0.bias", shape: [3], floats: bias),
                       TensorSource(name: "layers.1.running_var", shape: [], floats: [0.75]),
                       TensorSource(name: "stats", shape: [2], doubles: [0.1, -2.5]),
                       TensorSource(name: "counts", shape: [3], int64s: [1, -2, 1 << 40])]
        let metadata = ["step": "100", "config": "lr: 0.1\nname: \"quoted\" é"]
        let path = directory + "/ours.safetensors"
        try SafeTensors.write(tensors, metadata: metadata, to: path)

        let report = try readWithPython(path)
        let seenMetadata = try XCTUnwrap(report["metadata"] as? [String: String])
        XCTAssertEqual(seenMetadata["step"], "100")
        XCTAssertEqual(seenMetadata["config"], metadata["config"])
        XCTAssertEqual(seenMetadata[SafeTensors.checksumKey], try SafeTensors.verify(path).metadata[SafeTensors.checksumKey])

        let seen = try XCTUnwrap(report["tensors"] as? [String: [String: Any]])
        XCTAssertEqual(Set(seen.keys), Set(tensors.map(\.name)))
        func check(_ name: String, dtype: String, shape: [Int], bits: [UInt64], sum: Double) {
            let entry = seen[name]
            XCTAssertEqual(entry?["dtype"] as? String, dtype, name)
            XCTAssertEqual(entry?["shape"] as? [Int], shape, name)
            XCTAssertEqual(entry?["bits"] as? [String], bits.map { String($0, radix: 16) }, "\(name) bit patterns")
            XCTAssertEqual((entry?["sum"] as? NSNumber)?.doubleValue ?? .nan, sum, accuracy: 1e-6 * max(1, abs(sum)), name)
        }
        check("layers.0.weight", dtype: "float32", shape: [2, 3, 4], bits: weight.map { UInt64($0.bitPattern) },
              sum: weight.reduce(0) { $0 + Double($1) })
        check("layers.0.bias", dtype: "float32", shape: [3], bits: bias.map { UInt64($0.bitPattern) },
              sum: bias.reduce(0) { $0 + Double($1) })
        check("layers.1.running_var", dtype: "float32", shape: [], bits: [UInt64(Float(0.75).bitPattern)], sum: 0.75)
        check("stats", dtype: "float64", shape: [2], bits: [0.1, -2.5].map(\.bitPattern), sum: -2.4)
        check("counts", dtype: "int64", shape: [3], bits: [1, -2, 1 << 40].map { UInt64(bitPattern: Int64($0)) },
              sum: Double(1 << 40) - 1)
    }

    func testWeReadReferenceImplementationFiles() throws {
        _ = try readWithPython(try { () throws -> String in
            let probe = directory + "/probe.safetensors"
            try SafeTensors.write([TensorSource(name: "x", shape: [1], floats: [1])], metadata: [:], to: probe)
            return probe
        }())  // Makes sure the package is installed (or skips) before writing with it.
        let path = directory + "/theirs.safetensors"
        let program = """
            import numpy as np, sys
            from safetensors.numpy import save_file
            save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3) / 4, "n": np.array([-7, 9], dtype=np.int64),
                       "d": np.array([0.5], dtype=np.float64)}, sys.argv[1], metadata={"format": "np"})
            """
        let result = try runProgram(["python3", "-c", program, path])
        XCTAssertEqual(result.status, 0, result.error)
        let file = try SafeTensors.read(path)
        XCTAssertEqual(file.checksumStatus, .missing, "foreign files have no Lockstep checksum")
        XCTAssertEqual(file.metadata["format"], "np")
        XCTAssertEqual(file["w"]?.shape, [2, 3])
        XCTAssertEqual(file["w"]?.data, .float32([0, 0.25, 0.5, 0.75, 1, 1.25]))
        XCTAssertEqual(file["n"]?.data, .int64([-7, 9]))
        XCTAssertEqual(file["d"]?.data, .float64([0.5]))
        XCTAssertTrue(expectError { try SafeTensors.verify(path) }?.reason.contains("no \"lockstep.checksum\"") == true)
    }
}
