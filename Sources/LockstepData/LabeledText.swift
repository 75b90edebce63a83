import Foundation
import LockstepCore

/// A text-classification dataset from tab-separated `label<TAB>text` lines, tokenized by byte.
///
/// Labels that are all non-negative integers are used as class indices directly; otherwise the distinct label
/// strings of the training file, sorted, are classes 0, 1, .... Token ids: 0 is padding, 1 an unknown byte (one
/// that occurs only in the test text), then the training text's bytes in ascending order (`ByteVocabulary`).
/// Each text becomes `sequenceLength` ids: longer texts keep their first bytes, shorter ones are padded at the
/// start by default, so the text ends on the last time step (what an RNN read out at `last_time_step` needs).
public struct LabeledTextDataset: Sendable {
    /// Where padding goes in a text shorter than the sequence length.
    public enum Padding: String, Sendable {
        /// Padding ids first, text last.
        case start
        /// Text first, padding ids last.
        case end
    }

    /// Id of a padding position.
    public static let paddingId = 0
    /// Id of a byte that never occurs in the training text.
    public static let unknownId = 1

    /// Byte ids after the two special ids; `vocabulary.size` is the embedding's vocabulary size.
    public let vocabulary: ByteVocabulary
    /// Name of each class index (the label text, or the integer as text).
    public let classNames: [String]
    /// Training samples: features [count, sequenceLength] ids as Float, targets [count, 1] class indices.
    public let train: Dataset
    /// Test samples (the test file, or every 10th line of the training file when there is none), same layout.
    public let test: Dataset
    /// Ids per sample.
    public let sequenceLength: Int

    /// Reads `trainPath` (and `testPath`, if given; both may be gzip) and encodes every line.
    /// Without a test file, lines 10, 20, 30, ... of the training file are held out as the test set, so a file
    /// sorted by label still gives a test set with every label.
    public static func load(trainPath: String, testPath: String? = nil, sequenceLength: Int,
                            padding: Padding = .start) throws -> LabeledTextDataset {
        let trainBytes = try FileBytes.read(trainPath)
        let testBytes = try testPath.map(FileBytes.read)
        return try LabeledTextDataset(trainBytes: trainBytes, trainSource: trainPath, testBytes: testBytes,
                                      testSource: testPath ?? trainPath, sequenceLength: sequenceLength, padding: padding)
    }

    /// Builds the dataset from file contents; `trainSource` and `testSource` name them in errors.
    public init(trainBytes: [UInt8], trainSource: String, testBytes: [UInt8]? = nil, testSource: String = "test",
                sequenceLength: Int, padding: Padding = .start) throws {
        guard sequenceLength > 0 else {
            throw DataError(file: trainSource, "sequence length must be positive, got \(sequenceLength)")
        }
        var trainLines = try LabeledTextDataset.parse(trainBytes, source: trainSource)
        var testLines: [Line]
        if let testBytes {
            testLines = try LabeledTextDataset.parse(testBytes, source: testSource)
        } else {
            testLines = stride(from: 9, to: trainLines.count, by: 10).map { trainLines[$0] }
            trainLines = trainLines.enumerated().filter { $0.offset % 10 != 9 }.map(\.element)
        }
        guard !trainLines.isEmpty else { throw DataError(file: trainSource, "holds no label<TAB>text lines") }
        guard !testLines.isEmpty else {
            throw testBytes == nil
                ? DataError(file: trainSource, "has fewer than 10 lines, so none is held out for testing; give a test file")
                : DataError(file: testSource, "holds no label<TAB>text lines")
        }

        // Class indices: integers as they are, or sorted label strings.
        let labels = Set(trainLines.map(\.label))
        let integerLabels = labels.allSatisfy(LabeledTextDataset.isClassNumber)
        let classNames = integerLabels ? (0...labels.map { Int($0)! }.max()!).map(String.init) : labels.sorted()
        guard classNames.count >= 2 else {
            throw DataError(file: trainSource, "needs at least 2 classes, every line has label \(JSONText.quoted(labels.first!))")
        }
        let classOfName = Dictionary(uniqueKeysWithValues: classNames.enumerated().map { ($0.element, $0.offset) })
        func classIndex(_ label: String) -> Int? {
            guard integerLabels else { return classOfName[label] }
            guard LabeledTextDataset.isClassNumber(label), let value = Int(label), value < classNames.count else { return nil }
            return value
        }
        // A test label outside the training classes would be a class the model has no output for.
        for line in testLines where classIndex(line.label) == nil {
            throw DataError(file: testSource, "line \(line.number): label \(JSONText.quoted(line.label)) is not one of the "
                            + "\(classNames.count) classes of \(trainSource) (\(classNames.joined(separator: ", ")))")
        }

        let vocabulary = ByteVocabulary(text: trainLines.lazy.flatMap(\.text), reservedIds: 2)
        func dataset(_ lines: [Line]) -> Dataset {
            var features = [Float](repeating: Float(LabeledTextDataset.paddingId), count: lines.count * sequenceLength)
            var targets = [Float](repeating: 0, count: lines.count)
            for (row, line) in lines.enumerated() {
                let used = min(line.text.count, sequenceLength)
                let start = row * sequenceLength + (padding == .start ? sequenceLength - used : 0)
                for (offset, byte) in line.text.prefix(used).enumerated() {
                    features[start + offset] = Float(vocabulary.id(of: byte) ?? LabeledTextDataset.unknownId)
                }
                targets[row] = Float(classIndex(line.label)!)
            }
            var result = Dataset(features: features, targets: targets, sampleShape: [sequenceLength], targetWidth: 1,
                                 classCount: classNames.count)
            result.vocabularySize = vocabulary.size
            return result
        }
        self.vocabulary = vocabulary
        self.classNames = classNames
        self.sequenceLength = sequenceLength
        train = dataset(trainLines)
        test = dataset(testLines)
    }

    /// A label usable as a class index as it stands: 1 to 9 decimal digits.
    static func isClassNumber(_ label: String) -> Bool {
        !label.isEmpty && label.utf8.count <= 9 && label.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
    }

    /// One parsed line: its 1-based number, label and text bytes.
    struct Line {
        var number: Int
        var label: String
        var text: ArraySlice<UInt8>
    }

    /// Splits `bytes` into `label<TAB>text` lines; blank lines are skipped, a trailing CR is dropped.
    static func parse(_ bytes: [UInt8], source: String) throws -> [Line] {
        var lines: [Line] = []
        var number = 0
        for var line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            number += 1
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            guard !line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) else { continue }
            guard let tab = line.firstIndex(of: UInt8(ascii: "\t")) else {
                throw DataError(file: source, "line \(number): no tab between label and text (expected label<TAB>text)")
            }
            let label = String(decoding: line[line.startIndex..<tab], as: UTF8.self).trimmingCharacters(in: .whitespaces)
            guard !label.isEmpty else { throw DataError(file: source, "line \(number): empty label before the tab") }
            lines.append(Line(number: number, label: label, text: line[(tab + 1)...]))
        }
        return lines
    }
}
