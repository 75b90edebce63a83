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
}
