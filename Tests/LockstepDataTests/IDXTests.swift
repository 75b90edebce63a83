import Foundation
import XCTest
@testable import LockstepData

final class IDXTests: XCTestCase {
    private func writePair(_ directory: TemporaryDirectory, prefix: String, labels: [UInt8], gzip: Bool,
                           rows: Int = 4, columns: Int = 3) throws {
        let suffix = gzip ? ".gz" : ""
        try directory.write("\(prefix)-labels-idx1-ubyte\(suffix)", IDXBytes.labels(labels), gzip: gzip)
        try directory.write("\(prefix)-images-idx3-ubyte\(suffix)", IDXBytes.images(count: labels.count, rows: rows, columns: columns),
                            gzip: gzip)
    }

    private func checkContents(_ dataset: Dataset, labels: [UInt8], rows: Int = 4, columns: Int = 3) {
        XCTAssertEqual(dataset.count, labels.count)
        XCTAssertEqual(dataset.sampleShape, [1, rows, columns])
        XCTAssertEqual(dataset.featureWidth, rows * columns)
        XCTAssertEqual(dataset.classCount, 10)
        XCTAssertEqual(dataset.targets, labels.map(Float.init))
        // Pixel i of image n was written as (n·31 + i) mod 256.
        for n in 0..<labels.count {
            for i in 0..<(rows * columns) {
                XCTAssertEqual(dataset.features[n * rows * columns + i], Float((n * 31 + i) % 256) / 255, accuracy: 1e-7)
            }
        }
    }

    func testReadsRawFiles() throws {
        let directory = try TemporaryDirectory()
        let labels: [UInt8] = [3, 0, 9, 1, 1]
        try writePair(directory, prefix: "t10k", labels: labels, gzip: false)
        checkContents(try FashionMNIST.load(directory: directory.path, split: .test), labels: labels)
    }

    func testReadsGzipFiles() throws {
        let directory = try TemporaryDirectory()
        let labels: [UInt8] = [7, 2, 5, 0, 8, 6, 4]
        try writePair(directory, prefix: "train", labels: labels, gzip: true, rows: 9, columns: 10)
        checkContents(try MNIST.load(directory: directory.path, split: .train), labels: labels, rows: 9, columns: 10)
        // The test split is not there: the error names what was looked for.
        assertDataError(try FashionMNIST.load(directory: directory.path, split: .test),
                        names: "t10k-", mentions: "missing")
    }

    func testGzipIsDetectedByMagicNotName() throws {
        let directory = try TemporaryDirectory()
        // A gzip stream without the .gz suffix still decompresses.
        let path = try directory.write("labels.idx", IDXBytes.labels([1, 2, 3]), gzip: true)
        XCTAssertEqual(try IDX.read(path, expectedMagic: IDX.labelMagic).bytes, [1, 2, 3])
    }

    func testTruncatedImageFile() throws {
        let directory = try TemporaryDirectory()
        try directory.write("t10k-labels-idx1-ubyte", IDXBytes.labels([1, 2]))
        let images = IDXBytes.images(count: 2, rows: 4, columns: 3)
        let path = try directory.write("t10k-images-idx3-ubyte", Array(images.dropLast(5)))
        assertDataError(try FashionMNIST.load(directory: directory.path, split: .test), names: path, mentions: "truncated")
    }

    func testTrailingBytesAreRejected() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("labels", IDXBytes.labels([1, 2]) + [0])
        assertDataError(try IDX.read(path, expectedMagic: IDX.labelMagic), names: path, mentions: "beyond")
    }

    func testBadMagic() throws {
        let directory = try TemporaryDirectory()
        // An image file where a label file is expected.
        let path = try directory.write("t10k-labels-idx1-ubyte.gz", IDXBytes.images(count: 1, rows: 2, columns: 2), gzip: true)
        try directory.write("t10k-images-idx3-ubyte.gz", IDXBytes.images(count: 1, rows: 2, columns: 2), gzip: true)
        assertDataError(try FashionMNIST.load(directory: directory.path, split: .test), names: path, mentions: "bad magic")
    }

    func testCountMismatch() throws {
        let directory = try TemporaryDirectory()
        try directory.write("t10k-labels-idx1-ubyte", IDXBytes.labels([1, 2, 3]))
        let path = try directory.write("t10k-images-idx3-ubyte", IDXBytes.images(count: 2, rows: 2, columns: 2))
        assertDataError(try FashionMNIST.load(directory: directory.path, split: .test), names: path, mentions: "3 labels")
    }

    func testLabelOutOfRange() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("t10k-labels-idx1-ubyte", IDXBytes.labels([1, 10]))
        try directory.write("t10k-images-idx3-ubyte", IDXBytes.images(count: 2, rows: 2, columns: 2))
        assertDataError(try FashionMNIST.load(directory: directory.path, split: .test), names: path, mentions: "out of range")
    }

    func testCorruptAndTruncatedGzip() throws {
        let directory = try TemporaryDirectory()
        let good = try directory.write("good.gz", IDXBytes.images(count: 50, rows: 8, columns: 8), gzip: true)
        let compressed = [UInt8](FileManager.default.contents(atPath: good)!)

        let truncated = try directory.write("truncated.gz", Array(compressed.prefix(compressed.count / 2)))
        assertDataError(try IDX.read(truncated, expectedMagic: IDX.imageMagic), names: truncated, mentions: "truncated gzip")

        var corrupt = compressed
        for i in 12..<min(40, corrupt.count - 8) { corrupt[i] = 0xFF }
        let corruptPath = try directory.write("corrupt.gz", corrupt)
        assertDataError(try IDX.read(corruptPath, expectedMagic: IDX.imageMagic), names: corruptPath, mentions: "gzip")
    }

    func testMissingDirectoryAndFile() throws {
        assertDataError(try FashionMNIST.load(directory: "/nonexistent/lockstep-fmnist", split: .train),
                        names: "/nonexistent/lockstep-fmnist", mentions: "missing")
        assertDataError(try FileBytes.read("/nonexistent/file.bin"), names: "/nonexistent/file.bin", mentions: "missing")
    }

    func testRealFashionMNISTTestSplit() throws {
        let directory = FashionMNIST.defaultDirectory
        let candidates = ["t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"].map { (directory as NSString).appendingPathComponent($0) }
        guard candidates.contains(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw XCTSkip("Fashion-MNIST is not installed at \(directory); skipping the real-data check")
        }
        let dataset = try FashionMNIST.load(split: .test)
        XCTAssertEqual(dataset.count, 10_000)
        XCTAssertEqual(dataset.featureWidth, 784)
        XCTAssertEqual(dataset.features.count, 10_000 * 784)
        XCTAssertEqual(dataset.sampleShape, [1, 28, 28])
        XCTAssertTrue(dataset.targets.allSatisfy { $0 >= 0 && $0 < 10 && $0 == $0.rounded() })
        XCTAssertEqual(Set(dataset.targets).count, 10)
        XCTAssertEqual(dataset.features.min(), 0)
        XCTAssertEqual(dataset.features.max(), 1)
    }
}
