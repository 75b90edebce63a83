import Glibc
import LockstepCore

#if !_endian(little)
#error("safetensors data is little-endian; this code copies it as-is and needs a little-endian host")
#endif

/// Element types this reader/writer supports (safetensors dtype strings as raw values).
public enum TensorDType: String, Sendable, CaseIterable, Equatable {
    /// IEEE 754 binary32; what all model state uses.
    case float32 = "F32"
    /// IEEE 754 binary64.
    case float64 = "F64"
    /// Signed 64-bit integer.
    case int64 = "I64"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .float32: return 4
        case .float64, .int64: return 8
        }
    }
}

/// A named tensor to write: name, row-major shape and where its elements come from.
public struct TensorSource: @unchecked Sendable {
    /// Tensor name in the file, e.g. `layers.0.weight` or `optimizer.layers.0.weight.exp_avg`.
    public let name: String
    /// Row-major shape; `[]` is a scalar.
    public let shape: [Int]
    /// Element type written.
    public let dtype: TensorDType

    enum Storage {
        case floats([Float])
        case doubles([Double])
        case int64s([Int64])
        case buffer(FloatBuffer, offset: Int, count: Int)
        case pointer(UnsafePointer<Float>, count: Int)
    }
    let storage: Storage

    /// An F32 tensor copied from an array.
    public init(name: String, shape: [Int], floats: [Float]) {
        self.name = name; self.shape = shape; dtype = .float32; storage = .floats(floats)
    }

    /// An F64 tensor copied from an array.
    public init(name: String, shape: [Int], doubles: [Double]) {
        self.name = name; self.shape = shape; dtype = .float64; storage = .doubles(doubles)
    }

    /// An I64 tensor copied from an array.
    public init(name: String, shape: [Int], int64s: [Int64]) {
        self.name = name; self.shape = shape; dtype = .int64; storage = .int64s(int64s)
    }

    /// An F32 tensor read in place from `count` floats of `buffer` at `offset` (kept alive by this value; no copy).
    public init(name: String, shape: [Int], buffer: FloatBuffer, offset: Int = 0, count: Int? = nil) {
        self.name = name; self.shape = shape; dtype = .float32
        storage = .buffer(buffer, offset: offset, count: count ?? (buffer.count - offset))
    }

    /// An F32 tensor read in place from `pointer`; the memory must stay valid until the write returns.
    public init(name: String, shape: [Int], pointer: UnsafePointer<Float>, count: Int) {
        self.name = name; self.shape = shape; dtype = .float32; storage = .pointer(pointer, count: count)
    }

    /// One source per slot of `flat` (its values, not gradients), named `prefix + slot.name + suffix`, in layout order;
    /// e.g. prefix "optimizer." and suffix ".exp_avg" for optimizer state laid out like the parameters.
    public static func slots(of flat: FlatTensors, prefix: String = "", suffix: String = "") -> [TensorSource] {
        flat.slots.map {
            TensorSource(name: prefix + $0.name + suffix, shape: $0.shape, buffer: flat.values, offset: $0.offset, count: $0.count)
        }
    }

    /// Number of elements the storage provides.
    var elementCount: Int {
        switch storage {
        case .floats(let a): return a.count
        case .doubles(let a): return a.count
        case .int64s(let a): return a.count
        case .buffer(_, _, let count), .pointer(_, let count): return count
        }
    }

    /// Calls `body` with the tensor's little-endian bytes.
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        switch storage {
        case .floats(let a): return a.withUnsafeBytes(body)
        case .doubles(let a): return a.withUnsafeBytes(body)
        case .int64s(let a): return a.withUnsafeBytes(body)
        case .buffer(let buffer, let offset, let count):
            return withExtendedLifetime(buffer) {
                body(UnsafeRawBufferPointer(start: buffer.pointer + offset, count: count * MemoryLayout<Float>.size))
            }
        case .pointer(let pointer, let count):
            return body(UnsafeRawBufferPointer(start: pointer, count: count * MemoryLayout<Float>.size))
        }
    }

    /// Calls a throwing `body` with the tensor's bytes.
    func withBytesThrowing(_ body: (UnsafeRawBufferPointer) throws(CheckpointError) -> Void) throws(CheckpointError) {
        // The stdlib's rethrowing closures erase typed errors, so carry the error out by hand.
        let failure: CheckpointError? = withBytes { (raw: UnsafeRawBufferPointer) -> CheckpointError? in
            do throws(CheckpointError) { try body(raw); return nil } catch { return error }
        }
        if let failure { throw failure }
    }
}

/// Elements of a loaded tensor, in the type stored in the file.
public enum TensorData: Sendable, Equatable {
    /// F32 elements.
    case float32([Float])
    /// F64 elements.
    case float64([Double])
    /// I64 elements.
    case int64([Int64])
}

/// A tensor read from a safetensors file.
public struct LoadedTensor: Sendable, Equatable {
    /// Name in the file.
    public let name: String
    /// Row-major shape.
    public let shape: [Int]
    /// Element type in the file.
    public let dtype: TensorDType
    /// The elements.
    public let data: TensorData

    /// Element count (product of the shape).
    public var count: Int { shape.reduce(1, *) }

    /// Elements as Float: exact for F32, converted (possibly rounded) for F64 and I64.
    public var floats: [Float] {
        switch data {
        case .float32(let values): return values
        case .float64(let values): return values.map { Float($0) }
        case .int64(let values): return values.map { Float($0) }
        }
    }
}

/// What the stored checksum says about a file.
public enum ChecksumStatus: Sendable, Equatable {
    /// Stored and recomputed checksums agree.
    case verified(String)
    /// The file has no `lockstep.checksum` (e.g. written by another tool).
    case missing
    /// The checksums differ: the file was changed or damaged after writing.
    case mismatch(stored: String, computed: String)
}

/// A parsed, structurally valid safetensors file.
public struct SafeTensorsFile: Sendable {
    /// Where it was read from (for error messages).
    public let path: String
    /// The `__metadata__` dictionary (including `lockstep.checksum` when present).
    public let metadata: [String: String]
    /// Tensors in header order.
    public let tensors: [LoadedTensor]
    /// Length of the JSON header in bytes (after the 8-byte length prefix, padding included).
    public let headerByteCount: Int
    /// Length of the data section in bytes.
    public let dataByteCount: Int
    /// Checksum recomputed from the file contents, `fnv1a64:<hex>`.
    public let computedChecksum: String
    private let index: [String: Int]

    init(path: String, metadata: [String: String], tensors: [LoadedTensor], headerByteCount: Int,
         dataByteCount: Int, computedChecksum: String) {
        self.path = path; self.metadata = metadata; self.tensors = tensors
        self.headerByteCount = headerByteCount; self.dataByteCount = dataByteCount
        self.computedChecksum = computedChecksum
        index = Dictionary(uniqueKeysWithValues: tensors.enumerated().map { ($1.name, $0) })
    }

    /// Whether the stored checksum matches the contents.
    public var checksumStatus: ChecksumStatus {
        guard let stored = metadata[SafeTensors.checksumKey] else { return .missing }
        return stored == computedChecksum ? .verified(stored) : .mismatch(stored: stored, computed: computedChecksum)
    }

    /// Tensor names in header order.
    public var names: [String] { tensors.map(\.name) }

    /// The tensor called `name`, or nil.
    public subscript(name: String) -> LoadedTensor? { index[name].map { tensors[$0] } }

    /// The tensor called `name`, checked to be F32 with `shape`; throws naming the file and tensor otherwise.
    public func tensor(_ name: String, shape: [Int]) throws(CheckpointError) -> LoadedTensor {
        guard let tensor = self[name] else {
            throw CheckpointError(file: path, "has no tensor \"\(name)\" (the checkpoint was written by a different model, or it is not a Lockstep checkpoint)")
        }
        guard tensor.shape == shape else {
            throw CheckpointError(file: path, "tensor \"\(name)\" has shape \(tensor.shape) but the model expects \(shape) (model configuration differs from the checkpoint's)")
        }
        guard tensor.dtype == .float32 else {
            throw CheckpointError(file: path, "tensor \"\(name)\" is \(tensor.dtype.rawValue), expected F32")
        }
        return tensor
    }

    /// Copies F32 tensor `name` (which must have `shape`) into `pointer`, bit-exactly.
    public func restore(_ name: String, into pointer: UnsafeMutablePointer<Float>, shape: [Int]) throws(CheckpointError) {
        let tensor = try tensor(name, shape: shape)
        guard case .float32(let values) = tensor.data else { return }
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: $0.count) }
    }

    /// Copies tensors `prefix + slot.name + suffix` into every slot of `flat`; throws on a missing tensor or shape mismatch.
    public func restore(into flat: FlatTensors, prefix: String = "", suffix: String = "") throws(CheckpointError) {
        for slot in flat.slots {
            try restore(prefix + slot.name + suffix, into: flat.valuePointer(slot), shape: slot.shape)
        }
    }
}

/// Reading and writing the safetensors format, with a Lockstep checksum in `__metadata__`.
///
/// Layout: 8-byte little-endian header length N, N bytes of JSON (space-padded so data starts 8-byte
/// aligned), then the tensors' raw little-endian bytes back to back in header order.
public enum SafeTensors {
    /// Metadata key holding `fnv1a64:<16 hex digits>`.
    public static let checksumKey = "lockstep.checksum"
    /// Headers longer than this are rejected as corrupt (the reference implementation's limit).
    public static let maximumHeaderByteCount = 100_000_000

    /// The whole file as bytes (for tests and small files; `write` streams instead).
    public static func encode(_ tensors: [TensorSource], metadata: [String: String]) throws(CheckpointError) -> [UInt8] {
        let prepared = try prepare(tensors, metadata: metadata, file: "<memory>")
        var bytes = prepared.header
        bytes.reserveCapacity(prepared.header.count + prepared.dataByteCount)
        for source in tensors { source.withBytes { bytes.append(contentsOf: $0) } }
        return bytes
    }

    /// Writes a safetensors file at `path`, replacing any existing file (not atomic; `CheckpointStore` is).
    public static func write(_ tensors: [TensorSource], metadata: [String: String], to path: String) throws(CheckpointError) {
        // Validate before touching the file system, so bad input leaves no empty file behind.
        let prepared = try prepare(tensors, metadata: metadata, file: path)
        _ = unlink(path)
        var writer = try POSIXWriter(creating: path)
        do {
            try writeContents(tensors, prepared: prepared, to: writer)
            try writer.close()
        } catch {
            writer.closeQuietly()
            throw error
        }
    }

    /// Streams header then tensor data into an open writer; returns the byte count.
    @discardableResult
    static func writeContents(_ tensors: [TensorSource], prepared: Prepared, to writer: POSIXWriter) throws(CheckpointError) -> Int {
        try writer.write(prepared.header)
        for source in tensors {
            try source.withBytesThrowing { (raw) throws(CheckpointError) in try writer.write(raw) }
        }
        return prepared.header.count + prepared.dataByteCount
    }

    /// Reads and validates a file; throws if the checksum is present and wrong, or missing when `requireChecksum`.
    public static func read(_ path: String, requireChecksum: Bool = false) throws(CheckpointError) -> SafeTensorsFile {
        let file = try decode(POSIX.readFile(path), file: path)
        switch file.checksumStatus {
        case .verified: break
        case .missing:
            if requireChecksum {
                throw CheckpointError(file: path, "has no \"\(checksumKey)\" metadata, so its integrity cannot be checked (not written by Lockstep?)")
            }
        case .mismatch(let stored, let computed):
            throw CheckpointError(file: path, "checksum mismatch: stored \(stored), contents hash to \(computed); the file was damaged after it was written (bit flip, partial copy)")
        }
        return file
    }

    /// Checks structure and checksum of `path`; returns the parsed file, throws a description of the first problem.
    @discardableResult
    public static func verify(_ path: String) throws(CheckpointError) -> SafeTensorsFile {
        try read(path, requireChecksum: true)
    }

    // MARK: - Writing

    struct Prepared {
        var header: [UInt8]  // length prefix + padded JSON
        var dataByteCount: Int
    }

    static func prepare(_ tensors: [TensorSource], metadata: [String: String], file: String) throws(CheckpointError) -> Prepared {
        guard metadata[checksumKey] == nil else {
            throw CheckpointError(file: file, "metadata key \"\(checksumKey)\" is reserved for the checksum the writer adds")
        }
        var names = Set<String>()
        var descriptors: [Descriptor] = []
        var offset = 0
        for source in tensors {
            guard !source.name.isEmpty, source.name != "__metadata__" else {
                throw CheckpointError(file: file, "tensor name \"\(source.name)\" is not allowed")
            }
            guard names.insert(source.name).inserted else {
                throw CheckpointError(file: file, "tensor \"\(source.name)\" is listed twice")
            }
            guard source.shape.allSatisfy({ $0 >= 0 }) else {
                throw CheckpointError(file: file, "tensor \"\(source.name)\" has a negative dimension in shape \(source.shape)")
            }
            let count = source.shape.reduce(1, *)
            guard count == source.elementCount else {
                throw CheckpointError(file: file, "tensor \"\(source.name)\" has shape \(source.shape) (\(count) elements) but \(source.elementCount) values were given")
            }
            let byteCount = count * source.dtype.byteSize
            descriptors.append(Descriptor(name: source.name, dtype: source.dtype, shape: source.shape,
                                          begin: offset, end: offset + byteCount))
            offset += byteCount
        }

        var hash = FNV1a64()
        hashPreamble(&hash, metadata: metadata, descriptors: descriptors)
        for source in tensors { source.withBytes { hash.update($0) } }
        var fullMetadata = metadata
        fullMetadata[checksumKey] = "fnv1a64:" + hash.hex

        // Sorted metadata keys make the bytes reproducible for identical inputs.
        var json = "{\"__metadata__\":{"
        json += fullMetadata.keys.sorted(by: utf8Less).map { JSONText.quoted($0) + ":" + JSONText.quoted(fullMetadata[$0]!) }
            .joined(separator: ",")
        json += "}"
        for d in descriptors {
            json += "," + JSONText.quoted(d.name) + ":{\"dtype\":\"\(d.dtype.rawValue)\",\"shape\":["
                + d.shape.map(String.init).joined(separator: ",") + "],\"data_offsets\":[\(d.begin),\(d.end)]}"
        }
        json += "}"
        var jsonBytes = Array(json.utf8)
        // Pad with spaces so the data section starts at a multiple of 8 bytes, as the spec allows.
        while (8 + jsonBytes.count) % 8 != 0 { jsonBytes.append(0x20) }
        var header: [UInt8] = []
        header.reserveCapacity(8 + jsonBytes.count)
        withUnsafeBytes(of: UInt64(jsonBytes.count).littleEndian) { header.append(contentsOf: $0) }
        header.append(contentsOf: jsonBytes)
        return Prepared(header: header, dataByteCount: offset)
    }

    struct Descriptor {
        var name: String
        var dtype: TensorDType
        var shape: [Int]
        var begin: Int
        var end: Int
    }

    static func utf8Less(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }

    /// Hashes what the checksum covers besides the data: metadata (minus the checksum) and tensor descriptors.
    ///
    /// Length-prefixed fields in a fixed order, so reordering JSON keys or whitespace does not matter
    /// but any change of a value, name, shape, dtype or offset does.
    static func hashPreamble(_ hash: inout FNV1a64, metadata: [String: String], descriptors: [Descriptor]) {
        hash.update(lengthPrefixed: "lockstep-safetensors-checksum-v1")
        let keys = metadata.keys.filter { $0 != checksumKey }.sorted(by: utf8Less)
        hash.update(UInt64(keys.count))
        for key in keys {
            hash.update(lengthPrefixed: key)
            hash.update(lengthPrefixed: metadata[key]!)
        }
        hash.update(UInt64(descriptors.count))
        for d in descriptors.sorted(by: { ($0.begin, $0.end) < ($1.begin, $1.end) }) {
            hash.update(lengthPrefixed: d.name)
            hash.update(lengthPrefixed: d.dtype.rawValue)
            hash.update(UInt64(d.shape.count))
            for dimension in d.shape { hash.update(UInt64(dimension)) }
            hash.update(UInt64(d.begin))
            hash.update(UInt64(d.end))
        }
    }

    // MARK: - Reading

    /// Parses and validates the bytes of a safetensors file; `file` names it in errors.
    public static func decode(_ bytes: [UInt8], file: String) throws(CheckpointError) -> SafeTensorsFile {
        func fail(_ reason: String) -> CheckpointError { CheckpointError(file: file, reason) }

        guard bytes.count >= 8 else {
            throw fail("file is \(bytes.count) bytes, too short to hold the 8-byte header length (truncated or empty)")
        }
        let declared = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard declared > 0 else { throw fail("header length is 0; not a safetensors file") }
        guard declared <= UInt64(bytes.count - 8) else {
            throw fail("header length \(declared) is larger than the \(bytes.count - 8) bytes after the length prefix (file truncated, or not a safetensors file)")
        }
        guard declared <= UInt64(maximumHeaderByteCount) else {
            throw fail("header length \(declared) exceeds the \(maximumHeaderByteCount)-byte limit; the length prefix is corrupt")
        }
        let headerCount = Int(declared)
        let headerBytes = Array(bytes[8..<(8 + headerCount)])
        guard headerBytes.first == UInt8(ascii: "{") else {
            throw fail("header does not start with '{' (length prefix \(headerCount) is wrong, or not a safetensors file)")
        }
        let json: HeaderJSON
        do { json = try HeaderJSON.parse(headerBytes) } catch {
            throw fail("header is not valid JSON: \(error.message)")
        }
        guard case .object(let members) = json else { throw fail("header is a JSON \(json.kind), expected an object") }

        var metadata: [String: String] = [:]
        var descriptors: [Descriptor] = []
        for (key, value) in members {
            if key == "__metadata__" {
                guard case .object(let entries) = value else { throw fail("__metadata__ is a JSON \(value.kind), expected an object of strings") }
                for (metaKey, metaValue) in entries {
                    guard case .string(let string) = metaValue else {
                        throw fail("__metadata__ entry \"\(metaKey)\" is a JSON \(metaValue.kind), expected a string")
                    }
                    metadata[metaKey] = string
                }
                continue
            }
            descriptors.append(try parseDescriptor(name: key, value, fail: fail))
        }

        let dataStart = 8 + headerCount
        let dataCount = bytes.count - dataStart
        // Validate the layout in offset order: contiguous from 0 to exactly the end of the file.
        let ordered = descriptors.sorted { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var expected = 0
        for d in ordered {
            if d.end > dataCount {
                throw fail("tensor \"\(d.name)\" occupies bytes [\(d.begin), \(d.end)) of the data section but only \(dataCount) data bytes follow the header: the file is truncated")
            }
            if d.begin < expected {
                throw fail("tensor \"\(d.name)\" data_offsets [\(d.begin), \(d.end)] overlap the previous tensor, which ends at \(expected)")
            }
            if d.begin > expected {
                throw fail("tensor \"\(d.name)\" starts at data byte \(d.begin) but the previous tensor ends at \(expected): \(d.begin - expected) unaccounted bytes")
            }
            expected = d.end
        }
        if expected != dataCount {
            throw fail("the data section has \(dataCount) bytes but the tensors cover only \(expected): \(dataCount - expected) trailing bytes")
        }

        var hash = FNV1a64()
        hashPreamble(&hash, metadata: metadata, descriptors: descriptors)
        bytes.withUnsafeBytes { hash.update(UnsafeRawBufferPointer(rebasing: $0[dataStart...])) }

        let tensors = bytes.withUnsafeBytes { raw in
            descriptors.map { d in
                let slice = UnsafeRawBufferPointer(rebasing: raw[(dataStart + d.begin)..<(dataStart + d.end)])
                return LoadedTensor(name: d.name, shape: d.shape, dtype: d.dtype, data: elements(slice, d.dtype))
            }
        }
        return SafeTensorsFile(path: file, metadata: metadata, tensors: tensors, headerByteCount: headerCount,
                               dataByteCount: dataCount, computedChecksum: "fnv1a64:" + hash.hex)
    }

    private static func parseDescriptor(name: String, _ value: HeaderJSON, fail: (String) -> CheckpointError) throws(CheckpointError) -> Descriptor {
        guard case .object(let fields) = value else { throw fail("tensor \"\(name)\" entry is a JSON \(value.kind), expected an object") }
        var dtypeText: String?
        var shape: [Int]?
        var offsets: [Int]?
        func integers(_ value: HeaderJSON, _ field: String) throws(CheckpointError) -> [Int] {
            guard case .array(let items) = value else { throw fail("tensor \"\(name)\" \(field) is a JSON \(value.kind), expected an array of integers") }
            var result: [Int] = []
            for item in items {
                guard case .integer(let number) = item, number >= 0 else {
                    throw fail("tensor \"\(name)\" \(field) must hold non-negative integers")
                }
                result.append(number)
            }
            return result
        }
        for (field, fieldValue) in fields {
            switch field {
            case "dtype":
                guard case .string(let text) = fieldValue else { throw fail("tensor \"\(name)\" dtype is a JSON \(fieldValue.kind), expected a string") }
                dtypeText = text
            case "shape": shape = try integers(fieldValue, "shape")
            case "data_offsets": offsets = try integers(fieldValue, "data_offsets")
            default: throw fail("tensor \"\(name)\" has unknown field \"\(field)\"")
            }
        }
        guard let dtypeText else { throw fail("tensor \"\(name)\" has no dtype") }
        guard let dtype = TensorDType(rawValue: dtypeText) else {
            throw fail("tensor \"\(name)\" has dtype \(dtypeText), which Lockstep does not read (supported: F32, F64, I64)")
        }
        guard let shape else { throw fail("tensor \"\(name)\" has no shape") }
        guard let offsets else { throw fail("tensor \"\(name)\" has no data_offsets") }
        guard offsets.count == 2, offsets[0] <= offsets[1] else {
            throw fail("tensor \"\(name)\" data_offsets \(offsets) must be [begin, end] with begin <= end")
        }
        var count = 1
        for dimension in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw fail("tensor \"\(name)\" shape \(shape) overflows") }
            count = product
        }
        let (byteCount, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow, byteCount == offsets[1] - offsets[0] else {
            throw fail("tensor \"\(name)\" shape \(shape) of \(dtype.rawValue) needs \(count) × \(dtype.byteSize) bytes but data_offsets \(offsets) span \(offsets[1] - offsets[0])")
        }
        return Descriptor(name: name, dtype: dtype, shape: shape, begin: offsets[0], end: offsets[1])
    }

    private static func elements(_ raw: UnsafeRawBufferPointer, _ dtype: TensorDType) -> TensorData {
        func copy<T>(_: T.Type) -> [T] {
            let count = raw.count / MemoryLayout<T>.size
            return [T](unsafeUninitializedCapacity: count) { buffer, initialized in
                if count > 0 { memcpy(buffer.baseAddress!, raw.baseAddress!, raw.count) }
                initialized = count
            }
        }
        switch dtype {
        case .float32: return .float32(copy(Float.self))
        case .float64: return .float64(copy(Double.self))
        case .int64: return .int64(copy(Int64.self))
        }
    }
}
