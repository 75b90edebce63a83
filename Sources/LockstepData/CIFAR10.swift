import Foundation

/// CIFAR-10 in its binary form: records of 1 label byte + 3072 pixel bytes (R, G, B planes of 32×32).
public enum CIFAR10 {
    /// Bytes per image.
    public static let imageBytes = 3 * 32 * 32
    /// Bytes per record (label + image).
    public static let recordBytes = 1 + imageBytes
    /// Number of classes.
    public static let classCount = 10
    /// Training batch files, in order.
    public static let trainFiles = (1...5).map { "data_batch_\($0).bin" }
    /// Test batch file.
    public static let testFiles = ["test_batch.bin"]

    /// Loads a split from `directory` (or its `cifar-10-batches-bin` subdirectory, as the archive unpacks)
    /// as [3, 32, 32] samples with pixels in [0, 1].
    public static func load(directory: String, split: DataSplit) throws -> Dataset {
        let nested = (directory as NSString).appendingPathComponent("cifar-10-batches-bin")
        let names = split == .train ? trainFiles : testFiles
        let root = FileManager.default.fileExists(atPath: (directory as NSString).appendingPathComponent(names[0]))
            || !FileManager.default.fileExists(atPath: nested) ? directory : nested
        return try load(files: names.map { (root as NSString).appendingPathComponent($0) })
    }

    /// Loads and concatenates the given batch files (raw or gzip).
    public static func load(files: [String]) throws -> Dataset {
        var contents: [[UInt8]] = []
        for file in files {
            let bytes = try FileBytes.read(file)
            guard !bytes.isEmpty else { throw DataError(file: file, "is empty, expected CIFAR-10 records of \(recordBytes) bytes") }
            guard bytes.count % recordBytes == 0 else {
                throw DataError(file: file, "truncated or not CIFAR-10 binary: \(bytes.count) bytes is not a multiple of the "
                                + "\(recordBytes)-byte record (\(bytes.count / recordBytes) whole records + \(bytes.count % recordBytes) bytes)")
            }
            for record in 0..<(bytes.count / recordBytes) where Int(bytes[record * recordBytes]) >= classCount {
                throw DataError(file: file, "label \(bytes[record * recordBytes]) in record \(record) is out of range 0..<\(classCount)")
            }
            contents.append(bytes)
        }
        let total = contents.reduce(0) { $0 + $1.count / recordBytes }
        var targets = [Float](repeating: 0, count: total)
        var features = [Float](repeating: 0, count: total * imageBytes)
        var sample = 0
        features.withUnsafeMutableBufferPointer { output in
            for bytes in contents {
                bytes.withUnsafeBufferPointer { input in
                    for record in 0..<(input.count / recordBytes) {
                        let source = input.baseAddress! + record * recordBytes
                        targets[sample] = Float(source[0])
                        // Planes are already channel-major (CHW), so pixels copy straight through.
                        let destination = output.baseAddress! + sample * imageBytes
                        for i in 0..<imageBytes { destination[i] = Float(source[1 + i]) * (1 / 255) }
                        sample += 1
                    }
                }
            }
        }
        return Dataset(features: features, targets: targets, sampleShape: [3, 32, 32], targetWidth: 1, classCount: classCount)
    }
}
