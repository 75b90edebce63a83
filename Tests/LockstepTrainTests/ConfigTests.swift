import XCTest
@testable import LockstepTrain
@testable import LockstepConfig
@testable import LockstepBench
@testable import LockstepCLI
import LockstepComm
import LockstepNN

final class ConfigTests: XCTestCase {
    let minimal = """
    data: {dataset: linear-synthetic, samples: 256, features: 4}
    model:
      layers:
        - {type: linear, out: 1}
    loss: mse
    optimizer: {type: sgd, lr: 0.1}
    """

    private func assertConfigError(_ yaml: String, overrides: [String] = [], contains fragments: [String],
                                   file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try TrainingConfig.parse(yaml: yaml, source: "test.yaml", overrides: overrides), file: file, line: line) { error in
            let text = "\(error)"
            for fragment in fragments { XCTAssertTrue(text.contains(fragment), "'\(text)' lacks '\(fragment)'", file: file, line: line) }
        }
    }

    func testShippedConfigsParseAndBuild() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let expectedParameters = ["fashion-mlp.yaml": 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10,
                                  "fashion-cnn.yaml": 32 * 25 + 32 + 64 * 32 * 25 + 64 + 3136 * 1024 + 1024 + 1024 * 10 + 10,
                                  "fashion-logreg.yaml": 7850,
                                  "linear-regression.yaml": 9]
        for name in ["fashion-mlp.yaml", "fashion-cnn.yaml", "fashion-cnn-bn.yaml", "fashion-logreg.yaml", "linear-regression.yaml"] {
            let config = try TrainingConfig.load(file: root.appendingPathComponent("configs/\(name)").path)
            let inputShape = config.inputShape ?? (config.data.dataset == .linearSynthetic ? [config.data.syntheticFeatures] : [1, 28, 28])
            let model = try ModelBuilder.build(config.layers, inputShape: inputShape)
            if let expected = expectedParameters[name] { XCTAssertEqual(model.parameters.count, expected, name) }
            XCTAssertEqual(model.outputWidth, name == "linear-regression.yaml" ? 1 : 10, name)
        }
    }

    func testDefaultsAndOverridesOnAnyKey() throws {
        let config = try TrainingConfig.parse(yaml: minimal, source: "t", overrides: [
            "optimizer.lr=0.25", "training.batch_size=8", "distributed.overlap=thread", "model.layers.0.out=1",
            "optimizer.momentum=0.9", "schedule.type=cosine", "seed=5"])
        XCTAssertEqual(config.optimizer.learningRate, 0.25)
        XCTAssertEqual(config.batchSize, 8)
        XCTAssertEqual(config.distributed.overlap, .thread)
        XCTAssertEqual(config.optimizer.momentum, 0.9)
        XCTAssertEqual(config.schedule.type, .cosine)
        XCTAssertEqual(config.seed, 5)
        XCTAssertEqual(config.epochs, 1)
        XCTAssertEqual(config.distributed.bucketMiB, 1)
        XCTAssertEqual(config.distributed.transport, .auto)
        let auto = try TrainingConfig.parse(yaml: minimal, source: "t", overrides: ["distributed.bucket_mb=auto"])
        XCTAssertNil(auto.distributed.bucketMiB)
        XCTAssertNotEqual(auto.hash, config.hash)
    }

    /// YAML reads unquoted true/false as booleans; the documented `prefetch: auto | true | false` must take them.
    func testTrueAndFalseWordsAcceptYAMLBooleans() throws {
        for (text, expected) in [("false", TrainingOptions.Prefetch.off), ("true", .on), ("auto", .auto), ("\"false\"", .off)] {
            let config = try TrainingConfig.parse(yaml: minimal, source: "t", overrides: ["data.prefetch=\(text)"])
            XCTAssertEqual(config.data.prefetch, expected, text)
        }
        XCTAssertThrowsError(try TrainingConfig.parse(yaml: minimal, source: "t", overrides: ["data.prefetch=sometimes"]))
        for (text, expected) in [("auto", TrainingConfig.ShardOptimizerChoice.auto), ("true", .on), ("false", .off)] {
            let config = try TrainingConfig.parse(yaml: minimal, source: "t", overrides: ["distributed.shard_optimizer=\(text)"])
            XCTAssertEqual(config.shardOptimizer, expected, text)
            XCTAssertEqual(config.distributed.shardOptimizer, expected == .on, text)
        }
    }

    func testConfigHashFollowsTheResolvedValuesNotTheText() throws {
        let a = try TrainingConfig.parse(yaml: minimal, source: "t")
        let b = try TrainingConfig.parse(yaml: minimal + "\n# a comment\n", source: "t")
        let c = try TrainingConfig.parse(yaml: minimal, source: "t", overrides: ["optimizer.lr=0.2"])
        XCTAssertEqual(a.hash, b.hash)
        XCTAssertNotEqual(a.hash, c.hash)
    }

    func testUnknownKeysAreRejectedWithTheirPath() {
        assertConfigError(minimal + "\ntraining: {batch_sise: 4}", contains: ["test.yaml", "training.batch_sise", "unknown key"])
        assertConfigError(minimal, overrides: ["optimizer.learning_rate=0.1"], contains: ["optimizer.learning_rate", "unknown key"])
        assertConfigError(minimal + "\nfoo: 1", contains: ["'foo'", "unknown key"])
        let typo = minimal.replacingOccurrences(of: "{type: linear, out: 1}", with: "{type: linear, out: 1, outs: 2}")
        XCTAssertThrowsError(try ModelBuilder.build(try TrainingConfig.parse(yaml: typo, source: "t").layers, inputShape: [4])) { error in
            XCTAssertTrue("\(error)".contains("model.layers[0].outs"), "\(error)")
            XCTAssertTrue("\(error)".contains("unknown key"), "\(error)")
        }
    }

    func testWrongTypesAndRangesAreRejected() {
        assertConfigError(minimal, overrides: ["training.batch_size=abc"], contains: ["training.batch_size", "expected an integer"])
        assertConfigError(minimal, overrides: ["training.batch_size=0"], contains: ["training.batch_size", "out of range"])
        assertConfigError(minimal, overrides: ["optimizer.lr=-1"], contains: ["optimizer.lr", "out of range"])
        assertConfigError(minimal, overrides: ["optimizer.type=lbfgs"], contains: ["optimizer.type", "lbfgs", "sgd"])
        assertConfigError(minimal, overrides: ["distributed.transport=rdma"], contains: ["distributed.transport", "rdma", "shared_memory"])
        assertConfigError(minimal, overrides: ["distributed.bucket_mb=fast"], contains: ["distributed.bucket_mb", "'fast'", "or auto"])
        assertConfigError(minimal, overrides: ["distributed.bucket_mb=0"], contains: ["distributed.bucket_mb", "out of range"])
        assertConfigError(minimal, overrides: ["distributed.deterministic=maybe"], contains: ["distributed.deterministic", "true or false"])
        assertConfigError(minimal, overrides: ["optimizer.nesterov=true"], contains: ["optimizer.nesterov", "momentum"])
        assertConfigError("model: [1, 2]", contains: ["model", "expected a mapping"])
        assertConfigError("data: {dataset: linear-synthetic}\nmodel: {layers: []}\noptimizer: {lr: 0.1}", contains: ["model.layers", "at least one layer"])
        assertConfigError(minimal.replacingOccurrences(of: "lr: 0.1", with: "momentum: 0.5"), contains: ["optimizer.lr", "missing"])
        assertConfigError("data: [", contains: ["test.yaml", "not valid YAML"])
        assertConfigError(minimal, overrides: ["novalue"], contains: ["--set", "key.path=value"])
    }

    func testRMSpropAndAdagradKeys() throws {
        let rmsprop = try TrainingConfig.parse(yaml: minimal, source: "t", overrides: ["optimizer.type=rmsprop", "optimizer.l1=0.001"])
        XCTAssertEqual(rmsprop.optimizer.alpha, 0.99)
        XCTAssertEqual(rmsprop.optimizer.epsilon, 1e-8)
        XCTAssertFalse(rmsprop.optimizer.centered)
        XCTAssertEqual(rmsprop.optimizer.l1, 0.001)
        let adagrad = try TrainingConfig.parse(yaml: minimal, source: "t", overrides: ["optimizer.type=adagrad", "optimizer.lr_decay=0.01",
                                                                                      "optimizer.initial_accumulator_value=0.1"])
        XCTAssertEqual(adagrad.optimizer.epsilon, 1e-10, "PyTorch's Adagrad default")
        XCTAssertEqual(adagrad.optimizer.learningRateDecay, 0.01)
        XCTAssertEqual(adagrad.optimizer.initialAccumulatorValue, 0.1)
        XCTAssertEqual(adagrad.optimizer.l1, 0)
        XCTAssertEqual(try TrainingConfig.parse(yaml: minimal, source: "t").optimizer.epsilon, 1e-8)

        let asRMSprop = ["optimizer.type=rmsprop"]
        assertConfigError(minimal, overrides: asRMSprop + ["optimizer.alpha=1.5"], contains: ["optimizer.alpha", "out of range"])
        assertConfigError(minimal, overrides: asRMSprop + ["optimizer.centered=yes please"], contains: ["optimizer.centered", "true or false"])
        assertConfigError(minimal, overrides: ["optimizer.l1=-0.1"], contains: ["optimizer.l1", "out of range"])
        assertConfigError(minimal, overrides: ["optimizer.type=adagrad", "optimizer.lr_decay=-1"], contains: ["optimizer.lr_decay", "out of range"])
        assertConfigError(minimal, overrides: ["optimizer.type=adagrad", "optimizer.initial_accumulator_value=x"],
                          contains: ["optimizer.initial_accumulator_value", "expected a number"])
        // Options of another optimizer would be ignored silently.
        assertConfigError(minimal, overrides: ["optimizer.alpha=0.9"], contains: ["optimizer.alpha", "only optimizer.type rmsprop", "sgd"])
        assertConfigError(minimal, overrides: ["optimizer.type=adam", "optimizer.centered=true"], contains: ["optimizer.centered", "rmsprop"])
        assertConfigError(minimal, overrides: asRMSprop + ["optimizer.lr_decay=0.1"], contains: ["optimizer.lr_decay", "only optimizer.type adagrad"])
        assertConfigError(minimal, overrides: asRMSprop + ["optimizer.initial_accumulator_value=0.1"],
                          contains: ["optimizer.initial_accumulator_value", "adagrad"])
        assertConfigError(minimal, overrides: ["optimizer.type=rmsprop_v2"], contains: ["optimizer.type", "rmsprop, adagrad"])
    }

    func testSoftmaxInFrontOfCrossEntropyIsRejected() throws {
        let classifier = """
        optimizer: {lr: 0.1}
        model:
          layers:
            - {type: flatten}
            - {type: linear, out: 10}
            - {type: softmax}
        """
        assertConfigError(classifier, contains: ["key 'model.layers[2]'", "softmax before loss cross_entropy applies softmax twice",
                                                 "remove the layer", "takes logits"])
        assertConfigError(classifier + "\n    - {type: dropout, p: 0.1}", contains: ["model.layers[2]", "softmax twice"])
        let sequence = """
        data: {dataset: sequence-synthetic}
        model: {layers: [{type: embedding, vocab: 2, dim: 4}, {type: sequence_linear, out: 2}, {type: softmax}]}
        loss: sequence_cross_entropy
        optimizer: {lr: 0.1}
        """
        assertConfigError(sequence, contains: ["model.layers[2]", "softmax before loss sequence_cross_entropy"])
        // Softmax elsewhere, or in front of another loss, is allowed.
        XCTAssertNoThrow(try TrainingConfig.parse(yaml: classifier, source: "t", overrides: ["loss=mse"]))
        let inside = classifier.replacingOccurrences(of: "- {type: softmax}", with: "- {type: softmax}\n    - {type: linear, out: 10}")
        XCTAssertNoThrow(try TrainingConfig.parse(yaml: inside, source: "t"))
    }

    func testImpossibleShapesAreRejectedBeforeTraining() throws {
        let conv = minimal.replacingOccurrences(of: "{type: linear, out: 1}", with: "{type: conv2d, out: 4, kernel: 3}")
        let config = try TrainingConfig.parse(yaml: conv, source: "t")
        XCTAssertThrowsError(try ModelBuilder.build(config.layers, inputShape: [4])) { error in
            XCTAssertTrue("\(error)".contains("model.layers[0]"), "\(error)")
            XCTAssertTrue("\(error)".contains("[channels, height, width]"), "\(error)")
        }
        let big = minimal.replacingOccurrences(of: "{type: linear, out: 1}", with: "{type: conv2d, out: 4, kernel: 9}")
        XCTAssertThrowsError(try ModelBuilder.build(try TrainingConfig.parse(yaml: big, source: "t").layers, inputShape: [1, 5, 5])) { error in
            XCTAssertTrue("\(error)".contains("model.layers[0]"), "\(error)")
        }
        let unknown = minimal.replacingOccurrences(of: "{type: linear, out: 1}", with: "{type: capsule, out: 1}")
        XCTAssertThrowsError(try ModelBuilder.build(try TrainingConfig.parse(yaml: unknown, source: "t").layers, inputShape: [4])) { error in
            XCTAssertTrue("\(error)".contains("unknown layer 'capsule'"), "\(error)")
        }
    }

    func testConvolutionAlgorithmKey() throws {
        func build(_ layer: String, inputShape: [Int] = [8, 9, 9]) throws -> Sequential {
            let yaml = minimal.replacingOccurrences(of: "{type: linear, out: 1}", with: layer)
            return try ModelBuilder.build(try TrainingConfig.parse(yaml: yaml, source: "t").layers, inputShape: inputShape)
        }
        func conv(_ model: Sequential) -> Conv2D { model.layers[0] as! Conv2D }
        XCTAssertTrue(conv(try build("{type: conv2d, out: 4, kernel: 5, padding: 2}")).usesWinograd)
        XCTAssertFalse(conv(try build("{type: conv2d, out: 4, kernel: 5, padding: 2, algorithm: im2col}")).usesWinograd)
        XCTAssertTrue(conv(try build("{type: conv2d, out: 4, kernel: 3, algorithm: winograd}")).usesWinograd)
        XCTAssertThrowsError(try build("{type: conv2d, out: 4, kernel: 3, algorithm: fft}")) { error in
            XCTAssertTrue("\(error)".contains("model.layers[0].algorithm"), "\(error)")
            XCTAssertTrue("\(error)".contains("auto, im2col, winograd"), "\(error)")
        }
        XCTAssertThrowsError(try build("{type: conv2d, out: 4, kernel: 3, stride: 2, algorithm: winograd}")) { error in
            XCTAssertTrue("\(error)".contains("model.layers[0]"), "\(error)")
            XCTAssertTrue("\(error)".contains("winograd needs stride 1"), "\(error)")
        }
    }

    func testMissingConfigFileNamesThePath() {
        XCTAssertThrowsError(try TrainingConfig.load(file: "/nonexistent/x.yaml")) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent/x.yaml"))
        }
    }
}
