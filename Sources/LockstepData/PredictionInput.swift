import CZlib
import Foundation

/// Samples to predict on, read by file type: IDX images (`*-idx3-ubyte`, raw or `.gz`) and one PGM (P5) or PNG image
/// become [channels, rows, columns] samples scaled to [0, 1] like the training images; a CSV file holds one sample of
/// numbers per row (a first row that is not numbers is a header).
public enum PredictionInput {
    /// The samples of `path` (features row-major) with their shape; errors name the file and what is wrong.
    public static func load(_ path: String) throws -> (features: [Float], count: Int, sampleShape: [Int]) {
        let lower = path.lowercased()
        if lower.hasSuffix(".pgm") { return try pgm(path) }
        if lower.hasSuffix(".png") { return try png(path) }
        if lower.hasSuffix(".csv") { return try csv(path) }
        if lower.contains("idx3") {
            let tensor = try IDX.read(path, expectedMagic: IDX.imageMagic)
            return (IDX.bytesToUnitFloats(tensor.bytes), tensor.dimensions[0], [1, tensor.dimensions[1], tensor.dimensions[2]])
        }
        throw DataError(file: path, "unknown input type: expected an IDX image file (*-idx3-ubyte[.gz]), a .pgm or .png image or a .csv file")
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

    /// An 8-bit, non-interlaced PNG: gray (1 channel) or RGB (3), alpha dropped; rows unfiltered (types 0–4).
    static func png(_ path: String) throws -> (features: [Float], count: Int, sampleShape: [Int]) {
        let bytes = try FileBytes.read(path)
        guard bytes.count > 8, Array(bytes[0..<8]) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] else {
            throw DataError(file: path, "not a PNG file (signature missing)")
        }
        func number(_ at: Int) -> Int { bytes[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) } }
        var position = 8, width = 0, height = 0, colorType = -1
        var compressed: [UInt8] = []
        while position + 8 <= bytes.count {
            let length = number(position), type = String(decoding: bytes[(position + 4)..<(position + 8)], as: UTF8.self)
            let start = position + 8
            guard start + length + 4 <= bytes.count else { throw DataError(file: path, "truncated PNG chunk \(type)") }
            if type == "IHDR" {
                guard length == 13, bytes[start + 8] == 8, bytes[start + 12] == 0, [0, 2, 4, 6].contains(bytes[start + 9]) else {
                    throw DataError(file: path, "only 8-bit, non-interlaced gray or RGB(A) PNG images are read")
                }
                (width, height, colorType) = (number(start), number(start + 4), Int(bytes[start + 9]))
            } else if type == "IDAT" {
                compressed += bytes[start..<(start + length)]
            } else if type == "IEND" { break }
            position = start + length + 4
        }
        let stored = [0: 1, 2: 3, 4: 2, 6: 4][colorType] ?? 0
        guard width > 0, height > 0, stored > 0 else { throw DataError(file: path, "PNG has no image header") }
        var raw = [UInt8](repeating: 0, count: height * (1 + width * stored))
        var rawCount = uLongf(raw.count)
        guard uncompress(&raw, &rawCount, compressed, uLong(compressed.count)) == Z_OK, Int(rawCount) == raw.count else {
            throw DataError(file: path, "PNG image data is damaged (zlib)")
        }
        // Undo each row's filter in place: the bytes of a pixel predict from the pixel left, the row above, or both.
        let stride = width * stored
        for row in 0..<height {
            let line = row * (stride + 1), filter = raw[line]
            for i in 0..<stride {
                let at = line + 1 + i
                let left = i >= stored ? Int(raw[at - stored]) : 0
                let up = row > 0 ? Int(raw[at - stride - 1]) : 0
                let upLeft = row > 0 && i >= stored ? Int(raw[at - stride - 1 - stored]) : 0
                let prediction: Int
                switch filter {
                case 0: prediction = 0
                case 1: prediction = left
                case 2: prediction = up
                case 3: prediction = (left + up) / 2
                case 4:
                    let p = left + up - upLeft, pa = abs(p - left), pb = abs(p - up), pc = abs(p - upLeft)
                    prediction = pa <= pb && pa <= pc ? left : (pb <= pc ? up : upLeft)
                default: throw DataError(file: path, "PNG row \(row) has unknown filter \(filter)")
                }
                raw[at] = UInt8(truncatingIfNeeded: Int(raw[at]) + prediction)
            }
        }
        let channels = stored >= 3 ? 3 : 1
        var features = [Float](repeating: 0, count: channels * height * width)
        for y in 0..<height {
            for x in 0..<width {
                // × 1/255, exactly as the IDX training images are scaled.
                for c in 0..<channels { features[(c * height + y) * width + x] = Float(raw[y * (stride + 1) + 1 + x * stored + c]) * (1 / 255) }
            }
        }
        return (features, 1, [channels, height, width])
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
