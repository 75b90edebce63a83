/// Dense token ids for the bytes that occur in a text: `reservedIds` special ids first, then the bytes in ascending
/// order, so the same text always gives the same ids.
public struct ByteVocabulary: Sendable, Equatable {
    /// The byte of id `reservedIds + i` is `bytes[i]`, ascending.
    public let bytes: [UInt8]
    /// Ids below this are special tokens (e.g. padding), not bytes.
    public let reservedIds: Int
    // Id of each byte value, -1 when the byte does not occur.
    private let idOfByte: [Int]

    /// The vocabulary of the bytes occurring in `text`, after `reservedIds` special ids.
    public init<Bytes: Sequence>(text: Bytes, reservedIds: Int = 0) where Bytes.Element == UInt8 {
        precondition(reservedIds >= 0, "ByteVocabulary reservedIds must be 0 or more, got \(reservedIds)")
        var present = [Bool](repeating: false, count: 256)
        for byte in text { present[Int(byte)] = true }
        bytes = (0..<256).filter { present[$0] }.map(UInt8.init)
        var idOfByte = [Int](repeating: -1, count: 256)
        for (index, byte) in bytes.enumerated() { idOfByte[Int(byte)] = reservedIds + index }
        self.reservedIds = reservedIds
        self.idOfByte = idOfByte
    }

    /// Number of ids, special ones included (an embedding's vocabulary size).
    public var size: Int { reservedIds + bytes.count }

    /// The id of `byte`, nil when it never occurred in the text.
    @inline(__always)
    public func id(of byte: UInt8) -> Int? {
        let id = idOfByte[Int(byte)]
        return id >= 0 ? id : nil
    }

    /// The byte of `id`, nil for special or out-of-range ids.
    public func byte(of id: Int) -> UInt8? {
        id >= reservedIds && id < size ? bytes[id - reservedIds] : nil
    }
}
