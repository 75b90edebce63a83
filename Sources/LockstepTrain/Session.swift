import Foundation
import LockstepComm
import LockstepCore

/// One process's run: owns the communicator, prints rank-prefixed errors, and ends every rank together.
public final class Session {
    /// The world.
    public let communicator: Communicator
    /// Whether this rank prints progress.
    public var isLeader: Bool { communicator.rank == 0 }

    init(communicator: Communicator) { self.communicator = communicator }

    /// Starts MPI when launched by mpirun (else runs as one rank), runs `body`, and exits non-zero on error.
    ///
    /// Errors every rank detects together (`CollectiveError`, config errors found before the first collective)
    /// end each rank normally; any other error on one rank aborts the whole job so no rank waits forever.
    /// Call it first thing: on a CPU that OpenBLAS does not know it re-executes the program once (see
    /// `useKnownBLASKernels`).
    public static func run(_ body: (Session) throws -> Void) -> Never {
        useKnownBLASKernels()
        let communicator: Communicator
        do { communicator = try makeCommunicator() } catch {
            FileHandle.standardError.write(Data("lockstep: error: \(error)\n".utf8))
            exit(1)
        }
        configureThreads(localSize: communicator.localSize)
        installSignalHandlers()
        let session = Session(communicator: communicator)
        do {
            try body(session)
            try communicator.finalize()
            exit(0)
        } catch {
            let prefix = communicator.size > 1 ? "[rank \(communicator.rank)] " : ""
            FileHandle.standardError.write(Data("\(prefix)lockstep: error: \(error)\n".utf8))
            if communicator.size > 1 && !(error is CollectiveError) {
                communicator.abort(code: 1)
            }
            try? communicator.finalize()
            exit(1)
        }
    }

    /// Re-runs this process with OPENBLAS_CORETYPE set when OpenBLAS chose its generic kernels for a CPU it does not
    /// know (`BLAS.preferredCoreType`: about 5× slower sgemm on a Xeon family 6 model 207 with OpenBLAS 0.3.21). The
    /// kernels are chosen when the library loads, so only a fresh start helps; done before MPI starts, same pid and
    /// arguments. A value the user set is never overridden.
    static func useKnownBLASKernels() {
        guard getenv("OPENBLAS_CORETYPE") == nil, let core = BLAS.preferredCoreType() else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)  // returns only on failure: keep the slow kernels then
    }

    /// OpenBLAS threads = cores / ranks on this node unless OPENBLAS_NUM_THREADS is set, so ranks don't fight.
    static func configureThreads(localSize: Int) {
        if ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"] == nil {
            BLAS.setThreadCount(max(1, ProcessInfo.processInfo.activeProcessorCount / max(localSize, 1)))
        }
    }

    static func installSignalHandlers() {
        // The flag is read at the next step's control vector, so every rank stops at the same step.
        let handler: @convention(c) (Int32) -> Void = { _ in stopRequested = 1 }
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
    }

    /// Writes a line to stdout on rank 0 only.
    public func say(_ text: String) {
        guard isLeader else { return }
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }
}
