import CZlib
import Foundation
import XCTest
@testable import LockstepData

/// `lockstep predict`'s inputs: PNG (every row filter), PGM, CSV and IDX, and their errors.
final class PredictionInputTests: XCTestCase {
    /// A PNG chunk: length, type, data, CRC-32 over type and data.
    private func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let body = Array(type.utf8) + data
        let crc = UInt32(crc32(0, body, uInt(body.count)))
        func be(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
        return be(UInt32(data.count)) + body + be(crc)
    }

    /// Encodes `pixels` ([height][width·channels]) with row r using filter r % 5, the encoder side of PNG's filters.
    private func png(_ pixels: [[UInt8]], channels: Int, colorType: UInt8) -> [UInt8] {
        var raw: [UInt8] = []
        for (row, line) in pixels.enumerated() {
            let filter = UInt8(row % 5)
            raw.append(filter)
            for i in line.indices {
                let left = i >= channels ? Int(line[i - channels]) : 0
                let up = row > 0 ? Int(pixels[row - 1][i]) : 0
                let upLeft = row > 0 && i >= channels ? Int(pixels[row - 1][i - channels]) : 0
                let p: Int = left + up - upLeft
                let (pa, pb, pc) = (abs(p - left), abs(p - up), abs(p - upLeft))
                let paeth: Int = pa <= pb && pa <= pc ? left : (pb <= pc ? up : upLeft)
                let predictions: [Int] = [0, left, up, (left + up) / 2, paeth]
                let prediction = predictions[Int(filter)]
                raw.append(UInt8(truncatingIfNeeded: Int(line[i]) - prediction))
            }
        }
        var compressed = [UInt8](repeating: 0, count: Int(compressBound(uLong(raw.count))))
        var count = uLongf(compressed.count)
        XCTAssertEqual(compress2(&compressed, &count, raw, uLong(raw.count), 9), Z_OK)
        let width = pixels[0].count / channels, height = pixels.count
        func be(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", be(width) + be(height) + [8, colorType, 0, 0, 0])
            + chunk("IDAT", Array(compressed[0..<Int(count)])) + chunk("IEND", [])
    }

    func testPNGWithEveryRowFilterDecodesExactly() throws {
        let directory = try TemporaryDirectory()
        // 7 rows (filters 0–4, then 0–1 again), 6 pixels, values chosen to wrap around 255 in the predictors.
        let gray: [[UInt8]] = (0..<7).map { (r: Int) -> [UInt8] in
            (0..<6).map { (c: Int) -> UInt8 in UInt8((r * 53 + c * 97 + r * c * 11) % 256) }
        }
        let path = try directory.write("gray.png", png(gray, channels: 1, colorType: 0))
        let loaded = try PredictionInput.load(path)
        XCTAssertEqual(loaded.sampleShape, [1, 7, 6])
        XCTAssertEqual(loaded.features, gray.flatMap { $0 }.map { Float($0) * (1 / 255) })

        // RGBA: alpha dropped, channels planar (CHW) like the training images.
        let rgba: [[UInt8]] = (0..<5).map { (r: Int) -> [UInt8] in (0..<12).map { (i: Int) -> UInt8 in UInt8((r * 31 + i * 67) % 256) } }
        let colour = try PredictionInput.load(try directory.write("rgba.png", png(rgba, channels: 4, colorType: 6)))
        XCTAssertEqual(colour.sampleShape, [3, 5, 3])
        for y in 0..<5 { for x in 0..<3 { for c in 0..<3 {
            XCTAssertEqual(colour.features[(c * 5 + y) * 3 + x], Float(rgba[y][x * 4 + c]) * (1 / 255))
        } } }
    }

    func testImageGridPNGReadsBack() throws {
        let directory = try TemporaryDirectory()
        let image = (0..<(4 * 5)).map { Float($0 * 13 % 256) / 255 }
        let path = directory.file("grid.png")
        try ImageGrid(images: image, sampleShape: [1, 4, 5], columns: 1, spacing: 0, scaling: .unit).write(to: path)
        let loaded = try PredictionInput.load(path)
        XCTAssertEqual(loaded.sampleShape, [1, 4, 5])
        for (read, written) in zip(loaded.features, image) { XCTAssertEqual(read, written, accuracy: 0.5 / 255) }
    }

    func testPGMCSVAndErrorsNameTheFile() throws {
        let directory = try TemporaryDirectory()
        let pgm = try directory.write("a.pgm", Array("P5\n# comment\n3 2\n255\n".utf8) + [0, 51, 102, 153, 204, 255])
        let image = try PredictionInput.load(pgm)
        XCTAssertEqual(image.sampleShape, [1, 2, 3])
        XCTAssertEqual(image.features, [0, 51, 102, 153, 204, 255].map { Float($0) * (1 / 255) })
        let csv = try directory.write("rows.csv", Array("x,y\n1,2\n3,4.5\n".utf8))
        let rows = try PredictionInput.load(csv)
        XCTAssertEqual(rows.count, 2)
        XCTAssertEqual(rows.features, [1, 2, 3, 4.5])
        for (name, bytes, expected) in [("short.pgm", Array("P5 3 2 255\n".utf8) + [1, 2], "needs 6 pixel bytes"),
                                        ("bad.png", [0x89, 0x50, 0x4E, 0x47, 0, 0, 0, 0, 0], "not a PNG"),
                                        ("ragged.csv", Array("1,2\n3\n".utf8), "row 2 has 1 values"),
                                        ("data.bin", [1, 2, 3], "unknown input type")] {
            let path = try directory.write(name, bytes)
            XCTAssertThrowsError(try PredictionInput.load(path)) { error in
                XCTAssertTrue("\(error)".contains(path) && "\(error)".contains(expected), "\(error)")
            }
        }
    }
}
