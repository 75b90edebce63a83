import Foundation
import LockstepCore

/// Reader for the IDX format of MNIST and Fashion-MNIST (big-endian header, unsigned-byte payload), raw or gzip.
public enum IDX {
    /// Magic number of a label file: unsigned bytes, one dimension.
    public static let labelMagic: UInt32 = 0x0000_0801
    /// Magic number of an image file: unsigned bytes, three dimensions.
    public static let imageMagic: UInt32 = 0x0000_0803

    /// A parsed IDX file: its dimensions and the unsigned-byte payload.
    public struct Tensor: Sendable {
        /// Sizes from the header, e.g. [60000, 28, 28].
        public var dimensions: [Int]
        /// Row-major payload, product(dimensions) bytes.
        public var bytes: [UInt8]
    }

    /// Parses `path`, checking the magic is `expectedMagic` and the file holds exactly the bytes the header describes.
    public static func read(_ path: String, expectedMagic: UInt32) throws -> Tensor {
        try parse(FileBytes.read(path), file: path, expectedMagic: expectedMagic)
    }

    /// Parses IDX bytes already in memory (decompressed); `file` names the source in errors.
    public static func parse(_ bytes: [UInt8], file: String, expectedMagic: UInt32) throws -> Tensor {
        let kind = expectedMagic == labelMagic ? "label" : "image"
        guard bytes.count >= 4 else {
            throw DataError(file: file, "truncated: \(bytes.count) bytes is too short for an IDX header")
        }
        let magic = bigEndian(bytes, at: 0)
        guard magic == expectedMagic else {
            throw DataError(file: file, String(format: "bad magic 0x%08X, expected 0x%08X for an IDX %@ file", magic,
                                               expectedMagic, kind)
                            + (FileBytes.isGzip(bytes) ? " (still gzip after decompression?)" : ""))
        }
        let rank = Int(magic & 0xFF)
        let headerSize = 4 + 4 * rank
        guard bytes.count >= headerSize else {
            throw DataError(file: file, "truncated: header needs \(headerSize) bytes, file has \(bytes.count)")
        }
        let dimensions = (0..<rank).map { Int(bigEndian(bytes, at: 4 + 4 * $0)) }
        // Each dimension fits in 32 bits, but the product might not; guard before allocating.
        var expected = 1
        for dimension in dimensions {
            let (product, overflow) = expected.multipliedReportingOverflow(by: dimension)
            guard !overflow, product <= Int(Int32.max) * 16 else {
                throw DataError(file: file, "header dimensions \(dimensions) are implausibly large")
            }
            expected = product
        }
        let payload = bytes.count - headerSize
        if payload < expected {
            throw DataError(file: file, "truncated: header \(dimensions) needs \(expected) data bytes but the file has \(payload)")
        }
        if payload > expected {
            throw DataError(file: file, "file has \(payload - expected) bytes beyond the \(expected) that header \(dimensions) describes")
        }
        return Tensor(dimensions: dimensions, bytes: Array(bytes[headerSize...]))
    }

    /// Reads an image file and its label file into a dataset of [1, rows, cols] samples scaled to [0, 1].
    public static func loadPair(images imagePath: String, labels labelPath: String, classCount: Int) throws -> Dataset {
        let labels = try read(labelPath, expectedMagic: labelMagic)
        let images = try read(imagePath, expectedMagic: imageMagic)
        let (imageCount, labelCount) = (images.dimensions[0], labels.dimensions[0])
        guard imageCount == labelCount else {
            throw DataError(file: imagePath, "has \(imageCount) images but \(labelPath) has \(labelCount) labels")
        }
        let (rows, columns) = (images.dimensions[1], images.dimensions[2])
        guard rows > 0, columns > 0 else { throw DataError(file: imagePath, "images are \(rows)×\(columns)") }
        var targets = [Float](repeating: 0, count: labelCount)
        for (index, label) in labels.bytes.enumerated() {
            guard Int(label) < classCount else {
                throw DataError(file: labelPath, "label \(label) at index \(index) is out of range 0..<\(classCount)")
            }
            targets[index] = Float(label)
        }
        // Pixels become [0, 1] floats here so every model sees the same scale.
        let features = bytesToUnitFloats(images.bytes)
        return Dataset(features: features, targets: targets, sampleShape: [1, rows, columns], targetWidth: 1,
                       classCount: classCount)
    }

    /// Loads the standard MNIST-style file pair (`train-…` or `t10k-…`) from `directory`, preferring `.gz`.
    public static func loadStandard(directory: String, split: DataSplit, classCount: Int = 10) throws -> Dataset {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DataError(file: directory, "dataset directory is missing")
        }
        let prefix = split == .train ? "train" : "t10k"
        func locate(_ name: String) throws -> String {
            let base = (directory as NSString).appendingPathComponent(name)
            return try FileBytes.firstExisting([base + ".gz", base], describing: "\(split.rawValue) \(name)")
        }
        return try loadPair(images: locate("\(prefix)-images-idx3-ubyte"), labels: locate("\(prefix)-labels-idx1-ubyte"),
                            classCount: classCount)
    }

    /// Bytes scaled to [0, 1]; pointer loops keep debug builds fast on 47M pixels.
    static func bytesToUnitFloats(_ bytes: [UInt8]) -> [Float] {
        [Float](unsafeUninitializedCapacity: bytes.count) { output, initialized in
            if let base = output.baseAddress { HugePages.advise(base, byteCount: bytes.count * MemoryLayout<Float>.stride) }
            bytes.withUnsafeBufferPointer { input in
                for i in 0..<input.count { output[i] = Float(input[i]) * (1 / 255) }
            }
            initialized = bytes.count
        }
    }

    private static func bigEndian(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
    }
}

/// Fashion-MNIST: 28×28 grayscale clothing images in 10 classes, 60 000 train and 10 000 test.
public enum FashionMNIST {
    /// Where the Debian-installed copy lives.
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"

    /// Loads one split as [1, 28, 28] samples with pixels in [0, 1] and class-index targets.
    public static func load(directory: String = defaultDirectory, split: DataSplit) throws -> Dataset {
        try IDX.loadStandard(directory: directory, split: split)
    }
}

/// MNIST digits: the same IDX layout and file names as Fashion-MNIST.
public enum MNIST {
    /// Loads one split as [1, 28, 28] samples with pixels in [0, 1] and class-index targets.
    public static func load(directory: String, split: DataSplit) throws -> Dataset {
        try IDX.loadStandard(directory: directory, split: split)
    }
}
