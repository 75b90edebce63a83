import Foundation
import LockstepCore

/// A data-loading failure; the message names the file and what is wrong with it.
public struct DataError: Error, CustomStringConvertible, LocalizedError {
    /// The file (or directory) concerned.
    public var file: String
    /// What is wrong and, where it helps, what to do about it.
    public var reason: String

    /// Creates an error about `file`.
    public init(file: String, _ reason: String) { self.file = file; self.reason = reason }

    /// "<file>: <reason>".
    public var description: String { "\(file): \(reason)" }
    /// Same as `description`, so `localizedDescription` is useful too.
    public var errorDescription: String? { description }
}

/// Which half of a dataset with a fixed train/test split to read.
public enum DataSplit: String, Sendable {
    /// The training files.
    case train
    /// The held-out test files.
    case test
}

/// An in-memory dataset: `count` samples of `featureWidth` floats and `targetWidth` target values, row-major.
public struct Dataset: Sendable {
    /// Features, [count, featureWidth] row-major.
    public var features: [Float]
    /// Targets, [count, targetWidth] row-major; class indices are stored as Float for classification.
    public var targets: [Float]
    /// Shape of one sample's features, e.g. [1, 28, 28]; its product is `featureWidth`.
    public var sampleShape: [Int]
    /// Target values per sample (1 for a class index or a scalar regression target).
    public var targetWidth: Int
    /// Number of classes for classification, nil for regression.
    public var classCount: Int?
    /// Token-id datasets whose ids are not class ids (labelled text): ids lie in 0..<vocabularySize.
    public var vocabularySize: Int?
    /// Number of samples.
    public let count: Int

    /// Wraps existing arrays; the sizes must agree with `sampleShape` and `targetWidth`.
    public init(features: [Float], targets: [Float], sampleShape: [Int], targetWidth: Int = 1, classCount: Int? = nil) {
        let width = sampleShape.reduce(1, *)
        precondition(width > 0 && targetWidth > 0, "Dataset needs a non-empty sample shape and target width")
        precondition(features.count % width == 0, "Dataset features (\(features.count)) are not a multiple of \(sampleShape)")
        let count = features.count / width
        precondition(targets.count == count * targetWidth,
                     "Dataset has \(count) samples but \(targets.count) targets for target width \(targetWidth)")
        self.features = features; self.targets = targets; self.sampleShape = sampleShape
        self.targetWidth = targetWidth; self.classCount = classCount; self.count = count
    }

    /// Floats per sample.
    public var featureWidth: Int { sampleShape.reduce(1, *) }

    /// The first `n` samples (all of them when `n` is 0 or at least `count`).
    public func subset(first n: Int) -> Dataset {
        guard n > 0 && n < count else { return self }
        var result = Dataset(features: Array(features[0..<(n * featureWidth)]), targets: Array(targets[0..<(n * targetWidth)]),
                             sampleShape: sampleShape, targetWidth: targetWidth, classCount: classCount)
        result.vocabularySize = vocabularySize
        return result
    }

    /// The samples in `range`, in order.
    public func range(_ range: Range<Int>) -> Dataset {
        var result = Dataset(features: Array(features[(range.lowerBound * featureWidth)..<(range.upperBound * featureWidth)]),
                             targets: Array(targets[(range.lowerBound * targetWidth)..<(range.upperBound * targetWidth)]),
                             sampleShape: sampleShape, targetWidth: targetWidth, classCount: classCount)
        result.vocabularySize = vocabularySize
        return result
    }

    /// The same samples with the features as targets (an autoencoder learns to reproduce its input).
    public func reconstructingInput() -> Dataset {
        Dataset(features: features, targets: features, sampleShape: sampleShape, targetWidth: featureWidth, classCount: nil)
    }

    /// The samples of `classes` only, relabelled 0, 1, … in the order listed (e.g. Fashion-MNIST classes 5…9 as a
    /// 5-class task for transfer learning). Needs one class index per sample.
    public func selecting(classes: [Int]) -> Dataset {
        precondition(targetWidth == 1, "selecting classes needs one class index per sample, this dataset has \(targetWidth) targets")
        let relabel = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($0.element, $0.offset) })
        var keptFeatures: [Float] = [], keptTargets: [Float] = []
        for sample in 0..<count {
            guard let label = relabel[Int(targets[sample])] else { continue }
            keptFeatures.append(contentsOf: features[(sample * featureWidth)..<((sample + 1) * featureWidth)])
            keptTargets.append(Float(label))
        }
        return Dataset(features: keptFeatures, targets: keptTargets, sampleShape: sampleShape, targetWidth: 1, classCount: classes.count)
    }

    /// Copies the samples at `indices` (in order) into `features` ([k, featureWidth]) and `targets` ([k, targetWidth]).
    ///
    /// Allocates nothing, so it can run on every step.
    @inline(__always)
    public func gather<Indices: Collection>(_ indices: Indices, features destination: UnsafeMutablePointer<Float>,
                                            targets targetDestination: UnsafeMutablePointer<Float>) where Indices.Element == Int {
        let width = featureWidth, targetWidth = targetWidth
        features.withUnsafeBufferPointer { source in
            targets.withUnsafeBufferPointer { targetSource in
                var row = 0
                for index in indices {
                    precondition(index >= 0 && index < count, "gather index \(index) outside 0..<\(count)")
                    (destination + row * width).update(from: source.baseAddress! + index * width, count: width)
                    (targetDestination + row * targetWidth).update(from: targetSource.baseAddress! + index * targetWidth,
                                                                   count: targetWidth)
                    row += 1
                }
            }
        }
    }

    /// Multiplies every feature by `factor` (e.g. 1/255 for bytes).
    public mutating func scale(by factor: Float) {
        features.withUnsafeMutableBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            Kernels.scale(base, by: factor, count: buffer.count)
        }
    }

    /// Mean and standard deviation (population) over all features, accumulated in Double.
    public func featureStatistics() -> (mean: Float, standardDeviation: Float) {
        let statistics = channelStatistics(channels: 1)
        return (statistics.means[0], statistics.standardDeviations[0])
    }

    /// Per-channel mean and standard deviation, channels being the first axis of `sampleShape` (CHW images).
    public func channelStatistics() -> (means: [Float], standardDeviations: [Float]) {
        channelStatistics(channels: sampleShape.count > 1 ? sampleShape[0] : 1)
    }

    private func channelStatistics(channels: Int) -> (means: [Float], standardDeviations: [Float]) {
        let plane = featureWidth / channels
        var sums = [Double](repeating: 0, count: channels), squares = sums
        features.withUnsafeBufferPointer { buffer in
            for sample in 0..<count {
                for channel in 0..<channels {
                    let start = sample * featureWidth + channel * plane
                    for i in start..<(start + plane) {
                        let value = Double(buffer[i])
                        sums[channel] += value; squares[channel] += value * value
                    }
                }
            }
        }
        let n = Double(max(count * plane, 1))
        let means = sums.map { $0 / n }
        let deviations = zip(squares, means).map { max($0 / n - $1 * $1, 0).squareRoot() }
        return (means.map { Float($0) }, deviations.map { Float($0) })
    }

    /// Applies (x - mean) / standardDeviation to every feature; pass the training set's statistics to the test set.
    public mutating func normalize(mean: Float, standardDeviation: Float) {
        normalize(channelMeans: [mean], channelStandardDeviations: [standardDeviation])
    }

    /// Per-channel (x - mean[c]) / std[c] over the first axis of `sampleShape`; a single value applies to all channels.
    public mutating func normalize(channelMeans: [Float], channelStandardDeviations: [Float]) {
        precondition(channelMeans.count == channelStandardDeviations.count && !channelMeans.isEmpty,
                     "normalize needs one mean and one standard deviation per channel")
        let channels = channelMeans.count
        precondition(channels == 1 || (sampleShape.count > 1 && sampleShape[0] == channels),
                     "normalize got \(channels) channels for sample shape \(sampleShape)")
        let plane = featureWidth / channels
        // A constant feature has std 0; dividing by 1 instead keeps it finite (it becomes 0).
        let inverse = channelStandardDeviations.map { $0 > 0 ? 1 / $0 : 1 }
        let (width, count) = (featureWidth, count)
        features.withUnsafeMutableBufferPointer { buffer in
            for sample in 0..<count {
                for channel in 0..<channels {
                    let start = buffer.baseAddress! + sample * width + channel * plane
                    let (mean, scale) = (channelMeans[channel], inverse[channel])
                    for i in 0..<plane { start[i] = (start[i] - mean) * scale }
                }
            }
        }
    }

    /// Normalizes with this dataset's own overall mean and standard deviation and returns them.
    @discardableResult
    public mutating func normalize() -> (mean: Float, standardDeviation: Float) {
        let statistics = featureStatistics()
        normalize(mean: statistics.mean, standardDeviation: statistics.standardDeviation)
        return statistics
    }
}
