import CZlib
import Foundation
import XCTest
@testable import LockstepData

/// A fresh temporary directory per test, removed afterwards.
final class TemporaryDirectory {
    let path: String

    init() throws {
        path = (NSTemporaryDirectory() as NSString).appendingPathComponent("lockstep-data-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Absolute path of `name` inside the directory.
    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// Writes `bytes` raw, or gzip-compressed through zlib's gzopen/gzwrite.
    @discardableResult
    func write(_ name: String, _ bytes: [UInt8], gzip: Bool = false) throws -> String {
        let target = file(name)
        if gzip {
            guard let handle = gzopen(target, "wb") else { throw DataError(file: target, "gzopen failed in test") }
            let written = bytes.withUnsafeBytes { gzwrite(handle, $0.baseAddress, UInt32($0.count)) }
            XCTAssertEqual(Int(written), bytes.count)
            XCTAssertEqual(gzclose(handle), Z_OK)
        } else {
            XCTAssertTrue(FileManager.default.createFile(atPath: target, contents: Data(bytes)))
        }
        return target
    }
}

/// Builds IDX files in the exact big-endian layout.
enum IDXBytes {
    static func header(magic: UInt32, dimensions: [Int]) -> [UInt8] {
        var bytes = bigEndian(magic)
        for dimension in dimensions { bytes += bigEndian(UInt32(dimension)) }
        return bytes
    }

    static func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
    }

    /// Labels file for `labels`.
    static func labels(_ labels: [UInt8]) -> [UInt8] { header(magic: 0x801, dimensions: [labels.count]) + labels }

    /// Images file of `count` images rows×columns whose pixel i of image n is (n·31 + i) mod 256.
    static func images(count: Int, rows: Int, columns: Int) -> [UInt8] {
        var bytes = header(magic: 0x803, dimensions: [count, rows, columns])
        for n in 0..<count { for i in 0..<(rows * columns) { bytes.append(UInt8((n * 31 + i) % 256)) } }
        return bytes
    }
}

/// Asserts `body` throws a `DataError` whose message names `file` and contains `fragment`.
func assertDataError<T>(_ body: @autoclosure () throws -> T, names file: String, mentions fragment: String,
                        file source: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected a DataError mentioning '\(fragment)'", file: source, line: line)
    } catch let error as DataError {
        XCTAssertTrue(error.description.contains(file), "message should name \(file): \(error)", file: source, line: line)
        XCTAssertTrue(error.description.lowercased().contains(fragment.lowercased()),
                      "message should mention '\(fragment)': \(error)", file: source, line: line)
    } catch {
        XCTFail("expected DataError, got \(error)", file: source, line: line)
    }
}
