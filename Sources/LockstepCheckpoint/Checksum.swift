import LockstepCore

/// 64-bit FNV-1a hash, streamed.
///
/// Chosen for checkpoints because it is tiny and any single changed byte always changes the result
/// (each step is a bijection of the state). It is not cryptographic: it guards against disk and
/// transfer corruption, not tampering.
public struct FNV1a64: Sendable, Equatable {
    /// Current hash state.
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    /// A fresh hash.
    public init() {}

    /// Mixes in `bytes` (the one FNV-1a of the project, `Kernels.fnv1a`, continued from this state).
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        value = Kernels.fnv1a(bytes, seed: value)
    }

    /// Mixes in a byte array.
    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// Mixes in `number` as 8 little-endian bytes.
    public mutating func update(_ number: UInt64) {
        withUnsafeBytes(of: number.littleEndian) { update($0) }
    }

    /// Mixes in a string as its UTF-8 length then bytes, so adjacent strings cannot run into each other.
    public mutating func update(lengthPrefixed string: String) {
        let bytes = Array(string.utf8)
        update(UInt64(bytes.count))
        update(bytes)
    }

    /// The hash as 16 lowercase hex digits.
    public var hex: String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
