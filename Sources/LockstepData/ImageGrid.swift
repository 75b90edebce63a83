import CZlib
import Foundation

/// A grid of grayscale or RGB images as 8-bit pixels, written as PNG or PGM/PPM without any image library.
///
/// For GAN samples and autoencoder reconstructions: images [count, channels, height, width] (channels 1 or 3)
/// are laid out row by row, `columns` per row, with `spacing` pixels of background between them.
public struct ImageGrid: Sendable {
    /// How float pixel values become bytes.
    public enum Scaling: Sendable {
        /// Values are in [0, 1]; anything outside is clamped.
        case unit
        /// Each image is stretched so its own minimum is black and maximum white (a constant image is mid-grey).
        case minMax
    }

    /// Width of the whole grid in pixels.
    public let width: Int
    /// Height of the whole grid in pixels.
    public let height: Int
    /// 1 (grayscale) or 3 (RGB).
    public let channels: Int
    /// Interleaved pixels, [height, width, channels] row-major.
    public let pixels: [UInt8]

    /// Lays out `count` images of `sampleShape` ([C, H, W] or [H, W]) from `images` (CHW floats, row-major).
    /// Throws `DataError` naming `source` when the shape is not a 1- or 3-channel image or the sizes disagree.
    public init(images: [Float], sampleShape: [Int], columns: Int? = nil, spacing: Int = 2, background: UInt8 = 255,
                scaling: Scaling = .unit, source: String = "image grid") throws {
        let shape = sampleShape.count == 2 ? [1] + sampleShape : sampleShape
        guard shape.count == 3, shape[0] == 1 || shape[0] == 3, shape[1] > 0, shape[2] > 0 else {
            throw DataError(file: source, "needs images of shape [1 or 3, height, width], got \(sampleShape)")
        }
        let (imageChannels, imageHeight, imageWidth) = (shape[0], shape[1], shape[2])
        let imageSize = imageChannels * imageHeight * imageWidth
        guard !images.isEmpty, images.count % imageSize == 0 else {
            throw DataError(file: source, "\(images.count) values are not a whole number of \(sampleShape) images")
        }
        guard spacing >= 0 else { throw DataError(file: source, "spacing must be 0 or more, got \(spacing)") }
        let count = images.count / imageSize
        // Square-ish by default: 64 samples make 8×8.
        let gridColumns = min(max(columns ?? Int(Double(count).squareRoot().rounded(.up)), 1), count)
        let gridRows = (count + gridColumns - 1) / gridColumns
        width = gridColumns * imageWidth + (gridColumns + 1) * spacing
        height = gridRows * imageHeight + (gridRows + 1) * spacing
        channels = imageChannels
        var pixels = [UInt8](repeating: background, count: width * height * channels)
        for image in 0..<count {
            let values = images[(image * imageSize)..<((image + 1) * imageSize)]
            var (offset, scale): (Float, Float) = (0, 1)
            if scaling == .minMax {
                let low = values.min()!, high = values.max()!
                (offset, scale) = high > low ? (low, 1 / (high - low)) : (low - 0.5, 1)
            }
            let left = spacing + (image % gridColumns) * (imageWidth + spacing)
            let top = spacing + (image / gridColumns) * (imageHeight + spacing)
            for c in 0..<channels {
                for y in 0..<imageHeight {
                    for x in 0..<imageWidth {
                        let value = (values[values.startIndex + (c * imageHeight + y) * imageWidth + x] - offset) * scale
                        // NaN maps to 0 rather than trapping in the conversion.
                        let byte = value.isNaN ? 0 : UInt8((min(max(value, 0), 1) * 255).rounded())
                        pixels[((top + y) * width + left + x) * channels + c] = byte
                    }
                }
            }
        }
        self.pixels = pixels
    }

    /// The grid as a PNG file: signature, IHDR (8-bit gray or RGB), one zlib-compressed IDAT, IEND.
    public func pngBytes() -> [UInt8] {
        // Each scanline starts with filter type 0 (none).
        let stride = width * channels
        var raw = [UInt8](repeating: 0, count: height * (stride + 1))
        for y in 0..<height {
            raw.replaceSubrange((y * (stride + 1) + 1)...(y * (stride + 1) + stride), with: pixels[(y * stride)..<((y + 1) * stride)])
        }
        var compressed = [UInt8](repeating: 0, count: Int(compressBound(uLong(raw.count))))
        var compressedCount = uLong(compressed.count)
        let status = compress2(&compressed, &compressedCount, raw, uLong(raw.count), Z_BEST_COMPRESSION)
        precondition(status == Z_OK, "zlib compress2 failed with status \(status) on a buffer of compressBound size")
        compressed.removeSubrange(Int(compressedCount)...)

        var header = ImageGrid.bigEndian(UInt32(width)) + ImageGrid.bigEndian(UInt32(height))
        header += [8, channels == 3 ? 2 : 0, 0, 0, 0]  // bit depth, color type (2 RGB, 0 gray), compression, filter, interlace
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
            + ImageGrid.chunk("IHDR", header) + ImageGrid.chunk("IDAT", compressed) + ImageGrid.chunk("IEND", [])
    }

    /// The grid as binary PGM (P5, grayscale) or PPM (P6, RGB).
    public func netpbmBytes() -> [UInt8] {
        Array("\(channels == 3 ? "P6" : "P5")\n\(width) \(height)\n255\n".utf8) + pixels
    }

    /// Writes PNG, or PGM/PPM when `path` ends in .pgm or .ppm; throws `DataError` naming the path on failure.
    public func write(to path: String) throws {
        let netpbm = path.hasSuffix(".pgm") || path.hasSuffix(".ppm")
        let bytes = netpbm ? netpbmBytes() : pngBytes()
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        do { try Data(bytes).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw DataError(file: path, "cannot write the image: \(error.localizedDescription)")
        }
    }

    /// One PNG chunk: length, type, data, CRC-32 of type and data.
    static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let typeAndData = Array(type.utf8) + data
        let crc = UInt32(crc32(0, typeAndData, uInt(typeAndData.count)))
        return bigEndian(UInt32(data.count)) + typeAndData + bigEndian(crc)
    }

    static func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
    }
}
