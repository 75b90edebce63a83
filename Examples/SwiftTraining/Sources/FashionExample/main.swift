// Trains an MLP or a CNN written in Swift on Fashion-MNIST, data-parallel under mpirun (or as one process):
//
//     mpirun -np 2 .build/release/FashionExample mlp --epochs 1
//     mpirun -np 2 .build/release/FashionExample gan --epochs 1 --images samples   # a GAN: two models, two optimizers
//
// Every rank runs this same program; `Trainer` keeps the replicas in lockstep (parameters broadcast from rank 0,
// gradients averaged over ranks, one control vector per step) and reduces the metrics, exactly as `lockstep train`
// does for a YAML config.
import Foundation
import LockstepData
import LockstepNN
import LockstepTrain

/// The command line: `mlp|cnn|gan [--epochs N] [--train-subset N] [--test-subset N] [--images DIR]`.
struct Arguments {
    var model = "mlp"
    var epochs = 1
    var trainSubset = 0
    var testSubset = 0
    /// gan: a directory for a PNG grid of samples per epoch.
    var images: String?

    init(_ words: [String]) throws {
        var rest = words[...]
        while let word = rest.popFirst() {
            switch word {
            case "mlp", "cnn", "gan": model = word
            case "--images":
                guard let directory = rest.popFirst() else { throw ConfigError("--images needs a directory") }
                images = directory
            case "--epochs", "--train-subset", "--test-subset":
                guard let text = rest.popFirst(), let value = Int(text), value >= 0 else { throw ConfigError("\(word) needs a whole number") }
                if word == "--epochs" { epochs = value } else if word == "--train-subset" { trainSubset = value } else { testSubset = value }
            default: throw ConfigError("unknown argument '\(word)'; usage: FashionExample mlp|cnn|gan [--epochs N] [--train-subset N] [--test-subset N] [--images DIR]")
            }
        }
    }
}

/// MLP 784-256-128-10, as configs/fashion-mlp.yaml.
func multilayerPerceptron() throws -> Sequential {
    try Sequential(inputShape: [1, 28, 28]) {
        Flatten()
        Linear(inputDimensions: 784, outputDimensions: 256)
        ReLU()
        Linear(inputDimensions: 256, outputDimensions: 128)
        ReLU()
        Linear(inputDimensions: 128, outputDimensions: 10)
    }
}

/// Two 5×5 convolutions with max pooling, FC 1024, FC 10, as configs/fashion-cnn.yaml.
func convolutionalNetwork() throws -> Sequential {
    try Sequential(inputShape: [1, 28, 28]) {
        Conv2D(inputChannels: 1, outputChannels: 32, kernelSize: 5, padding: 2)
        ReLU()
        MaxPool2D(kernelSize: (2, 2))
        Conv2D(inputChannels: 32, outputChannels: 64, kernelSize: 5, padding: 2)
        ReLU()
        MaxPool2D(kernelSize: (2, 2))
        Flatten()
        Linear(inputDimensions: 64 * 7 * 7, outputDimensions: 1024)
        ReLU()
        Linear(inputDimensions: 1024, outputDimensions: 10)
    }
}

/// An MLP GAN as configs/fashion-gan.yaml: two models and two Adam optimizers under one data-parallel `GANTrainer`.
func trainGAN(_ arguments: Arguments, session: Session) throws {
    var train = try FashionMNIST.load(split: .train).subset(first: arguments.trainSubset)
    var test = try FashionMNIST.load(split: .test).subset(first: arguments.testSubset)
    // Pixels in [0, 1] to [−1, 1], the range of the generator's tanh.
    train.normalize(mean: 0.5, standardDeviation: 0.5)
    test.normalize(mean: 0.5, standardDeviation: 0.5)
    let generator = try Sequential(inputShape: [64]) {
        Linear(inputDimensions: 64, outputDimensions: 256)
        LeakyReLU(slope: 0.2)
        Linear(inputDimensions: 256, outputDimensions: 512)
        LeakyReLU(slope: 0.2)
        Linear(inputDimensions: 512, outputDimensions: 784, initializer: .xavier(fanIn: 512, fanOut: 784))
        Tanh()
    }
    let discriminator = try Sequential(inputShape: [1, 28, 28]) {
        Flatten()
        Linear(inputDimensions: 784, outputDimensions: 512)
        LeakyReLU(slope: 0.2)
        Linear(inputDimensions: 512, outputDimensions: 256)
        LeakyReLU(slope: 0.2)
        Linear(inputDimensions: 256, outputDimensions: 1, initializer: .xavier(fanIn: 256, fanOut: 1))
    }
    var options = TrainingOptions()
    options.seed = 1
    options.batchSize = 64  // real samples per rank
    let gan = try GANTrainer(generator: generator, discriminator: discriminator,
                             generatorOptimizer: Adam(parameterCount: generator.parameters.count, beta1: 0.5),
                             discriminatorOptimizer: Adam(parameterCount: discriminator.parameters.count, beta1: 0.5),
                             schedule: ConstantSchedule(learningRate: 2e-4), data: TrainingData(train: train, test: test),
                             options: options, communicator: session.communicator, log: session.say)
    let summary = try gan.fit(epochs: arguments.epochs, onEpoch: { epoch in
        session.say(epoch.line)
        if let directory = arguments.images, session.isLeader {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try gan.sampleGrid().write(to: directory + String(format: "/samples-epoch-%03d.png", epoch.epoch))
        }
    })
    session.say(summary.line)
    print("rank \(session.communicator.rank) parameter checksum \(String(summary.parameterChecksum, radix: 16))")
}

Session.run { session in
    let arguments = try Arguments(Array(CommandLine.arguments.dropFirst()))
    if arguments.model == "gan" { return try trainGAN(arguments, session: session) }
    var train = try FashionMNIST.load(split: .train).subset(first: arguments.trainSubset)
    var test = try FashionMNIST.load(split: .test).subset(first: arguments.testSubset)
    // Normalize both splits with the training set's statistics.
    let statistics = train.channelStatistics()
    train.normalize(channelMeans: statistics.means, channelStandardDeviations: statistics.standardDeviations)
    test.normalize(channelMeans: statistics.means, channelStandardDeviations: statistics.standardDeviations)

    let model = arguments.model == "mlp" ? try multilayerPerceptron() : try convolutionalNetwork()
    var options = TrainingOptions()
    options.seed = 1
    options.batchSize = 64  // per rank
    let learningRate: Float = arguments.model == "mlp" ? 0.05 : 0.03
    let trainer = try Trainer(model: model, loss: SoftmaxCrossEntropy(),
                              optimizer: SGD(parameterCount: model.parameters.count, momentum: 0.9),
                              schedule: ConstantSchedule(learningRate: learningRate),
                              data: TrainingData(train: train, test: test), options: options,
                              communicator: session.communicator, log: session.say)
    session.say("FashionExample: \(arguments.model) on \(session.communicator.size) rank(s), \(model.parameters.count) parameters, "
                + "batch \(trainer.perRankBatch) per rank (global \(trainer.globalBatch))")
    let summary = try trainer.fit(epochs: arguments.epochs, onEpoch: { session.say($0.line) })
    session.say(summary.line)
    print("rank \(session.communicator.rank) parameter checksum \(String(summary.parameterChecksum, radix: 16))")
}
