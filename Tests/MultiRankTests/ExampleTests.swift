import Foundation
import XCTest

/// The Swift example a user copies (Examples/SwiftTraining): its own `Sequential` trained data-parallel under mpirun
/// through the library, with the very results of the CLI on the equivalent config.
final class ExampleTests: XCTestCase {
    /// Built by launch/test (`swift build -c release --package-path Examples/SwiftTraining`), or here when missing.
    static let binary: String = {
        let package = MPIRun.packageRoot.appendingPathComponent("Examples/SwiftTraining").path
        let path = package + "/.build/release/FashionExample"
        if !FileManager.default.isExecutableFile(atPath: path) { MPIRun.buildOnce(["swift", "build", "-c", "release", "--package-path", package]) }
        return path
    }()

    func testSwiftExampleOnTwoRanksMatchesTheCLI() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            XCTFail("\(Self.binary) not found and could not be built: `swift build -c release --package-path Examples/SwiftTraining`")
            return
        }
        let subset = ["--set", "data.train_subset=8192", "--set", "data.test_subset=1000"]
        let example = try MPIRun.execute(["mpirun", "-np", "2", "--mca", "pml", "ob1", "--bind-to", "none", "-x", "OPENBLAS_NUM_THREADS=1",
                                          Self.binary, "mlp", "--epochs", "1", "--train-subset", "8192", "--test-subset", "1000"], timeout: 120)
        XCTAssertEqual(example.status, 0, example.stderr)
        XCTAssertTrue(example.stdout.contains("epoch 1 step 64: train loss"), example.stdout)
        // The example's MLP, SGD (momentum 0.9, lr 0.05, constant) and seed are fashion-mlp.yaml with these overrides.
        let cli = try MPIRun.run(ranks: 2, ["train", "--config", MPIRun.config("fashion-mlp.yaml"), "--print-checksum",
                                            "--set", "training.epochs=1", "--set", "schedule.type=constant",
                                            "--set", "schedule.warmup_epochs=0", "--set", "optimizer.weight_decay=0"] + subset)
        XCTAssertEqual(cli.status, 0, cli.stderr)
        func checksums(_ output: String) -> Set<Substring> {
            Set(output.split(separator: "\n").filter { $0.contains("parameter checksum") }.map { $0.split(separator: " ").last! })
        }
        XCTAssertEqual(checksums(example.stdout).count, 1, "ranks disagree: \(example.stdout)")
        XCTAssertEqual(checksums(example.stdout), checksums(cli.stdout), "example \(example.stdout)\nCLI \(cli.stdout)")
        let done = { (output: String) in output.split(separator: "\n").first { $0.hasPrefix("done: test accuracy") }?.split(separator: ",").first }
        XCTAssertEqual(done(example.stdout), done(cli.stdout))
    }

    /// The GAN written in Swift (two `Sequential`s, two Adam optimizers, one `GANTrainer`) trains on 2 ranks in
    /// lockstep and writes its sample grid.
    func testSwiftGANExampleOnTwoRanks() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            XCTFail("\(Self.binary) not found and could not be built: `swift build -c release --package-path Examples/SwiftTraining`")
            return
        }
        let images = MPIRun.temporaryPath("gan-example")
        defer { try? FileManager.default.removeItem(atPath: images) }
        let run = try MPIRun.execute(["mpirun", "-np", "2", "--mca", "pml", "ob1", "--bind-to", "none", "-x", "OPENBLAS_NUM_THREADS=1",
                                      Self.binary, "gan", "--epochs", "1", "--train-subset", "1024", "--test-subset", "100",
                                      "--images", images], timeout: 120)
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stdout.contains("epoch 1 step 8: discriminator loss"), run.stdout)
        let checksums = Set(run.stdout.split(separator: "\n").filter { $0.contains("parameter checksum") }.map { $0.split(separator: " ").last! })
        XCTAssertEqual(checksums.count, 1, "ranks disagree: \(run.stdout)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: images + "/samples-epoch-001.png"))
    }
}
