import Foundation

/// A character-level (byte) language-modelling dataset over a text file or a directory of text files.
///
/// The vocabulary is the sorted set of bytes that occur anywhere in the text, so ids are dense (0..<V) and the same
/// text always gives the same ids. Samples are windows of T + 1 bytes cut every `stride` bytes: features are the first
/// T ids, targets the last T (shifted by one). The first 90% of the text (by position) feeds the training windows,
/// the last 10% the validation windows, so no validation byte is ever seen in training.
public struct TextDataset: Sendable {
    /// Byte value of each id, ascending (id i decodes to `vocabulary[i]`).
    public let vocabulary: [UInt8]
    /// Training windows: features [count, T] ids, targets [count, T] ids, `classCount` = vocabulary size.
    public let train: Dataset
    /// Validation windows from the tail of the text, same layout.
    public let validation: Dataset
    /// Window length T.
    public let sequenceLength: Int
    /// Ids of the training part of the text (for statistics such as the unigram entropy).
    public let trainingIds: [Int]
    private let byteVocabulary: ByteVocabulary

    /// The fortune-mod/fortunes corpus directory on Debian.
    public static let defaultCorpus = "/usr/share/games/fortunes"

    /// Reads `path` (a file, or a directory whose plain-text files are concatenated in name order) and cuts windows.
    public static func load(path: String, sequenceLength: Int, stride: Int, validationFraction: Double = 0.1) throws -> TextDataset {
        try TextDataset(bytes: try readCorpus(path), source: path, sequenceLength: sequenceLength, stride: stride,
                        validationFraction: validationFraction)
    }

    /// The text of `path`: the file itself, or every regular plain-text file directly in the directory, sorted by name,
    /// concatenated. Fortune's index files (`.dat`) and its UTF-8 aliases (`.u8`, symlinks to the same text) are skipped.
    public static func readCorpus(_ path: String) throws -> [UInt8] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw DataError(file: path, path == defaultCorpus
                ? "text corpus is missing: install it with `apt-get install fortune-mod fortunes` (launch/setup does)"
                : "text corpus is missing")
        }
        guard isDirectory.boolValue else { return try FileBytes.read(path) }
        let files = try corpusFiles(directory: path)
        guard !files.isEmpty else { throw DataError(file: path, "directory holds no plain-text files") }
        var bytes: [UInt8] = []
        for file in files { bytes += try FileBytes.read(file) }
        return bytes
    }

    /// The files `readCorpus` concatenates for a directory, in order.
    public static func corpusFiles(directory: String) throws -> [String] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory) } catch {
            throw DataError(file: directory, "cannot list the directory: \(error.localizedDescription)")
        }
        return names.sorted().compactMap { name -> String? in
            guard !name.hasPrefix("."), !name.hasSuffix(".dat"), !name.hasSuffix(".u8") else { return nil }
            let full = (directory as NSString).appendingPathComponent(name)
            // Regular files only: no subdirectories (e.g. fortune's `off/`) and no symlinks (aliases of other files).
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: full),
                  attributes[.type] as? FileAttributeType == .typeRegular else { return nil }
            return full
        }
    }

    /// Builds the vocabulary and windows from `bytes`; `source` names the text in errors.
    public init(bytes: [UInt8], source: String, sequenceLength: Int, stride: Int, validationFraction: Double = 0.1) throws {
        guard sequenceLength > 0 else { throw DataError(file: source, "sequence length must be positive, got \(sequenceLength)") }
        guard stride > 0 else { throw DataError(file: source, "window stride must be positive, got \(stride)") }
        guard validationFraction > 0 && validationFraction < 1 else {
            throw DataError(file: source, "validation fraction must be in (0, 1), got \(validationFraction)")
        }
        let byteVocabulary = ByteVocabulary(text: bytes)
        self.byteVocabulary = byteVocabulary
        vocabulary = byteVocabulary.bytes
        self.sequenceLength = sequenceLength

        // Every byte of the text is in its own vocabulary.
        let ids = bytes.map { byteVocabulary.id(of: $0)! }
        let split = Int((Double(ids.count) * (1 - validationFraction)).rounded(.down))
        let window = sequenceLength + 1
        guard split >= window, ids.count - split >= window else {
            throw DataError(file: source, "text of \(ids.count) bytes is too short for windows of \(window) bytes in both the "
                            + "training (first \(Int((1 - validationFraction) * 100))%) and validation parts; use a shorter sequence_length")
        }
        trainingIds = Array(ids[0..<split])
        train = TextDataset.windows(trainingIds, length: sequenceLength, stride: stride, classes: vocabulary.count)
        validation = TextDataset.windows(Array(ids[split...]), length: sequenceLength, stride: stride, classes: vocabulary.count)
    }

    /// Windows of `length` + 1 ids starting every `stride` ids: features = first `length`, targets = next-id shift.
    static func windows(_ ids: [Int], length: Int, stride: Int, classes: Int) -> Dataset {
        let count = (ids.count - length - 1) / stride + 1
        var features = [Float](repeating: 0, count: count * length), targets = features
        for sample in 0..<count {
            let start = sample * stride
            for t in 0..<length {
                features[sample * length + t] = Float(ids[start + t])
                targets[sample * length + t] = Float(ids[start + t + 1])
            }
        }
        return Dataset(features: features, targets: targets, sampleShape: [length], targetWidth: length, classCount: classes)
    }

    /// Number of distinct bytes (model output width per step).
    public var vocabularySize: Int { vocabulary.count }

    /// Ids of `text`'s UTF-8 bytes; throws naming the first byte that never occurs in the corpus.
    public func encode(_ text: String) throws -> [Int] {
        try Array(text.utf8).map { byte in
            guard let id = byteVocabulary.id(of: byte) else {
                throw DataError(file: "prompt", "byte 0x\(String(byte, radix: 16)) (\(String(decoding: [byte], as: UTF8.self))) does not occur in the training text")
            }
            return id
        }
    }

    /// The bytes of `ids` as text (invalid UTF-8 sequences become U+FFFD).
    public func decode(_ ids: [Int]) -> String { String(decoding: ids.map { vocabulary[$0] }, as: UTF8.self) }

    /// Entropy in nats of the training text's byte distribution: the loss of the best context-free predictor.
    public var unigramEntropy: Double {
        var counts = [Int](repeating: 0, count: vocabulary.count)
        for id in trainingIds { counts[id] += 1 }
        let total = Double(trainingIds.count)
        return counts.reduce(0.0) { sum, count in
            guard count > 0 else { return sum }
            let p = Double(count) / total
            return sum - p * Foundation.log(p)
        }
    }
}
