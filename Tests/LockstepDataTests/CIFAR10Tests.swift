import XCTest
@testable import LockstepData

final class CIFAR10Tests: XCTestCase {
    /// One record: label, then R, G, B planes; pixel value = (label·7 + channel·50 + i) mod 256.
    private func record(label: UInt8) -> [UInt8] {
        var bytes = [label]
        for channel in 0..<3 { for i in 0..<1024 { bytes.append(UInt8((Int(label) * 7 + channel * 50 + i) % 256)) } }
        return bytes
    }

    func testReadsTrainBatchesInOrderAndTestBatch() throws {
        let directory = try TemporaryDirectory()
        let labelsPerFile: [[UInt8]] = [[0, 9], [1], [2, 3, 4], [5], [6, 7]]
        for (index, labels) in labelsPerFile.enumerated() {
            // One batch gzip-compressed: the reader detects it by magic bytes.
            try directory.write("data_batch_\(index + 1).bin", labels.flatMap(record), gzip: index == 2)
        }
        try directory.write("test_batch.bin", [8, 8, 1].flatMap(record))

        let train = try CIFAR10.load(directory: directory.path, split: .train)
        XCTAssertEqual(train.count, 9)
        XCTAssertEqual(train.sampleShape, [3, 32, 32])
        XCTAssertEqual(train.classCount, 10)
        XCTAssertEqual(train.targets, [0, 9, 1, 2, 3, 4, 5, 6, 7])
        // Sample 1 has label 9: green plane (channel 1) pixel 5 = (63 + 50 + 5) mod 256 = 118.
        XCTAssertEqual(train.features[1 * 3072 + 1024 + 5], 118 / 255, accuracy: 1e-7)
        XCTAssertEqual(train.features[1 * 3072 + 2048 + 1023], Float((63 + 100 + 1023) % 256) / 255, accuracy: 1e-7)

        let test = try CIFAR10.load(directory: directory.path, split: .test)
        XCTAssertEqual(test.targets, [8, 8, 1])
        XCTAssertEqual(test.features[2 * 3072], 7 / 255, accuracy: 1e-7)
    }

    func testFindsArchiveSubdirectory() throws {
        let directory = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory.file("cifar-10-batches-bin"), withIntermediateDirectories: true)
        try directory.write("cifar-10-batches-bin/test_batch.bin", record(label: 4))
        XCTAssertEqual(try CIFAR10.load(directory: directory.path, split: .test).targets, [4])
    }

    func testTruncatedRecord() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("test_batch.bin", Array((record(label: 1) + record(label: 2)).dropLast(10)))
        assertDataError(try CIFAR10.load(directory: directory.path, split: .test), names: path, mentions: "not a multiple")
    }

    func testLabelOutOfRange() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("test_batch.bin", record(label: 3) + record(label: 10))
        assertDataError(try CIFAR10.load(directory: directory.path, split: .test), names: path, mentions: "record 1 is out of range")
    }

    func testMissingBatch() throws {
        let directory = try TemporaryDirectory()
        try directory.write("data_batch_1.bin", record(label: 1))
        assertDataError(try CIFAR10.load(directory: directory.path, split: .train), names: "data_batch_2.bin", mentions: "missing")
    }
}
