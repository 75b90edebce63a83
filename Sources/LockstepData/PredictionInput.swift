import Foundation

/// Samples to predict on, read by file type: IDX images (`*-idx3-ubyte`, raw or `.gz`) and one PGM image (P5) become
/// [1, rows, columns] samples scaled to [0, 1] like the training images; a CSV file holds one sample of numbers per
/// row (a first row that is not numbers is a header).
public enum PredictionInput {
    /// The samples of `path` (features row-major) with their shape; errors name the file and what is wrong.
    public static func load(_ path: String) throws -> (features: [Float], count: Int, sampleShape: [Int]) {
        let lower = path.lowercased()
        if lower.hasSuffix(".pgm") { return try pgm(path) }
        if lower.hasSuffix(".csv") { return try csv(path) }
        if lower.contains("idx3") {
            let tensor = try IDX.read(path, expectedMagic: IDX.imageMagic)
            return (IDX.bytesToUnitFloats(tensor.bytes), tensor.dimensions[0], [1, tensor.dimensions[1], tensor.dimensions[2]])
        }
        throw DataError(file: path, "unknown input type: expected an IDX image file (*-idx3-ubyte[.gz]), a .pgm image or a .csv file")
    }

    /// Binary PGM: `P5`, width, height, maximum value (≤ 255) separated by white space (with `#` comments), one
    /// white-space byte, then width·height bytes.
    static func pgm(_ path: String) throws -> (features: [Float], count: Int, sampleShape: [Int]) {
        let bytes = try FileBytes.read(path)
        var position = 0
        func token() throws -> String {
            while position < bytes.count {
                if bytes[position] == UInt8(ascii: "#") {
                    while position < bytes.count && bytes[position] != 10 { position += 1 }
                } else if [9, 10, 13, 32].contains(bytes[position]) {
                    position += 1
                } else { break }
            }
            let start = position
            while position < bytes.count && ![9, 10, 13, 32].contains(bytes[position]) { position += 1 }
            guard position > start else { throw DataError(file: path, "truncated PGM header") }
            return String(decoding: bytes[start..<position], as: UTF8.self)
        }
        guard try token() == "P5" else { throw DataError(file: path, "not a binary PGM image (expected the magic P5)") }
        guard let width = Int(try token()), let height = Int(try token()), let maximum = Int(try token()),
              width > 0, height > 0, (1...255).contains(maximum) else {
            throw DataError(file: path, "PGM header needs a positive width and height and a maximum value of 1…255")
        }
        position += 1  // the single white-space byte before the pixels
        guard bytes.count - position == width * height else {
            throw DataError(file: path, "PGM \(width)×\(height) needs \(width * height) pixel bytes, the file has \(max(bytes.count - position, 0))")
        }
        let scale = 1 / Float(maximum)
        return (bytes[position...].map { Float($0) * scale }, 1, [1, height, width])
    }

    /// Rows of numbers; every row the same length.
    static func csv(_ path: String) throws -> (features: [Float], count: Int, sampleShape: [Int]) {
        guard let text = FileManager.default.contents(atPath: path).flatMap({ String(data: $0, encoding: .utf8) }) else {
            throw DataError(file: path, "cannot read the file (missing or not UTF-8)")
        }
        var rows = text.split(whereSeparator: \.isNewline).map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        if let first = rows.first, first.contains(where: { Float($0) == nil }) { rows.removeFirst() }  // a header
        guard let width = rows.first?.count, width > 0 else { throw DataError(file: path, "has no rows of numbers") }
        var features: [Float] = []
        for (index, row) in rows.enumerated() {
            guard row.count == width else { throw DataError(file: path, "row \(index + 1) has \(row.count) values, the first has \(width)") }
            for value in row {
                guard let number = Float(value) else { throw DataError(file: path, "row \(index + 1): '\(value)' is not a number") }
                features.append(number)
            }
        }
        return (features, rows.count, [width])
    }
}
