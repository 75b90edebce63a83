import LockstepCore

/// A configuration error in the augmentation settings; the message names the config key.
public struct AugmentationError: Error, CustomStringConvertible {
    /// The config key concerned, e.g. `data.augmentation.padding`.
    public var key: String
    /// What is wrong.
    public var reason: String

    /// "<key>: <reason>".
    public var description: String { "\(key): \(reason)" }
}

/// Which random image transforms to apply to training samples (the `augmentation:` config section).
public struct AugmentationSpec: Sendable, Equatable {
    /// Random shift of up to `padding` pixels per axis with zero fill (pad by `padding`, crop back at a random offset).
    public var padding: Int
    /// Mirror left-right with probability 1/2.
    public var horizontalFlip: Bool

    /// Creates a spec; `validate(sampleShape:)` checks it against the data.
    public init(padding: Int = 0, horizontalFlip: Bool = false) {
        self.padding = padding; self.horizontalFlip = horizontalFlip
    }

    /// True when no transform is enabled (the trainer can skip augmentation altogether).
    public var isIdentity: Bool { padding == 0 && !horizontalFlip }

    /// Throws naming `key` (the config section) when the spec cannot apply to samples of `sampleShape`.
    public func validate(sampleShape: [Int], key: String = "data.augmentation") throws {
        guard padding >= 0 else {
            throw AugmentationError(key: key + ".padding", reason: "must be 0 or more pixels, got \(padding)")
        }
        guard !isIdentity else { return }
        // Shifting and flipping need spatial axes; a [features] or [time] sample has none.
        guard sampleShape.count == 3, sampleShape.allSatisfy({ $0 > 0 }) else {
            throw AugmentationError(key: key, reason: "needs image samples of shape [channels, height, width], "
                                    + "but the dataset's samples have shape \(sampleShape)")
        }
        let (height, width) = (sampleShape[1], sampleShape[2])
        // A shift by the full height or width would leave an all-zero image.
        guard padding < min(height, width) else {
            throw AugmentationError(key: key + ".padding", reason: "must be smaller than the image's height and width "
                                    + "(\(height)×\(width)), got \(padding)")
        }
    }
}

/// Applies an `AugmentationSpec` in place to batches of [channels, height, width] samples.
///
/// The transform of a sample depends only on (seed, epoch, dataset index of the sample): never on rank, world size
/// or position in the batch, so every world size and every resume sees the same augmented sample. Holds one
/// preallocated scratch image, so `apply` allocates nothing; use one augmenter per thread.
public final class ImageAugmenter: @unchecked Sendable {
    /// The transforms applied.
    public let spec: AugmentationSpec
    /// Channels, height and width of a sample.
    public let channels: Int, height: Int, width: Int
    // Independent of the epoch shuffle's stream (`RNG(seed:).split(epoch)`), which must not change when this is on.
    private let base: RNG
    private let scratch: UnsafeMutablePointer<Float>

    /// The transform drawn for one sample: output(y, x) = input(y + shiftY, flipped(x) + shiftX), zero outside.
    public struct Transform: Equatable, Sendable {
        /// Vertical shift in -padding...padding.
        public var shiftY: Int
        /// Horizontal shift in -padding...padding.
        public var shiftX: Int
        /// Whether the image is mirrored left-right.
        public var flip: Bool
    }

    /// An augmenter for samples of `sampleShape` ([C, H, W]); throws `AugmentationError` naming `key` when invalid.
    public init(spec: AugmentationSpec, sampleShape: [Int], seed: UInt64, key: String = "data.augmentation") throws {
        try spec.validate(sampleShape: sampleShape, key: key)
        let shape = sampleShape.count == 3 ? sampleShape : [1, 1, max(sampleShape.reduce(1, *), 1)]
        self.spec = spec
        (channels, height, width) = (shape[0], shape[1], shape[2])
        base = RNG(seed: seed).split(0x4155_474D_454E_5421)  // "AUGMENT!"
        scratch = .allocate(capacity: channels * height * width)
    }

    deinit { scratch.deallocate() }

    /// Floats per sample.
    public var sampleWidth: Int { channels * height * width }

    /// The transform of dataset sample `index` in `epoch`.
    public func transform(sample index: Int, epoch: Int) -> Transform {
        transform(sample: index, epochStream: base.split(UInt64(truncatingIfNeeded: epoch)))
    }

    @inline(__always)
    private func transform(sample index: Int, epochStream: RNG) -> Transform {
        var rng = epochStream.split(UInt64(truncatingIfNeeded: index))
        // Always draw all three, so enabling one transform does not change the others' draws.
        let span = 2 * spec.padding + 1
        let shiftY = rng.int(below: span) - spec.padding
        let shiftX = rng.int(below: span) - spec.padding
        let flip = rng.next() >> 63 == 1
        return Transform(shiftY: shiftY, shiftX: shiftX, flip: flip && spec.horizontalFlip)
    }

    /// Transforms the rows of `features` ([sampleIndices.count, C·H·W]) in place; row i holds dataset sample
    /// `sampleIndices[i]`.
    public func apply<Indices: Collection>(to features: UnsafeMutablePointer<Float>, sampleIndices: Indices, epoch: Int)
    where Indices.Element == Int {
        guard !spec.isIdentity else { return }
        let epochStream = base.split(UInt64(truncatingIfNeeded: epoch))
        var row = 0
        for index in sampleIndices {
            apply(transform(sample: index, epochStream: epochStream), to: features + row * sampleWidth)
            row += 1
        }
    }

    /// Applies `transform` to one sample in place.
    public func apply(_ transform: Transform, to sample: UnsafeMutablePointer<Float>) {
        let (dy, dx) = (transform.shiftY, transform.shiftX)
        guard dy != 0 || dx != 0 || transform.flip else { return }
        let plane = height * width
        scratch.update(from: sample, count: sampleWidth)
        // Output columns whose source column (x + dx, or W-1-x + dx when flipped) lies inside the image.
        let firstX = transform.flip ? max(0, dx) : max(0, -dx)
        let endX = transform.flip ? min(width, width + dx) : min(width, width - dx)
        for channel in 0..<channels {
            for y in 0..<height {
                let output = sample + channel * plane + y * width
                let sourceY = y + dy
                guard sourceY >= 0 && sourceY < height && firstX < endX else {
                    output.update(repeating: 0, count: width)
                    continue
                }
                let source = scratch + channel * plane + sourceY * width
                if firstX > 0 { output.update(repeating: 0, count: firstX) }
                if endX < width { (output + endX).update(repeating: 0, count: width - endX) }
                if transform.flip {
                    for x in firstX..<endX { output[x] = source[width - 1 - x + dx] }
                } else {
                    (output + firstX).update(from: source + firstX + dx, count: endX - firstX)
                }
            }
        }
    }
}
