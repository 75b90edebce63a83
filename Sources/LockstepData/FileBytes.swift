import CZlib
import Foundation

/// Whole-file reads with transparent gzip decompression (detected by the 0x1f 0x8b magic, not the file name).
public enum FileBytes {
    /// The bytes of `path`, decompressed when it is gzip; throws `DataError` when missing, unreadable or bad gzip.
    public static func read(_ path: String) throws -> [UInt8] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw DataError(file: path, "file is missing")
        }
        guard !isDirectory.boolValue else { throw DataError(file: path, "is a directory, expected a file") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataError(file: path, "cannot be read (check permissions)")
        }
        let bytes = [UInt8](data)
        return isGzip(bytes) ? try gunzip(bytes, file: path) : bytes
    }

    /// True when `bytes` start with the gzip magic.
    public static func isGzip(_ bytes: [UInt8]) -> Bool { bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b }

    /// Inflates a gzip stream (possibly several concatenated members); `file` is only for error messages.
    public static func gunzip(_ compressed: [UInt8], file: String) throws -> [UInt8] {
        // The trailer's ISIZE (length mod 2^32) is a good first guess for the output size.
        var capacity = compressed.count * 4
        if compressed.count >= 18 {
            let tail = compressed.count - 4
            let isize = Int(compressed[tail]) | Int(compressed[tail + 1]) << 8 | Int(compressed[tail + 2]) << 16
                | Int(compressed[tail + 3]) << 24
            // A truncated file ends in arbitrary bytes; deflate never expands more than ~1032:1, so cap the guess.
            capacity = max(capacity, min(isize, compressed.count * 1032))
        }
        var output = [UInt8](repeating: 0, count: max(capacity, 1024))
        var produced = 0
        var stream = z_stream()
        // 15 + 16: zlib window with a gzip (not zlib) header.
        guard inflateInit2_(&stream, 15 + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DataError(file: file, "zlib could not start decompressing")
        }
        defer { inflateEnd(&stream) }
        try compressed.withUnsafeBufferPointer { input in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress!)
            stream.avail_in = UInt32(input.count)
            while true {
                if produced == output.count { output.append(contentsOf: [UInt8](repeating: 0, count: output.count)) }
                let status: Int32 = output.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress! + produced
                    stream.avail_out = UInt32(min(out.count - produced, Int(UInt32.max)))
                    let before = stream.avail_out
                    let status = inflate(&stream, Z_NO_FLUSH)
                    produced += Int(before - stream.avail_out)
                    return status
                }
                switch status {
                case Z_OK:
                    continue
                case Z_STREAM_END:
                    // Another gzip member may follow (concatenated .gz files are valid gzip).
                    if stream.avail_in > 0 && stream.next_in[0] == 0x1f {
                        guard inflateReset(&stream) == Z_OK else { throw DataError(file: file, "bad gzip data after first member") }
                        continue
                    }
                    return
                case Z_BUF_ERROR:
                    // No progress possible: output has room, so input ran out before the end of the stream.
                    if stream.avail_out > 0 {
                        throw DataError(file: file, "truncated gzip data: the stream ends early (re-download the file)")
                    }
                case Z_DATA_ERROR:
                    let detail = stream.msg.map { String(cString: $0) } ?? "corrupt data"
                    throw DataError(file: file, "bad gzip data: \(detail)")
                case Z_MEM_ERROR:
                    throw DataError(file: file, "out of memory while decompressing")
                default:
                    throw DataError(file: file, "bad gzip data (zlib status \(status))")
                }
            }
        }
        output.removeSubrange(produced...)
        return output
    }

    /// The first existing path among `candidates`, or a `DataError` listing everything that was tried.
    public static func firstExisting(_ candidates: [String], describing what: String) throws -> String {
        if let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) { return found }
        let directory = (candidates.first.map { ($0 as NSString).deletingLastPathComponent }) ?? "."
        let names = candidates.map { ($0 as NSString).lastPathComponent }.joined(separator: " or ")
        throw DataError(file: candidates.first ?? what, "\(what) is missing: looked for \(names) in \(directory)")
    }
}
