import LockstepCore
import LockstepData
import LockstepNN

extension Dataset {
    /// Two Gaussian blobs in 4-D, labels 0/1: linearly separable, so a small MLP reaches ~100% quickly.
    static func blobs(_ count: Int, seed: UInt64) -> Dataset {
        var rng = RNG(seed: seed)
        var features: [Float] = [], targets: [Float] = []
        for i in 0..<count {
            let label = i % 2
            for _ in 0..<4 { features.append(rng.normal() * 0.5 + (label == 0 ? -1 : 1)) }
            targets.append(Float(label))
        }
        return Dataset(features: features, targets: targets, sampleShape: [4], classCount: 2)
    }
}

extension Sequential {
    /// The small MLP the in-process Trainer tests train on `Dataset.blobs`: 4 → 16 → ReLU → 2.
    static func blobsClassifier() throws -> Sequential {
        try Sequential(inputShape: [4]) {
            Linear(inputDimensions: 4, outputDimensions: 16)
            ReLU()
            Linear(inputDimensions: 16, outputDimensions: 2)
        }
    }
}
