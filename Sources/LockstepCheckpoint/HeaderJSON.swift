/// The subset of JSON a safetensors header uses: objects, arrays, strings and integers.
///
/// Hand-written rather than Foundation's JSONSerialization so that key order is kept, duplicate keys
/// are rejected, integers stay exact and errors can say at which byte the header is broken.
enum HeaderJSON: Equatable {
    case object([(key: String, value: HeaderJSON)])
    case array([HeaderJSON])
    case string(String)
    case integer(Int)

    static func == (lhs: HeaderJSON, rhs: HeaderJSON) -> Bool {
        switch (lhs, rhs) {
        case (.object(let a), .object(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case (.array(let a), .array(let b)): return a == b
        case (.string(let a), .string(let b)): return a == b
        case (.integer(let a), .integer(let b)): return a == b
        default: return false
        }
    }

    /// Short name of the value's kind, for error messages.
    var kind: String {
        switch self {
        case .object: return "object"
        case .array: return "array"
        case .string: return "string"
        case .integer: return "integer"
        }
    }

    /// Parses `bytes` as one JSON value followed only by whitespace (the spec's padding).
    /// Throws a description of the first problem and its byte position.
    static func parse(_ bytes: [UInt8]) throws(HeaderJSONError) -> HeaderJSON {
        var parser = Parser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        guard parser.position == bytes.count else {
            throw HeaderJSONError("unexpected \(parser.describeCurrent()) after the JSON object at byte \(parser.position)")
        }
        return value
    }

    private struct Parser {
        let bytes: [UInt8]
        var position = 0

        // Real headers nest three deep; the limit only stops hostile input from overflowing the stack.
        static let maximumDepth = 32

        mutating func skipWhitespace() {
            while position < bytes.count, [0x20, 0x09, 0x0a, 0x0d].contains(bytes[position]) { position += 1 }
        }

        func describeCurrent() -> String {
            guard position < bytes.count else { return "end of header" }
            let byte = bytes[position]
            return byte >= 0x20 && byte < 0x7f ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
        }

        mutating func expect(_ byte: UInt8, _ what: String) throws(HeaderJSONError) {
            guard position < bytes.count, bytes[position] == byte else {
                throw HeaderJSONError("expected \(what) at byte \(position), found \(describeCurrent())")
            }
            position += 1
        }

        mutating func parseValue(depth: Int) throws(HeaderJSONError) -> HeaderJSON {
            guard depth < Self.maximumDepth else { throw HeaderJSONError("nested deeper than \(Self.maximumDepth) levels at byte \(position)") }
            guard position < bytes.count else { throw HeaderJSONError("header ends where a value was expected") }
            switch bytes[position] {
            case UInt8(ascii: "{"): return try parseObject(depth: depth)
            case UInt8(ascii: "["): return try parseArray(depth: depth)
            case UInt8(ascii: "\""): return .string(try parseString())
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .integer(try parseInteger())
            default:
                throw HeaderJSONError("unexpected \(describeCurrent()) at byte \(position) (expected an object, array, string or integer)")
            }
        }

        mutating func parseObject(depth: Int) throws(HeaderJSONError) -> HeaderJSON {
            let start = position
            try expect(UInt8(ascii: "{"), "'{'")
            var members: [(key: String, value: HeaderJSON)] = []
            var seen = Set<String>()
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "}") { position += 1; return .object([]) }
            while true {
                skipWhitespace()
                let keyPosition = position
                guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else {
                    throw HeaderJSONError("expected a quoted key at byte \(position) in the object starting at byte \(start), found \(describeCurrent())")
                }
                let key = try parseString()
                guard seen.insert(key).inserted else { throw HeaderJSONError("duplicate key \"\(key)\" at byte \(keyPosition)") }
                skipWhitespace()
                try expect(UInt8(ascii: ":"), "':' after key \"\(key)\"")
                skipWhitespace()
                members.append((key, try parseValue(depth: depth + 1)))
                skipWhitespace()
                guard position < bytes.count else { throw HeaderJSONError("header ends inside the object starting at byte \(start)") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                try expect(UInt8(ascii: "}"), "',' or '}'")
                return .object(members)
            }
        }

        mutating func parseArray(depth: Int) throws(HeaderJSONError) -> HeaderJSON {
            let start = position
            try expect(UInt8(ascii: "["), "'['")
            var elements: [HeaderJSON] = []
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "]") { position += 1; return .array([]) }
            while true {
                skipWhitespace()
                elements.append(try parseValue(depth: depth + 1))
                skipWhitespace()
                guard position < bytes.count else { throw HeaderJSONError("header ends inside the array starting at byte \(start)") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                try expect(UInt8(ascii: "]"), "',' or ']'")
                return .array(elements)
            }
        }

        mutating func parseHex4() throws(HeaderJSONError) -> UInt32 {
            guard position + 4 <= bytes.count else { throw HeaderJSONError("header ends inside a \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[position]
                let digit: UInt32
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
                default: throw HeaderJSONError("bad hex digit in \\u escape at byte \(position)")
                }
                value = value << 4 | digit
                position += 1
            }
            return value
        }

        mutating func parseString() throws(HeaderJSONError) -> String {
            let start = position
            try expect(UInt8(ascii: "\""), "'\"'")
            var utf8: [UInt8] = []
            while true {
                guard position < bytes.count else { throw HeaderJSONError("unterminated string starting at byte \(start)") }
                let byte = bytes[position]
                position += 1
                switch byte {
                case UInt8(ascii: "\""):
                    guard let string = String(validating: utf8, as: UTF8.self) else {
                        throw HeaderJSONError("string starting at byte \(start) is not valid UTF-8")
                    }
                    return string
                case UInt8(ascii: "\\"):
                    guard position < bytes.count else { throw HeaderJSONError("unterminated escape at byte \(position)") }
                    let escape = bytes[position]
                    position += 1
                    switch escape {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(escape)
                    case UInt8(ascii: "b"): utf8.append(0x08)
                    case UInt8(ascii: "f"): utf8.append(0x0c)
                    case UInt8(ascii: "n"): utf8.append(0x0a)
                    case UInt8(ascii: "r"): utf8.append(0x0d)
                    case UInt8(ascii: "t"): utf8.append(0x09)
                    case UInt8(ascii: "u"):
                        var code = try parseHex4()
                        if (0xd800..<0xdc00).contains(code) {
                            // A high surrogate must be followed by an escaped low surrogate.
                            guard position + 2 <= bytes.count, bytes[position] == UInt8(ascii: "\\"),
                                  bytes[position + 1] == UInt8(ascii: "u") else {
                                throw HeaderJSONError("unpaired surrogate escape at byte \(position)")
                            }
                            position += 2
                            let low = try parseHex4()
                            guard (0xdc00..<0xe000).contains(low) else { throw HeaderJSONError("unpaired surrogate escape at byte \(position)") }
                            code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00)
                        }
                        guard let scalar = Unicode.Scalar(code) else { throw HeaderJSONError("invalid \\u escape before byte \(position)") }
                        utf8.append(contentsOf: Array(String(Character(scalar)).utf8))
                    default:
                        throw HeaderJSONError("unknown escape '\\\(Character(Unicode.Scalar(escape)))' at byte \(position - 1)")
                    }
                case 0x00..<0x20:
                    throw HeaderJSONError("unescaped control byte 0x\(String(byte, radix: 16)) in string at byte \(position - 1)")
                default:
                    utf8.append(byte)
                }
            }
        }

        mutating func parseInteger() throws(HeaderJSONError) -> Int {
            let start = position
            var negative = false
            if bytes[position] == UInt8(ascii: "-") { negative = true; position += 1 }
            var value = 0
            var digits = 0
            while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) {
                let digit = Int(bytes[position] - UInt8(ascii: "0"))
                let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
                let (sum, overflow2) = times10.addingReportingOverflow(digit)
                guard !overflow1, !overflow2 else { throw HeaderJSONError("integer at byte \(start) is too large") }
                value = sum
                digits += 1
                position += 1
            }
            guard digits > 0 else { throw HeaderJSONError("'-' without digits at byte \(start)") }
            if position < bytes.count, [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[position]) {
                throw HeaderJSONError("non-integer number at byte \(start) (safetensors headers hold only integers)")
            }
            return negative ? -value : value
        }
    }
}

/// Why a header failed to parse as JSON.
struct HeaderJSONError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}
