import CKernels

/// A small matrix as its nonzeros by row (compressed sparse rows), for Winograd's tile transforms.
public final class SparseTileMatrix {
    /// Rows of the matrix.
    public let rows: Int
    /// Columns of the matrix.
    public let columns: Int
    private let starts: UnsafeMutablePointer<Int>
    private let indices: UnsafeMutablePointer<Int>
    private let values: UnsafeMutablePointer<Float>
    /// The C view of the arrays above, allocated once so a transform passes a pointer (they live as long as this object).
    fileprivate let view: UnsafeMutablePointer<lockstep_sparse_matrix>

    /// The nonzeros of a row-major rows × columns matrix; every row must have one.
    public init(_ dense: [Float], rows: Int, columns: Int) {
        precondition(dense.count == rows * columns, "SparseTileMatrix: \(dense.count) values for \(rows)×\(columns)")
        self.rows = rows; self.columns = columns
        let count = dense.filter { $0 != 0 }.count
        starts = .allocate(capacity: rows + 1)
        indices = .allocate(capacity: max(count, 1))
        values = .allocate(capacity: max(count, 1))
        var entry = 0
        for i in 0..<rows {
            starts[i] = entry
            for k in 0..<columns where dense[i * columns + k] != 0 {
                indices[entry] = k; values[entry] = dense[i * columns + k]; entry += 1
            }
            precondition(entry > starts[i], "SparseTileMatrix: row \(i) of a transform has no nonzero")
        }
        starts[rows] = entry
        view = .allocate(capacity: 1)
        view.initialize(to: lockstep_sparse_matrix(rows: rows, columns: columns, starts: starts, indices: indices, values: values))
    }

    deinit { starts.deallocate(); indices.deallocate(); values.deallocate(); view.deallocate() }
}

extension Kernels {
    /// out = P · in · Qᵀ (out += … with `accumulate`) on a tile of 16-float vectors (16 samples or tiles per lane
    /// group): `input` holds P.columns × Q.columns vectors at the given strides (in floats), `output` P.rows × Q.rows,
    /// `temp` room for P.rows × Q.columns vectors. Only nonzero coefficients are visited (CKernels, per ISA).
    @inline(__always)
    public static func tileTransform(_ p: SparseTileMatrix, _ q: SparseTileMatrix,
                                     from input: UnsafePointer<Float>, rowStride: Int, columnStride: Int,
                                     through temp: UnsafeMutablePointer<Float>,
                                     to output: UnsafeMutablePointer<Float>, outputRowStride: Int, outputColumnStride: Int,
                                     accumulate: Bool) {
        lockstep_tile_transform(p.view, q.view, input, rowStride, columnStride, temp, output, outputRowStride,
                                outputColumnStride, accumulate ? 1 : 0)
    }
}

extension Kernels {
    /// Samples into SIMD lanes: destination[r·destinationRowStride + c·16 + lane] = source[lane·laneStride + r·rowStride + c]
    /// over a rows × columns window, for lane < `lanes` (≤ 16); the other lanes get 0. Strides in floats.
    @inline(__always)
    public static func interleaveLanes(from source: UnsafePointer<Float>, laneStride: Int, rowStride: Int, lanes: Int,
                                       rows: Int, columns: Int, to destination: UnsafeMutablePointer<Float>,
                                       destinationRowStride: Int) {
        lockstep_interleave_lanes(source, laneStride, rowStride, lanes, rows, columns, destination, destinationRowStride)
    }

    /// SIMD lanes back into samples, the inverse of `interleaveLanes` for lane < `lanes`.
    @inline(__always)
    public static func deinterleaveLanes(from source: UnsafePointer<Float>, sourceRowStride: Int, lanes: Int, rows: Int,
                                         columns: Int, to destination: UnsafeMutablePointer<Float>, laneStride: Int,
                                         rowStride: Int) {
        lockstep_deinterleave_lanes(source, sourceRowStride, lanes, rows, columns, destination, laneStride, rowStride)
    }
}

/// One of the four tile transforms of a Winograd convolution (for `Kernels.winogradF45`).
public enum WinogradStage: Sendable, CaseIterable {
    /// V = Bᵀ d B.
    case input
    /// B dV Bᵀ, the adjoint of `input`.
    case inputAdjoint
    /// Y = Aᵀ M A.
    case output
    /// A dY Aᵀ, the adjoint of `output`.
    case outputAdjoint

    var c: lockstep_winograd_stage {
        switch self {
        case .input: LOCKSTEP_WINOGRAD_INPUT
        case .inputAdjoint: LOCKSTEP_WINOGRAD_INPUT_ADJOINT
        case .output: LOCKSTEP_WINOGRAD_OUTPUT
        case .outputAdjoint: LOCKSTEP_WINOGRAD_OUTPUT_ADJOINT
        }
    }
}

extension Kernels {
    /// The Bᵀ (8 × 8) and Aᵀ (4 × 8), row-major, that `winogradF45` has written out.
    public static let winogradF45Matrices: (input: [Float], output: [Float]) = {
        var input = [Float](repeating: 0, count: 64), output = [Float](repeating: 0, count: 32)
        lockstep_winograd_f45_matrices(&input, &output)
        return (input, output)
    }()

    /// One Winograd F(4×4, 5×5) tile transform with the matrices `winogradF45Matrices` written out (what
    /// `tileTransform` computes with them, in about half the operations): strides in floats, out += with `accumulate`.
    @inline(__always)
    public static func winogradF45(_ stage: WinogradStage, from input: UnsafePointer<Float>, rowStride: Int,
                                   columnStride: Int, to output: UnsafeMutablePointer<Float>, outputRowStride: Int,
                                   outputColumnStride: Int, accumulate: Bool) {
        lockstep_winograd_f45(stage.c, input, rowStride, columnStride, output, outputRowStride, outputColumnStride,
                              accumulate ? 1 : 0)
    }
}
