import LockstepCore

/// Batch normalization over [features] (1d) or [channels, height, width] (2d, statistics over batch, height and
/// width), with PyTorch semantics: biased batch variance to normalize, unbiased variance in the running estimate,
/// `running = (1 − momentum)·running + momentum·batch`.
///
/// Sync-BatchNorm hook: when `statisticsReducer` is set, training forward passes it the local per-channel sums
/// before normalizing, and uses whatever it leaves in place (e.g. an allreduce SUM over ranks); likewise
/// `gradientStatisticsReducer` in backward. Every rank must run the same layers so the calls line up.
public final class BatchNorm: Layer {
    public let kind = "batchnorm"
    /// Channels (2d) or features (1d); one mean and variance each.
    public let features: Int
    /// Elements per channel per sample (height·width for 2d, 1 for 1d).
    public let spatial: Int
    /// Weight of the newest batch in the running statistics.
    public let momentum: Float
    /// Added to the variance before the square root.
    public let epsilon: Float

    /// Called in training forward with a vector of 2·features + 1 Doubles, [Σx per channel, Σx² per channel, element
    /// count per channel], to be reduced in place (sum over ranks for sync-BatchNorm). Nil: local statistics.
    public var statisticsReducer: ((UnsafeMutablePointer<Double>, Int) -> Void)?
    /// Called in training backward (when an input gradient is wanted) with 2·features Doubles, [Σdy per channel,
    /// Σdy·x̂ per channel], to be reduced in place like `statisticsReducer`. Parameter gradients use the local sums,
    /// taken before this call, so the usual gradient averaging applies to them.
    public var gradientStatisticsReducer: ((UnsafeMutablePointer<Double>, Int) -> Void)?

    private var weight: UnsafeMutablePointer<Float>!
    private var bias: UnsafeMutablePointer<Float>!
    private var weightGradient: UnsafeMutablePointer<Float>!
    private var biasGradient: UnsafeMutablePointer<Float>!
    private var runningMean: UnsafeMutablePointer<Float>!
    private var runningVariance: UnsafeMutablePointer<Float>!

    // Workspace, allocated once in init (sizes depend on `features` only).
    private let statistics: UnsafeMutablePointer<Double>
    private let gradientStatistics: UnsafeMutablePointer<Double>
    /// Mean and 1/sqrt(var + eps) used by the last forward (batch or running), per channel.
    private let usedMean: UnsafeMutablePointer<Float>
    private let usedInverseDeviation: UnsafeMutablePointer<Float>
    /// Element count per channel behind the last training forward's statistics (after reduction).
    private var statisticsCount: Double = 0
    private var lastForwardTraining = false

    /// A BatchNorm over `features` channels of `spatial` elements each; `spatial` is 1 for [features] inputs.
    public init(features: Int, spatial: Int = 1, momentum: Float = 0.1, epsilon: Float = 1e-5) {
        precondition(features > 0 && spatial > 0, "batchnorm needs positive features and spatial size")
        self.features = features
        self.spatial = spatial
        self.momentum = momentum
        self.epsilon = epsilon
        statistics = .allocate(capacity: 2 * features + 1)
        gradientStatistics = .allocate(capacity: 2 * features)
        usedMean = .allocate(capacity: features)
        usedInverseDeviation = .allocate(capacity: features)
    }

    deinit {
        statistics.deallocate(); gradientStatistics.deallocate()
        usedMean.deallocate(); usedInverseDeviation.deallocate()
    }

    public var parameterSpecs: [ParameterSpec] {
        [ParameterSpec(name: "weight", shape: [features], initializer: .ones),
         ParameterSpec(name: "bias", shape: [features], initializer: .zeros)]
    }

    public var stateSpecs: [ParameterSpec] {
        [ParameterSpec(name: "running_mean", shape: [features], initializer: .zeros),
         ParameterSpec(name: "running_var", shape: [features], initializer: .ones)]
    }

    public func outputShape(inputShape: [Int]) throws -> [Int] {
        guard let first = inputShape.first, first == features, inputShape.dropFirst().reduce(1, *) == spatial else {
            throw ShapeError("batchnorm over \(features) channels of \(spatial) elements cannot take input \(inputShape)")
        }
        return inputShape
    }

    public func bind(parameters: [UnsafeMutablePointer<Float>], gradients: [UnsafeMutablePointer<Float>],
                     state: [UnsafeMutablePointer<Float>]) {
        weight = parameters[0]; bias = parameters[1]
        weightGradient = gradients[0]; biasGradient = gradients[1]
        runningMean = state[0]; runningVariance = state[1]
    }

    public func forward(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, context: LayerContext) {
        let channels = features, s = spatial
        lastForwardTraining = context.training
        if context.training {
            // Σx and Σx² per channel: Float partials per contiguous row, widened to Double across rows.
            statistics.update(repeating: 0, count: 2 * channels + 1)
            for b in 0..<batch {
                for c in 0..<channels {
                    let x = input + (b * channels + c) * s
                    var sum: Float = 0, squares: Float = 0
                    for j in 0..<s { sum += x[j]; squares += x[j] * x[j] }
                    statistics[c] += Double(sum)
                    statistics[channels + c] += Double(squares)
                }
            }
            statistics[2 * channels] = Double(batch * s)
            statisticsReducer?(statistics, 2 * channels + 1)
            let n = statistics[2 * channels]
            statisticsCount = n
            let momentum = Double(self.momentum)
            for c in 0..<channels {
                let mean = statistics[c] / n
                let variance = max(statistics[channels + c] / n - mean * mean, 0)
                usedMean[c] = Float(mean)
                usedInverseDeviation[c] = Float(1 / (variance + Double(epsilon)).squareRoot())
                let unbiased = n > 1 ? variance * n / (n - 1) : variance
                runningMean[c] = Float((1 - momentum) * Double(runningMean[c]) + momentum * mean)
                runningVariance[c] = Float((1 - momentum) * Double(runningVariance[c]) + momentum * unbiased)
            }
        } else {
            for c in 0..<channels {
                usedMean[c] = runningMean[c]
                usedInverseDeviation[c] = 1 / (runningVariance[c] + epsilon).squareRoot()
            }
        }
        // y = (x − mean)·invstd·γ + β, folded into one multiply-add per element.
        for b in 0..<batch {
            for c in 0..<channels {
                let scale = weight[c] * usedInverseDeviation[c]
                let shift = bias[c] - usedMean[c] * scale
                let offset = (b * channels + c) * s
                let x = input + offset, y = output + offset
                for j in 0..<s { y[j] = x[j] * scale + shift }
            }
        }
    }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, batch: Int) {
        let channels = features, s = spatial
        // Σdy and Σdy·x̂ per channel, with x̂ = (x − mean)·invstd.
        gradientStatistics.update(repeating: 0, count: 2 * channels)
        for b in 0..<batch {
            for c in 0..<channels {
                let offset = (b * channels + c) * s
                let x = input + offset, dy = outputGradient + offset
                let mean = usedMean[c]
                var sum: Float = 0, projected: Float = 0
                for j in 0..<s { sum += dy[j]; projected += dy[j] * (x[j] - mean) }
                gradientStatistics[c] += Double(sum)
                gradientStatistics[channels + c] += Double(projected) * Double(usedInverseDeviation[c])
            }
        }
        for c in 0..<channels {
            weightGradient[c] += Float(gradientStatistics[channels + c])
            biasGradient[c] += Float(gradientStatistics[c])
        }
        guard let inputGradient else { return }
        guard lastForwardTraining else {
            // Running statistics are constants: the layer is a per-channel affine map.
            for b in 0..<batch {
                for c in 0..<channels {
                    let scale = weight[c] * usedInverseDeviation[c]
                    let offset = (b * channels + c) * s
                    for j in 0..<s { inputGradient[offset + j] = outputGradient[offset + j] * scale }
                }
            }
            return
        }
        gradientStatisticsReducer?(gradientStatistics, 2 * channels)
        // dx = γ·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)), means over the (possibly global) count.
        let n = statisticsCount
        for b in 0..<batch {
            for c in 0..<channels {
                let inverse = usedInverseDeviation[c]
                let scale = weight[c] * inverse
                let meanGradient = Float(gradientStatistics[c] / n)
                let meanProjection = Float(gradientStatistics[channels + c] / n)
                let mean = usedMean[c]
                let offset = (b * channels + c) * s
                let x = input + offset, dy = outputGradient + offset, dx = inputGradient + offset
                for j in 0..<s {
                    let normalized = (x[j] - mean) * inverse
                    dx[j] = scale * (dy[j] - meanGradient - normalized * meanProjection)
                }
            }
        }
    }
}
