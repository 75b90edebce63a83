import LockstepComm
import LockstepData
import LockstepNN
import LockstepTrain

/// The YAML front end over the Swift API: a config becomes a model, a loss, an optimizer, a schedule, data and
/// `TrainingOptions`, and those become a `Trainer`.
extension TrainingConfig {
    /// The run options this config describes; `checkpoints` comes from the command line.
    public func trainingOptions(checkpoints: CheckpointSettings = CheckpointSettings()) -> TrainingOptions {
        var options = TrainingOptions()
        options.seed = seed
        options.batchSize = batchSize
        options.epochs = epochs
        options.maxSteps = maxSteps
        options.accumulationSteps = accumulationSteps
        options.clipGradientNorm = clipGradientNorm
        options.l1 = optimizer.l1
        options.evaluationBatchSize = evalBatchSize
        options.shuffle = data.shuffle
        options.shardPolicy = data.shardPolicy
        options.prefetch = data.prefetch
        options.augmentation = data.augmentation
        options.distributed = distributed
        options.checkpoints = checkpoints
        options.faults = debug
        options.frozenLayers = frozenLayers
        options.validationFraction = data.validationSplit
        options.earlyStopping = earlyStopping
        options.initializeFrom = initializeFrom
        options.runDescription = resolved.canonicalText
        return options
    }

    /// Loads the data (unless `data` is given), builds everything the config names and starts a `Trainer` on
    /// `communicator`. Collective.
    public func makeTrainer(communicator: Communicator, checkpoints: CheckpointSettings = CheckpointSettings(),
                            data given: TrainingData? = nil, log: @escaping (String) -> Void = { print($0) }) throws -> Trainer {
        if gan != nil {
            throw ConfigError("key 'model.generator': this is a GAN config, trained with `lockstep train` (makeGANTrainer); this command takes one model")
        }
        let (train, test) = try given.map { ($0.train, $0.test) } ?? DatasetLoader.load(data, seed: seed)
        let inputShape = self.inputShape ?? train.sampleShape
        guard inputShape.reduce(1, *) == train.featureWidth else {
            throw ConfigError("key 'model.input_shape': \(inputShape) has \(inputShape.reduce(1, *)) features but the dataset has \(train.featureWidth) per sample")
        }
        do { try data.augmentation.validate(sampleShape: train.sampleShape) } catch let error as AugmentationError {
            throw ConfigError("key '\(error.key)': \(error.reason)")
        }
        let model = try ModelBuilder.build(layers, inputShape: inputShape, classCount: train.classCount,
                                           vocabularySize: train.vocabularySize)
        let loss = try Self.makeLoss(self.loss, outputShape: model.outputShape)
        if let classes = train.classCount {
            if self.loss == .crossEntropy, classes > model.outputWidth {
                throw ConfigError("key 'model.layers': the last layer has \(model.outputWidth) outputs but the dataset has \(classes) classes")
            }
            if self.loss == .sequenceCrossEntropy, classes > model.outputShape[1] {
                throw ConfigError("key 'model.layers': the last layer has \(model.outputShape[1]) outputs per step but the dataset has \(classes) classes")
            }
        }
        var options = trainingOptions(checkpoints: checkpoints)
        if shardOptimizer == .auto {
            options.distributed.shardOptimizer = Trainer.reducesThroughNodeSharedMemory(
                options.distributed, gradientCount: model.parameters.count, communicator: communicator)
        }
        let stepsPerEpoch = Trainer.stepsPerEpoch(samples: train.count, worldSize: communicator.size, options: options)
        let schedule = makeSchedule(stepsPerEpoch: stepsPerEpoch, globalBatch: batchSize * communicator.size * accumulationSteps)
        // The trainable parameters, or this rank's slice of them with distributed.shard_optimizer.
        let stateCount = try Trainer.optimizerParameterCount(of: model, options: options, worldSize: communicator.size,
                                                             rank: communicator.rank)
        return try Trainer(model: model, loss: loss, optimizer: Self.makeOptimizer(optimizer, parameterCount: stateCount),
                           schedule: schedule, data: TrainingData(train: train, test: test), options: options,
                           communicator: communicator, log: log)
    }

    static func makeLoss(_ kind: LossKind, outputShape: [Int] = []) throws -> Loss {
        switch kind {
        case .sequenceCrossEntropy:
            // Classes per step = the last axis of the [time, classes] output.
            guard outputShape.count == 2 else {
                throw ConfigError("key 'loss': sequence_cross_entropy needs a [time, classes] model output, the model gives \(outputShape)")
            }
            return SequenceCrossEntropy(classes: outputShape[1])
        case .mse: return MSELoss()
        case .bceWithLogits: return BCEWithLogitsLoss()
        case .crossEntropy: return SoftmaxCrossEntropy()
        case .hinge: return HingeLoss()
        }
    }

    static func makeOptimizer(_ o: OptimizerConfig, parameterCount: Int) -> Optimizer {
        switch o.type {
        case .adam, .adamw:
            return Adam(parameterCount: parameterCount, beta1: Float(o.beta1), beta2: Float(o.beta2), epsilon: Float(o.epsilon),
                        weightDecay: Float(o.weightDecay), decoupledWeightDecay: o.type == .adamw)
        case .rmsprop:
            return RMSprop(parameterCount: parameterCount, alpha: Float(o.alpha), epsilon: Float(o.epsilon), weightDecay: Float(o.weightDecay),
                           momentum: Float(o.momentum), centered: o.centered)
        case .adagrad:
            return Adagrad(parameterCount: parameterCount, learningRateDecay: Float(o.learningRateDecay), weightDecay: Float(o.weightDecay),
                           initialAccumulatorValue: Float(o.initialAccumulatorValue), epsilon: Float(o.epsilon))
        case .sgd:
            return SGD(parameterCount: parameterCount, momentum: Float(o.momentum), nesterov: o.nesterov, weightDecay: Float(o.weightDecay))
        }
    }

    /// The schedule in optimizer steps: epochs convert with `stepsPerEpoch`; `scale_lr` multiplies the learning rate
    /// by global batch / base batch.
    func makeSchedule(stepsPerEpoch: Int, globalBatch: Int) -> LearningRateSchedule {
        var lr = Float(optimizer.learningRate)
        if scaleLearningRate { lr *= Float(globalBatch) / Float(baseBatch) }
        let totalSteps = maxSteps > 0 ? min(maxSteps, stepsPerEpoch * epochs) : stepsPerEpoch * epochs
        let warmup = Int((schedule.warmupEpochs * Double(stepsPerEpoch)).rounded())
        let base: LearningRateSchedule
        switch schedule.type {
        case .step: base = StepDecaySchedule(learningRate: lr, stepSize: max(1, Int(schedule.stepEpochs * Double(stepsPerEpoch))),
                                             gamma: Float(schedule.gamma))
        case .cosine: base = CosineSchedule(learningRate: lr, totalSteps: max(1, totalSteps - warmup),
                                            minimumLearningRate: Float(schedule.minimumLearningRate))
        case .constant: base = ConstantSchedule(learningRate: lr)
        }
        return warmup > 0 ? WarmupSchedule(warmupSteps: warmup, warmupStartFactor: 1 / Float(max(warmup, 1)), base: base) : base
    }
}
