import Foundation
import LockstepCheckpoint
import LockstepComm
import LockstepCore
import LockstepNN

/// A GAN checkpoint is one safetensors file holding both models and both optimizer states under the prefixes
/// `generator.` and `discriminator.` (e.g. `generator.layers.0.weight`, `discriminator.optimizer.layers.0.weight.exp_avg`),
/// and the step, epoch and data position in its metadata, written and resumed like `Trainer`'s.
extension GANTrainer {
    /// The models with their checkpoint prefixes and optimizers.
    private var parts: [(prefix: String, model: Sequential, optimizer: Optimizer)] {
        [("generator.", generator, generatorOptimizer), ("discriminator.", discriminator, discriminatorOptimizer)]
    }

    /// Both model layouts as text: names and shapes of every tensor, in order.
    var layoutDescription: String {
        parts.map { part in
            (part.model.parameters.slots + part.model.state.slots).map { "\(part.prefix)\($0.name)\($0.shape)" }.joined(separator: ";")
        }.joined(separator: ";")
    }

    /// Rank 0 claims the directory, checks it is writable and loads the resume checkpoint; every rank learns the
    /// outcome together. Collective.
    func prepareCheckpoints() throws {
        // step, epoch, epoch position, generator optimizer steps, discriminator optimizer steps, skipped steps
        var position: [Int64] = [0, 0, 0, 0, 0, 0]
        try communicator.rootActs("prepare checkpoints") {
            checkpointLock = try checkpoints.claimAndResume(log: log) { file in
                position = try restore(from: file)
                return position
            }
        }
        try position.withUnsafeMutableBytes { try communicator.broadcast($0, root: 0) }
        step = Int(position[0]); epoch = Int(position[1]); epochPosition = Int(position[2])
        generatorOptimizer.stepCount = Int(position[3]); discriminatorOptimizer.stepCount = Int(position[4])
        skippedSteps = Int(position[5])
        lastSavedStep = checkpoints.resume != nil && step > 0 ? step : -1
    }

    /// Copies a checkpoint into both models and optimizers (rank 0; the caller broadcasts); returns the position.
    private func restore(from file: SafeTensorsFile) throws -> [Int64] {
        guard case .verified = file.checksumStatus else {
            throw CheckpointError(file: file.path, "has no valid lockstep.checksum; refusing to resume from it")
        }
        guard file.metadata["gan"] == "1" else {
            throw CheckpointError(file: file.path, "is not a GAN checkpoint (no generator and discriminator); this config trains a GAN")
        }
        if let layout = file.metadata[CheckpointMetadataKey.modelLayout], layout != layoutDescription {
            throw CheckpointError(file: file.path, "was written for different models (\(layout.prefix(160))…); this config builds \(layoutDescription.prefix(160))…")
        }
        for part in parts {
            if let saved = file.metadata[part.prefix + "optimizer"], saved != part.optimizer.kind {
                throw CheckpointError(file: file.path, "holds \(saved) state for the \(part.prefix.dropLast()) but the config uses \(part.optimizer.kind)")
            }
            try file.restore(into: part.model.parameters, prefix: part.prefix)
            try file.restore(into: part.model.state, prefix: part.prefix)
            for (name, buffer) in part.optimizer.stateBuffers {
                for slot in part.model.parameters.slots {
                    try file.restore("\(part.prefix)optimizer.\(slot.name).\(name)", into: buffer.pointer + slot.offset, shape: slot.shape)
                }
            }
        }
        func number(_ key: String) throws -> Int64 {
            guard let text = file.metadata[key], let value = Int64(text) else {
                throw CheckpointError(file: file.path, "metadata \"\(key)\" is missing or not an integer")
            }
            return value
        }
        if let text = file.metadata[CheckpointMetadataKey.config], text != options.runDescription {
            log("resume: note: the config differs from the checkpoint's (same model layouts); continuing with the new config")
        }
        if let saved = file.metadata[CheckpointMetadataKey.worldSize], saved != String(communicator.size) {
            log("resume: written on \(saved) ranks, resuming on \(communicator.size); data continues at the same global position")
        }
        return [try number(CheckpointMetadataKey.step), try number(CheckpointMetadataKey.epoch),
                try number(CheckpointMetadataKey.epochPosition), try number("generator.optimizer_step"),
                try number("discriminator.optimizer_step"), try number("skipped_steps")]
    }

    /// Rank 0 writes a checkpoint of this step atomically; the others wait for its outcome. Collective.
    func saveCheckpoint() throws {
        try communicator.rootActs("write the checkpoint at step \(step)") {
            guard let directory = checkpoints.directory else { return }
            do {
                let store = try CheckpointStore(directory: directory, keep: checkpoints.keep)
                var tensors: [TensorSource] = []
                var metadata: [String: String] = [
                    CheckpointMetadataKey.step: String(step), CheckpointMetadataKey.epoch: String(epoch),
                    CheckpointMetadataKey.epochPosition: String(epochPosition),
                    CheckpointMetadataKey.worldSize: String(communicator.size),
                    CheckpointMetadataKey.config: options.runDescription,
                    CheckpointMetadataKey.modelLayout: layoutDescription,
                    CheckpointMetadataKey.formatVersion: "1",
                    // Noise, data order and layer randomness derive from the seed and the step or epoch.
                    CheckpointMetadataKey.rngPrefix + "seed": String(options.seed),
                    "gan": "1", "skipped_steps": String(skippedSteps),
                    "per_rank_batch": String(perRankBatch), "global_batch": String(globalBatch),
                ]
                for part in parts {
                    tensors += TensorSource.slots(of: part.model.parameters, prefix: part.prefix)
                        + TensorSource.slots(of: part.model.state, prefix: part.prefix)
                    for (name, buffer) in part.optimizer.stateBuffers {
                        tensors += part.model.parameters.slots.map {
                            TensorSource(name: "\(part.prefix)optimizer.\($0.name).\(name)", shape: $0.shape, buffer: buffer,
                                         offset: $0.offset, count: $0.count)
                        }
                    }
                    metadata[part.prefix + "optimizer"] = part.optimizer.kind
                    metadata[part.prefix + "optimizer_step"] = String(part.optimizer.stepCount)
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
