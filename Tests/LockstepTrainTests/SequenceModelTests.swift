import Foundation
import XCTest
import LockstepCore
import LockstepData
import LockstepNN
@testable import LockstepTrain
@testable import LockstepConfig
@testable import LockstepBench
@testable import LockstepCLI
import LockstepComm

/// Sequence configs, layer wiring, the synthetic sequence task and text generation.
final class SequenceModelTests: XCTestCase {
    private let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func testSequenceConfigsBuild() throws {
        let expected: [String: [Int]] = ["text-lstm.yaml": [64, 40], "text-transformer.yaml": [64, 40], "sequence-classification.yaml": [2]]
        for (name, outputShape) in expected {
            let config = try TrainingConfig.load(file: root.appendingPathComponent("configs/\(name)").path)
            XCTAssertGreaterThan(config.clipGradientNorm, 0, "\(name): clipping is on for sequence models")
            let shape = [config.data.sequenceLength]
            let model = try ModelBuilder.build(config.layers, inputShape: shape, classCount: name.hasPrefix("text") ? 40 : 2)
            XCTAssertEqual(model.outputShape, outputShape, name)
        }
    }

    func testRecurrentModelsClipByDefault() throws {
        let yaml = """
        data: {dataset: sequence-synthetic, sequence_length: 5}
        model: {layers: [{type: embedding, vocab: 2, dim: 3}, {type: gru, hidden: 4}, {type: last_time_step}, {type: linear, out: 2}]}
        optimizer: {lr: 0.1}
        """
        XCTAssertEqual(try TrainingConfig.parse(yaml: yaml, source: "t").clipGradientNorm, 1)
        XCTAssertEqual(try TrainingConfig.parse(yaml: yaml, source: "t", overrides: ["training.clip_grad_norm=0"]).clipGradientNorm, 0)
        let mlp = "model: {layers: [{type: linear, out: 2}]}\noptimizer: {lr: 0.1}"
        XCTAssertEqual(try TrainingConfig.parse(yaml: mlp, source: "t").clipGradientNorm, 0)
    }

    func testSequenceLayerErrorsNameTheLayer() throws {
        let yaml = "model: {layers: [{type: lstm, hidden: 4}]}\noptimizer: {lr: 0.1}"
        XCTAssertThrowsError(try ModelBuilder.build(try TrainingConfig.parse(yaml: yaml, source: "t").layers, inputShape: [8])) { error in
            XCTAssertTrue("\(error)".contains("model.layers[0]") && "\(error)".contains("embedding"), "\(error)")
        }
        let heads = "model: {layers: [{type: embedding, vocab: 3, dim: 6}, {type: attention, heads: 4}]}\noptimizer: {lr: 0.1}"
        XCTAssertThrowsError(try ModelBuilder.build(try TrainingConfig.parse(yaml: heads, source: "t").layers, inputShape: [8])) { error in
            XCTAssertTrue("\(error)".contains("model.layers[1]"), "\(error)")
        }
    }

    func testMajorityTaskLabelsAreTheKnownAnswer() {
        let (train, test) = DatasetLoader.syntheticMajority(samples: 400, length: 7, seed: 3)
        XCTAssertEqual(train.count, 400)
        XCTAssertEqual(test.count, 100)
        var positives = 0
        for i in 0..<train.count {
            let ones = train.features[(i * 7)..<(i * 7 + 7)].reduce(0, +)
            XCTAssertEqual(train.targets[i], ones > 3.5 ? 1 : 0)
            positives += Int(train.targets[i])
        }
        XCTAssertTrue((150...250).contains(positives), "labels are balanced: \(positives)/400")
        XCTAssertEqual(DatasetLoader.syntheticMajority(samples: 400, length: 7, seed: 3).0.features, train.features, "seeded")
        XCTAssertNotEqual(test.features, Array(train.features[0..<700]), "test comes from its own stream")
    }

    func testSamplingFollowsTemperature() {
        let logits: [Float] = [0, 3, 1]
        var scratch = [Double](repeating: 0, count: 3)
        var rng = RNG(seed: 1)
        logits.withUnsafeBufferPointer { pointer in
            XCTAssertEqual(TextGenerator.sample(pointer.baseAddress!, count: 3, temperature: 0, rng: &rng, scratch: &scratch), 1)
            var counts = [0, 0, 0]
            for _ in 0..<4000 { counts[TextGenerator.sample(pointer.baseAddress!, count: 3, temperature: 1, rng: &rng, scratch: &scratch)] += 1 }
            // softmax([0, 3, 1]) = [0.042, 0.844, 0.114]
            XCTAssertEqual(Double(counts[1]) / 4000, 0.844, accuracy: 0.03)
            XCTAssertEqual(Double(counts[0]) / 4000, 0.042, accuracy: 0.015)
        }
    }

    func testGenerationIsSeededAndUsesTheVocabulary() throws {
        let directory = NSTemporaryDirectory() + "lockstep-generate-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let corpus = directory + "/corpus.txt"
        try String(repeating: "the cat sat on the mat. ", count: 20).write(toFile: corpus, atomically: true, encoding: .utf8)
        let yaml = """
        data: {dataset: text, path: \(corpus), sequence_length: 8}
        model: {layers: [{type: embedding, dim: 4}, {type: lstm, hidden: 8}, {type: sequence_linear}]}
        loss: sequence_cross_entropy
        optimizer: {lr: 0.1}
        """
        let config = try TrainingConfig.parse(yaml: yaml, source: "t")
        let text = try TextDataset.load(path: corpus, sequenceLength: 8, stride: 8)
        let model = try ModelBuilder.build(config.layers, inputShape: [8], classCount: text.vocabularySize)
        model.initialize(rng: RNG(seed: 5))
        let parameters = Data(buffer: UnsafeBufferPointer(model.parameters.values.buffer))
        let generator = try TextGenerator(config: config, parameters: parameters)
        let first = try generator.generate(prompt: "the ", length: 30, temperature: 1, seed: 9)
        XCTAssertEqual(try generator.generate(prompt: "the ", length: 30, temperature: 1, seed: 9), first)
        XCTAssertNotEqual(try generator.generate(prompt: "the ", length: 30, temperature: 1, seed: 10), first)
        XCTAssertTrue(first.hasPrefix("the "))
        XCTAssertEqual(first.utf8.count, 34)
        XCTAssertTrue(Set(first.utf8).isSubset(of: Set(text.vocabulary)))
        XCTAssertThrowsError(try generator.generate(prompt: "dog", length: 1, temperature: 1, seed: 0), "'d' is not in the corpus")
        XCTAssertThrowsError(try TextGenerator(config: config, parameters: parameters.prefix(8)))
    }
}
