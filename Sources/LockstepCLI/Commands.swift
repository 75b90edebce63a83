import Foundation
import LockstepCheckpoint
import LockstepComm
import LockstepConfig
import LockstepCore
import LockstepData
import LockstepTrain

extension Session {
    /// `lockstep train`: loads and checks the config, trains, writes metrics and prints a summary on rank 0.
    public func train(configPath: String, overrides: [String], metricsPath: String?, printChecksum: Bool,
                      dumpParameters: String?, checkpointDirectory: String? = nil, resume: String? = nil,
                      tracePath: String? = nil, imagesDirectory: String? = nil) throws {
        let config = try TrainingConfig.load(file: configPath, overrides: overrides)
        if config.gan != nil {
            if tracePath != nil { throw ConfigError("--trace: not available for a GAN config (its two models' steps have no trace yet)") }
            return try trainGAN(config, configPath: configPath, metricsPath: metricsPath, printChecksum: printChecksum,
                                dumpParameters: dumpParameters, checkpointDirectory: checkpointDirectory, resume: resume,
                                imagesDirectory: imagesDirectory)
        }
        let metrics = isLeader ? try metricsPath.map { try MetricsWriter(path: $0) } : nil
        let checkpoints = CheckpointSettings(directory: checkpointDirectory, resume: resume,
                                             everySteps: config.checkpoint.everySteps, everyEpoch: config.checkpoint.everyEpoch,
                                             keep: config.checkpoint.keep)
        let trainer = try config.makeTrainer(communicator: communicator, checkpoints: checkpoints, log: { [weak self] in self?.say($0) })
        let trainSet = trainer.data.train
        let trace = tracePath.map { _ in TrainingTrace(rank: communicator.rank) }
        trainer.observer = trace
        let world = communicator.size
        say("lockstep: \(configPath) on \(world) rank\(world == 1 ? "" : "s"): \(trainer.model.parameters.count) parameters, "
            + "batch \(trainer.perRankBatch) per rank (global \(trainer.globalBatch)), \(trainSet.count) training samples, "
            + "\(config.epochs) epoch\(config.epochs == 1 ? "" : "s")"
            + (world > 1 ? ", gradient reduction \(trainer.gradientReductionDescription) (\(trainer.gradientBuckets.count) bucket\(trainer.gradientBuckets.count == 1 ? "" : "s"))" : "")
            + ", " + trainer.optimizerStateDescription)
        let stepsPerEpoch = trainer.stepsPerEpoch
        let totalSteps = config.maxSteps > 0 ? min(config.maxSteps, stepsPerEpoch * config.epochs) : stepsPerEpoch * config.epochs
        let progress = ProgressDisplay(totalSteps: totalSteps, samplesPerStep: trainer.globalBatch, enabled: isLeader)
        let summary = try trainer.run(onEpoch: { epoch in
            progress.clearLine()
            self.say(epoch.line)
            if let imagesDirectory, config.data.target == .input, self.isLeader {
                do { self.say("reconstructions: " + (try Self.writeReconstructions(trainer, epoch: epoch.epoch, directory: imagesDirectory))) } catch {
                    self.say("reconstructions: not written: \(error)")
                }
            }
            metrics?.write(epoch)
        }, onStep: { step, _, loss in progress.step(step, loss: loss) })
        progress.clearLine()
        if let trace, let tracePath { try trace.write(to: tracePath, communicator: communicator) }
        metrics?.write(summary, perRankBatch: trainer.perRankBatch, globalBatch: trainer.globalBatch)
        say(summary.line)
        try finishRun(stoppedOnRequest: trainer.stoppedOnRequest, steps: summary.steps, checksum: summary.parameterChecksum,
                      printChecksum: printChecksum, checkpointDirectory: checkpointDirectory, dumpParameters: dumpParameters,
                      parameters: [trainer.model.parameters.values.buffer])
    }

    /// The end of every `train` run: the stop-on-request line, the checksum line and the parameter dump (`parameters`
    /// written one after another).
    func finishRun(stoppedOnRequest: Bool, steps: Int, checksum: UInt64, printChecksum: Bool, checkpointDirectory: String?,
                   dumpParameters: String?, parameters: [UnsafeMutableBufferPointer<Float>]) throws {
        if stoppedOnRequest && isLeader {
            // On stderr, where the launchers look for it: mpirun exits 1 after a forwarded SIGTERM even when every
            // rank stopped cleanly, and this line is how `launch/supervise` tells that apart from a crash.
            let saved = checkpointDirectory.map { "final checkpoint in \($0), continue with --resume auto" } ?? "no --checkpoint-dir, nothing saved"
            FileHandle.standardError.write(Data("lockstep: stopped on request at step \(steps) on every rank; \(saved)\n".utf8))
        }
        if printChecksum {
            print("rank \(communicator.rank) parameter checksum \(String(checksum, radix: 16))")
        }
        if let dumpParameters, isLeader {
            var data = Data()
            for buffer in parameters { data.append(UnsafeBufferPointer(buffer)) }
            guard FileManager.default.createFile(atPath: dumpParameters, contents: data) else {
                throw ConfigError("--dump-parameters \(dumpParameters): cannot write the file")
            }
        }
    }

    /// An autoencoder's first 8 test inputs (top row) above their reconstructions (bottom row), as a PNG; returns its path.
    static func writeReconstructions(_ trainer: Trainer, epoch: Int, directory: String) throws -> String {
        let test = trainer.data.test, count = min(8, test.count), width = test.featureWidth
        let inputs = Array(test.features[0..<(count * width)])
        let outputs = inputs.withUnsafeBufferPointer { trainer.predict($0.baseAddress!, count: count) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + String(format: "/reconstructions-epoch-%03d.png", epoch)
        try ImageGrid(images: inputs + outputs, sampleShape: test.sampleShape, columns: count, scaling: .minMax).write(to: path)
        return path
    }

    /// `lockstep eval`: evaluates parameters from a raw float32 file (or the seeded initial model) on the test set.
    public func evaluate(configPath: String, overrides: [String], parametersPath: String?, checkpointPath: String? = nil,
                         metricsPath: String? = nil) throws {
        let config = try TrainingConfig.load(file: configPath, overrides: overrides)
        let trainer = try config.makeTrainer(communicator: communicator, checkpoints: CheckpointSettings(resume: checkpointPath),
                                             log: { [weak self] in self?.say($0) })
        let testSet = trainer.data.test
        if let parametersPath {
            guard let data = FileManager.default.contents(atPath: parametersPath) else {
                throw ConfigError("--parameters \(parametersPath): cannot read the file")
            }
            let values = trainer.model.parameters.values
            guard data.count == values.count * 4 else {
                throw ConfigError("--parameters \(parametersPath): has \(data.count / 4) floats but the model has \(values.count) parameters")
            }
            _ = data.withUnsafeBytes { UnsafeMutableRawBufferPointer(values.buffer).copyMemory(from: $0) }
        }
        let result = try trainer.evaluate()
        let accuracy = result.accuracy.map { String(format: " test accuracy %.4f", $0) } ?? ""
        say(String(format: "eval: test loss %.5f%@ on %d samples", result.loss, accuracy, testSet.count))
        // Per-class precision, recall, F1 and the confusion matrix, for classification losses.
        if let report = try trainer.classificationReport(), isLeader {
            print(report.table())
            if let metricsPath { try MetricsWriter(path: metricsPath).append(line: report.json()) }
        }
    }

    /// `lockstep checkpoint inspect PATH`: prints the report; returns whether the checkpoint verifies.
    public static func inspectCheckpoint(_ path: String) -> Bool {
        var file = path
        if let store = try? CheckpointStore(directory: path, keep: 1), (try? store.listCheckpoints())?.isEmpty == false,
           let newest = try? store.listCheckpoints().first {
            file = newest.path
        }
        let inspection = CheckpointInspector.inspect(path: file)
        print(inspection.text)
        return inspection.isValid
    }

    /// `lockstep selftest comm`: every collective and reducer mode checked against known values.
    public func selfTest(_ what: String) throws {
        switch what {
        case "comm": print("rank \(communicator.rank): \(try runCommunicatorSelfTest(communicator))")
        case "shards": print("rank \(communicator.rank): \(try shardSelfTest())")
        default: throw ConfigError("selftest: unknown check '\(what)' (known: comm, shards)")
        }
    }

    /// Every rank walks its shard of several epochs through a real `BatchLoader` and the ranks compare (allgather):
    /// shards must be disjoint, of equal length, and together cover the epoch, for sizes not divisible by the world size.
    func shardSelfTest() throws -> String {
        let world = communicator.size, rank = communicator.rank
        var checks = 0
        for sampleCount in [10, 1001, 6007] {
            // Each sample's feature is its own index, so the batches show which samples a rank received.
            let dataset = Dataset(features: (0..<sampleCount).map(Float.init), targets: [Float](repeating: 0, count: sampleCount),
                                  sampleShape: [1])
            for policy in [EpochPlan.Policy.dropLast, .wrapPad] {
                for epoch in 0..<2 {
                    let plan = EpochPlan(sampleCount: sampleCount, worldSize: world, seed: 7, epoch: epoch, shuffle: true, policy: policy)
                    let loader = BatchLoader(dataset: dataset, perRankBatch: 7)
                    loader.start(plan: plan, firstStep: 0, rank: rank)
                    var mine: [Int64] = []
                    while let batch = loader.next() {
                        for i in 0..<batch.sampleCount { mine.append(Int64(batch.features[i])) }
                    }
                    var length: Int64 = Int64(mine.count)
                    let shortest = try communicator.allreduce(length, operation: .min)
                    length = try communicator.allreduce(length, operation: .max)
                    guard shortest == length else {
                        throw CollectiveError("shards of \(sampleCount) samples (\(policy)) differ in length: \(shortest) vs \(length)")
                    }
                    let all = try communicator.allgather(mine)
                    // Positions in the padded permutation are unique per rank; sample ids repeat only through wrap padding.
                    let expected = policy == .dropLast ? sampleCount / world * world : (sampleCount + world - 1) / world * world
                    guard all.count == expected else {
                        throw CollectiveError("shards of \(sampleCount) samples (\(policy)) hold \(all.count) samples in total, expected \(expected)")
                    }
                    let distinct = Set(all)
                    let wanted = policy == .dropLast ? expected : sampleCount
                    guard distinct.count == wanted, distinct.allSatisfy({ (0..<Int64(sampleCount)).contains($0) }) else {
                        throw CollectiveError("shards of \(sampleCount) samples (\(policy)) overlap or miss samples: \(distinct.count) distinct of \(wanted)")
                    }
                    checks += 1
                }
            }
        }
        return "shards ok: \(checks) epochs of 10, 1001 and 6007 samples over \(world) ranks, disjoint, equal length, covering"
    }
}
