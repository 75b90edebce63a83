import COpenBLAS

/// Matrix products through OpenBLAS; the only file in Lockstep that calls BLAS.
public enum BLAS {
    /// C[m×n] = alpha · op(A) · op(B) + beta · C, all row-major; `transposeA` means A is stored k×m.
    @inline(__always)
    public static func gemm(transposeA: Bool = false, transposeB: Bool = false,
                            m: Int, n: Int, k: Int,
                            alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int,
                            beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// y = alpha · x + y.
    @inline(__always)
    public static func axpy(count: Int, alpha: Float, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        cblas_saxpy(Int32(count), alpha, x, 1, y, 1)
    }

    /// Dot product of two vectors.
    @inline(__always)
    public static func dot(count: Int, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>) -> Float {
        cblas_sdot(Int32(count), x, 1, y, 1)
    }

    /// Sets the number of OpenBLAS threads for this process.
    public static func setThreadCount(_ threads: Int) { openblas_set_num_threads(Int32(max(1, threads))) }

    /// The number of threads OpenBLAS will use.
    public static var threadCount: Int { Int(openblas_get_num_threads()) }

    /// The kernel set OpenBLAS picked for this CPU at run time (e.g. "SkylakeX", "Zen", "Haswell").
    public static var coreName: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }

    /// The kernel set to request with OPENBLAS_CORETYPE, or nil to keep OpenBLAS's own choice.
    ///
    /// Only when OpenBLAS fell back to its generic "Prescott" (SSE3) kernels on a CPU whose flags allow AVX-512 or
    /// AVX2+FMA ones: OpenBLAS 0.3.21 does this for CPU models newer than itself (Xeon family 6 model 207 here, where
    /// its sgemm is then about 5x slower). It picks kernels when the library loads, so the caller must re-execute.
    public static func preferredCoreType(current: String = coreName, flags: Set<String> = CPUInfo.flags,
                                         vendor: String = CPUInfo.vendor) -> String? {
        guard current.lowercased() == "prescott" else { return nil }
        if flags.isSuperset(of: ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"]) { return "SkylakeX" }
        if flags.isSuperset(of: ["avx2", "fma"]) { return vendor == "AuthenticAMD" ? "Zen" : "Haswell" }
        return nil
    }
}
