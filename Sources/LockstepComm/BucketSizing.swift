import Foundation

/// `distributed.bucket_mb: auto`: the gradient bucket size from an α–β fit to allreduces timed at start-up.
public enum BucketSizing {
    /// The sizes auto may choose: below 64 KiB even a fast link is latency-bound, above 64 MiB nothing overlaps.
    public static let bounds = (64 << 10)...(64 << 20)

    /// Times allreduces of a small and a large message on `scratch` (collective: each sample is the slowest
    /// rank's median, so every rank fits the same α and β and plans the same buckets), then picks the smallest
    /// message whose bandwidth term is 10× its latency term, within `bounds`. Leaves `scratch` zeroed.
    public static func measure(communicator: Communicator, scratch: UnsafeMutableBufferPointer<Float>) throws -> (bytes: Int, line: String) {
        let small = min(1024, scratch.count / 4), large = min(scratch.count, 256 << 10)
        guard small >= 16 else {
            return (bounds.lowerBound, "distributed.bucket_mb auto: \(scratch.count) gradients are too few to time; buckets of \(formatByteCount(Double(bounds.lowerBound)))")
        }
        scratch.update(repeating: 0)  // zeros stay zeros under summation
        // Few repetitions: over a slow network 4 KiB takes ~0.5 ms and 1 MiB ~5 ms, and this runs before training.
        var samples: [AllreduceSample] = []
        for (count, repetitions) in [(small, 20), (large, 2)] {
            let message = UnsafeMutableBufferPointer(rebasing: scratch[0..<count])
            let seconds = try communicator.timeCollective(trials: 7, warmup: 1, repetitions: repetitions) {
                try communicator.allreduceSum(message)
            }
            samples.append(AllreduceSample(ranks: communicator.size, bytes: Double(count * 4), seconds: seconds))
        }
        let link = try AlphaBeta.fit(samples)
        let suggested = link.suggestedBucketBytes(ranks: communicator.size)
        let bytes = suggested.isFinite ? min(max(Int(suggested), bounds.lowerBound), bounds.upperBound) : bounds.upperBound
        let line = String(format: "distributed.bucket_mb auto: allreduce of %@ %.1f µs, %@ %.1f µs → α %.2f µs, bus bandwidth %.2f GB/s; buckets of %@",
                          formatByteCount(samples[0].bytes), samples[0].seconds * 1e6,
                          formatByteCount(samples[1].bytes), samples[1].seconds * 1e6,
                          link.alpha * 1e6, link.busBandwidth / 1e9, formatByteCount(Double(bytes)))
        return (bytes, line)
    }
}
