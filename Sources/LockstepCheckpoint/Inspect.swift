import Foundation

/// A human-readable description of one checkpoint file.
public struct CheckpointInspection: Sendable {
    /// The multi-line report.
    public let text: String
    /// True when the file parsed and its checksum verified (the CLI exits non-zero otherwise).
    public let isValid: Bool
}

/// Builds the report `lockstep checkpoint inspect PATH` prints.
public enum CheckpointInspector {
    /// Config lines shown before the rest is summarized.
    static let configPreviewLines = 12

    /// Reads `path` and describes its metadata, tensors and checksum verdict; never throws (problems go in the text).
    public static func inspect(path: String) -> CheckpointInspection {
        let bytes: [UInt8]
        do { bytes = try POSIX.readFile(path) } catch {
            return CheckpointInspection(text: "checkpoint \(path)\n  INVALID: \(error.reason)\n", isValid: false)
        }
        let file: SafeTensorsFile
        do { file = try SafeTensors.decode(bytes, file: path) } catch {
            return CheckpointInspection(text: "checkpoint \(path) (\(bytes.count) bytes)\n  INVALID: \(error.reason)\n", isValid: false)
        }
        return report(file, fileByteCount: bytes.count)
    }

    /// Describes an already decoded file.
    public static func report(_ file: SafeTensorsFile, fileByteCount: Int) -> CheckpointInspection {
        var lines: [String] = ["checkpoint \(file.path)",
                               "  size: \(fileByteCount) bytes (header \(file.headerByteCount), data \(file.dataByteCount))"]
        let verdict: String
        let isValid: Bool
        switch file.checksumStatus {
        case .verified(let value): verdict = "OK (\(value))"; isValid = true
        case .missing: verdict = "NOT CHECKED: no \(SafeTensors.checksumKey) in metadata (not written by Lockstep?)"; isValid = true
        case .mismatch(let stored, let computed):
            verdict = "MISMATCH: stored \(stored), contents hash to \(computed) (file is damaged)"; isValid = false
        }
        lines.append("  checksum: \(verdict)")

        let metadata = file.metadata
        typealias Key = CheckpointMetadataKey
        let headline: [(String, String)] = [("step", Key.step), ("epoch", Key.epoch), ("epoch position", Key.epochPosition),
                                            ("optimizer step", Key.optimizerStep), ("world size", Key.worldSize),
                                            ("format", Key.formatVersion)]
        let multiline: Set<String> = [Key.config, Key.modelLayout]
        var shown: Set<String> = [SafeTensors.checksumKey]
        lines.append("  metadata (\(metadata.count - (metadata[SafeTensors.checksumKey] == nil ? 0 : 1)) keys):")
        for (label, key) in headline {
            if let value = metadata[key] { lines.append("    \(label): \(value)"); shown.insert(key) }
        }
        for key in metadata.keys.sorted() where !shown.contains(key) && !multiline.contains(key) {
            lines.append("    \(key): \(singleLine(metadata[key]!))")
        }
        for key in [Key.modelLayout, Key.config] {
            guard let value = metadata[key] else { continue }
            let valueLines = value.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            lines.append("    \(key): \(valueLines.count) lines, \(value.utf8.count) bytes")
            for line in valueLines.prefix(configPreviewLines) { lines.append("      | \(line)") }
            if valueLines.count > configPreviewLines { lines.append("      | ... (\(valueLines.count - configPreviewLines) more lines)") }
        }

        let total = file.tensors.reduce(0) { $0 + $1.count }
        lines.append("  tensors (\(file.tensors.count), \(total) elements):")
        let nameWidth = min(file.tensors.map(\.name.count).max() ?? 0, 60)
        for tensor in file.tensors {
            let shape = "[" + tensor.shape.map(String.init).joined(separator: ", ") + "]"
            let padded = tensor.name + String(repeating: " ", count: max(0, nameWidth - tensor.name.count))
            lines.append("    \(padded)  \(tensor.dtype.rawValue)  \(shape)  \(tensor.count)")
        }
        lines.append(isValid ? "  verdict: valid" : "  verdict: INVALID")
        return CheckpointInspection(text: lines.joined(separator: "\n") + "\n", isValid: isValid)
    }

    /// Escapes newlines so one metadata value stays on one report line.
    private static func singleLine(_ value: String) -> String {
        let flat = value.replacingOccurrences(of: "\n", with: "\\n")
        return flat.count > 120 ? String(flat.prefix(117)) + "..." : flat
    }
}
