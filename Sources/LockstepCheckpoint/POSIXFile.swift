// Linux only, like the rest of Lockstep (OpenMPI + OpenBLAS on Debian).
import Glibc

/// "<operation> failed: <strerror> (errno N)", the tail of every I/O error message.
func systemErrorText(_ operation: String, _ code: Int32) -> String {
    "\(operation) failed: \(String(cString: strerror(code))) (errno \(code))"
}

/// A file descriptor opened for writing, with every call checked (direct POSIX so ENOSPC, EIO and
/// EROFS surface at the call that hit them rather than being buffered away).
struct POSIXWriter {
    let path: String
    private(set) var descriptor: Int32

    /// Creates `path` (failing if it exists, so a leftover temp file is never silently reused).
    init(creating path: String, mode: mode_t = 0o644) throws(CheckpointError) {
        self.path = path
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw CheckpointError(file: path, systemErrorText("open for writing", errno)) }
        descriptor = fd
    }

    /// Writes all of `bytes`, retrying short writes and EINTR.
    func write(_ bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        guard var next = bytes.baseAddress else { return }
        var remaining = bytes.count
        while remaining > 0 {
            let written = Glibc.write(descriptor, next, remaining)
            if written < 0 {
                if errno == EINTR { continue }
                throw CheckpointError(file: path, systemErrorText("write", errno))
            }
            // write() returning 0 for a non-zero request means no progress is possible; report it as full.
            if written == 0 { throw CheckpointError(file: path, systemErrorText("write", ENOSPC)) }
            next += written
            remaining -= written
        }
    }

    /// Writes a byte array.
    func write(_ bytes: [UInt8]) throws(CheckpointError) {
        // The stdlib's rethrowing closures erase typed errors, so carry the error out by hand.
        var failure: CheckpointError?
        bytes.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> Void in
            do throws(CheckpointError) { try write(raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Flushes file data and metadata to stable storage.
    func sync() throws(CheckpointError) {
        while fsync(descriptor) != 0 {
            if errno == EINTR { continue }
            throw CheckpointError(file: path, systemErrorText("fsync", errno))
        }
    }

    /// Closes the descriptor; close can report delayed write errors (e.g. on network file systems).
    mutating func close() throws(CheckpointError) {
        guard descriptor >= 0 else { return }
        let fd = descriptor
        descriptor = -1
        if Glibc.close(fd) != 0 && errno != EINTR {
            throw CheckpointError(file: path, systemErrorText("close", errno))
        }
    }

    /// Closes without reporting errors, for cleanup paths that are already throwing.
    mutating func closeQuietly() {
        if descriptor >= 0 { _ = Glibc.close(descriptor); descriptor = -1 }
    }
}

/// POSIX helpers for the atomic write protocol.
enum POSIX {
    /// Atomically replaces `destination` with `source` (same file system).
    static func rename(_ source: String, to destination: String) throws(CheckpointError) {
        guard Glibc.rename(source, destination) == 0 else {
            throw CheckpointError(file: destination, systemErrorText("rename from \(source)", errno))
        }
    }

    /// fsyncs a directory so a rename inside it survives a crash.
    static func syncDirectory(_ path: String) throws(CheckpointError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw CheckpointError(file: path, systemErrorText("open directory for fsync", errno)) }
        defer { _ = Glibc.close(fd) }
        while fsync(fd) != 0 {
            if errno == EINTR { continue }
            // Some file systems cannot fsync directories; that is not a failure of the checkpoint.
            if errno == EINVAL || errno == ENOTSUP { return }
            throw CheckpointError(file: path, systemErrorText("fsync directory", errno))
        }
    }

    /// Removes a file, ignoring "does not exist".
    @discardableResult
    static func unlinkIfPresent(_ path: String) -> Int32 {
        if unlink(path) == 0 || errno == ENOENT { return 0 }
        return errno
    }

    /// Reads a whole file; errors name the file and the system reason.
    static func readFile(_ path: String) throws(CheckpointError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw CheckpointError(file: path, "checkpoint file does not exist") }
            throw CheckpointError(file: path, systemErrorText("open for reading", code))
        }
        defer { _ = Glibc.close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw CheckpointError(file: path, systemErrorText("fstat", errno)) }
        guard (status.st_mode & S_IFMT) == S_IFREG else { throw CheckpointError(file: path, "is not a regular file") }
        let size = Int(status.st_size)
        var bytes = [UInt8](repeating: 0, count: size)
        var filled = 0
        while filled < size {
            let got = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + filled, size - filled) }
            if got < 0 {
                if errno == EINTR { continue }
                throw CheckpointError(file: path, systemErrorText("read", errno))
            }
            if got == 0 { break }  // Shrunk while reading; the decoder reports the short length.
            filled += got
        }
        if filled < size { bytes.removeSubrange(filled...) }
        return bytes
    }

    /// True when `path` exists and is a directory.
    static func isDirectory(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFDIR
    }

    /// Creates `path` and any missing parents (like `mkdir -p`).
    static func makeDirectories(_ path: String) throws(CheckpointError) {
        if isDirectory(path) { return }
        let parent = parentDirectory(of: path)
        if parent != path && !parent.isEmpty { try makeDirectories(parent) }
        if mkdir(path, 0o755) != 0 {
            if errno != EEXIST { throw CheckpointError(file: path, systemErrorText("create checkpoint directory", errno)) }
        } else {
            // Persist the new directory's own entry too; best effort, the checkpoint fsyncs come later.
            try? syncDirectory(parent)
        }
        guard isDirectory(path) else { throw CheckpointError(file: path, "exists but is not a directory") }
    }

    /// The directory part of `path` ("." when there is none).
    static func parentDirectory(of path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "." }
        return slash == trimmed.startIndex ? "/" : String(trimmed[..<slash])
    }

    /// Entry names in a directory (without "." and ".."), or the system error.
    static func listDirectory(_ path: String) throws(CheckpointError) -> [String] {
        guard let directory = opendir(path) else {
            throw CheckpointError(file: path, systemErrorText("list checkpoint directory", errno))
        }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
