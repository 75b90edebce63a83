import Foundation
import XCTest

/// The classic toolbox through the real binary under mpirun: augmentation that every world size sees alike, the
/// classification report of `eval`, learning curves from `plot`, text classification, transfer learning, a perceptron
/// and an autoencoder, Keras-style validation and early stopping, and `predict`.
final class ToolboxTests: ScratchDirectoryTestCase {
    private let subset = ["--set", "data.train_subset=8192", "--set", "data.test_subset=1000", "--set", "training.epochs=10",
                          "--set", "distributed.check_every=10"]

    /// Shifts and flips are drawn from (seed, epoch, sample index): 2 ranks × 32 see the very samples 1 rank × 64 sees,
    /// so the runs agree within the derived bound, while augmentation itself changes training far beyond it.
    func testAugmentationIsTheSameOnEveryWorldSize() throws {
        let plain = ["train", "--config", MPIRun.config("fashion-mlp.yaml"), "--set", "training.max_steps=40"] + subset
        let augmented = plain + ["--set", "data.augmentation.padding=2", "--set", "data.augmentation.horizontal_flip=true"]
        let outcome = try Equivalence.measure(base: augmented, ranks: 2, batch: 32)
        Equivalence.assertHolds(outcome, ranks: 2, "augmented fashion-mlp 2×32 vs 1×64")
        let withAugmentation = directory + "/augmented.f32", without = directory + "/plain.f32"
        XCTAssertEqual(try MPIRun.run(ranks: 0, augmented + ["--set", "training.batch_size=64", "--dump-parameters", withAugmentation]).status, 0)
        XCTAssertEqual(try MPIRun.run(ranks: 0, plain + ["--set", "training.batch_size=64", "--dump-parameters", without]).status, 0)
        XCTAssertGreaterThan(MPIRun.relativeDifference(try MPIRun.floats(withAugmentation), try MPIRun.floats(without)), 100 * outcome.bound,
                             "augmentation must change what the model sees")
        let bad = try MPIRun.run(ranks: 0, plain + ["--set", "data.augmentation.padding=40"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("key 'data.augmentation.padding'"), bad.stderr)
    }

    /// `eval` prints per-class precision/recall/F1 and the confusion matrix, reduced over ranks, and appends them to the
    /// metrics file; `plot` draws the learning curves of a run's metrics file.
    func testEvalReportAndLearningCurves() throws {
        let checkpoints = directory + "/checkpoints", metrics = directory + "/metrics.jsonl"
        let train = try MPIRun.run(ranks: 2, ["train", "--config", MPIRun.config("fashion-mlp.yaml"), "--set", "training.epochs=3",
                                              "--set", "data.train_subset=4096", "--set", "data.test_subset=1000",
                                              "--checkpoint-dir", checkpoints, "--metrics", metrics])
        XCTAssertEqual(train.status, 0, train.stderr)
        let evaluation = try MPIRun.run(ranks: 2, ["eval", "--config", MPIRun.config("fashion-mlp.yaml"), "--set", "data.test_subset=1000",
                                                   "--checkpoint", checkpoints, "--metrics", metrics])
        XCTAssertEqual(evaluation.status, 0, evaluation.stderr)
        for text in ["precision", "recall", "macro avg", "weighted avg", "true \\ pred"] {
            XCTAssertTrue(evaluation.stdout.contains(text), "missing '\(text)': \(evaluation.stdout)")
        }
        // The report's support sums to the whole test set although each rank evaluated half of it.
        XCTAssertTrue(evaluation.stdout.split(separator: "\n").contains { $0.hasPrefix("accuracy") && $0.hasSuffix(" 1000") }, evaluation.stdout)
        let lines = try String(contentsOfFile: metrics, encoding: .utf8).split(separator: "\n")
        XCTAssertTrue(lines.last?.contains("\"event\":\"classification_report\"") == true, "\(lines.last ?? "")")

        let out = directory + "/plots"
        let plot = try MPIRun.run(ranks: 0, ["plot", metrics, "--out", out])
        XCTAssertEqual(plot.status, 0, plot.stderr)
        for name in ["curves-loss.svg", "curves-accuracy.svg"] {
            let svg = try String(contentsOfFile: out + "/" + name, encoding: .utf8)
            XCTAssertTrue(svg.hasPrefix("<svg") || svg.contains("<svg"), name)
            XCTAssertTrue(svg.contains("<polyline") || svg.contains("<path"), "\(name) has no curve")
        }
        let missing = try MPIRun.run(ranks: 0, ["plot", directory + "/none.jsonl", "--out", out])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("none.jsonl"), missing.stderr)
    }

    /// `label<TAB>text` lines with a known answer (positive lines carry words from one list, negative from another,
    /// in random filler): an embedding + LSTM classifier on 2 ranks learns it, and both ranks end identical.
    func testTextClassificationOnTwoRanks() throws {
        var generator = SplitMix(seed: 7)
        let positive = ["great", "superb", "lovely", "moving"], negative = ["awful", "boring", "dreadful", "weak"]
        let filler = ["the", "film", "was", "a", "plot", "and", "acting", "story", "really", "quite"]
        func line(_ label: Int) -> String {
            var words = (0..<6).map { _ in filler[generator.next(filler.count)] }
            words.insert((label == 1 ? positive : negative)[generator.next(4)], at: generator.next(words.count + 1))
            return "\(label == 1 ? "pos" : "neg")\t\(words.joined(separator: " "))"
        }
        let trainPath = directory + "/train.tsv", testPath = directory + "/test.tsv"
        try (0..<2048).map { line($0 % 2) }.joined(separator: "\n").write(toFile: trainPath, atomically: true, encoding: .utf8)
        try (0..<256).map { line($0 % 2) }.joined(separator: "\n").write(toFile: testPath, atomically: true, encoding: .utf8)
        let result = try MPIRun.run(ranks: 2, ["train", "--config", MPIRun.config("text-classification.yaml"), "--print-checksum",
                                               "--set", "data.path=\(trainPath)", "--set", "data.test_path=\(testPath)",
                                               "--set", "data.sequence_length=48", "--set", "training.epochs=4"], timeout: 600)
        XCTAssertEqual(result.status, 0, result.stderr)
        let accuracy = result.stdout.split(separator: "\n").first { $0.hasPrefix("done: test accuracy") }
            .flatMap { Double($0.split(separator: " ")[3].dropLast()) } ?? 0
        XCTAssertGreaterThan(accuracy, 0.9, result.stdout)
        let checksums = Set(result.stdout.split(separator: "\n").filter { $0.contains("parameter checksum") }.map { $0.split(separator: " ").last! })
        XCTAssertEqual(checksums.count, 1, result.stdout)
    }
}

extension ToolboxTests {
    /// Pre-train on classes 0–4, fine-tune on 5–9 from that checkpoint with the first linear layer frozen: the frozen
    /// layer ends bit-identical to the pre-trained one, the new head is reported as skipped, the optimizer keeps no
    /// state for frozen layers, and bad freeze or init_from settings name the key.
    func testTransferLearningLoadsMatchingTensorsAndKeepsFrozenLayersFixed() throws {
        let pretrained = directory + "/pretrain", fineTuned = directory + "/finetune"
        let pre = try MPIRun.run(ranks: 2, ["train", "--config", MPIRun.config("fashion-transfer-pretrain.yaml"), "--set", "training.epochs=1",
                                            "--set", "data.train_subset=4096", "--set", "data.test_subset=500",
                                            "--checkpoint-dir", pretrained, "--dump-parameters", directory + "/pre.f32"])
        XCTAssertEqual(pre.status, 0, pre.stderr)
        let base = ["train", "--config", MPIRun.config("fashion-transfer-finetune.yaml"), "--set", "model.init_from=\(pretrained)",
                    "--set", "data.test_subset=2000"]
        let tune = try MPIRun.run(ranks: 2, base + ["--checkpoint-dir", fineTuned, "--dump-parameters", directory + "/tuned.f32"])
        XCTAssertEqual(tune.status, 0, tune.stderr)
        XCTAssertTrue(tune.stdout.contains("loaded 5 tensors (layers.0.weight, layers.0.bias, layers.3.weight, layers.3.bias, layers.9.bias); "
                                           + "skipped layers.7.weight (shape [128, 1568] in the file, [96, 1568] here)"), tune.stdout)
        let frozenCount = (16 * 25 + 16) + (32 * 16 * 25 + 32)  // both convolutions
        let before = try MPIRun.floats(directory + "/pre.f32"), after = try MPIRun.floats(directory + "/tuned.f32")
        XCTAssertEqual(after.prefix(frozenCount).map(\.bitPattern), before.prefix(frozenCount).map(\.bitPattern), "frozen layers changed")
        XCTAssertNotEqual(after.suffix(5).map(\.bitPattern), before.suffix(5).map(\.bitPattern), "the head did not train")
        let inspection = try MPIRun.run(ranks: 0, ["checkpoint", "inspect", fineTuned])
        XCTAssertTrue(inspection.stdout.contains("optimizer.layers.7.weight.momentum_buffer"), inspection.stdout)
        XCTAssertFalse(inspection.stdout.contains("optimizer.layers.0."), "no optimizer state for frozen layers: \(inspection.stdout)")

        // The point of transfer learning: with 500 images and 12 steps, the pre-trained features beat the same model
        // trained from scratch. Measured margins in test loss 0.06–0.6 (5 seeds, BENCHMARKS.md); float rounding
        // across CPUs moves a 12-step run by ~1e-7.
        func testLoss(_ output: String) -> Double? {
            output.split(separator: "\n").first { $0.hasPrefix("done: test accuracy") }
                .flatMap { line in line.split(separator: " ").firstIndex(of: "loss").flatMap { Double(line.split(separator: " ")[$0 + 1].dropLast()) } }
        }
        for seed in [2, 3] {
            let transfer = seed == 2 ? tune : try MPIRun.run(ranks: 2, base + ["--set", "seed=\(seed)"])
            let scratch = try MPIRun.run(ranks: 2, base + ["--set", "seed=\(seed)", "--set", "model.init_from=", "--set", "model.freeze=[]"])
            XCTAssertEqual(scratch.status, 0, scratch.stderr)
            let transferLoss = try XCTUnwrap(testLoss(transfer.stdout), transfer.stdout)
            let scratchLoss = try XCTUnwrap(testLoss(scratch.stdout), scratch.stdout)
            XCTAssertLessThan(transferLoss, scratchLoss - 0.02, "seed \(seed): fine-tuned \(transferLoss) vs scratch \(scratchLoss)")
        }

        for (overrides, expected) in [(["--set", "model.freeze=[1]"], "key 'model.freeze': frozen layers must be the first ones"),
                                      (["--set", "model.freeze=[0, 12]"], "key 'model.freeze[1]': layer 12 does not exist"),
                                      (["--set", "model.init_from=\(directory)/missing"], "\(directory)/missing")] {
            let bad = try MPIRun.run(ranks: 0, base + overrides)
            XCTAssertNotEqual(bad.status, 0)
            XCTAssertTrue(bad.stderr.contains(expected), "\(overrides): \(bad.stderr)")
        }
    }
}

extension ToolboxTests {
    /// A perceptron (one linear unit, hinge loss) separates generated separable points on 2 ranks; an MLP autoencoder
    /// (targets = inputs) reconstructs Fashion-MNIST far better than the mean image (MSE 1 on normalized pixels)
    /// and writes a PNG of inputs and reconstructions.
    func testPerceptronAndAutoencoder() throws {
        func accuracy(_ output: String) -> Double {
            output.split(separator: "\n").first { $0.hasPrefix("done: test accuracy") }.flatMap { Double($0.split(separator: " ")[3].dropLast()) } ?? 0
        }
        let perceptron = try MPIRun.run(ranks: 2, ["train", "--config", MPIRun.config("perceptron.yaml")])
        XCTAssertEqual(perceptron.status, 0, perceptron.stderr)
        XCTAssertGreaterThanOrEqual(accuracy(perceptron.stdout), 0.98, perceptron.stdout)

        let images = directory + "/images"
        let autoencoder = try MPIRun.run(ranks: 2, ["train", "--config", MPIRun.config("fashion-autoencoder.yaml"), "--images", images,
                                                    "--set", "training.epochs=1", "--set", "data.train_subset=8192", "--set", "data.test_subset=1000"])
        XCTAssertEqual(autoencoder.status, 0, autoencoder.stderr)
        let loss = autoencoder.stdout.split(separator: "\n").first { $0.hasPrefix("done: test loss") }
            .flatMap { Double($0.split(separator: " ")[3].dropLast()) } ?? 1
        XCTAssertLessThan(loss, 0.6, autoencoder.stdout)
        let png = try Data(contentsOf: URL(fileURLWithPath: images + "/reconstructions-epoch-001.png"))
        XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
    }
}

extension ToolboxTests {
    /// Keras habits: validation_split holds out the end of the training set and reports it each epoch; early stopping
    /// ends the run once validation loss stops improving and keeps the best epoch's checkpoint as best.safetensors.
    func testValidationSplitAndEarlyStopping() throws {
        let checkpoints = directory + "/checkpoints", metrics = directory + "/metrics.jsonl"
        let run = try MPIRun.run(ranks: 2, ["train", "--config", MPIRun.config("fashion-mlp.yaml"), "--set", "data.train_subset=4096",
                                            "--set", "data.validation_split=0.25", "--set", "training.epochs=40",
                                            "--set", "training.early_stopping.patience=2", "--set", "training.early_stopping.min_delta=0.002",
                                            "--set", "optimizer.lr=0.1", "--set", "schedule.type=constant", "--set", "schedule.warmup_epochs=0",
                                            "--set", "checkpoint.every_epoch=false", "--checkpoint-dir", checkpoints, "--metrics", metrics])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stdout.contains("3072 training samples"), "a quarter of 4096 held out: \(run.stdout)")
        let stop = try XCTUnwrap(run.stdout.split(separator: "\n").first { $0.hasPrefix("early stopping: validation_loss") }, run.stdout)
        let bestEpoch = try XCTUnwrap(Int(stop.split(separator: " ").last { Int($0) != nil } ?? ""), String(stop))
        let epochs = try String(contentsOfFile: metrics, encoding: .utf8).split(separator: "\n").filter { $0.contains("\"event\":\"epoch\"") }
        XCTAssertLessThan(epochs.count, 40, "early stopping must end the run before its 40 epochs")
        XCTAssertEqual(epochs.count, bestEpoch + 2, "patience 2: two epochs without improvement after the best")
        XCTAssertTrue(epochs.allSatisfy { $0.contains("\"validation_loss\":") && $0.contains("\"validation_accuracy\":") })
        let inspection = try MPIRun.run(ranks: 0, ["checkpoint", "inspect", checkpoints + "/best.safetensors"])
        XCTAssertTrue(inspection.stdout.contains("checksum: OK"), inspection.stdout)
        XCTAssertTrue(inspection.stdout.contains("step: \(bestEpoch * 24)"), "best.safetensors is epoch \(bestEpoch) (24 steps each): \(inspection.stdout)")
        // Interrupted one epoch after the best (max_steps) and resumed: early stopping continues from the checkpointed
        // best and wait, so it stops at the same epoch with the same best as the uninterrupted run (a fresh start
        // would take the next epoch as its first best and stop two epochs later).
        let interrupted = directory + "/interrupted"
        let common = ["train", "--config", MPIRun.config("fashion-mlp.yaml"), "--set", "data.train_subset=4096",
                      "--set", "data.validation_split=0.25", "--set", "training.early_stopping.patience=2",
                      "--set", "training.early_stopping.min_delta=0.002", "--set", "optimizer.lr=0.1", "--set", "schedule.type=constant",
                      "--set", "schedule.warmup_epochs=0", "--checkpoint-dir", interrupted]
        let first = try MPIRun.run(ranks: 2, common + ["--set", "training.epochs=40", "--set", "training.max_steps=\((bestEpoch + 1) * 24)"])
        XCTAssertEqual(first.status, 0, first.stderr)
        let resumed = try MPIRun.run(ranks: 2, common + ["--set", "training.epochs=40", "--resume", "auto"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stdout.contains(String(stop)), "resumed: \(resumed.stdout)\nuninterrupted: \(stop)")

        let bad = try MPIRun.run(ranks: 0, ["train", "--config", MPIRun.config("fashion-mlp.yaml"), "--set", "training.early_stopping.patience=2"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("key 'training.early_stopping.metric': validation_loss needs data.validation_split"), bad.stderr)
    }
}

extension ToolboxTests {
    /// `predict` runs a checkpoint's model (its own config from the metadata) on a PGM image, an IDX image file and
    /// CSV rows, printing probabilities; an input of the wrong shape is an error naming the file and both shapes.
    func testPredictOnImagesAndCSV() throws {
        let checkpoints = directory + "/checkpoints"
        let train = try MPIRun.run(ranks: 2, ["train", "--config", MPIRun.config("fashion-mlp.yaml"), "--set", "training.epochs=1",
                                              "--set", "data.train_subset=2048", "--checkpoint-dir", checkpoints])
        XCTAssertEqual(train.status, 0, train.stderr)
        let pgm = directory + "/sample.pgm"
        var image = Data("P5\n# a gradient\n28 28\n255\n".utf8)
        image.append(contentsOf: (0..<784).map { UInt8($0 % 256) })
        try image.write(to: URL(fileURLWithPath: pgm))
        let one = try MPIRun.run(ranks: 0, ["predict", "--checkpoint", checkpoints, "--input", pgm])
        XCTAssertEqual(one.status, 0, one.stderr)
        let lines = one.stdout.split(separator: "\n")
        XCTAssertEqual(lines.first, "sample,p0,p1,p2,p3,p4,p5,p6,p7,p8,p9")
        let probabilities = try XCTUnwrap(lines.dropFirst().first).split(separator: ",").dropFirst().compactMap { Double($0) }
        XCTAssertEqual(probabilities.count, 10)
        XCTAssertEqual(probabilities.reduce(0, +), 1, accuracy: 1e-4)

        let many = try MPIRun.run(ranks: 0, ["predict", "--checkpoint", checkpoints, "--jsonl",
                                             "--input", "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"])
        XCTAssertEqual(many.status, 0, many.stderr)
        XCTAssertEqual(many.stdout.split(separator: "\n").filter { $0.hasPrefix("{\"sample\":") }.count, 10000)

        let csv = directory + "/rows.csv"
        try "a,b,c\n1,2,3\n4,5,6\n".write(toFile: csv, atomically: true, encoding: .utf8)
        let wrong = try MPIRun.run(ranks: 0, ["predict", "--checkpoint", checkpoints, "--input", csv])
        XCTAssertNotEqual(wrong.status, 0)
        XCTAssertTrue(wrong.stderr.contains("\(csv): samples of shape [3]") && wrong.stderr.contains("[1, 28, 28]"), wrong.stderr)
    }
}

/// A tiny seeded generator so the generated corpus is the same on every run.
private struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next(_ bound: Int) -> Int {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Int((z ^ (z >> 31)) % UInt64(bound))
    }
}
