// swift-tools-version:6.0
import PackageDescription

// Dependencies flow one way: C shims → LockstepCore → LockstepNN → LockstepComm → LockstepData → LockstepTrain → lockstep.
let package = Package(
    name: "Lockstep",
    products: [
        .executable(name: "lockstep", targets: ["lockstep"]),
        .library(name: "LockstepTrain", targets: ["LockstepTrain"]),
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
        // Swift modules
        .target(name: "LockstepCore", dependencies: ["COpenBLAS"],
                swiftSettings: [.unsafeFlags(["-Ounchecked"])]),
        .target(name: "LockstepNN", dependencies: ["LockstepCore"],
                swiftSettings: [.unsafeFlags(["-Ounchecked"])]),
        .target(name: "LockstepComm", dependencies: ["CMPIShim", "LockstepCore"]),
        .target(name: "LockstepData", dependencies: ["LockstepCore", "CZlib"]),
        .target(name: "LockstepCheckpoint", dependencies: ["LockstepCore"]),
        .target(name: "LockstepTrain", dependencies: ["LockstepNN", "LockstepComm", "LockstepData", "LockstepCheckpoint",
                                                       .product(name: "Yams", package: "Yams")]),
        .executableTarget(name: "lockstep", dependencies: ["LockstepTrain",
                                                           .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // Tests
        .testTarget(name: "LockstepCoreTests", dependencies: ["LockstepCore"]),
        .testTarget(name: "LockstepNNTests", dependencies: ["LockstepNN"]),
        .testTarget(name: "LockstepCommTests", dependencies: ["LockstepComm"]),
        .testTarget(name: "LockstepDataTests", dependencies: ["LockstepData"]),
        .testTarget(name: "LockstepCheckpointTests", dependencies: ["LockstepCheckpoint"]),
        .testTarget(name: "LockstepTrainTests", dependencies: ["LockstepTrain"]),
        // Starts the built release binary under mpirun; needs `swift build -c release` first.
        .testTarget(name: "MultiRankTests"),
    ]
)
