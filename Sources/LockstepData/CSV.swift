import Foundation

/// Which column of a CSV file holds the label.
public enum CSVColumn: Sendable, Equatable {
    /// Zero-based column index; negative counts from the end (-1 = last).
    case index(Int)
    /// Header name (needs a header line).
    case name(String)

    /// An integer is an index, anything else a header name (config strings like "0", "-1" or "label").
    public init(_ text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        self = Int(trimmed).map { .index($0) } ?? .name(trimmed)
    }
}

/// What the label column means.
public enum CSVTask: String, Sendable, CaseIterable {
    /// Non-negative integer class indices.
    case classification
    /// Real-valued targets.
    case regression
}

/// Numeric CSV files: every column is a number; one is the label, the rest are features.
public enum CSVReader {
    /// Reads `path` into a dataset of [featureCount] samples.
    ///
    /// - Parameters:
    ///   - labelColumn: the label's column.
    ///   - hasHeader: whether the first non-empty line names the columns.
    ///   - task: classification (integer labels ≥ 0) or regression (any finite number).
    ///   - classCount: for classification, the number of classes to enforce (e.g. the training set's);
    ///     nil means 1 + the largest label found.
    public static func load(path: String, labelColumn: CSVColumn = .index(-1), hasHeader: Bool = true,
                            task: CSVTask = .classification, classCount: Int? = nil) throws -> Dataset {
        let bytes = try FileBytes.read(path)
        guard let text = String(bytes: bytes, encoding: .utf8) else { throw DataError(file: path, "is not UTF-8 text") }
        return try parse(text, file: path, labelColumn: labelColumn, hasHeader: hasHeader, task: task, classCount: classCount)
    }

    /// Parses CSV text; `file` names the source in errors.
    public static func parse(_ text: String, file: String, labelColumn: CSVColumn = .index(-1), hasHeader: Bool = true,
                             task: CSVTask = .classification, classCount: Int? = nil) throws -> Dataset {
        var header: [String]?
        var width = 0
        var label = 0
        var features: [Float] = [], targets: [Float] = []
        var largestLabel = -1
        var lineNumber = 0
        // "\r\n" is one Character in Swift, so split on isNewline rather than "\n".
        for line in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            lineNumber += 1
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) || line.hasPrefix("#") { continue }
            let fields = line.split(separator: ",", omittingEmptySubsequences: false).map(clean)
            if width == 0 {
                width = fields.count
                guard width >= 2 else {
                    throw DataError(file: file, "line \(lineNumber): found \(width) column; need at least one feature and a label")
                }
                if hasHeader { header = fields }
                label = try resolve(labelColumn, header: header, width: width, file: file, line: lineNumber)
                if hasHeader { continue }
            }
            guard fields.count == width else {
                throw DataError(file: file, "line \(lineNumber): has \(fields.count) columns, expected \(width) like the first line")
            }
            for (column, field) in fields.enumerated() {
                guard let value = Float(field), value.isFinite else {
                    let name = header.map { " ('\($0[column])')" } ?? ""
                    let hint = !hasHeader && targets.isEmpty ? " (if this line is a header, read the file with a header)" : ""
                    throw DataError(file: file, "line \(lineNumber), column \(column + 1)\(name): '\(field)' is not a finite number\(hint)")
                }
                if column != label { features.append(value); continue }
                if task == .classification {
                    guard value >= 0, value == value.rounded(), value < 16_777_216 else {
                        throw DataError(file: file, "line \(lineNumber), column \(column + 1): label '\(field)' is not a non-negative integer class index")
                    }
                    if let classCount, Int(value) >= classCount {
                        throw DataError(file: file, "line \(lineNumber), column \(column + 1): label \(Int(value)) is out of range 0..<\(classCount)")
                    }
                    largestLabel = max(largestLabel, Int(value))
                }
                targets.append(value)
            }
        }
        guard !targets.isEmpty else { throw DataError(file: file, "has no data rows") }
        return Dataset(features: features, targets: targets, sampleShape: [width - 1], targetWidth: 1,
                       classCount: task == .classification ? (classCount ?? largestLabel + 1) : nil)
    }

    private static func clean(_ field: Substring) -> String {
        var value = field.trimmingCharacters(in: .whitespaces)
        if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
        return value
    }

    private static func resolve(_ column: CSVColumn, header: [String]?, width: Int, file: String, line: Int) throws -> Int {
        switch column {
        case .index(let index):
            let resolved = index < 0 ? width + index : index
            guard (0..<width).contains(resolved) else {
                throw DataError(file: file, "line \(line): label column \(index) does not exist in \(width) columns")
            }
            return resolved
        case .name(let name):
            guard let header else {
                throw DataError(file: file, "label column '\(name)' is a name but the file is read without a header; give an index")
            }
            guard let found = header.firstIndex(of: name) else {
                throw DataError(file: file, "line \(line): no column named '\(name)' in header \(header.joined(separator: ","))")
            }
            return found
        }
    }
}
