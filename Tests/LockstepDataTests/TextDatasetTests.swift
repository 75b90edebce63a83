import Foundation
import XCTest
@testable import LockstepData

/// Vocabulary, windows, split and corpus reading of the byte-level text dataset.
final class TextDatasetTests: XCTestCase {
    func testVocabularyIsTheSortedBytesThatOccur() throws {
        let dataset = try TextDataset(bytes: Array("banana bread!".utf8), source: "t", sequenceLength: 3, stride: 1, validationFraction: 0.25)
        XCTAssertEqual(dataset.vocabulary, Array(" !abdenr".utf8))
        XCTAssertEqual(try dataset.encode("bread"), [3, 7, 5, 2, 4])
        XCTAssertEqual(dataset.decode(try dataset.encode("a nab!")), "a nab!")
        XCTAssertThrowsError(try dataset.encode("bank")) { error in
            XCTAssertTrue("\(error)".contains("0x6b"), "names the unknown byte: \(error)")
        }
    }

    func testWindowsAreShiftedByOneAndSplitByPosition() throws {
        let bytes = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN".utf8)  // 40 distinct bytes: id = position
        let dataset = try TextDataset(bytes: bytes, source: "t", sequenceLength: 4, stride: 3, validationFraction: 0.25)
        XCTAssertEqual(dataset.vocabularySize, 40)
        // Training text = the first 30 bytes; windows of 5 bytes start at 0, 3, …, 24 → 9 windows.
        XCTAssertEqual(dataset.train.count, 9)
        XCTAssertEqual(dataset.train.sampleShape, [4])
        XCTAssertEqual(dataset.train.targetWidth, 4)
        XCTAssertEqual(dataset.train.classCount, 40)
        func text(_ ids: ArraySlice<Float>) -> String { dataset.decode(ids.map { Int($0) }) }
        XCTAssertEqual(text(dataset.train.features[0..<4]), "abcd")
        XCTAssertEqual(text(dataset.train.targets[0..<4]), "bcde")
        XCTAssertEqual(text(dataset.train.features[4..<8]), "defg")
        XCTAssertEqual(text(dataset.train.features[32..<36]), "yzAB")
        XCTAssertEqual(text(dataset.train.targets[32..<36]), "zABC")
        // Validation = the last 10 bytes "EFGHIJKLMN": windows at 0 and 3 of that tail.
        XCTAssertEqual(dataset.validation.count, 2)
        XCTAssertEqual(text(dataset.validation.features[0..<4]), "EFGH")
        XCTAssertEqual(text(dataset.validation.targets[4..<8]), "IJKL")
        // With 10% validation the tail is 4 bytes, too short for one window: the error names the text.
        XCTAssertThrowsError(try TextDataset(bytes: bytes, source: "short.txt", sequenceLength: 4, stride: 3)) { error in
            XCTAssertTrue("\(error)".hasPrefix("short.txt:"), "names the file: \(error)")
        }
    }

    func testValidationWindowsComeOnlyFromTheTail() throws {
        let bytes = (0..<200).map { UInt8(65 + $0 % 26) }
        let dataset = try TextDataset(bytes: bytes, source: "t", sequenceLength: 8, stride: 8)
        XCTAssertEqual(dataset.trainingIds.count, 180)
        XCTAssertEqual(dataset.train.count, (180 - 9) / 8 + 1)
        XCTAssertEqual(dataset.validation.count, (20 - 9) / 8 + 1)
        // The first validation window starts at byte 180.
        XCTAssertEqual(dataset.validation.features[0], Float(bytes[180] - 65))
        XCTAssertEqual(dataset.validation.targets[7], Float(bytes[188] - 65))
        // 26 equally frequent letters (up to the 180-byte cut): entropy close to log 26.
        XCTAssertEqual(dataset.unigramEntropy, log(26), accuracy: 0.01)
    }

    func testDirectoryCorpusConcatenatesPlainTextFilesInNameOrder() throws {
        let directory = try TemporaryDirectory()
        try directory.write("b", Array("second\n".utf8))
        try directory.write("a", Array("first\n".utf8))
        try directory.write("a.dat", [0, 1, 2, 3])
        try FileManager.default.createSymbolicLink(atPath: directory.file("a.u8"), withDestinationPath: directory.file("a"))
        try FileManager.default.createDirectory(atPath: directory.file("off"), withIntermediateDirectories: false)
        XCTAssertEqual(try TextDataset.corpusFiles(directory: directory.path).map { ($0 as NSString).lastPathComponent }, ["a", "b"])
        XCTAssertEqual(String(decoding: try TextDataset.readCorpus(directory.path), as: UTF8.self), "first\nsecond\n")
        let dataset = try TextDataset.load(path: directory.path, sequenceLength: 1, stride: 1, validationFraction: 0.2)
        XCTAssertFalse(dataset.vocabulary.contains(0), ".dat bytes must not leak into the vocabulary")
    }

    func testMissingCorpusNamesThePath() {
        XCTAssertThrowsError(try TextDataset.load(path: "/nonexistent/corpus.txt", sequenceLength: 4, stride: 4)) { error in
            XCTAssertTrue("\(error)".hasPrefix("/nonexistent/corpus.txt:"), "\(error)")
        }
        XCTAssertThrowsError(try TextDataset(bytes: Array("abc".utf8), source: "x", sequenceLength: 0, stride: 1))
    }
}
