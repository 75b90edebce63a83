// swift-tools-version:6.0
import PackageDescription

// Dependencies flow one way: C shims → LockstepCore → LockstepNN / LockstepComm / LockstepData / LockstepCheckpoint →
// LockstepTrain (the coordinator) → LockstepConfig (YAML) → LockstepBench → LockstepCLI → lockstep.
let package = Package(
    name: "Lockstep",
    products: [
        .executable(name: "lockstep", targets: ["lockstep"]),
        .library(name: "LockstepNN", targets: ["LockstepNN"]),
        .library(name: "LockstepComm", targets: ["LockstepComm"]),
        .library(name: "LockstepData", targets: ["LockstepData"]),
        .library(name: "LockstepCheckpoint", targets: ["LockstepCheckpoint"]),
        .library(name: "LockstepTrain", targets: ["LockstepTrain"]),
        .library(name: "LockstepConfig", targets: ["LockstepConfig"]),
        .library(name: "LockstepBench", targets: ["LockstepBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // C shims
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        .target(name: "CMPIShim", dependencies: ["CMPI"]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        // Elementwise kernels compiled for SSE2, AVX2 and AVX-512 and picked at load time (Swift targets one ISA).
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O2"])]),
        // Swift modules
        .target(name: "LockstepCore", dependencies: ["COpenBLAS", "CKernels"],
                swiftSettings: [.unsafeFlags(["-Ounchecked"])]),
        .target(name: "LockstepNN", dependencies: ["LockstepCore"],
                swiftSettings: [.unsafeFlags(["-Ounchecked"])]),
        .target(name: "LockstepComm", dependencies: ["CMPIShim", "LockstepCore"]),
        .target(name: "LockstepData", dependencies: ["LockstepCore", "CZlib"]),
        .target(name: "LockstepCheckpoint", dependencies: ["LockstepCore"]),
        // The coordinator: a data-parallel Trainer over Swift objects.
        .target(name: "LockstepTrain", dependencies: ["LockstepNN", "LockstepComm", "LockstepData", "LockstepCheckpoint"]),
        // YAML configs, factories and the model builder: one front end over the Trainer.
        .target(name: "LockstepConfig", dependencies: ["LockstepTrain", .product(name: "Yams", package: "Yams")]),
        // Benchmarks, projection and step timings; beside the training path, never on it.
        .target(name: "LockstepBench", dependencies: ["LockstepConfig"]),
        // The subcommands' bodies (train, eval, generate, inspect, selftest, bench).
        .target(name: "LockstepCLI", dependencies: ["LockstepBench"]),
        .executableTarget(name: "lockstep", dependencies: ["LockstepCLI",
                                                           .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // Tests
        .testTarget(name: "LockstepCoreTests", dependencies: ["LockstepCore", "CKernels"]),
        .testTarget(name: "LockstepNNTests", dependencies: ["LockstepNN"]),
        .testTarget(name: "LockstepCommTests", dependencies: ["LockstepComm"]),
        .testTarget(name: "LockstepDataTests", dependencies: ["LockstepData"]),
        .testTarget(name: "LockstepCheckpointTests", dependencies: ["LockstepCheckpoint"]),
        .testTarget(name: "LockstepTrainTests", dependencies: ["LockstepCLI"]),
        // Starts the built release binary under mpirun; needs `swift build -c release` first.
        .testTarget(name: "MultiRankTests"),
    ]
)
