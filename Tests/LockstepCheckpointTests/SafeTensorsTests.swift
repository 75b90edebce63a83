import Foundation
import LockstepCore
import XCTest
@testable import LockstepCheckpoint

final class SafeTensorsTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws { directory = try makeTemporaryDirectory("st") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    func testFNV1aKnownVectors() {
        // Published FNV-1a 64-bit test vectors.
        XCTAssertEqual(FNV1a64().hex, "cbf29ce484222325")
        var a = FNV1a64(); a.update(Array("a".utf8))
        XCTAssertEqual(a.hex, "af63dc4c8601ec8c")
        var foobar = FNV1a64(); foobar.update(Array("foobar".utf8))
        XCTAssertEqual(foobar.hex, "85944171f73967e8")
    }

    func testRoundTripIsBitExact() throws {
        let special: [Float] = [0, -0.0, .infinity, -.infinity, .leastNonzeroMagnitude, .greatestFiniteMagnitude,
                                Float(bitPattern: 0x7fc0_1234), 1.0 / 3.0, -123.456, 7]
        let big = (0..<257).map { Float(sin(Double($0))) }
        let tensors = [
            TensorSource(name: "layers.0.weight", shape: [2, 5], floats: special),
            TensorSource(name: "layers.0.bias", shape: [257], floats: big),
            TensorSource(name: "layers.1.running_mean", shape: [], floats: [42.5]),
            TensorSource(name: "empty", shape: [0, 3], floats: []),
            TensorSource(name: "doubles", shape: [3], doubles: [.pi, -1e300, Double.leastNonzeroMagnitude]),
            TensorSource(name: "counts", shape: [2, 2], int64s: [.min, .max, 0, -1]),
        ]
        let metadata = ["step": "1234", "rng.data": String(UInt64.max), "config": "model:\n  layers: [\"a\\b\"]\n\ttab \u{01} é 🚀",
                        "empty": ""]
        let path = directory + "/round.safetensors"
        try SafeTensors.write(tensors, metadata: metadata, to: path)
        let file = try SafeTensors.read(path, requireChecksum: true)

        XCTAssertEqual(file.names, tensors.map(\.name), "header keeps the written order")
        for (key, value) in metadata { XCTAssertEqual(file.metadata[key], value, "metadata \(key)") }
        XCTAssertEqual(file.metadata.count, metadata.count + 1, "only the checksum is added")
        guard case .verified = file.checksumStatus else { return XCTFail("checksum \(file.checksumStatus)") }

        let weight = try XCTUnwrap(file["layers.0.weight"])
        XCTAssertEqual(weight.shape, [2, 5])
        XCTAssertEqual(weight.dtype, .float32)
        XCTAssertEqual(weight.floats.map(\.bitPattern), special.map(\.bitPattern), "F32 values bit-exact, NaN payload and -0 included")
        XCTAssertEqual(file["layers.0.bias"]?.floats.map(\.bitPattern), big.map(\.bitPattern))
        XCTAssertEqual(file["layers.1.running_mean"]?.shape, [])
        XCTAssertEqual(file["layers.1.running_mean"]?.floats, [42.5])
        XCTAssertEqual(file["empty"]?.shape, [0, 3])
        XCTAssertEqual(file["empty"]?.count, 0)
        XCTAssertEqual(file["doubles"]?.data, .float64([.pi, -1e300, Double.leastNonzeroMagnitude]))
        XCTAssertEqual(file["counts"]?.data, .int64([.min, .max, 0, -1]))
        XCTAssertNil(file["missing"])

        // Writing the same content twice gives identical bytes (sorted metadata, deterministic layout).
        let again = directory + "/again.safetensors"
        try SafeTensors.write(tensors, metadata: metadata, to: again)
        XCTAssertEqual(try fileBytes(path), try fileBytes(again))
        XCTAssertEqual(try fileBytes(path), try SafeTensors.encode(tensors, metadata: metadata))
    }

    func testFlatTensorsSlotsRoundTripAndRestore() throws {
        let specs: [[ParameterSpec]] = [
            [ParameterSpec(name: "weight", shape: [4, 3], initializer: .zeros), ParameterSpec(name: "bias", shape: [4], initializer: .zeros)],
            [],
            [ParameterSpec(name: "weight", shape: [2, 4], initializer: .zeros)],
        ]
        let source = FlatTensors(layerSpecs: specs, withGradients: false)
        for i in 0..<source.count { source.values.pointer[i] = Float(i) * 0.5 - 3 }
        let optimizerState = FlatTensors(layerSpecs: specs, withGradients: false)
        for i in 0..<optimizerState.count { optimizerState.values.pointer[i] = Float(i) * 1e-3 }

        let path = directory + "/flat.safetensors"
        try SafeTensors.write(TensorSource.slots(of: source) + TensorSource.slots(of: optimizerState, prefix: "optimizer.", suffix: ".exp_avg"),
                              metadata: [:], to: path)
        let file = try SafeTensors.verify(path)
        XCTAssertEqual(file.names, ["layers.0.weight", "layers.0.bias", "layers.2.weight",
                                    "optimizer.layers.0.weight.exp_avg", "optimizer.layers.0.bias.exp_avg",
                                    "optimizer.layers.2.weight.exp_avg"])

        let restored = FlatTensors(layerSpecs: specs, withGradients: false)
        try file.restore(into: restored)
        XCTAssertEqual(restored.values.array.map(\.bitPattern), source.values.array.map(\.bitPattern))
        let restoredState = FlatTensors(layerSpecs: specs, withGradients: false)
        try file.restore(into: restoredState, prefix: "optimizer.", suffix: ".exp_avg")
        XCTAssertEqual(restoredState.values.array, optimizerState.values.array)

        // A model with a different shape gets an error naming the tensor and both shapes.
        let other = FlatTensors(layerSpecs: [[ParameterSpec(name: "weight", shape: [3, 4], initializer: .zeros)]], withGradients: false)
        let mismatch = expectError { try file.restore(into: other) }
        XCTAssertTrue(mismatch?.reason.contains("\"layers.0.weight\" has shape [4, 3] but the model expects [3, 4]") == true, "\(String(describing: mismatch))")
        let missing = expectError { try file.restore(into: other, prefix: "ema.") }
        XCTAssertTrue(missing?.reason.contains("no tensor \"ema.layers.0.weight\"") == true, "\(String(describing: missing))")
        XCTAssertEqual(missing?.file, path)
    }

    func testHeaderLayoutByteByByte() throws {
        let path = directory + "/tiny.safetensors"
        try SafeTensors.write([TensorSource(name: "a", shape: [2], floats: [1, -2])], metadata: ["k": "v"], to: path)
        let bytes = try fileBytes(path)

        let headerLength = bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        XCTAssertEqual((8 + headerLength) % 8, 0, "data section starts 8-byte aligned")
        XCTAssertEqual(UInt64(bytes.count), 8 + headerLength + 8, "prefix + header + two floats, nothing else")

        let header = String(decoding: bytes[8..<(8 + Int(headerLength))], as: UTF8.self)
        let json = header.replacingOccurrences(of: " +$", with: "", options: .regularExpression)
        XCTAssertTrue(header.hasPrefix(json) && header.dropFirst(json.count).allSatisfy { $0 == " " }, "padding is spaces only")
        XCTAssertLessThan(header.count - json.count, 8)
        let checksumPattern = try NSRegularExpression(pattern: "\"lockstep.checksum\":\"(fnv1a64:[0-9a-f]{16})\"")
        let match = try XCTUnwrap(checksumPattern.firstMatch(in: json, range: NSRange(json.startIndex..., in: json)))
        let checksum = String(json[Range(match.range(at: 1), in: json)!])
        XCTAssertEqual(json, "{\"__metadata__\":{\"k\":\"v\",\"lockstep.checksum\":\"\(checksum)\"},"
                       + "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}")

        // 1.0f = 0x3f800000 and -2.0f = 0xc0000000, little-endian.
        XCTAssertEqual(Array(bytes.suffix(8)), [0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0])

        // Foundation's JSON parser agrees the header is well-formed JSON.
        let parsed = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        XCTAssertEqual((parsed?["a"] as? [String: Any])?["data_offsets"] as? [Int], [0, 8])
    }

    func testTruncatedFileIsDetected() throws {
        let path = directory + "/t.safetensors"
        try SafeTensors.write(sampleTensors(seed: 1), metadata: ["step": "1"], to: path)
        let bytes = try fileBytes(path)
        try writeBytes(Array(bytes.dropLast(3)), to: path)
        let error = expectError { try SafeTensors.verify(path) }
        XCTAssertEqual(error?.file, path)
        XCTAssertTrue(error?.reason.contains("truncated") == true, "\(String(describing: error))")
        XCTAssertTrue(error?.reason.contains("optimizer.layers.0.weight.momentum_buffer") == true, "names the cut tensor: \(String(describing: error))")

        // Cut inside the header: the length prefix promises more than the file holds.
        try writeBytes(Array(bytes.prefix(40)), to: path)
        let headerError = expectError { try SafeTensors.verify(path) }
        XCTAssertTrue(headerError?.reason.contains("header length") == true && headerError?.reason.contains("truncated") == true,
                      "\(String(describing: headerError))")

        try writeBytes(Array(bytes.prefix(5)), to: path)
        XCTAssertTrue(expectError { try SafeTensors.verify(path) }?.reason.contains("too short") == true)
        try writeBytes([], to: path)
        XCTAssertTrue(expectError { try SafeTensors.verify(path) }?.reason.contains("file is 0 bytes") == true)
    }

    func testDataBitFlipIsDetected() throws {
        let path = directory + "/d.safetensors"
        try SafeTensors.write(sampleTensors(seed: 2), metadata: ["step": "2"], to: path)
        var bytes = try fileBytes(path)
        bytes[bytes.count - 5] ^= 0x10
        try writeBytes(bytes, to: path)
        let error = expectError { try SafeTensors.verify(path) }
        XCTAssertEqual(error?.file, path)
        XCTAssertTrue(error?.reason.contains("checksum mismatch") == true, "\(String(describing: error))")

        // Structure is still fine, so decode (as inspect does) succeeds and reports the mismatch.
        let decoded = try SafeTensors.decode(bytes, file: path)
        guard case .mismatch = decoded.checksumStatus else { return XCTFail("expected mismatch, got \(decoded.checksumStatus)") }
    }

    func testHeaderBitFlipInMetadataIsDetected() throws {
        let path = directory + "/h.safetensors"
        try SafeTensors.write(sampleTensors(seed: 3), metadata: ["step": "12"], to: path)
        var bytes = try fileBytes(path)
        let needle = Array("\"step\":\"12\"".utf8)
        let start = try XCTUnwrap((0...(bytes.count - needle.count)).first { Array(bytes[$0..<($0 + needle.count)]) == needle })
        bytes[start + needle.count - 2] ^= 0x01  // "12" -> "13": still valid JSON, wrong step.
        try writeBytes(bytes, to: path)
        let error = expectError { try SafeTensors.verify(path) }
        XCTAssertTrue(error?.reason.contains("checksum mismatch") == true, "\(String(describing: error))")
    }

    func testEverySingleBitFlipIsDetected() throws {
        // Small enough to try all of them: header, padding, length prefix and data.
        let path = directory + "/all.safetensors"
        let original = try SafeTensors.encode([TensorSource(name: "w", shape: [2, 2], floats: [1, 2, 3, 4]),
                                               TensorSource(name: "b", shape: [1], floats: [-1])],
                                              metadata: ["step": "7", "epoch": "1"])
        var undetected: [String] = []
        for byte in 0..<original.count {
            for bit in 0..<8 {
                var bytes = original
                bytes[byte] ^= UInt8(1 << bit)
                do {
                    let file = try SafeTensors.decode(bytes, file: path)
                    if case .verified = file.checksumStatus { undetected.append("byte \(byte) bit \(bit)") }
                } catch {}
            }
        }
        XCTAssertEqual(undetected, [], "flips that still verify")
    }

    func testGarbageHeaderLengthIsDetected() throws {
        let path = directory + "/g.safetensors"
        var bytes = try SafeTensors.encode(sampleTensors(seed: 4), metadata: [:])
        for i in 0..<8 { bytes[i] = 0xff }
        try writeBytes(bytes, to: path)
        let error = expectError { try SafeTensors.verify(path) }
        XCTAssertEqual(error?.file, path)
        XCTAssertTrue(error?.reason.contains("header length 18446744073709551615 is larger than") == true, "\(String(describing: error))")

        for i in 0..<8 { bytes[i] = 0 }
        XCTAssertTrue(expectError { try SafeTensors.decode(bytes, file: path) }?.reason.contains("header length is 0") == true)

        // A plausible length that lands the header in the wrong place.
        bytes[0] = 4
        XCTAssertTrue(expectError { try SafeTensors.decode(bytes, file: path) }?.reason.contains("header is not valid JSON") == true)

        let text = Array("this is a text file, not a checkpoint at all\n".utf8)
        let textError = expectError { try SafeTensors.decode(text, file: "notes.txt") }
        XCTAssertEqual(textError?.file, "notes.txt")
        XCTAssertTrue(textError?.reason.contains("header length") == true, "\(String(describing: textError))")
    }

    /// A file with a hand-written header and `dataCount` zero data bytes.
    private func handmade(_ json: String, dataCount: Int) -> [UInt8] {
        var header = Array(json.utf8)
        while (8 + header.count) % 8 != 0 { header.append(0x20) }
        var bytes: [UInt8] = []
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { bytes.append(contentsOf: $0) }
        return bytes + header + [UInt8](repeating: 0, count: dataCount)
    }

    private func reason(_ json: String, dataCount: Int) -> String {
        expectError { try SafeTensors.decode(handmade(json, dataCount: dataCount), file: "x.safetensors") }?.reason ?? "<no error>"
    }

    func testLayoutValidationMessages() throws {
        let a = "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"
        // Well-formed, no checksum: readable (foreign files), but verify() demands the checksum.
        let plain = try SafeTensors.decode(handmade("{\(a)}", dataCount: 8), file: "x")
        XCTAssertEqual(plain.checksumStatus, .missing)
        XCTAssertEqual(plain["a"]?.floats, [0, 0])

        XCTAssertTrue(reason("{\(a),\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", dataCount: 8).contains("overlap"))
        XCTAssertTrue(reason("{\(a),\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}", dataCount: 16).contains("4 unaccounted bytes"))
        XCTAssertTrue(reason("{\(a)}", dataCount: 12).contains("4 trailing bytes"))
        XCTAssertTrue(reason("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", dataCount: 8).contains("needs 3 × 4 bytes"))
        XCTAssertTrue(reason("{\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]}}", dataCount: 8).contains("dtype F16"))
        XCTAssertTrue(reason("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", dataCount: 8).contains("begin <= end"))
        XCTAssertTrue(reason("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", dataCount: 8).contains("non-negative"))
        XCTAssertTrue(reason("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", dataCount: 8).contains("no data_offsets"))
        XCTAssertTrue(reason("{\(a),\(a)}", dataCount: 8).contains("duplicate key \"a\""))
        XCTAssertTrue(reason("{\"__metadata__\":{\"step\":3},\(a)}", dataCount: 8).contains("\"step\" is a JSON integer, expected a string"))
        XCTAssertTrue(reason("{\(a)", dataCount: 8).contains("not valid JSON"))
        XCTAssertTrue(reason("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", dataCount: 8).contains("non-integer"))
        XCTAssertTrue(reason("[1,2]", dataCount: 0).contains("does not start with '{'"))
    }

    func testMetadataOnlyFileRoundTrips() throws {
        let bytes = try SafeTensors.encode([], metadata: ["note": "no tensors"])
        let file = try SafeTensors.decode(bytes, file: "empty")
        XCTAssertEqual(file.tensors, [])
        XCTAssertEqual(file.dataByteCount, 0)
        XCTAssertEqual(file.metadata["note"], "no tensors")
        guard case .verified = file.checksumStatus else { return XCTFail("checksum \(file.checksumStatus)") }
    }

    func testWriterRejectsInconsistentInput() throws {
        let path = directory + "/bad.safetensors"
        let countError = expectError { try SafeTensors.write([TensorSource(name: "a", shape: [2, 3], floats: [1, 2])], metadata: [:], to: path) }
        XCTAssertTrue(countError?.reason.contains("shape [2, 3] (6 elements) but 2 values") == true, "\(String(describing: countError))")
        let duplicate = expectError {
            try SafeTensors.write([TensorSource(name: "a", shape: [1], floats: [1]), TensorSource(name: "a", shape: [1], floats: [2])],
                                  metadata: [:], to: path)
        }
        XCTAssertTrue(duplicate?.reason.contains("listed twice") == true)
        let reserved = expectError { try SafeTensors.write([], metadata: [SafeTensors.checksumKey: "x"], to: path) }
        XCTAssertTrue(reserved?.reason.contains("reserved") == true)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "nothing written for invalid input")
    }

    func testInspectReport() throws {
        let path = directory + "/step-00000042.safetensors"
        let config = (1...20).map { "line \($0): value" }.joined(separator: "\n")
        try SafeTensors.write(sampleTensors(seed: 5), metadata: ["step": "42", "epoch": "3", "world_size": "2",
                                                                 "config": config, "rng.data": "18446744073709551615"], to: path)
        let report = CheckpointInspector.inspect(path: path)
        XCTAssertTrue(report.isValid)
        for expected in ["step: 42", "epoch: 3", "world size: 2", "rng.data: 18446744073709551615", "config: 20 lines",
                         "| line 1: value", "| ... (8 more lines)", "tensors (3, 27 elements)",
                         "layers.0.weight", "F32  [3, 4]  12", "layers.0.bias", "F32  [3]  3",
                         "optimizer.layers.0.weight.momentum_buffer", "checksum: OK (fnv1a64:", "verdict: valid"] {
            XCTAssertTrue(report.text.contains(expected), "missing \(expected) in:\n\(report.text)")
        }
        XCTAssertFalse(report.text.contains("line 13: value"), "config preview is bounded")

        var bytes = try fileBytes(path)
        bytes[bytes.count - 1] ^= 0x80
        try writeBytes(bytes, to: path)
        let damaged = CheckpointInspector.inspect(path: path)
        XCTAssertFalse(damaged.isValid)
        XCTAssertTrue(damaged.text.contains("checksum: MISMATCH"), damaged.text)
        XCTAssertTrue(damaged.text.contains("layers.0.bias"), "structure still listed:\n\(damaged.text)")

        try writeBytes(Array(bytes.prefix(20)), to: path)
        let truncated = CheckpointInspector.inspect(path: path)
        XCTAssertFalse(truncated.isValid)
        XCTAssertTrue(truncated.text.contains("INVALID: header length"), truncated.text)

        let missing = CheckpointInspector.inspect(path: directory + "/nope.safetensors")
        XCTAssertFalse(missing.isValid)
        XCTAssertTrue(missing.text.contains("does not exist"), missing.text)
    }
}
