import Foundation
import XCTest
@testable import LockstepCheckpoint

final class CheckpointStoreTests: XCTestCase {
    var directory = ""
    var mountPoint: String?

    override func setUpWithError() throws { directory = try makeTemporaryDirectory("store") }

    override func tearDownWithError() throws {
        if let mountPoint {
            let result = try runProgram(["umount", mountPoint])
            XCTAssertEqual(result.status, 0, "umount \(mountPoint): \(result.error)")
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func checkpointFiles(_ path: String? = nil) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: path ?? directory).sorted()
    }

    func testFileNames() {
        XCTAssertEqual(CheckpointStore.fileName(step: 1234), "step-00001234.safetensors")
        XCTAssertEqual(CheckpointStore.fileName(step: 123_456_789), "step-123456789.safetensors")
        XCTAssertEqual(CheckpointStore.step(fromFileName: "step-00001234.safetensors"), 1234)
        XCTAssertNil(CheckpointStore.step(fromFileName: "step-00001234.safetensors.tmp-77"))
        XCTAssertNil(CheckpointStore.step(fromFileName: "step-.safetensors"))
        XCTAssertNil(CheckpointStore.step(fromFileName: "latest"))
        XCTAssertNotNil(expectError { try CheckpointStore(directory: directory, keep: 0) })
    }

    func testWriteUpdatesLatestAndRespectsKeep() throws {
        let store = try CheckpointStore(directory: directory + "/nested/run", keep: 3)
        try store.checkWritable()
        XCTAssertEqual(try checkpointFiles(store.directory), [], "write test leaves nothing behind")
        XCTAssertNil(store.latest())
        var removed: [String] = []
        for step in [10, 20, 30, 40, 50] {
            let written = try store.write(step: step, tensors: sampleTensors(seed: Float(step)), metadata: ["step": "\(step)"])
            XCTAssertEqual(written.path, store.path(step: step))
            XCTAssertEqual(written.warnings, [])
            XCTAssertEqual(store.latest(), written.path, "latest follows each write")
            XCTAssertEqual(try String(contentsOfFile: store.latestPointerPath, encoding: .utf8), CheckpointStore.fileName(step: step) + "\n")
            removed += written.removed
        }
        XCTAssertEqual(try store.listCheckpoints().map(\.step), [50, 40, 30], "newest first, bounded by keep")
        XCTAssertEqual(removed, [store.path(step: 10), store.path(step: 20)])
        XCTAssertEqual(try checkpointFiles(store.directory),
                       ["latest", "step-00000030.safetensors", "step-00000040.safetensors", "step-00000050.safetensors"],
                       "no temp files left")
        let file = try SafeTensors.verify(store.path(step: 40))
        XCTAssertEqual(file.metadata["step"], "40")
        XCTAssertEqual(file["layers.0.bias"]?.floats, [40, -40, 0.5])
    }

    func testRewritingEarlierStepSupersedesLaterOnes() throws {
        let store = try CheckpointStore(directory: directory, keep: 3)
        for step in [10, 20, 30] { try store.write(step: step, tensors: sampleTensors(seed: 1), metadata: [:]) }
        // Resumed from step 10 (say 20 and 30 were corrupt): the next save must win "auto" resume.
        let written = try store.write(step: 15, tensors: sampleTensors(seed: 2), metadata: [:])
        XCTAssertEqual(Set(written.removed), [store.path(step: 20), store.path(step: 30)])
        XCTAssertEqual(try store.listCheckpoints().map(\.step), [15, 10])
        XCTAssertEqual(try store.resolve(resume: "auto").path, store.path(step: 15))

        // Same step again replaces the file atomically.
        try store.write(step: 15, tensors: sampleTensors(seed: 9), metadata: ["again": "yes"])
        XCTAssertEqual(try SafeTensors.verify(store.path(step: 15)).metadata["again"], "yes")
    }

    func testNewestValidSkipsCorruptCheckpoints() throws {
        let store = try CheckpointStore(directory: directory, keep: 5)
        for step in 1...3 { try store.write(step: step, tensors: sampleTensors(seed: Float(step)), metadata: ["step": "\(step)"]) }

        let newest = store.path(step: 3)
        let bytes = try fileBytes(newest)
        try writeBytes(Array(bytes.prefix(bytes.count / 2)), to: newest)
        var search = try store.newestValid()
        XCTAssertEqual(search.path, store.path(step: 2))
        XCTAssertEqual(search.file?.metadata["step"], "2", "the verified file is handed back")
        XCTAssertEqual(search.skipped.map(\.path), [newest])
        XCTAssertTrue(search.skipped.first?.reason.contains("truncated") == true, "\(search.skipped)")

        var second = try fileBytes(store.path(step: 2))
        second[second.count - 1] ^= 0x01
        try writeBytes(second, to: store.path(step: 2))
        search = try store.resolve(resume: "auto")
        XCTAssertEqual(search.path, store.path(step: 1))
        XCTAssertEqual(search.skipped.count, 2)
        XCTAssertTrue(search.skipped[1].reason.contains("checksum mismatch"), "\(search.skipped)")

        try writeBytes(Array(repeating: 0xff, count: 64), to: store.path(step: 1))
        search = try store.newestValid()
        XCTAssertNil(search.path)
        XCTAssertEqual(search.skipped.count, 3)
        let error = expectError { try store.resolve(resume: "auto") }
        XCTAssertEqual(error?.file, directory)
        XCTAssertTrue(error?.reason.contains("none of the 3 checkpoints verifies") == true, "\(String(describing: error))")
        XCTAssertTrue(error?.reason.contains("step-00000001.safetensors: header length") == true, "\(String(describing: error))")
    }

    func testResolveSettings() throws {
        let store = try CheckpointStore(directory: directory + "/run", keep: 2)
        XCTAssertNil(try store.resolve(resume: "auto").path, "nothing to resume: fresh start")
        try store.write(step: 7, tensors: sampleTensors(seed: 7), metadata: [:])
        XCTAssertNil(try store.resolve(resume: "none").path)
        XCTAssertEqual(try store.resolve(resume: "auto").path, store.path(step: 7))
        XCTAssertEqual(try store.resolve(resume: store.path(step: 7)).file?["layers.0.bias"]?.floats, [7, -7, 0.5])

        // Another run's directory resolves to its newest valid checkpoint.
        let other = try CheckpointStore(directory: directory + "/other", keep: 2)
        try other.write(step: 3, tensors: sampleTensors(seed: 3), metadata: [:])
        XCTAssertEqual(try store.resolve(resume: other.directory).path, other.path(step: 3))
        try FileManager.default.createDirectory(atPath: directory + "/empty", withIntermediateDirectories: true)
        XCTAssertTrue(expectError { try store.resolve(resume: directory + "/empty") }?.reason.contains("no step-*.safetensors") == true)

        let missing = expectError { try store.resolve(resume: directory + "/gone.safetensors") }
        XCTAssertEqual(missing?.file, directory + "/gone.safetensors")
        XCTAssertTrue(missing?.reason.contains("does not exist") == true)

        var bytes = try fileBytes(store.path(step: 7))
        bytes[bytes.count - 2] ^= 0x40
        try writeBytes(bytes, to: store.path(step: 7))
        XCTAssertTrue(expectError { try store.resolve(resume: store.path(step: 7)) }?.reason.contains("checksum mismatch") == true)
    }

    func testStaleTempFilesAreIgnoredAndCleaned() throws {
        let store = try CheckpointStore(directory: directory, keep: 2)
        // PID 2147483646 cannot be running (above pid_max), so its temp file is a crash leftover.
        let stale = directory + "/step-00000005.safetensors.tmp-2147483646"
        try writeBytes([1, 2, 3], to: stale)
        XCTAssertEqual(try store.listCheckpoints(), [])
        let written = try store.write(step: 6, tensors: sampleTensors(seed: 6), metadata: [:])
        XCTAssertTrue(written.removed.contains(stale))
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale))
    }

    func testCheckWritableReportsUnusablePath() throws {
        let blocker = directory + "/not-a-directory"
        try writeBytes([0], to: blocker)
        let store = try CheckpointStore(directory: blocker + "/checkpoints", keep: 1)
        let error = expectError { try store.checkWritable() }
        XCTAssertTrue(error?.file.hasPrefix(blocker) == true, "\(String(describing: error))")
        XCTAssertTrue(error?.reason.contains("Not a directory") == true || error?.reason.contains("not a directory") == true,
                      "\(String(describing: error))")
        let writeError = expectError { try store.write(step: 1, tensors: sampleTensors(seed: 1), metadata: [:]) }
        XCTAssertTrue(writeError?.reason.contains("unchanged") == true, "\(String(describing: writeError))")
    }

    func testReadOnlyDirectoryFailsClearlyAndKeepsPreviousCheckpoint() throws {
        let mount = directory + "/ro"
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        try mountTmpfs(mount, size: "1m")
        mountPoint = mount
        let store = try CheckpointStore(directory: mount, keep: 3)
        try store.write(step: 1, tensors: sampleTensors(seed: 1), metadata: ["step": "1"])
        let remount = try runProgram(["mount", "-o", "remount,ro", mount])
        guard remount.status == 0 else { throw XCTSkip("could not remount tmpfs read-only: \(remount.error)") }

        let probe = expectError { try store.checkWritable() }
        XCTAssertEqual(probe?.file, mount)
        XCTAssertTrue(probe?.reason.contains("not writable") == true && probe?.reason.contains("Read-only file system") == true,
                      "\(String(describing: probe))")

        let error = expectError { try store.write(step: 2, tensors: sampleTensors(seed: 2), metadata: ["step": "2"]) }
        XCTAssertTrue(error?.file.hasPrefix(mount + "/step-00000002.safetensors.tmp-") == true, "\(String(describing: error))")
        XCTAssertTrue(error?.reason.contains("Read-only file system") == true, "\(String(describing: error))")
        XCTAssertTrue(error?.reason.contains("previous checkpoint") == true, "\(String(describing: error))")
        XCTAssertEqual(try SafeTensors.verify(store.path(step: 1)).metadata["step"], "1")
        XCTAssertEqual(store.latest(), store.path(step: 1))
        XCTAssertEqual(try store.listCheckpoints().map(\.step), [1])
    }

    func testDiskFullFailsClearlyAndKeepsPreviousCheckpoint() throws {
        let mount = directory + "/full"
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        try mountTmpfs(mount, size: "64k")
        mountPoint = mount
        let store = try CheckpointStore(directory: mount, keep: 3)
        try store.checkWritable()
        try store.write(step: 1, tensors: sampleTensors(seed: 1), metadata: ["step": "1"])

        // 100k floats = 400 KB, far more than the 64 KB file system.
        let huge = [TensorSource(name: "layers.0.weight", shape: [100, 1000], floats: [Float](repeating: 0.5, count: 100_000))]
        let error = expectError { try store.write(step: 2, tensors: huge, metadata: ["step": "2"]) }
        XCTAssertTrue(error?.file.hasPrefix(mount + "/step-00000002.safetensors.tmp-") == true, "\(String(describing: error))")
        XCTAssertTrue(error?.reason.contains("No space left on device") == true, "\(String(describing: error))")
        XCTAssertTrue(error?.reason.contains("unchanged") == true, "\(String(describing: error))")

        XCTAssertEqual(try checkpointFiles(mount), ["latest", "step-00000001.safetensors"], "temp file removed")
        XCTAssertEqual(try SafeTensors.verify(store.path(step: 1))["layers.0.bias"]?.floats, [1, -1, 0.5])
        XCTAssertEqual(store.latest(), store.path(step: 1))
        XCTAssertEqual(try store.newestValid().path, store.path(step: 1))

        // Space is reclaimed, so a checkpoint that fits still succeeds afterwards.
        try store.write(step: 3, tensors: sampleTensors(seed: 3), metadata: ["step": "3"])
        XCTAssertEqual(store.latest(), store.path(step: 3))
    }
}
