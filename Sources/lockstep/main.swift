import ArgumentParser
import Foundation
import LockstepBench
import LockstepCore
import LockstepCLI
import LockstepCore
import LockstepTrain

/// `lockstep`: data-parallel training under mpirun (or standalone as one rank).
@main
struct Lockstep: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Data-parallel neural-network training over MPI, one replica per rank.",
        subcommands: [Train.self, Evaluate.self, Predict.self, Generate.self, CheckpointCommand.self, Plot.self, SelfTest.self, BenchCommand.self])
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train a model from a YAML config.")

    @Option(name: .long, help: "YAML training config.")
    var config: String

    @Option(name: .customLong("set"), help: "Override a config key, e.g. --set optimizer.lr=0.1 (repeatable).")
    var overrides: [String] = []

    @Option(name: .long, help: "Append JSON-lines metrics (per epoch and a final summary) to this file (rank 0).")
    var metrics: String?

    @Flag(name: .long, help: "Print the final parameters' checksum on every rank (tests use it).")
    var printChecksum = false

    @Option(name: .long, help: "Write the final parameters of rank 0 as raw little-endian float32 to this file.")
    var dumpParameters: String?

    @Option(name: .long, help: "Directory for atomic checkpoints (rank 0 writes; see the config's checkpoint: section).")
    var checkpointDir: String?

    @Option(name: .long, help: "Resume from 'auto' (newest valid checkpoint in --checkpoint-dir), a checkpoint file or a directory.")
    var resume: String?

    @Option(name: .long, help: "Write a Chrome trace (chrome://tracing, Perfetto) of every rank's steps to this file.")
    var trace: String?

    @Option(name: .long, help: "Autoencoders (data.target: input): write a PNG of test inputs and their reconstructions here every epoch.")
    var images: String?

    func run() throws {
        try Session.run { session in
            try session.train(configPath: config, overrides: overrides, metricsPath: metrics, printChecksum: printChecksum,
                              dumpParameters: dumpParameters, checkpointDirectory: checkpointDir, resume: resume, tracePath: trace,
                              imagesDirectory: images)
        }
    }
}

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "eval", abstract: "Evaluate a model on the config's test set.")

    @Option(name: .long, help: "YAML training config.")
    var config: String

    @Option(name: .customLong("set"), help: "Override a config key (repeatable).")
    var overrides: [String] = []

    @Option(name: .long, help: "Raw float32 parameter file written by train --dump-parameters.")
    var parameters: String?

    @Option(name: .long, help: "A Lockstep checkpoint (.safetensors) to evaluate.")
    var checkpoint: String?

    @Option(name: .long, help: "Append the classification report (per-class precision, recall, F1, confusion matrix) as JSON to this file.")
    var metrics: String?

    func run() throws {
        try Session.run { session in
            try session.evaluate(configPath: config, overrides: overrides, parametersPath: parameters, checkpointPath: checkpoint,
                                 metricsPath: metrics)
        }
    }
}

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Class probabilities of a checkpoint's model for new samples (IDX images, a PGM or PNG image, CSV rows).")

    @Option(name: .long, help: "A Lockstep checkpoint (.safetensors file or checkpoint directory).")
    var checkpoint: String

    @Option(name: .long, help: "Samples: an IDX image file (*-idx3-ubyte[.gz]), a .pgm or .png image, or a .csv of feature rows.")
    var input: String

    @Option(name: .long, help: "YAML config (default: the one stored in the checkpoint).")
    var config: String?

    @Option(name: .customLong("set"), help: "Override a config key (repeatable).")
    var overrides: [String] = []

    @Flag(name: .long, help: "One JSON object per sample instead of CSV.")
    var jsonl = false

    func run() throws {
        try Session.run { session in
            try session.predict(checkpointPath: checkpoint, configPath: config, overrides: overrides, inputPath: input, jsonLines: jsonl)
        }
    }
}

struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw learning curves (loss and accuracy per epoch) from a metrics file as SVG.")

    @Argument(help: "A metrics file written by train --metrics (JSON lines).")
    var metrics: String

    @Option(name: .long, help: "Directory for curves-loss.svg and curves-accuracy.svg.")
    var out: String

    func run() throws {
        do {
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            for path in try LearningCurves.read(path: metrics).writeSVG(prefix: out + "/curves") { print(path) }
        } catch {
            FileHandle.standardError.write(Data("lockstep: error: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "checkpoint", abstract: "Work with checkpoints.",
                                                    subcommands: [Inspect.self])

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a checkpoint's step, config, tensors and checksum verdict.")

        @Argument(help: "Checkpoint file (.safetensors) or checkpoint directory (its newest).")
        var path: String

        func run() throws {
            let valid = Session.inspectCheckpoint(path)
            if !valid { throw ExitCode(2) }
        }
    }
}

struct SelfTest: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "selftest", abstract: "Check the MPI engine under mpirun.")

    @Argument(help: "What to check: comm.")
    var what: String = "comm"

    func run() throws {
        try Session.run { session in try session.selfTest(what) }
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Sample text from a trained character-level language model.")

    @Option(name: .long, help: "YAML training config of the language model (default: the one stored in --checkpoint).")
    var config: String?

    @Option(name: .customLong("set"), help: "Override a config key (repeatable).")
    var overrides: [String] = []

    @Option(name: .long, help: "Raw float32 parameter file written by train --dump-parameters (with --config).")
    var parameters: String?

    @Option(name: .long, help: "A checkpoint of the language model (.safetensors).")
    var checkpoint: String?

    @Option(name: .long, help: "Text to continue (every byte must occur in the training corpus).")
    var prompt: String

    @Option(name: .long, help: "Bytes to generate.")
    var length: Int = 200

    @Option(name: .long, help: "Sampling temperature; 0 always takes the most likely byte.")
    var temperature: Double = 0.8

    @Option(name: .long, help: "Seed of the sampling generator.")
    var seed: UInt64 = 0

    func run() throws {
        try Session.run { session in
            try session.generate(configPath: config, overrides: overrides, parametersPath: parameters,
                                 checkpointPath: checkpoint, prompt: prompt,
                                 length: length, temperature: temperature, seed: seed)
        }
    }
}

/// `lockstep bench …`: measurements for BENCHMARKS.md and `launch/scaling-bench` (never tests).
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure allreduce, training throughput, Linear vs sgemm, and project scaling.",
        subcommands: [AllreduceCommand.self, TrainCommand.self, LinearCommand.self, KernelsCommand.self, ProjectCommand.self])

    struct AllreduceCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "allreduce", abstract: "Allreduce latency and bus bandwidth per message size (run under mpirun).")

        @Option(name: .long, help: "Smallest message, e.g. 4, 16KiB.")
        var minBytes = "4"

        @Option(name: .long, help: "Largest message, e.g. 64MiB.")
        var maxBytes = "64MiB"

        @Option(name: .long, help: "Size multiplier between rows (2 or 4).")
        var factor = 4

        @Option(name: .long, help: "Timed trials per size (the median is reported).")
        var trials = 10

        @Option(name: .long, help: "Write the results as JSON to this file (rank 0).")
        var json: String?

        func run() throws {
            let minimum = try parse(minBytes), maximum = try parse(maxBytes)
            try Session.run { session in
                try session.benchAllreduce(minimumBytes: minimum, maximumBytes: maximum, factor: factor, trials: trials, jsonPath: json)
            }
        }

        private func parse(_ text: String) throws -> Int {
            do { return try AllreduceBench.parseBytes(text) } catch { throw ValidationError("\(error)") }
        }
    }

    struct TrainCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train", abstract: "Steady-state training throughput, per-phase breakdown and FLOP/s of a config.")

        @Option(name: .long, help: "YAML training config.")
        var config: String

        @Option(name: .customLong("set"), help: "Override a config key (repeatable), e.g. --set training.batch_size=32.")
        var overrides: [String] = []

        @Option(name: .long, help: "Timed steps after warm-up.")
        var steps = 100

        @Option(name: .long, help: "Untimed warm-up steps.")
        var warmup = 10

        @Option(name: .long, help: "Write the results as JSON to this file (rank 0).")
        var json: String?

        @Option(name: .long, help: "Write a Chrome trace (chrome://tracing, ui.perfetto.dev) of every rank's steps to this file (rank 0).")
        var trace: String?

        func run() throws {
            try Session.run { session in
                try session.benchTrain(configPath: config, overrides: overrides, steps: steps, warmup: warmup,
                                       jsonPath: json, tracePath: trace)
            }
        }
    }

    struct KernelsCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "kernels", abstract: "The per-step passes over the flat buffers (optimizers, finiteness, norm).")

        @Option(name: .long, help: "Parameters (fashion-mlp has 235146).")
        var count = 235_146

        @Option(name: .long, help: "Timed trials (median).")
        var trials = 200

        func run() throws {
            for line in Bench.flatBufferPasses(count: count, trials: trials) { print(line) }
        }
    }

    struct LinearCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "linear", abstract: "Linear layers vs raw sgemm on the fashion-mlp shapes.")

        @Option(name: .long, help: "Batch size.")
        var batch = 64

        @Option(name: .long, help: "Timed trials (median).")
        var trials = 200

        func run() throws {
            try Session.run { session in try session.benchLinear(batch: batch, trials: trials) }
        }
    }

    struct ProjectCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "project", abstract: "Fit α–β to allreduce sweeps and project weak scaling to many nodes (Markdown).")

        @Option(name: .long, help: "A `bench allreduce --json` file (repeatable; several world sizes improve the fit).")
        var allreduce: [String] = []

        @Option(name: .long, help: "A 1-rank `bench train --json` file per model (repeatable).")
        var train: [String] = []

        @Option(name: .long, help: "Node counts to project.")
        var nodes = "8 16 32 64 128 256 512 1024"

        @Option(name: .long, help: "Link rates in Gb/s.")
        var gbps = "10 25 100"

        @Option(name: .long, help: "Network latency per message (µs) assumed for the projected links.")
        var alphaUs = 10.0

        @Option(name: .long, help: "A `launch/scaling-bench --hosts` directory (repeatable): the first fits the link, all are checked against the model.")
        var cluster: [String] = []

        @Option(name: .long, help: "Config name of the --cluster runs.")
        var clusterConfig = "fashion-mlp-wide"

        @Option(name: .long, help: "Node counts for the two-level (flat, hierarchical, ZeRO-1) projection.")
        var levelNodes = "8 16 32 64 128 256"

        @Option(name: .long, help: "Optimizer state floats per parameter for ZeRO-1's memory column (SGD momentum 1, Adam 2).")
        var optimizerStates = 1

        @Option(name: .long, help: "Write the Markdown to this file as well as stdout.")
        var output: String?

        func run() throws {
            guard !allreduce.isEmpty else { throw ValidationError("give at least one --allreduce FILE from `lockstep bench allreduce --json`") }
            let nodeList = nodes.split(separator: " ").compactMap { Int($0) }
            let rates = gbps.split(separator: " ").compactMap { Double($0) }
            guard !nodeList.isEmpty, !rates.isEmpty else { throw ValidationError("--nodes and --gbps need space-separated numbers") }
            do {
                let levelNodeList = levelNodes.split(separator: " ").compactMap { Int($0) }
                let text = try ScalingProjection.report(allreducePaths: allreduce, trainPaths: train, nodes: nodeList,
                                                        gigabitsPerSecond: rates, networkAlpha: alphaUs * 1e-6,
                                                        clusterPaths: cluster, clusterConfig: clusterConfig,
                                                        levelNodes: levelNodeList, optimizerStatesPerParameter: optimizerStates)
                print(text, terminator: "")
                if let output, !FileManager.default.createFile(atPath: output, contents: Data(text.utf8)) {
                    throw ValidationError("--output \(output): cannot write the file")
                }
            } catch let error as ConfigError {
                throw ValidationError(error.description)
            }
        }
    }
}
