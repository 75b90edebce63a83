import LockstepCore
import XCTest
@testable import LockstepData

final class DatasetTests: XCTestCase {
    private func sample() -> Dataset {
        // 2 samples of 2 channels × 2 pixels.
        Dataset(features: [1, 2, 10, 20, 3, 4, 30, 40], targets: [0, 1], sampleShape: [2, 1, 2], targetWidth: 1, classCount: 2)
    }

    func testShapeAndSubset() {
        let dataset = sample()
        XCTAssertEqual(dataset.count, 2)
        XCTAssertEqual(dataset.featureWidth, 4)
        let first = dataset.subset(first: 1)
        XCTAssertEqual(first.count, 1)
        XCTAssertEqual(first.features, [1, 2, 10, 20])
        XCTAssertEqual(first.targets, [0])
        XCTAssertEqual(first.classCount, 2)
        XCTAssertEqual(dataset.subset(first: 0).count, 2)
        XCTAssertEqual(dataset.subset(first: 5).count, 2)
    }

    func testGatherCopiesRowsInOrder() {
        let dataset = sample()
        let features = FloatBuffer(count: 12), targets = FloatBuffer(count: 3)
        dataset.gather([1, 0, 1], features: features.pointer, targets: targets.pointer)
        XCTAssertEqual(features.array, [3, 4, 30, 40, 1, 2, 10, 20, 3, 4, 30, 40])
        XCTAssertEqual(targets.array, [1, 0, 1])
    }

    func testScaleAndNormalize() {
        var dataset = sample()
        dataset.scale(by: 0.5)
        XCTAssertEqual(dataset.features, [0.5, 1, 5, 10, 1.5, 2, 15, 20])

        var whole = sample()
        let statistics = whole.normalize()
        // Mean of [1,2,10,20,3,4,30,40] = 13.75; population variance = 3030/8 − 13.75² = 189.6875.
        XCTAssertEqual(statistics.mean, 13.75, accuracy: 1e-5)
        XCTAssertEqual(statistics.standardDeviation, Float(189.6875.squareRoot()), accuracy: 1e-4)
        let after = whole.featureStatistics()
        XCTAssertEqual(after.mean, 0, accuracy: 1e-5)
        XCTAssertEqual(after.standardDeviation, 1, accuracy: 1e-5)

        var channels = sample()
        let perChannel = channels.channelStatistics()
        XCTAssertEqual(perChannel.means, [2.5, 25])
        XCTAssertEqual(perChannel.standardDeviations[0], Float(1.25.squareRoot()), accuracy: 1e-6)
        channels.normalize(channelMeans: perChannel.means, channelStandardDeviations: perChannel.standardDeviations)
        let normalized = channels.channelStatistics()
        for c in 0..<2 {
            XCTAssertEqual(normalized.means[c], 0, accuracy: 1e-6)
            XCTAssertEqual(normalized.standardDeviations[c], 1, accuracy: 1e-5)
        }
        // Given statistics (e.g. the training set's) apply as-is; a zero deviation leaves values finite.
        var given = sample()
        given.normalize(mean: 1, standardDeviation: 0)
        XCTAssertEqual(given.features, [0, 1, 9, 19, 2, 3, 29, 39])
    }

    func testDataErrorMessage() {
        let error = DataError(file: "/data/x.bin", "truncated")
        XCTAssertEqual(error.description, "/data/x.bin: truncated")
        XCTAssertEqual(error.localizedDescription, "/data/x.bin: truncated")
    }
}
