import Foundation
import LockstepCore
import LockstepNN

/// What a trained classifier says about a set of generated images: how they spread over its classes and how sure
/// it is of each, a quality figure that needs no download (no Inception network). A generator that covers every
/// class gives an entropy near log2(classes); recognisable samples give a confidence near the real images'.
public struct GANJudgement: Sendable, Equatable {
    /// Samples the classifier put into each class (its arg-max).
    public var classCounts: [Int]
    /// Mean over samples of the largest softmax probability.
    public var meanConfidence: Double

    /// Samples judged.
    public var sampleCount: Int { classCounts.reduce(0, +) }

    /// Entropy of the class histogram in bits (log2 of the class count when every class is equally frequent).
    public var entropyBits: Double {
        let total = Double(max(sampleCount, 1))
        return -classCounts.reduce(0.0) { sum, count in
            count == 0 ? sum : sum + Double(count) / total * log2(Double(count) / total)
        }
    }

    /// e.g. `classes [98 103 …] entropy 3.30 of 3.32 bits, mean confidence 0.874 (1000 samples)`.
    public var line: String {
        String(format: "classes [%@] entropy %.2f of %.2f bits, mean confidence %.3f (%d samples)",
               classCounts.map(String.init).joined(separator: " "), entropyBits, log2(Double(max(classCounts.count, 1))),
               meanConfidence, sampleCount)
    }

    /// Creates a judgement from counts and confidence.
    public init(classCounts: [Int], meanConfidence: Double) {
        self.classCounts = classCounts; self.meanConfidence = meanConfidence
    }
}

/// A classifier (a trained `Sequential` whose outputs are class logits) judging generated images. Samples are mapped
/// per channel to the classifier's input scale first (`input = sample × scale + offset`), since a GAN's pixels
/// (e.g. [−1, 1]) are rarely what the classifier was trained on (e.g. standardized).
public final class GANJudge {
    /// The classifier, inference mode only.
    public let classifier: Sequential
    /// Per channel: classifier input = sample × scale + offset.
    public let scale: [Float], offset: [Float]
    private let batchSize = 500
    private let input: FloatBuffer

    /// Throws when the classifier has fewer than two outputs or the channel maps do not divide its input.
    public init(classifier: Sequential, scale: [Float], offset: [Float]) throws {
        guard classifier.outputWidth >= 2 else {
            throw ConfigError("key 'gan.judge': a judge must be a classifier with one logit per class, this model gives \(classifier.outputShape)")
        }
        guard !scale.isEmpty, scale.count == offset.count, classifier.inputWidth % scale.count == 0 else {
            throw ConfigError("key 'gan.judge': \(scale.count) channel scales do not divide the classifier's input \(classifier.inputShape)")
        }
        self.classifier = classifier; self.scale = scale; self.offset = offset
        classifier.plan(batchSize: batchSize)
        input = FloatBuffer(count: batchSize * classifier.inputWidth)
    }

    /// Class histogram and mean confidence of `samples` ([count, classifier input width], in the generator's scale).
    public func judge(_ samples: [Float]) -> GANJudgement {
        let width = classifier.inputWidth, classes = classifier.outputWidth
        let plane = width / scale.count, count = samples.count / width
        var counts = [Int](repeating: 0, count: classes), confidence = 0.0
        var probabilities = [Float](repeating: 0, count: classes)
        var position = 0
        while position < count {
            let n = min(batchSize, count - position)
            for i in 0..<(n * width) {
                let channel = (i % width) / plane
                input.pointer[i] = samples[position * width + i] * scale[channel] + offset[channel]
            }
            let logits = classifier.forward(input.pointer, batch: n, context: LayerContext(training: false))
            for row in 0..<n {
                probabilities.withUnsafeMutableBufferPointer { Kernels.softmax(logits + row * classes, into: $0.baseAddress!, count: classes) }
                let best = probabilities.indices.max { probabilities[$0] < probabilities[$1] }!
                counts[best] += 1
                confidence += Double(probabilities[best])
            }
            position += n
        }
        return GANJudgement(classCounts: counts, meanConfidence: confidence / Double(max(count, 1)))
    }
}
