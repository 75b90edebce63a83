import Foundation
import XCTest

/// A small GAN through the real binary: trained on 2 ranks it writes its sample grids and the judge's figures, resumes
/// bit-exactly from its one-file checkpoint, matches 1 rank with the doubled batch within the derived bound, and
/// rejects models and judges that do not fit, naming the key.
final class GANMultiRankTests: ScratchDirectoryTestCase {
    /// A tiny MLP GAN on 2048 Fashion-MNIST images: 32 steps per epoch on 2 ranks × 32.
    private func writeConfig() throws -> String {
        let path = directory + "/gan.yaml"
        try """
        seed: 3
        data: {dataset: fashion-mnist, train_subset: 2048, test_subset: 500}
        model:
          noise_dimensions: 16
          generator: [{type: linear, out: 64}, {type: leaky_relu, slope: 0.2}, {type: linear, out: 784}, {type: tanh}]
          discriminator: [{type: flatten}, {type: linear, out: 64}, {type: leaky_relu, slope: 0.2}, {type: linear, out: 1}]
        optimizer: {type: adam, lr: 0.001, beta1: 0.5}
        training: {batch_size: 32, epochs: 2}
        distributed: {check_every: 8}
        gan: {judge_samples: 200, grid_samples: 64}
        """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// A logistic-regression Fashion-MNIST classifier checkpoint for the judge (30 steps, one process).
    private func trainJudge() throws -> String {
        let judge = directory + "/judge"
        let run = try MPIRun.run(ranks: 0, ["train", "--config", MPIRun.config("fashion-logreg.yaml"), "--set", "data.train_subset=2048",
                                            "--set", "data.test_subset=500", "--set", "training.max_steps=30", "--checkpoint-dir", judge])
        XCTAssertEqual(run.status, 0, run.stderr)
        return judge
    }

    private func checksums(_ result: MPIRun.Result) -> Set<Substring> {
        Set(result.stdout.split(separator: "\n").filter { $0.contains("parameter checksum") }.map { $0.split(separator: " ").last! })
    }

    func testTwoRanksWriteSampleGridsAndJudgeFigures() throws {
        let config = try writeConfig(), judge = try trainJudge()
        let images = directory + "/images", metrics = directory + "/metrics.jsonl"
        let run = try MPIRun.run(ranks: 2, ["train", "--config", config, "--set", "gan.judge=\(judge)", "--images", images,
                                            "--metrics", metrics, "--print-checksum"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let lines = run.stdout.split(separator: "\n")
        XCTAssertTrue(lines.contains { $0.hasPrefix("judge on 200 real test images: classes [") }, run.stdout)
        XCTAssertEqual(lines.filter { $0.hasPrefix("  judge: classes [") && $0.contains("bits, mean confidence") && $0.hasSuffix("(200 samples)") }.count,
                       2, run.stdout)
        // Both losses finite in every epoch, and training changed them.
        let epochs = lines.filter { $0.hasPrefix("epoch ") }
        XCTAssertEqual(epochs.count, 2, run.stdout)
        let losses = epochs.map { line -> [Double] in
            let words = line.split(separator: " ")
            return [Double(words[words.firstIndex(of: "discriminator")! + 2])!, Double(words[words.firstIndex(of: "generator")! + 2])!]
        }
        XCTAssertTrue(losses.joined().allSatisfy { $0.isFinite && $0 > 0 }, "\(losses)")
        XCTAssertNotEqual(losses[0], losses[1])
        XCTAssertEqual(checksums(run).count, 1, "every rank must hold the same parameters: \(run.stdout)")
        // An 8×8 grid of 28×28 samples with 2-pixel gaps: 242 × 242, 8-bit grayscale PNG.
        for epoch in 1...2 {
            let png = try Data(contentsOf: URL(fileURLWithPath: images + "/samples-epoch-00\(epoch).png"))
            XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
            XCTAssertEqual(Array(png[16..<26]), [0, 0, 0, 242, 0, 0, 0, 242, 8, 0])
        }
        let records = try String(contentsOfFile: metrics, encoding: .utf8)
        XCTAssertEqual(records.components(separatedBy: "\"event\":\"judge\"").count - 1, 2, records)
        XCTAssertTrue(records.contains("\"event\":\"summary\",\"discriminator_loss\":"), records)
    }

    func testResumeOnTwoRanksIsBitExact() throws {
        let config = try writeConfig(), checkpoints = directory + "/checkpoints"
        let base = ["train", "--config", config, "--print-checksum"]
        let straight = try MPIRun.run(ranks: 2, base + ["--set", "training.max_steps=44"])
        XCTAssertEqual(straight.status, 0, straight.stderr)
        let first = try MPIRun.run(ranks: 2, base + ["--set", "training.max_steps=21", "--checkpoint-dir", checkpoints])
        XCTAssertEqual(first.status, 0, first.stderr)
        let second = try MPIRun.run(ranks: 2, base + ["--set", "training.max_steps=44", "--checkpoint-dir", checkpoints, "--resume", "auto"])
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertTrue(second.stdout.contains("resume: from"), second.stdout)
        XCTAssertEqual(checksums(straight).count, 1)
        XCTAssertEqual(checksums(second), checksums(straight), "resumed: \(second.stdout)\nstraight: \(straight.stdout)")
        let inspect = try MPIRun.run(ranks: 0, ["checkpoint", "inspect", checkpoints])
        XCTAssertEqual(inspect.status, 0, inspect.stdout)
        for name in ["generator.layers.0.weight", "discriminator.layers.3.bias", "generator.optimizer.layers.2.weight.exp_avg",
                     "discriminator.optimizer.layers.1.weight.exp_avg_sq"] {
            XCTAssertTrue(inspect.stdout.contains(name), "\(name) missing: \(inspect.stdout)")
        }
    }

    /// SIGTERM to one rank (a preemption) stops both at the same step with a final checkpoint and exit 0; resuming
    /// ends bit-identical to an uninterrupted run.
    func testSIGTERMOnOneRankStopsBothAndResumeFinishesTheSame() throws {
        let config = try writeConfig(), checkpoints = directory + "/checkpoints"
        let base = ["train", "--config", config, "--print-checksum", "--set", "training.max_steps=60"]
        let straight = try MPIRun.run(ranks: 2, base)
        XCTAssertEqual(straight.status, 0, straight.stderr)
        let terminator = Thread {
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline && ((try? FileManager.default.contentsOfDirectory(atPath: checkpoints)) ?? []).filter({ $0.hasPrefix("step-") }).count < 2 {
                Thread.sleep(forTimeInterval: 0.05)
            }
            if let victim = MPIRun.rankPIDs(matching: checkpoints).last { kill(victim, SIGTERM) }
        }
        terminator.start()
        let stopped = try MPIRun.run(ranks: 2, base + ["--checkpoint-dir", checkpoints, "--set", "checkpoint.every_steps=4",
                                                       "--set", "checkpoint.every_epoch=false", "--set", "debug.step_delay_ms=20"], timeout: 120)
        XCTAssertEqual(stopped.status, 0, stopped.stderr)
        let line = try XCTUnwrap(stopped.stdout.split(separator: "\n").first { $0.contains("stop requested: every rank stops at step") }, stopped.stdout)
        let step = try XCTUnwrap(Int(line.split(separator: " ").last!))
        XCTAssertLessThan(step, 60, "the stop must come before the end")
        XCTAssertTrue(FileManager.default.fileExists(atPath: checkpoints + String(format: "/step-%08d.safetensors", step)), stopped.stdout)
        let resumed = try MPIRun.run(ranks: 2, base + ["--checkpoint-dir", checkpoints, "--resume", "auto"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(checksums(resumed), checksums(straight), "resumed: \(resumed.stdout)\nstraight: \(straight.stdout)")
    }

    /// A NaN gradient on rank 1 alone skips that discriminator update on both ranks, which stay identical.
    func testNonFiniteGradientOnOneRankSkipsTheUpdateEverywhere() throws {
        let config = try writeConfig()
        let run = try MPIRun.run(ranks: 2, ["train", "--config", config, "--set", "training.max_steps=8", "--set", "debug.nan_step=3",
                                            "--set", "debug.nan_rank=1", "--print-checksum"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stdout.contains("step 3: non-finite discriminator gradients (after averaging over ranks); discriminator update skipped on every rank"), run.stdout)
        XCTAssertTrue(run.stdout.contains("8 steps (1 skipped)"), run.stdout)
        XCTAssertEqual(checksums(run).count, 1, run.stdout)
    }

    /// Noise is drawn per global sample position, so 2 ranks × 32, 4 × 16 and 1 rank × 64 train the same GAN up to rounding.
    func testTwoAndFourRanksMatchOneRankWithTheWholeBatch() throws {
        let config = try writeConfig()
        let outcome = try Equivalence.measure(base: ["train", "--config", config, "--set", "training.max_steps=16"], ranks: 2, batch: 32,
                                              regrouping: .reversedBatches)
        Equivalence.assertHolds(outcome, ranks: 2, "GAN 2×32 vs 1×64")
        let four = try Equivalence.measure(base: ["train", "--config", config, "--set", "training.max_steps=16"], ranks: 4, batch: 16,
                                           regrouping: .reversedBatches)
        Equivalence.assertHolds(four, ranks: 4, "GAN 4×16 (oversubscribed) vs 1×64")
    }

    func testModelsAndJudgesThatDoNotFitAreRejectedByKey() throws {
        let config = try writeConfig()
        let sequenceJudge = directory + "/sequence-judge"
        let trained = try MPIRun.run(ranks: 0, ["train", "--config", MPIRun.config("sequence-classification.yaml"), "--set", "training.max_steps=2",
                                                "--checkpoint-dir", sequenceJudge])
        XCTAssertEqual(trained.status, 0, trained.stderr)
        let cases: [([String], [String])] = [
            (["model.discriminator.3.out=2"], ["key 'model.discriminator'", "1 logit"]),
            (["model.generator.2.out=700"], ["key 'model.generator'", "784"]),
            (["gan.judge=\(directory)/missing"], ["key 'gan.judge'", "missing"]),
            (["gan.judge=\(sequenceJudge)"], ["key 'gan.judge'", "takes [15] per sample"]),
            (["training.accumulation_steps=2"], ["key 'training.accumulation_steps'"]),
        ]
        for (overrides, fragments) in cases {
            let run = try MPIRun.run(ranks: 0, ["train", "--config", config] + overrides.flatMap { ["--set", $0] })
            XCTAssertNotEqual(run.status, 0, "\(overrides)")
            for fragment in fragments { XCTAssertTrue(run.stderr.contains(fragment), "\(overrides): '\(fragment)' not in \(run.stderr)") }
        }
        // Commands over one model say this is a GAN config instead of failing somewhere inside.
        let evaluation = try MPIRun.run(ranks: 0, ["eval", "--config", config])
        XCTAssertNotEqual(evaluation.status, 0)
        XCTAssertTrue(evaluation.stderr.contains("key 'model.generator': this is a GAN config"), evaluation.stderr)
    }
}
