import LockstepCore
import LockstepData
import LockstepTrain

/// Loads the train and test sets a config names; features normalized with the training set's statistics.
public enum DatasetLoader {
    /// Both splits, subset as configured; errors name the file and what is wrong.
    public static func load(_ data: TrainingConfig.Data, seed: UInt64) throws -> (train: Dataset, test: Dataset) {
        let loaded = try loadWithStatistics(data, seed: seed)
        return (loaded.train, loaded.test)
    }

    /// Both splits and the per-channel statistics they were normalized with (nil where features stay as read), so
    /// new samples (`lockstep predict`) can be normalized the same way.
    public static func loadWithStatistics(_ data: TrainingConfig.Data, seed: UInt64)
        throws -> (train: Dataset, test: Dataset, statistics: (means: [Float], standardDeviations: [Float])?) {
        var train: Dataset, test: Dataset
        switch data.dataset {
        case .fashionMNIST, .mnist:
            train = try FashionMNIST.load(directory: data.path, split: .train)
            test = try FashionMNIST.load(directory: data.path, split: .test)
        case .cifar10:
            train = try CIFAR10.load(directory: data.path, split: .train)
            test = try CIFAR10.load(directory: data.path, split: .test)
        case .csv:
            guard !data.testPath.isEmpty else { throw ConfigError("key 'data.test_path': required for dataset 'csv'") }
            let task = data.task
            train = try CSVReader.load(path: data.path, labelColumn: CSVColumn(data.labelColumn), hasHeader: data.header, task: task)
            test = try CSVReader.load(path: data.testPath, labelColumn: CSVColumn(data.labelColumn), hasHeader: data.header,
                                      task: task, classCount: train.classCount)
        case .text:
            let text = try TextDataset.load(path: data.path, sequenceLength: data.sequenceLength, stride: data.stride)
            (train, test) = (text.train, text.validation)
        case .labeledText:
            let text = try LabeledTextDataset.load(trainPath: data.path, testPath: data.testPath.isEmpty ? nil : data.testPath,
                                                   sequenceLength: data.sequenceLength)
            (train, test) = (text.train, text.test)
        case .sequenceSynthetic:
            (train, test) = syntheticMajority(samples: data.syntheticSamples, length: data.sequenceLength, seed: seed)
        case .linearSynthetic:
            (train, test) = syntheticLinear(samples: data.syntheticSamples, features: data.syntheticFeatures,
                                            noise: Float(data.syntheticNoise), seed: seed)
        case .separableSynthetic:
            (train, test) = syntheticSeparable(samples: data.syntheticSamples, features: data.syntheticFeatures, seed: seed)
        }
        if !data.classes.isEmpty {
            guard let known = train.classCount, data.classes.allSatisfy({ (0..<known).contains($0) }), Set(data.classes).count == data.classes.count else {
                throw ConfigError("key 'data.classes': \(data.classes) must be distinct class indices of the dataset (0…\((train.classCount ?? 0) - 1))")
            }
            (train, test) = (train.selecting(classes: data.classes), test.selecting(classes: data.classes))
        }
        train = train.subset(first: data.trainSubset)
        test = test.subset(first: data.testSubset)
        var normalization: (means: [Float], standardDeviations: [Float])?
        // Synthetic regression targets are already unit scale; token ids must stay integers.
        if ![.linearSynthetic, .separableSynthetic, .text, .sequenceSynthetic, .labeledText].contains(data.dataset) {
            // Statistics of the (subset) training set, applied to both splits, as torchvision's Normalize does.
            let statistics = train.channelStatistics()
            train.normalize(channelMeans: statistics.means, channelStandardDeviations: statistics.standardDeviations)
            test.normalize(channelMeans: statistics.means, channelStandardDeviations: statistics.standardDeviations)
            normalization = statistics
        }
        if data.target == .input { (train, test) = (train.reconstructingInput(), test.reconstructingInput()) }
        return (train, test, normalization)
    }

    /// Points x ~ N(0,1) labelled 1 where x·w* + b* > 0 (the weights of `syntheticTruth`): separable by a hyperplane,
    /// so a perceptron reaches 100%; the test split is 1/4 the size of the training split.
    static func syntheticSeparable(samples: Int, features: Int, seed: UInt64) -> (Dataset, Dataset) {
        let truth = syntheticTruth(features: features, seed: seed)
        func make(_ count: Int, stream: UInt64) -> Dataset {
            var rng = RNG(seed: seed).split(0x5E9).split(stream)
            var x = [Float](repeating: 0, count: count * features), y = [Float](repeating: 0, count: count)
            for i in 0..<count {
                var sum = truth.bias
                for j in 0..<features { let v = rng.normal(); x[i * features + j] = v; sum += v * truth.weights[j] }
                y[i] = sum > 0 ? 1 : 0
            }
            return Dataset(features: x, targets: y, sampleShape: [features], targetWidth: 1, classCount: 2)
        }
        return (make(samples, stream: 1), make(max(samples / 4, 1), stream: 2))
    }

    /// The true weights and bias of the generated regression problem for `seed` (tests check training recovers them).
    public static func syntheticTruth(features: Int, seed: UInt64) -> (weights: [Float], bias: Float) {
        var rng = RNG(seed: seed).split(0x5EED)
        let weights = (0..<features).map { _ in rng.uniform(-2, 2) }
        return (weights, rng.uniform(-1, 1))
    }

    /// y = x·w* + b* + noise·N(0,1), x ~ N(0,1); the test split is 1/4 the size of the training split.
    static func syntheticLinear(samples: Int, features: Int, noise: Float, seed: UInt64) -> (Dataset, Dataset) {
        let truth = syntheticTruth(features: features, seed: seed)
        func make(_ count: Int, stream: UInt64) -> Dataset {
            var rng = RNG(seed: seed).split(stream)
            var x = [Float](repeating: 0, count: count * features), y = [Float](repeating: 0, count: count)
            for i in 0..<count {
                var sum = truth.bias
                for j in 0..<features { let v = rng.normal(); x[i * features + j] = v; sum += v * truth.weights[j] }
                y[i] = sum + noise * rng.normal()
            }
            return Dataset(features: x, targets: y, sampleShape: [features], targetWidth: 1, classCount: nil)
        }
        return (make(samples, stream: 1), make(max(samples / 4, 1), stream: 2))
    }

    /// Bit sequences of `length` with label 1 when more than half the bits are 1 (the sum of digits exceeds a
    /// threshold): the answer is known exactly, needs the whole sequence, and an odd length has no ties. Token ids
    /// 0/1 stored as Float; the test split is 1/4 the size of the training split, from an independent stream.
    static func syntheticMajority(samples: Int, length: Int, seed: UInt64) -> (Dataset, Dataset) {
        func make(_ count: Int, stream: UInt64) -> Dataset {
            var rng = RNG(seed: seed).split(0x5E0).split(stream)
            var x = [Float](repeating: 0, count: count * length), y = [Float](repeating: 0, count: count)
            for i in 0..<count {
                var ones = 0
                for t in 0..<length where rng.next() & 1 == 1 { x[i * length + t] = 1; ones += 1 }
                y[i] = 2 * ones > length ? 1 : 0
            }
            return Dataset(features: x, targets: y, sampleShape: [length], targetWidth: 1, classCount: 2)
        }
        return (make(samples, stream: 1), make(max(samples / 4, 1), stream: 2))
    }
}
