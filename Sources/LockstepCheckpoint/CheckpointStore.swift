import Foundation
import Glibc

/// Metadata keys the trainer writes and `inspect` knows how to show; values are always strings.
public enum CheckpointMetadataKey {
    /// Global optimizer step count at the time of the checkpoint (decimal).
    public static let step = "step"
    /// Epoch being trained (decimal, 0-based).
    public static let epoch = "epoch"
    /// Batches of `epoch` already consumed (decimal), so resume skips exactly those.
    public static let epochPosition = "epoch_position"
    /// The optimizer's own step counter (Adam bias correction), decimal.
    public static let optimizerStep = "optimizer_step"
    /// Number of ranks that trained (decimal).
    public static let worldSize = "world_size"
    /// The resolved configuration text.
    public static let config = "config"
    /// Description of the model's layers and parameter layout.
    public static let modelLayout = "model_layout"
    /// Prefix for RNG states, e.g. `rng.data`, each a UInt64 in decimal.
    public static let rngPrefix = "rng."
    /// Lockstep format version of the checkpoint contents.
    public static let formatVersion = "lockstep.format"
}

/// One checkpoint file found in a store directory.
public struct CheckpointEntry: Sendable, Equatable {
    /// Full path.
    public let path: String
    /// Step number parsed from the file name.
    public let step: Int
}

/// A checkpoint that failed verification and was passed over.
public struct SkippedCheckpoint: Sendable, Equatable {
    /// Full path.
    public let path: String
    /// Why it was rejected (truncated, checksum mismatch, bad header, ...).
    public let reason: String
}

/// Result of looking for a checkpoint to resume from.
public struct CheckpointSearch: Sendable {
    /// The chosen checkpoint, or nil to start fresh.
    public let path: String?
    /// The chosen checkpoint already read and verified (so callers need not read it twice).
    public let file: SafeTensorsFile?
    /// Newer checkpoints that were rejected, newest first, with reasons to log.
    public let skipped: [SkippedCheckpoint]
}

/// Outcome of a successful `CheckpointStore.write`.
public struct WrittenCheckpoint: Sendable {
    /// Final path of the new checkpoint.
    public let path: String
    /// Its size in bytes.
    public let byteCount: Int
    /// Older (or superseded) checkpoints deleted to respect `keep`.
    public let removed: [String]
    /// Non-fatal problems while pruning (the new checkpoint is safe regardless).
    public let warnings: [String]
}

/// A directory of `step-NNNNNNNN.safetensors` checkpoints written atomically, with a `latest` pointer
/// and at most `keep` files retained.
///
/// Crash safety: a checkpoint becomes visible only by `rename` of a fully written and fsynced temp
/// file, and the directory is fsynced after each rename, so after any failure or crash the previous
/// checkpoint and `latest` are intact.
public struct CheckpointStore: Sendable {
    /// The directory holding the checkpoints.
    public let directory: String
    /// How many of the newest checkpoints to retain.
    public let keep: Int

    /// Name of the pointer file holding the newest checkpoint's file name.
    public static let latestFileName = "latest"

    /// A store in `directory` retaining `keep` (≥ 1) checkpoints; touches nothing on disk.
    public init(directory: String, keep: Int) throws(CheckpointError) {
        guard keep >= 1 else { throw CheckpointError(file: directory, "checkpoint keep count is \(keep); it must be at least 1") }
        guard !directory.isEmpty else { throw CheckpointError(file: "<empty>", "checkpoint directory path is empty") }
        self.directory = directory
        self.keep = keep
    }

    /// File name for `step`: zero-padded to 8 digits so names sort in step order in a listing.
    public static func fileName(step: Int) -> String {
        let digits = String(step)
        return "step-" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits + ".safetensors"
    }

    /// The step encoded in a checkpoint file name, or nil for any other file.
    public static func step(fromFileName name: String) -> Int? {
        guard name.hasPrefix("step-"), name.hasSuffix(".safetensors") else { return nil }
        let digits = name.dropFirst(5).dropLast(12)
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(digits)
    }

    /// Path of the `latest` pointer file.
    public var latestPointerPath: String { join(Self.latestFileName) }

    /// Path a checkpoint for `step` is written to.
    public func path(step: Int) -> String { join(Self.fileName(step: step)) }

    private func join(_ name: String) -> String { directory.hasSuffix("/") ? directory + name : directory + "/" + name }

    /// Creates the directory if needed and proves a file can be created, written, fsynced and removed there,
    /// so a misconfigured path fails before any training work is done.
    public func checkWritable() throws(CheckpointError) {
        try POSIX.makeDirectories(directory)
        let probe = join(".write-test-\(getpid())")
        POSIX.unlinkIfPresent(probe)
        do throws(CheckpointError) {
            var writer = try POSIXWriter(creating: probe)
            do {
                try writer.write(Array("lockstep write test\n".utf8))
                try writer.sync()
                try writer.close()
            } catch {
                writer.closeQuietly()
                throw error
            }
        } catch {
            POSIX.unlinkIfPresent(probe)
            throw CheckpointError(file: directory, "checkpoint directory is not writable: \(error.reason)")
        }
        let code = POSIX.unlinkIfPresent(probe)
        guard code == 0 else { throw CheckpointError(file: probe, systemErrorText("remove write-test file", code)) }
    }

    /// Atomically writes the checkpoint for `step`, points `latest` at it, then prunes to `keep` files.
    ///
    /// Checkpoints numbered after `step` are removed as superseded: they belong to a run that was
    /// resumed from an earlier point, and leaving them would make `auto` resume pick the abandoned run.
    /// On failure nothing visible changes (the temp file is removed) and the error names the path and cause.
    @discardableResult
    public func write(step: Int, tensors: [TensorSource], metadata: [String: String]) throws(CheckpointError) -> WrittenCheckpoint {
        guard step >= 0 else { throw CheckpointError(file: directory, "checkpoint step \(step) is negative") }
        let finalPath = path(step: step)
        let unchanged = "; the previous checkpoint and '\(Self.latestFileName)' are unchanged"
        let prepared = try SafeTensors.prepare(tensors, metadata: metadata, file: finalPath)
        do {
            try POSIX.makeDirectories(directory)
        } catch {
            throw CheckpointError(file: error.file, error.reason + unchanged)
        }

        let temporaryPath = finalPath + ".tmp-\(getpid())"
        let byteCount: Int
        do {
            byteCount = try writeDurably(temporaryPath) { (writer) throws(CheckpointError) in
                try SafeTensors.writeContents(tensors, prepared: prepared, to: writer)
            }
            try POSIX.rename(temporaryPath, to: finalPath)
        } catch {
            POSIX.unlinkIfPresent(temporaryPath)
            throw CheckpointError(file: error.file, error.reason + unchanged)
        }
        do {
            try POSIX.syncDirectory(directory)
        } catch {
            throw CheckpointError(file: error.file, "checkpoint \(finalPath) was renamed into place but the directory could not be synced, so it may not survive a crash: \(error.reason)")
        }

        let pointerTemporary = latestPointerPath + ".tmp-\(getpid())"
        do {
            try writeDurably(pointerTemporary) { (writer) throws(CheckpointError) in
                try writer.write(Array((Self.fileName(step: step) + "\n").utf8))
            }
            try POSIX.rename(pointerTemporary, to: latestPointerPath)
            try POSIX.syncDirectory(directory)
        } catch {
            POSIX.unlinkIfPresent(pointerTemporary)
            throw CheckpointError(file: error.file, "checkpoint \(finalPath) was written but '\(Self.latestFileName)' could not be updated: \(error.reason)")
        }

        let (removed, warnings) = prune(newestStep: step)
        return WrittenCheckpoint(path: finalPath, byteCount: byteCount, removed: removed, warnings: warnings)
    }

    /// Creates `path`, lets `fill` write it, fsyncs and closes; removes nothing on failure (callers do).
    @discardableResult
    private func writeDurably<R>(_ path: String, _ fill: (POSIXWriter) throws(CheckpointError) -> R) throws(CheckpointError) -> R {
        // A leftover from a crashed process that had the same PID would make O_EXCL fail.
        POSIX.unlinkIfPresent(path)
        var writer = try POSIXWriter(creating: path)
        do {
            let result = try fill(writer)
            try writer.sync()
            try writer.close()
            return result
        } catch {
            writer.closeQuietly()
            throw error
        }
    }

    /// Deletes checkpoints beyond the newest `keep` (counting from `newestStep`) and those numbered after it,
    /// plus temp files left by processes that no longer exist.
    private func prune(newestStep: Int) -> (removed: [String], warnings: [String]) {
        var removed: [String] = []
        var warnings: [String] = []
        let entries: [CheckpointEntry]
        do { entries = try listCheckpoints() } catch { return ([], ["could not list checkpoints to prune: \(error)"]) }
        let superseded = entries.filter { $0.step > newestStep }
        let current = entries.filter { $0.step <= newestStep }
        for entry in superseded + current.dropFirst(keep) {
            let code = POSIX.unlinkIfPresent(entry.path)
            if code == 0 { removed.append(entry.path) } else { warnings.append("\(entry.path): \(systemErrorText("remove old checkpoint", code))") }
        }
        if let names = try? POSIX.listDirectory(directory) {
            for name in names {
                guard let marker = name.range(of: ".tmp-", options: .backwards),
                      Self.step(fromFileName: String(name[..<marker.lowerBound])) != nil
                        || name[..<marker.lowerBound] == Self.latestFileName,
                      let pid = Int32(name[marker.upperBound...]), pid != getpid() else { continue }
                // kill(pid, 0) fails with ESRCH only when no such process exists, i.e. the writer died.
                if kill(pid, 0) != 0 && errno == ESRCH {
                    let path = join(name)
                    if POSIX.unlinkIfPresent(path) == 0 { removed.append(path) }
                }
            }
        }
        return (removed, warnings)
    }

    /// Checkpoint files in the directory, newest (highest step) first; empty when the directory does not exist.
    public func listCheckpoints() throws(CheckpointError) -> [CheckpointEntry] {
        guard POSIX.isDirectory(directory) else { return [] }
        return try POSIX.listDirectory(directory)
            .compactMap { name in Self.step(fromFileName: name).map { CheckpointEntry(path: join(name), step: $0) } }
            .sorted { $0.step > $1.step }
    }

    /// The checkpoint the `latest` pointer names, or nil when there is no pointer.
    public func latest() -> String? {
        guard let bytes = try? POSIX.readFile(latestPointerPath),
              let text = String(validating: bytes, as: UTF8.self) else { return nil }
        let name = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return name.isEmpty || name.contains("/") ? nil : join(name)
    }

    /// The newest checkpoint that verifies, with every newer one that did not and why.
    public func newestValid() throws(CheckpointError) -> CheckpointSearch {
        var skipped: [SkippedCheckpoint] = []
        for entry in try listCheckpoints() {
            do {
                let file = try SafeTensors.verify(entry.path)
                return CheckpointSearch(path: entry.path, file: file, skipped: skipped)
            } catch {
                skipped.append(SkippedCheckpoint(path: entry.path, reason: error.reason))
            }
        }
        return CheckpointSearch(path: nil, file: nil, skipped: skipped)
    }

    /// Interprets a `resume` setting: `auto` (newest valid checkpoint here, or fresh start when there are none),
    /// `none`/empty (fresh start), a checkpoint file, or another checkpoint directory.
    ///
    /// Throws when an explicit file fails verification, or when checkpoints exist but none verifies
    /// (starting fresh would silently discard the run; move the files away to do that on purpose).
    public func resolve(resume: String) throws(CheckpointError) -> CheckpointSearch {
        let setting = resume.trimmingCharacters(in: .whitespaces)
        switch setting.lowercased() {
        case "", "none", "no", "false":
            return CheckpointSearch(path: nil, file: nil, skipped: [])
        case "auto":
            return try Self.requireValid(newestValid(), in: directory)
        default:
            if POSIX.isDirectory(setting) {
                let other = try CheckpointStore(directory: setting, keep: keep)
                let search = try Self.requireValid(other.newestValid(), in: setting)
                guard search.path != nil else {
                    throw CheckpointError(file: setting, "resume directory contains no step-*.safetensors checkpoints")
                }
                return search
            }
            let file = try SafeTensors.verify(setting)
            return CheckpointSearch(path: setting, file: file, skipped: [])
        }
    }

    private static func requireValid(_ search: CheckpointSearch, in directory: String) throws(CheckpointError) -> CheckpointSearch {
        if search.path == nil && !search.skipped.isEmpty {
            let reasons = search.skipped.map { "  \($0.path): \($0.reason)" }.joined(separator: "\n")
            throw CheckpointError(file: directory, "none of the \(search.skipped.count) checkpoints verifies, refusing to start over silently (move them away to start fresh):\n\(reasons)")
        }
        return search
    }
}

/// An exclusive claim on a checkpoint directory for one job's lifetime (`flock` on `DIR/lock`).
///
/// Two jobs writing one directory would interleave `latest` and prune each other's files. The kernel drops the
/// lock when the holder exits, however it exits, so a crashed job never leaves a stale claim.
public final class CheckpointDirectoryLock: @unchecked Sendable {
    /// Path of the lock file.
    public let path: String
    private var descriptor: Int32

    fileprivate init(path: String, descriptor: Int32) { self.path = path; self.descriptor = descriptor }

    deinit { release() }

    /// Gives the directory up (also done on deinit and by the kernel at exit).
    public func release() {
        guard descriptor >= 0 else { return }
        close(descriptor)  // closing the only descriptor releases the flock
        descriptor = -1
    }
}

extension CheckpointStore {
    /// Name of the copy of the best checkpoint so far (early stopping); pruning never removes it.
    public static let bestFileName = "best.safetensors"

    /// Makes `DIR/best.safetensors` the checkpoint of `step` (already written): a hard link made under a temporary
    /// name and renamed over the old one, so a crash leaves the previous best or the new one, never a partial file.
    public func markBest(step: Int) throws(CheckpointError) {
        let temporary = join(".best-\(getpid()).tmp")
        POSIX.unlinkIfPresent(temporary)
        guard link(path(step: step), temporary) == 0 else {
            throw CheckpointError(file: path(step: step), systemErrorText("link as the best checkpoint", errno))
        }
        try POSIX.rename(temporary, to: join(Self.bestFileName))
        try POSIX.syncDirectory(directory)
    }

    /// Name of the lock file a running job holds.
    public static let lockFileName = "lock"

    /// Claims the directory for this job, creating it if needed; fails naming the holder (pid, host, start time)
    /// when another job holds it.
    public func lock() throws(CheckpointError) -> CheckpointDirectoryLock {
        try POSIX.makeDirectories(directory)
        let path = join(Self.lockFileName)
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw CheckpointError(file: path, systemErrorText("open the lock file", errno)) }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            let holder = (try? POSIX.readFile(path)).map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
            close(descriptor)
            guard code == EWOULDBLOCK else { throw CheckpointError(file: path, systemErrorText("lock the checkpoint directory", code)) }
            throw CheckpointError(file: directory, "checkpoint directory is in use by another job (\(holder.isEmpty ? "holder unknown" : holder)); "
                                  + "two jobs must not write one checkpoint directory: wait for it to end, or give this one another --checkpoint-dir")
        }
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let owner = "pid \(getpid()) on host \(String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)), since \(ISO8601DateFormatter().string(from: Date()))\n"
        _ = ftruncate(descriptor, 0)
        _ = Array(owner.utf8).withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
        return CheckpointDirectoryLock(path: path, descriptor: descriptor)
    }
}
