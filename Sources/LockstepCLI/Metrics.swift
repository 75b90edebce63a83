import Foundation
import LockstepTrain
import LockstepCore

/// Appends one JSON object per line to a metrics file (rank 0 only): per-epoch records and a final summary.
public final class MetricsWriter {
    private let handle: FileHandle
    /// Path being written.
    public let path: String

    /// Opens `path` for appending, creating it; throws naming the path when it cannot.
    public init(path: String) throws {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw ConfigError("--metrics \(path): cannot create the file (check the directory exists and is writable)")
            }
        }
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw ConfigError("--metrics \(path): cannot open the file for writing")
        }
        handle.seekToEndOfFile()
        self.handle = handle
    }

    deinit { try? handle.close() }

    /// Appends a ready JSON object as one line.
    public func append(line: String) {
        handle.write(Data((line + "\n").utf8))
    }

    /// Writes one epoch record.
    public func write(_ metrics: EpochMetrics) {
        append([("event", .string("epoch")), ("epoch", .int(metrics.epoch)), ("step", .int(metrics.step)),
                ("train_loss", .number(metrics.trainLoss)), ("test_loss", .number(metrics.testLoss)),
                ("test_accuracy", metrics.testAccuracy.map(JSONField.number) ?? .null),
                ("samples_per_second", .number(metrics.samplesPerSecond)), ("seconds", .number(metrics.seconds))]
               + (metrics.validation.map { [("validation_loss", .number($0.loss)), ("validation_accuracy", $0.accuracy.map(JSONField.number) ?? .null)] } ?? []))
    }

    /// Writes the summary record.
    public func write(_ summary: RunSummary, perRankBatch: Int, globalBatch: Int) {
        append([("event", .string("summary")), ("test_accuracy", summary.testAccuracy.map(JSONField.number) ?? .null),
                ("test_loss", .number(summary.testLoss)), ("train_loss", .number(summary.trainLoss)),
                ("samples_per_second", .number(summary.samplesPerSecond)), ("steps", .int(summary.steps)),
                ("skipped_steps", .int(summary.skippedSteps)), ("world_size", .int(summary.worldSize)),
                ("per_rank_batch", .int(perRankBatch)), ("global_batch", .int(globalBatch)),
                ("seconds", .number(summary.seconds)),
                ("optimizer_state_bytes_per_rank", .int(summary.optimizerStateBytes)),
                ("parameter_checksum", .string(String(summary.parameterChecksum, radix: 16)))])
    }

    private func append(_ fields: [(String, JSONField)]) {
        let line = "{" + fields.map { "\"\($0.0)\":\($0.1.text)" }.joined(separator: ",") + "}\n"
        handle.write(Data(line.utf8))
    }
}

/// A JSON value for a metrics field.
enum JSONField {
    case string(String), int(Int), number(Double), null
    var text: String {
        switch self {
        case .string(let s): return JSONText.quoted(s)
        case .int(let v): return String(v)
        case .number(let v): return v.isFinite ? String(v) : "null"
        case .null: return "null"
        }
    }
}
