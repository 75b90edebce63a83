import ArgumentParser
import Foundation
import LockstepTrain

/// `lockstep`: data-parallel training under mpirun (or standalone as one rank).
@main
struct Lockstep: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Data-parallel neural-network training over MPI, one replica per rank.",
        subcommands: [Train.self, Evaluate.self, Generate.self, CheckpointCommand.self, SelfTest.self])
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

    func run() throws {
        try Session.run { session in
            try session.train(configPath: config, overrides: overrides, metricsPath: metrics, printChecksum: printChecksum,
                              dumpParameters: dumpParameters, checkpointDirectory: checkpointDir, resume: resume)
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

    func run() throws {
        try Session.run { session in
            try session.evaluate(configPath: config, overrides: overrides, parametersPath: parameters, checkpointPath: checkpoint)
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

    @Option(name: .long, help: "YAML training config of the language model (data.dataset: text).")
    var config: String

    @Option(name: .customLong("set"), help: "Override a config key (repeatable).")
    var overrides: [String] = []

    @Option(name: .long, help: "Raw float32 parameter file written by train --dump-parameters.")
    var parameters: String

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
            try session.generate(configPath: config, overrides: overrides, parametersPath: parameters, prompt: prompt,
                                 length: length, temperature: temperature, seed: seed)
        }
    }
}
