import Foundation
import LockstepCore
import LockstepTrain
import Yams

/// A parsed YAML document as a plain value tree, with `--set` overrides and a canonical text for hashing.
public indirect enum ConfigValue: Equatable, Sendable {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case list([ConfigValue])
    case map([String: ConfigValue])
    case null

    /// Parses YAML text; `source` names the file in errors.
    public static func parse(yaml: String, source: String) throws -> ConfigValue {
        let loaded: Any?
        do { loaded = try Yams.load(yaml: yaml) } catch {
            throw ConfigError("\(source): not valid YAML: \(error)")
        }
        return try convert(loaded, path: "", source: source)
    }

    private static func convert(_ value: Any?, path: String, source: String) throws -> ConfigValue {
        switch value {
        case nil: return .null
        case let v as Bool: return .bool(v)
        case let v as Int: return .int(v)
        case let v as Double: return .double(v)
        case let v as String: return .string(v)
        case let v as [Any]:
            return .list(try v.enumerated().map { try convert($0.element, path: "\(path)[\($0.offset)]", source: source) })
        case let v as [String: Any]:
            var map: [String: ConfigValue] = [:]
            for (key, element) in v { map[key] = try convert(element, path: path.isEmpty ? key : "\(path).\(key)", source: source) }
            return .map(map)
        case let v as [AnyHashable: Any]:
            throw ConfigError("\(source): key path '\(path)': keys must be strings, found \(v.keys.map { "\($0)" })")
        default:
            if value is NSNull { return .null }
            throw ConfigError("\(source): key path '\(path)': unsupported value \(String(describing: value))")
        }
    }

    /// Parses one `--set` value as a YAML scalar or flow collection ("0.1", "true", "[1, 2]").
    public static func parseScalar(_ text: String) -> ConfigValue {
        (try? parse(yaml: text, source: "--set")) ?? .string(text)
    }

    /// Returns a copy with `value` at dotted `path` ("optimizer.lr", "model.layers.1.out"); creates maps as needed.
    public func setting(_ path: [String], to value: ConfigValue) throws -> ConfigValue {
        guard let head = path.first else { return value }
        let rest = Array(path.dropFirst())
        switch self {
        case .map(var map):
            map[head] = try (map[head] ?? .map([:])).setting(rest, to: value)
            return .map(map)
        case .list(var list):
            guard let index = Int(head), list.indices.contains(index) else {
                throw ConfigError("--set: '\(head)' is not an index of a list with \(list.count) elements")
            }
            list[index] = try list[index].setting(rest, to: value)
            return .list(list)
        case .null:
            return try ConfigValue.map([:]).setting(path, to: value)
        default:
            throw ConfigError("--set: cannot set '\(path.joined(separator: "."))' inside a scalar")
        }
    }

    /// Deterministic text (sorted keys) used for the config hash and the checkpoint copy.
    public var canonicalText: String {
        switch self {
        case .string(let s): return JSONText.quoted(s)
        case .int(let v): return String(v)
        case .double(let v): return v == v.rounded() && abs(v) < 1e15 ? String(Int(v)) : String(v)
        case .bool(let v): return v ? "true" : "false"
        case .null: return "null"
        case .list(let l): return "[" + l.map(\.canonicalText).joined(separator: ",") + "]"
        case .map(let m): return "{" + m.keys.sorted().map { "\"\($0)\":" + m[$0]!.canonicalText }.joined(separator: ",") + "}"
        }
    }
}


/// Typed reading of one mapping, tracking which keys were read so unknown keys can be rejected with their path.
final class ConfigReader {
    let path: String
    let map: [String: ConfigValue]
    private var used: Set<String> = []

    init(_ value: ConfigValue?, path: String) throws {
        self.path = path
        switch value {
        case .map(let m): map = m
        case nil, .null: map = [:]
        default: throw ConfigError("key '\(path)': expected a mapping, found \(value!.canonicalText)")
        }
    }

    func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func raw(_ key: String) -> ConfigValue? {
        used.insert(key)
        if case .null = map[key] { return nil }
        return map[key]
    }

    func has(_ key: String) -> Bool { map[key] != nil }

    func int(_ key: String, default value: Int? = nil, range: ClosedRange<Int>? = nil) throws -> Int {
        let result: Int
        switch raw(key) {
        case .int(let v): result = v
        case .double(let v) where v == v.rounded(): result = Int(v)
        case nil:
            guard let value else { throw ConfigError("key '\(keyPath(key))': required integer is missing") }
            result = value
        case let other?: throw ConfigError("key '\(keyPath(key))': expected an integer, found \(other.canonicalText)")
        }
        if let range, !range.contains(result) {
            throw ConfigError("key '\(keyPath(key))': \(result) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return result
    }

    func double(_ key: String, default value: Double? = nil, range: ClosedRange<Double>? = nil) throws -> Double {
        let result: Double
        switch raw(key) {
        case .int(let v): result = Double(v)
        case .double(let v): result = v
        case .string(let s) where Double(s) != nil: result = Double(s)!  // YAML 1.1 reads "1e-3" as a string
        case nil:
            guard let value else { throw ConfigError("key '\(keyPath(key))': required number is missing") }
            result = value
        case let other?: throw ConfigError("key '\(keyPath(key))': expected a number, found \(other.canonicalText)")
        }
        guard result.isFinite else { throw ConfigError("key '\(keyPath(key))': must be finite") }
        if let range, !range.contains(result) {
            throw ConfigError("key '\(keyPath(key))': \(result) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return result
    }

    func bool(_ key: String, default value: Bool) throws -> Bool {
        switch raw(key) {
        case .bool(let v): return v
        case nil: return value
        case let other?: throw ConfigError("key '\(keyPath(key))': expected true or false, found \(other.canonicalText)")
        }
    }

    func string(_ key: String, default value: String? = nil, allowed: [String]? = nil) throws -> String {
        let result: String
        switch raw(key) {
        case .string(let v): result = v
        case nil:
            guard let value else { throw ConfigError("key '\(keyPath(key))': required string is missing") }
            result = value
        case let other?: throw ConfigError("key '\(keyPath(key))': expected a string, found \(other.canonicalText)")
        }
        if let allowed, !allowed.contains(result) {
            throw ConfigError("key '\(keyPath(key))': '\(result)' is not one of \(allowed.joined(separator: ", "))")
        }
        return result
    }

    /// One of an enum's words (its raw values); an unknown word is an error listing the allowed ones.
    /// YAML reads an unquoted true/false as a boolean, so a word list with "true" and "false" takes those too.
    func word<Word: RawRepresentable & CaseIterable>(_ key: String, default value: Word) throws -> Word where Word.RawValue == String {
        let allowed = Word.allCases.map(\.rawValue)
        if case .bool(let flag)? = raw(key), let word = Word(rawValue: flag ? "true" : "false") { return word }
        return Word(rawValue: try string(key, default: value.rawValue, allowed: allowed))!
    }

    func ints(_ key: String, default value: [Int]? = nil) throws -> [Int]? {
        switch raw(key) {
        case .list(let l):
            return try l.enumerated().map { element in
                guard case .int(let v) = element.element else {
                    throw ConfigError("key '\(keyPath(key))[\(element.offset)]': expected an integer, found \(element.element.canonicalText)")
                }
                return v
            }
        case .int(let v): return [v]
        case nil: return value
        case let other?: throw ConfigError("key '\(keyPath(key))': expected a list of integers, found \(other.canonicalText)")
        }
    }

    func child(_ key: String) throws -> ConfigReader { try ConfigReader(raw(key), path: keyPath(key)) }

    func list(_ key: String) throws -> [ConfigValue] {
        switch raw(key) {
        case .list(let l): return l
        case nil: return []
        case let other?: throw ConfigError("key '\(keyPath(key))': expected a list, found \(other.canonicalText)")
        }
    }

    /// Throws for the first key that was never read: a typo or an option that does not exist.
    func rejectUnknownKeys() throws {
        let unknown = map.keys.filter { !used.contains($0) }.sorted()
        if let first = unknown.first {
            throw ConfigError("key '\(keyPath(first))': unknown key (known here: \(used.sorted().joined(separator: ", ")))")
        }
    }
}
