import CZlib
import Foundation
import XCTest
@testable import LockstepData

final class ImageGridTests: XCTestCase {
    /// A minimal PNG reader for 8-bit gray/RGB, non-interlaced, filter 0 files: checks every CRC and the structure.
    private func decodePNG(_ bytes: [UInt8]) throws -> (width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        XCTAssertEqual(Array(bytes.prefix(8)), [137, 80, 78, 71, 13, 10, 26, 10], "PNG signature")
        func uint32(_ at: Int) -> Int { Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3]) }
        var offset = 8, types: [String] = [], header: [UInt8] = [], data: [UInt8] = []
        while offset < bytes.count {
            let length = uint32(offset)
            let typeAndData = Array(bytes[(offset + 4)..<(offset + 8 + length)])
            XCTAssertEqual(UInt32(uint32(offset + 8 + length)), UInt32(crc32(0, typeAndData, uInt(typeAndData.count))), "chunk CRC")
            let type = String(decoding: typeAndData.prefix(4), as: UTF8.self)
            types.append(type)
            if type == "IHDR" { header = Array(typeAndData.dropFirst(4)) }
            if type == "IDAT" { data += typeAndData.dropFirst(4) }
            offset += 12 + length
        }
        XCTAssertEqual(offset, bytes.count)
        XCTAssertEqual(types.first, "IHDR"); XCTAssertEqual(types.last, "IEND")
        let width = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        let height = Int(header[4]) << 24 | Int(header[5]) << 16 | Int(header[6]) << 8 | Int(header[7])
        XCTAssertEqual(header[8], 8, "bit depth")
        XCTAssertEqual(Array(header[10...12]), [0, 0, 0], "compression, filter, interlace")
        let channels = header[9] == 2 ? 3 : 1
        var raw = [UInt8](repeating: 0, count: height * (width * channels + 1))
        var rawCount = uLongf(raw.count)
        XCTAssertEqual(uncompress(&raw, &rawCount, data, uLong(data.count)), Z_OK)
        XCTAssertEqual(Int(rawCount), raw.count)
        var pixels: [UInt8] = []
        for y in 0..<height {
            let line = raw[(y * (width * channels + 1))..<((y + 1) * (width * channels + 1))]
            XCTAssertEqual(line.first, 0, "filter type none")
            pixels += line.dropFirst()
        }
        return (width, height, channels, pixels)
    }

    func testGrayGridRoundTripsThroughPNGAndPGM() throws {
        // Three 2×3 images: values 0, 0.2, 1.0, -1 (clamped to 0), 2 (clamped to 1), 0.5.
        let image: [Float] = [0, 0.2, 1, -1, 2, 0.5]
        let images = image + image.map { 1 - min(max($0, 0), 1) } + image
        let grid = try ImageGrid(images: images, sampleShape: [1, 2, 3], columns: 2, spacing: 1, background: 128)
        // 2 columns × 3 + 3 spacing = 9 wide, 2 rows × 2 + 3 spacing = 7 high.
        XCTAssertEqual(grid.width, 9); XCTAssertEqual(grid.height, 7)
        let decoded = try decodePNG(grid.pngBytes())
        XCTAssertEqual(decoded.width, 9); XCTAssertEqual(decoded.height, 7); XCTAssertEqual(decoded.channels, 1)
        XCTAssertEqual(decoded.pixels, grid.pixels)
        func pixel(_ x: Int, _ y: Int) -> UInt8 { decoded.pixels[y * 9 + x] }
        XCTAssertEqual((1...3).map { pixel($0, 1) }, [0, 51, 255])
        XCTAssertEqual((1...3).map { pixel($0, 2) }, [0, 255, 128])
        XCTAssertEqual((5...7).map { pixel($0, 1) }, [255, 204, 0], "second image, right of the first")
        XCTAssertEqual((1...3).map { pixel($0, 4) }, [0, 51, 255], "third image, second row")
        XCTAssertEqual(pixel(0, 0), 128); XCTAssertEqual(pixel(5, 4), 128, "empty cell stays background")

        let directory = try TemporaryDirectory()
        try grid.write(to: directory.file("grid.png"))
        XCTAssertEqual(try decodePNG(FileBytes.read(directory.file("grid.png"))).pixels, grid.pixels)
        try grid.write(to: directory.file("grid.pgm"))
        let pgm = try FileBytes.read(directory.file("grid.pgm"))
        XCTAssertEqual(Array(pgm.prefix(11)), Array("P5\n9 7\n255\n".utf8))
        XCTAssertEqual(Array(pgm.dropFirst(11)), grid.pixels)
    }

    func testRGBGridWithMinMaxScaling() throws {
        // One 1×2 RGB image per channel plane: red [−3, 1], green [1, 1], blue [−1, −3] → min −3, max 1.
        let images: [Float] = [-3, 1, 1, 1, -1, -3]
        let grid = try ImageGrid(images: images, sampleShape: [3, 1, 2], spacing: 0, scaling: .minMax)
        let decoded = try decodePNG(grid.pngBytes())
        XCTAssertEqual(decoded.channels, 3); XCTAssertEqual(decoded.width, 2); XCTAssertEqual(decoded.height, 1)
        XCTAssertEqual(decoded.pixels, [0, 255, 128, 255, 255, 0])
        // A constant image is mid-grey, not a division by zero.
        XCTAssertEqual(try ImageGrid(images: [4, 4], sampleShape: [1, 2], spacing: 0, scaling: .minMax).pixels, [128, 128])
    }

    func testRejectsBadShapes() {
        assertDataError(try ImageGrid(images: [Float](repeating: 0, count: 8), sampleShape: [2, 2, 2], source: "samples.png"),
                        names: "samples.png", mentions: "[1 or 3, height, width]")
        assertDataError(try ImageGrid(images: [Float](repeating: 0, count: 5), sampleShape: [1, 2, 2], source: "samples.png"),
                        names: "samples.png", mentions: "not a whole number")
    }

    /// Writes a sample sheet to look at by hand: LOCKSTEP_IMAGE_GRID_SAMPLE=/tmp/sheet.png swift test --filter ImageGrid.
    func testWritesSampleSheetWhenAsked() throws {
        guard let path = ProcessInfo.processInfo.environment["LOCKSTEP_IMAGE_GRID_SAMPLE"] else { throw XCTSkip("not asked") }
        // 12 RGB 16×16 images: colour gradients with a diagonal bar whose position depends on the image.
        var images: [Float] = []
        for n in 0..<12 {
            for c in 0..<3 {
                for y in 0..<16 {
                    for x in 0..<16 {
                        let bar = abs(x - y - n + 6) < 2
                        images.append(bar ? 1 : Float(c == n % 3 ? x : y) / 15 * 0.6)
                    }
                }
            }
        }
        try ImageGrid(images: images, sampleShape: [3, 16, 16], columns: 4).write(to: path)
    }
}
