// swift-tools-version:6.0
import PackageDescription

// A user's own package: it depends on Lockstep by path, defines its models in Swift and trains them data-parallel.
let package = Package(
    name: "SwiftTraining",
    dependencies: [.package(name: "Lockstep", path: "../..")],
    targets: [
        .executableTarget(name: "FashionExample", dependencies: [
            .product(name: "LockstepTrain", package: "Lockstep"),
            .product(name: "LockstepNN", package: "Lockstep"),
            .product(name: "LockstepData", package: "Lockstep"),
            .product(name: "LockstepComm", package: "Lockstep"),
        ]),
    ]
)
