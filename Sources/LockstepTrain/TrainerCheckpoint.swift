import Foundation
import LockstepCheckpoint
import LockstepComm
import LockstepCore
import LockstepNN

/// Where and how a run saves and resumes; from the CLI (`--checkpoint-dir`, `--resume`) and the config's `checkpoint:`.
public struct CheckpointSettings: Sendable {
    /// Directory for `step-*.safetensors` and `latest`; nil disables checkpointing.
    public var directory: String?
    /// `auto`, a checkpoint file or directory, or nil for a fresh start.
    public var resume: String?
    /// Save every N optimizer steps (0 = off).
    public var everySteps: Int
    /// Save after every epoch's evaluation.
    public var everyEpoch: Bool
    /// Keep the newest K checkpoints.
    public var keep: Int

    /// Creates settings; the default is no checkpointing.
    public init(directory: String? = nil, resume: String? = nil, everySteps: Int = 0, everyEpoch: Bool = true, keep: Int = 3) {
        self.directory = directory; self.resume = resume; self.everySteps = everySteps; self.everyEpoch = everyEpoch; self.keep = keep
    }

    /// Whether checkpoints are written.
    public var enabled: Bool { directory != nil }
}

extension CheckpointSettings {
    /// Rank 0's part of preparing checkpoints, shared by `Trainer` and `GANTrainer`: claims the directory (another job
    /// holding it is an error) and checks it is writable, then finds the checkpoint `resume` names, logging the ones
    /// skipped, and hands it to `restore`, which returns the position (step, epoch, epoch position, …) to log.
    func claimAndResume(log: (String) -> Void, restore: (SafeTensorsFile) throws -> [Int64]) throws -> CheckpointDirectoryLock? {
        var lock: CheckpointDirectoryLock?
        if let directory {
            let store = try CheckpointStore(directory: directory, keep: keep)
            lock = try store.lock()
            try store.checkWritable()
        }
        if let resume, let directory = directory ?? (resume == "auto" ? nil : ".") {
            let store = try CheckpointStore(directory: directory, keep: keep)
            let search = try store.resolve(resume: resume)
            for skipped in search.skipped { log("resume: skipping \(skipped.path): \(skipped.reason)") }
            if let file = search.file, let path = search.path {
                let position = try restore(file)
                log("resume: from \(path) (step \(position[0]), epoch \(position[1] + 1), position \(position[2]))")
            } else {
                log("resume: no checkpoint in \(directory); starting fresh")
            }
        } else if resume == "auto" {
            throw CheckpointError(file: "--resume auto", "needs --checkpoint-dir DIR to know where to look")
        }
        return lock
    }
}

extension Trainer {
    /// Parameter slots the optimizer keeps state for (all but the frozen layers'); its buffers start at
    /// `trainableOffset`.
    var trainableSlots: [ParameterSlot] { model.parameters.slots.filter { $0.offset >= trainableOffset } }

    /// Rank 0 copies every tensor of `path` whose name and shape match a parameter or buffer of this model (transfer
    /// learning) and reports what it loaded and skipped; the caller broadcasts. Collective.
    func initialize(from path: String) throws {
        try communicator.rootActs("read \(path)") {
            // A checkpoint directory means its newest checkpoint that verifies.
            let search = try CheckpointStore(directory: path, keep: 1).resolve(resume: path)
            guard let file = search.file else { throw ConfigError("key 'model.init_from': no checkpoint in \(path)") }
            var loaded: [String] = [], skipped: [String] = []
            for (tensors, slots) in [(model.parameters, model.parameters.slots), (model.state, model.state.slots)] {
                for slot in slots {
                    guard let tensor = file.tensors.first(where: { $0.name == slot.name }) else { skipped.append("\(slot.name) (not in the file)"); continue }
                    guard tensor.shape == slot.shape else {
                        skipped.append("\(slot.name) (shape \(tensor.shape) in the file, \(slot.shape) here)")
                        continue
                    }
                    try file.restore(slot.name, into: tensors.valuePointer(slot), shape: slot.shape)
                    loaded.append(slot.name)
                }
            }
            guard !loaded.isEmpty else {
                throw ConfigError("key 'model.init_from': \(path) has no tensor with the name and shape of any of this model's (\(skipped.joined(separator: "; ")))")
            }
            log("init_from \(path): loaded \(loaded.count) tensors (\(loaded.joined(separator: ", ")))"
                + (skipped.isEmpty ? "" : "; skipped \(skipped.joined(separator: "; "))"))
        }
    }

    /// The model layout as text: names and shapes of every tensor, in order.
    var layoutDescription: String {
        (model.parameters.slots + model.state.slots).map { "\($0.name)\($0.shape)" }.joined(separator: ";")
    }

    /// Rank 0 claims the directory (another job holding it is an error), checks it is writable and loads the resume
    /// checkpoint; every rank learns the outcome together (so a bad checkpoint stops all ranks with rank 0's message,
    /// before any work).
    func prepareCheckpoints() throws {
        // step, epoch, epoch position, optimizer steps, skipped, early stopping: best epoch (0 none), best bits, wait,
        // optimizer state loaded (1: rank 0 holds it in full and scatters the slices of a sharded optimizer)
        var position: [Int64] = [0, 0, 0, 0, 0, 0, 0, 0, 0]
        // Sharded: rank 0 reads the whole optimizer state into buffers of its own (the checkpoint holds it whole).
        var fullState: [FloatBuffer] = []
        try communicator.rootActs("prepare checkpoints") {
            checkpointLock = try checkpoints.claimAndResume(log: log) { file in
                if let (layout, _) = optimizerShard { fullState = optimizer.stateBuffers.map { _ in FloatBuffer(count: layout.count) } }
                position = try restore(from: file, optimizerState: optimizerShard == nil ? optimizer.stateBuffers.map(\.buffer) : fullState) + [1]
                return position
            }
        }
        try position.withUnsafeMutableBytes { try communicator.broadcast($0, root: 0) }
        step = Int(position[0]); epoch = Int(position[1]); epochPosition = Int(position[2])
        optimizer.stepCount = Int(position[3]); skippedSteps = Int(position[4])
        best = position[5] > 0 ? (Double(bitPattern: UInt64(bitPattern: position[6])), Int(position[5])) : nil
        epochsWithoutImprovement = Int(position[7])
        if let (layout, _) = optimizerShard, position[8] != 0 {
            for (index, (_, buffer)) in optimizer.stateBuffers.enumerated() {
                try communicator.scatterSlices(communicator.rank == 0 ? UnsafePointer(fullState[index].pointer) : nil,
                                               into: buffer.pointer, layout: layout, root: 0)
            }
        }
        lastSavedStep = checkpoints.resume != nil && step > 0 ? step : -1
    }

    /// Copies a checkpoint into the model and `optimizerState` (the optimizer's buffers, or whole-state buffers that
    /// a sharded optimizer's slices are scattered from) on rank 0; the caller broadcasts. Returns the position.
    private func restore(from file: SafeTensorsFile, optimizerState: [FloatBuffer]) throws -> [Int64] {
        guard case .verified = file.checksumStatus else {
            throw CheckpointError(file: file.path, "has no valid lockstep.checksum; refusing to resume from it")
        }
        if let layout = file.metadata[CheckpointMetadataKey.modelLayout], layout != layoutDescription {
            throw CheckpointError(file: file.path, "was written for a different model layout (\(layout.prefix(120))…); this config builds \(layoutDescription.prefix(120))…")
        }
        try file.restore(into: model.parameters)
        try file.restore(into: model.state)
        for ((name, _), buffer) in zip(optimizer.stateBuffers, optimizerState) {
            for slot in trainableSlots {
                try file.restore("optimizer.\(slot.name).\(name)", into: buffer.pointer + slot.offset - trainableOffset, shape: slot.shape)
            }
        }
        func number(_ key: String) throws -> Int64 {
            guard let text = file.metadata[key], let value = Int64(text) else {
                throw CheckpointError(file: file.path, "metadata \"\(key)\" is missing or not an integer")
            }
            return value
        }
        if let saved = file.metadata["optimizer"], saved != optimizer.kind {
            throw CheckpointError(file: file.path, "holds \(saved) optimizer state but the config uses \(optimizer.kind)")
        }
        if let text = file.metadata[CheckpointMetadataKey.config], text != options.runDescription {
            log("resume: note: the config differs from the checkpoint's (same model layout); continuing with the new config")
        }
        if let saved = file.metadata[CheckpointMetadataKey.worldSize], saved != String(communicator.size) {
            log("resume: written on \(saved) ranks, resuming on \(communicator.size); data continues at the same global position")
        }
        // Early stopping continues where it was: the best value (exact bits) and the epochs since it.
        let bestEpoch = file.metadata["early_stopping_best_epoch"].flatMap { Int64($0) } ?? 0
        let bestBits = file.metadata["early_stopping_best"].flatMap { UInt64($0, radix: 16) }.map { Int64(bitPattern: $0) } ?? 0
        let wait = file.metadata["early_stopping_wait"].flatMap { Int64($0) } ?? 0
        return [try number(CheckpointMetadataKey.step), try number(CheckpointMetadataKey.epoch),
                try number(CheckpointMetadataKey.epochPosition), try number(CheckpointMetadataKey.optimizerStep),
                try number("skipped_steps"), bestEpoch, bestBits, wait]
    }

    /// Rank 0 writes a checkpoint of this step atomically; the others wait for its outcome, so the checkpoint
    /// reflects one step on every rank and a failed write (disk full) stops every rank with rank 0's message.
    func saveCheckpoint() throws {
        // Sharded: rank 0 gathers the whole optimizer state first (a collective, so before rootActs), for the one file.
        var state = optimizer.stateBuffers
        if let (layout, _) = optimizerShard, checkpoints.enabled {
            state = try state.map { name, buffer in
                let full = FloatBuffer(count: communicator.rank == 0 ? layout.count : 0)
                try communicator.gatherSlices(buffer.pointer, into: communicator.rank == 0 ? full.pointer : nil, layout: layout, root: 0)
                return (name, full)
            }
        }
        try communicator.rootActs("write the checkpoint at step \(step)") {
            guard let directory = checkpoints.directory else { return }
            do {
                let store = try CheckpointStore(directory: directory, keep: checkpoints.keep)
                var tensors = TensorSource.slots(of: model.parameters) + TensorSource.slots(of: model.state)
                for (name, buffer) in state {
                    tensors += trainableSlots.map {
                        TensorSource(name: "optimizer.\($0.name).\(name)", shape: $0.shape, buffer: buffer,
                                     offset: $0.offset - trainableOffset, count: $0.count)
                    }
                }
                var metadata: [String: String] = [
                    CheckpointMetadataKey.step: String(step), CheckpointMetadataKey.epoch: String(epoch),
                    CheckpointMetadataKey.epochPosition: String(epochPosition),
                    CheckpointMetadataKey.optimizerStep: String(optimizer.stepCount),
                    CheckpointMetadataKey.worldSize: String(communicator.size),
                    CheckpointMetadataKey.config: options.runDescription,
                    CheckpointMetadataKey.modelLayout: layoutDescription,
                    CheckpointMetadataKey.formatVersion: "1",
                    // Every random stream derives from the seed and the step or epoch, so the seed restores them all.
                    CheckpointMetadataKey.rngPrefix + "seed": String(options.seed),
                    "optimizer": optimizer.kind, "skipped_steps": String(skippedSteps),
                    "per_rank_batch": String(perRankBatch), "global_batch": String(globalBatch),
                ]
                if let best {
                    metadata["early_stopping_best"] = String(best.value.bitPattern, radix: 16)
                    metadata["early_stopping_best_epoch"] = String(best.epoch)
                    metadata["early_stopping_wait"] = String(epochsWithoutImprovement)
                }
                let written = try store.write(step: step, tensors: tensors, metadata: metadata)
                for warning in written.warnings { log("checkpoint: \(warning)") }
            } catch {
                throw CollectiveError("checkpoint at step \(step): \(error)")
            }
        }
        lastSavedStep = step
    }
}
