import LockstepCore
import XCTest
@testable import LockstepData

final class AugmentationTests: XCTestCase {
    /// `count` samples of [2, 4, 5]; value = 1000·sample + 100·channel + 10·y + x + 1 (never 0, so zero fill shows).
    private func images(_ count: Int) -> [Float] {
        var values: [Float] = []
        for n in 0..<count { for c in 0..<2 { for y in 0..<4 { for x in 0..<5 {
            values.append(Float(1000 * n + 100 * c + 10 * y + x + 1))
        } } } }
        return values
    }

    private let shape = [2, 4, 5]

    /// Gathers `indices` of `source` and augments them as one batch.
    private func augmented(_ augmenter: ImageAugmenter, _ source: [Float], indices: [Int], epoch: Int) -> [[Float]] {
        let width = augmenter.sampleWidth
        var batch = indices.flatMap { Array(source[($0 * width)..<(($0 + 1) * width)]) }
        batch.withUnsafeMutableBufferPointer { augmenter.apply(to: $0.baseAddress!, sampleIndices: indices, epoch: epoch) }
        return (0..<indices.count).map { Array(batch[($0 * width)..<(($0 + 1) * width)]) }
    }

    func testSameSeedEpochAndIndexGiveSameSampleWhateverTheBatch() throws {
        let spec = AugmentationSpec(padding: 2, horizontalFlip: true)
        let source = images(12)
        let first = try ImageAugmenter(spec: spec, sampleShape: shape, seed: 7)
        let second = try ImageAugmenter(spec: spec, sampleShape: shape, seed: 7)
        // One rank's batch of 12 vs three ranks' batches of 4 in another order.
        let whole = augmented(first, source, indices: Array(0..<12), epoch: 3)
        for slice in [[11, 3, 7, 0], [5, 1, 9, 2], [4, 10, 6, 8]] {
            for (row, sample) in augmented(second, source, indices: slice, epoch: 3).enumerated() {
                XCTAssertEqual(sample, whole[slice[row]], "sample \(slice[row])")
            }
        }
        // The transforms actually vary across samples (padding 2, flip: 50 combinations).
        let transforms = Set((0..<12).map { "\(first.transform(sample: $0, epoch: 3))" })
        XCTAssertGreaterThan(transforms.count, 5)
    }

    func testDifferentEpochsAndSeedsDiffer() throws {
        let spec = AugmentationSpec(padding: 2, horizontalFlip: true)
        let augmenter = try ImageAugmenter(spec: spec, sampleShape: shape, seed: 7)
        let other = try ImageAugmenter(spec: spec, sampleShape: shape, seed: 8)
        let source = images(16), indices = Array(0..<16)
        XCTAssertNotEqual(augmented(augmenter, source, indices: indices, epoch: 0), augmented(augmenter, source, indices: indices, epoch: 1))
        XCTAssertNotEqual(augmented(augmenter, source, indices: indices, epoch: 0), augmented(other, source, indices: indices, epoch: 0))
    }

    func testFlipTwiceIsIdentityAndMirrorsColumns() throws {
        let augmenter = try ImageAugmenter(spec: AugmentationSpec(horizontalFlip: true), sampleShape: shape, seed: 1)
        let original = images(1)
        var sample = original
        let flip = ImageAugmenter.Transform(shiftY: 0, shiftX: 0, flip: true)
        sample.withUnsafeMutableBufferPointer { augmenter.apply(flip, to: $0.baseAddress!) }
        // Channel 1, row 2: x = 0..4 holds 124, 123, 122, 121, 120 + 1.
        XCTAssertEqual(Array(sample[(20 + 10)..<(20 + 15)]), [125, 124, 123, 122, 121])
        sample.withUnsafeMutableBufferPointer { augmenter.apply(flip, to: $0.baseAddress!) }
        XCTAssertEqual(sample, original)
    }

    func testShiftMovesContentWithZeroFill() throws {
        let augmenter = try ImageAugmenter(spec: AugmentationSpec(padding: 2), sampleShape: shape, seed: 1)
        let original = images(1)
        func value(_ image: [Float], _ c: Int, _ y: Int, _ x: Int) -> Float { image[c * 20 + y * 5 + x] }
        for (dy, dx, flip) in [(1, -2, false), (-2, 1, false), (0, 2, true), (2, -1, true)] {
            var sample = original
            sample.withUnsafeMutableBufferPointer {
                augmenter.apply(ImageAugmenter.Transform(shiftY: dy, shiftX: dx, flip: flip), to: $0.baseAddress!)
            }
            for c in 0..<2 {
                for y in 0..<4 {
                    for x in 0..<5 {
                        let (sy, sx) = (y + dy, (flip ? 4 - x : x) + dx)
                        let expected: Float = (0..<4).contains(sy) && (0..<5).contains(sx) ? value(original, c, sy, sx) : 0
                        XCTAssertEqual(value(sample, c, y, x), expected, "shift (\(dy), \(dx)) flip \(flip) at \(c),\(y),\(x)")
                    }
                }
            }
        }
        // A pure shift keeps every pixel that stays inside: (1, -2) keeps 3 rows × 3 columns per channel.
        var shifted = original
        shifted.withUnsafeMutableBufferPointer { augmenter.apply(.init(shiftY: 1, shiftX: -2, flip: false), to: $0.baseAddress!) }
        XCTAssertEqual(shifted.filter { $0 != 0 }.count, 2 * 3 * 3)
        XCTAssertEqual(value(shifted, 0, 0, 2), value(original, 0, 1, 0))
    }

    func testDrawnShiftsStayWithinPaddingAndFlipOnlyWhenEnabled() throws {
        let noFlip = try ImageAugmenter(spec: AugmentationSpec(padding: 1), sampleShape: shape, seed: 3)
        let flipOnly = try ImageAugmenter(spec: AugmentationSpec(horizontalFlip: true), sampleShape: shape, seed: 3)
        var shifts = Set<Int>(), flips = 0
        for index in 0..<400 {
            let t = noFlip.transform(sample: index, epoch: 0)
            XCTAssertFalse(t.flip)
            shifts.insert(t.shiftY); shifts.insert(t.shiftX)
            let f = flipOnly.transform(sample: index, epoch: 0)
            XCTAssertEqual(f.shiftX, 0); XCTAssertEqual(f.shiftY, 0)
            if f.flip { flips += 1 }
        }
        XCTAssertEqual(shifts, [-1, 0, 1])
        XCTAssertTrue((150...250).contains(flips), "about half the samples flip, got \(flips)/400")
    }

    func testBatchLoaderAugmentsByDatasetIndexOnEveryWorldSize() throws {
        let spec = AugmentationSpec(padding: 1, horizontalFlip: true)
        let count = 10
        let dataset = Dataset(features: images(count), targets: (0..<count).map(Float.init), sampleShape: shape, classCount: 10)
        let reference = try ImageAugmenter(spec: spec, sampleShape: shape, seed: 5)
        let expected = augmented(reference, dataset.features, indices: Array(0..<count), epoch: 2)
        for worldSize in [1, 2] {
            for prefetch in [true, false] {
                let plan = EpochPlan(sampleCount: count, worldSize: worldSize, seed: 5, epoch: 2)
                for rank in 0..<worldSize {
                    let loader = BatchLoader(dataset: dataset, perRankBatch: 3, prefetch: prefetch,
                                             augmenter: try ImageAugmenter(spec: spec, sampleShape: shape, seed: 5))
                    loader.start(plan: plan, rank: rank)
                    while let batch = loader.next() {
                        for row in 0..<batch.sampleCount {
                            let index = Int(batch.targets[row])
                            let sample = Array(UnsafeBufferPointer(start: batch.features + row * 40, count: 40))
                            XCTAssertEqual(sample, expected[index], "world \(worldSize) rank \(rank) sample \(index)")
                        }
                    }
                }
            }
        }
    }

    func testSpecValidation() {
        func assertInvalid(_ spec: AugmentationSpec, _ sampleShape: [Int], key: String, mentions fragment: String,
                           line: UInt = #line) {
            XCTAssertThrowsError(try spec.validate(sampleShape: sampleShape), line: line) { error in
                let message = "\(error)"
                XCTAssertTrue(message.hasPrefix(key + ":"), "should name \(key): \(message)", line: line)
                XCTAssertTrue(message.contains(fragment), "should mention \(fragment): \(message)", line: line)
            }
        }
        assertInvalid(AugmentationSpec(padding: -1), [1, 28, 28], key: "data.augmentation.padding", mentions: "0 or more")
        assertInvalid(AugmentationSpec(padding: 28), [1, 28, 28], key: "data.augmentation.padding", mentions: "smaller")
        assertInvalid(AugmentationSpec(horizontalFlip: true), [784], key: "data.augmentation", mentions: "[channels, height, width]")
        XCTAssertNoThrow(try AugmentationSpec(padding: 4, horizontalFlip: true).validate(sampleShape: [3, 32, 32]))
        // Nothing enabled is valid for any dataset (e.g. text).
        XCTAssertNoThrow(try AugmentationSpec().validate(sampleShape: [64]))
        XCTAssertTrue(AugmentationSpec().isIdentity)
    }
}
