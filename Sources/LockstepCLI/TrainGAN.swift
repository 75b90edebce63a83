import Foundation
import LockstepConfig
import LockstepCore
import LockstepData
import LockstepTrain

extension Session {
    /// `lockstep train` for a GAN config: trains, writes a grid of fixed-noise samples per epoch (rank 0), prints the
    /// losses and the judge's figures, and writes metrics as `train` does.
    func trainGAN(_ config: TrainingConfig, configPath: String, metricsPath: String?, printChecksum: Bool, dumpParameters: String?,
                  checkpointDirectory: String?, resume: String?, imagesDirectory: String?) throws {
        guard let gan = config.gan else { return }
        let metrics = isLeader ? try metricsPath.map { try MetricsWriter(path: $0) } : nil
        let checkpoints = CheckpointSettings(directory: checkpointDirectory, resume: resume,
                                             everySteps: config.checkpoint.everySteps, everyEpoch: config.checkpoint.everyEpoch,
                                             keep: config.checkpoint.keep)
        let trainer = try config.makeGANTrainer(communicator: communicator, checkpoints: checkpoints, log: { [weak self] in self?.say($0) })
        let world = communicator.size
        say("lockstep: \(configPath) on \(world) rank\(world == 1 ? "" : "s"): GAN, generator \(trainer.generator.parameters.count) "
            + "and discriminator \(trainer.discriminator.parameters.count) parameters, \(trainer.noiseDimensions)-dimensional noise, "
            + "batch \(trainer.perRankBatch) real + \(trainer.perRankBatch) generated per rank (global \(trainer.globalBatch) real), "
            + "\(trainer.data.train.count) training samples, \(config.epochs) epoch\(config.epochs == 1 ? "" : "s")")
        if let judge = trainer.judge {
            // The same figures on real test images: what a perfect generator would score.
            let test = trainer.data.test, count = min(trainer.judgedSampleCount, test.count)
            let real = judge.judge(Array(test.features[0..<(count * test.featureWidth)]))
            say("judge on \(count) real test images: " + real.line)
            metrics?.append(line: Self.judgementJSON(event: "judge_real", epoch: 0, real))
        }
        let directory = imagesDirectory ?? gan.imagesDirectory
        let totalSteps = config.maxSteps > 0 ? min(config.maxSteps, trainer.stepsPerEpoch * config.epochs) : trainer.stepsPerEpoch * config.epochs
        let progress = ProgressDisplay(totalSteps: totalSteps, samplesPerStep: trainer.globalBatch, enabled: isLeader)
        let summary = try trainer.run(onEpoch: { epoch in
            progress.clearLine()
            self.say(epoch.line)
            if let directory, self.isLeader {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                let path = directory + String(format: "/samples-epoch-%03d.png", epoch.epoch)
                try trainer.sampleGrid(count: gan.gridSamples).write(to: path)
                self.say("samples: \(path)")
            }
            metrics?.append(line: String(format: "{\"event\":\"epoch\",\"epoch\":%d,\"step\":%d,\"discriminator_loss\":%@,\"generator_loss\":%@,\"samples_per_second\":%.1f,\"seconds\":%.3f}",
                                         epoch.epoch, epoch.step, Self.number(epoch.discriminatorLoss), Self.number(epoch.generatorLoss),
                                         epoch.samplesPerSecond, epoch.seconds))
            if let judgement = epoch.judgement { metrics?.append(line: Self.judgementJSON(event: "judge", epoch: epoch.epoch, judgement)) }
        }, onStep: { step, _, loss in progress.step(step, loss: loss) })
        progress.clearLine()
        metrics?.append(line: String(format: "{\"event\":\"summary\",\"discriminator_loss\":%@,\"generator_loss\":%@,\"samples_per_second\":%.1f,\"steps\":%d,\"skipped_steps\":%d,\"world_size\":%d,\"per_rank_batch\":%d,\"global_batch\":%d,\"seconds\":%.3f,\"parameter_checksum\":\"%@\"}",
                                     Self.number(summary.discriminatorLoss), Self.number(summary.generatorLoss), summary.samplesPerSecond,
                                     summary.steps, summary.skippedSteps, summary.worldSize, trainer.perRankBatch, trainer.globalBatch,
                                     summary.seconds, String(summary.parameterChecksum, radix: 16)))
        say(summary.line)
        // Generator then discriminator, each in its layout order.
        try finishRun(stoppedOnRequest: trainer.stoppedOnRequest, steps: summary.steps, checksum: summary.parameterChecksum,
                      printChecksum: printChecksum, checkpointDirectory: checkpointDirectory, dumpParameters: dumpParameters,
                      parameters: [trainer.generator.parameters.values.buffer, trainer.discriminator.parameters.values.buffer])
    }

    /// A JSON number, or null when not finite.
    private static func number(_ value: Double) -> String { value.isFinite ? String(value) : "null" }

    private static func judgementJSON(event: String, epoch: Int, _ judgement: GANJudgement) -> String {
        "{\"event\":\"\(event)\",\"epoch\":\(epoch),\"class_counts\":[\(judgement.classCounts.map(String.init).joined(separator: ","))],"
            + "\"entropy_bits\":\(number(judgement.entropyBits)),\"mean_confidence\":\(number(judgement.meanConfidence))}"
    }
}
