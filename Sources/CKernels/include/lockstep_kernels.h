#ifndef LOCKSTEP_KERNELS_H
#define LOCKSTEP_KERNELS_H
#include <stddef.h>

/// Elementwise kernels compiled three times (x86-64 baseline SSE2, AVX2, AVX-512F) and picked by the CPU at load time.
/// Swift compiles for the x86-64 baseline (4-float SSE lanes) and cannot target one function at a wider ISA; these
/// run 16 floats per step on every ISA, with floating-point contraction off, so every variant returns the same bits.

/// The kernel variants, widest last.
typedef enum lockstep_kernels_isa {
    LOCKSTEP_KERNELS_BASELINE = 0,
    LOCKSTEP_KERNELS_AVX2 = 1,
    LOCKSTEP_KERNELS_AVX512 = 2,
} lockstep_kernels_isa;

/// The variant in use (the widest the CPU supports, unless LOCKSTEP_KERNELS=baseline|avx2|avx512 narrows it).
lockstep_kernels_isa lockstep_kernels_active(void);

/// Switches to `isa`; returns 0 if this CPU cannot run it (nothing changes then), 1 otherwise. For tests.
int lockstep_kernels_select(lockstep_kernels_isa isa);

/// y = e^x per element (relative error < 3e-7 on [-87, 88], clamped outside).
void lockstep_exp(const float *x, float *y, size_t count);

/// y = gelu(x) (tanh form, as x·σ(2u)); with `gates` non-null, σ(2u) is stored there for the backward pass.
void lockstep_gelu_forward(const float *x, float *y, float *gates, size_t count);

/// dx = dy · gelu'(x); `dx` may be `dy`; σ(2u) is read from `gates` when non-null, else recomputed.
void lockstep_gelu_backward(const float *x, const float *dy, float *dx, const float *gates, size_t count);

/// y = softmax(x) over `count` > 0 values (max-shifted); `y` may be `x`.
void lockstep_softmax(const float *x, float *y, size_t count);

/// log Σ e^x over `count` > 0 values, max-shifted.
float lockstep_log_sum_exp(const float *x, size_t count);

/// For each row of a rows × count block: softmax of its first `visible` values (visible + i in row i when `causal`,
/// at most count) into y, the rest of the row 0 (causal attention: visible 1, causal); `y` may be `x`.
void lockstep_masked_softmax(const float *x, float *y, size_t rows, size_t count, size_t visible, int causal);

/// Softmax backward in place, each row of a rows × count block: g = p ⊙ (g − ⟨g, p⟩) over the row's visible values
/// (as in lockstep_masked_softmax), 0 after them.
void lockstep_softmax_backward(const float *p, float *g, size_t rows, size_t count, size_t visible, int causal);

/// A small matrix as its nonzeros by row (compressed sparse rows): row i's are entries starts[i] ..< starts[i + 1].
typedef struct lockstep_sparse_matrix {
    long rows;
    long columns;
    const long *starts;
    const long *indices;
    const float *values;
} lockstep_sparse_matrix;

/// out = P · in · Qᵀ (out += … when `accumulate`) over a tile of 16-float vectors: `in` holds P.columns × Q.columns
/// vectors at `row_stride`/`column_stride` floats, `out` P.rows × Q.rows at its strides, `temp` P.rows × Q.columns
/// vectors. Every row of P has a nonzero.
void lockstep_tile_transform(const lockstep_sparse_matrix *p, const lockstep_sparse_matrix *q, const float *input,
                             long row_stride, long column_stride, float *temp, float *output, long output_row_stride,
                             long output_column_stride, int accumulate);

/// The four tile transforms of Winograd F(4×4, 5×5) (16-float vectors per tile element).
typedef enum lockstep_winograd_stage {
    /// V = Bᵀ d B, 8 × 8 → 8 × 8.
    LOCKSTEP_WINOGRAD_INPUT = 0,
    /// dd = B dV Bᵀ, 8 × 8 → 8 × 8 (the adjoint of the input transform).
    LOCKSTEP_WINOGRAD_INPUT_ADJOINT = 1,
    /// Y = Aᵀ M A, 8 × 8 → 4 × 4.
    LOCKSTEP_WINOGRAD_OUTPUT = 2,
    /// dM = A dY Aᵀ, 4 × 4 → 8 × 8 (the adjoint of the output transform).
    LOCKSTEP_WINOGRAD_OUTPUT_ADJOINT = 3,
} lockstep_winograd_stage;

/// One F(4×4, 5×5) tile transform written out for the points 0, ±1, ±2, ±1/2, ∞ (what `lockstep_tile_transform`
/// computes with those matrices, in about half the operations; rounding differs): strides in floats as there, out +=
/// when `accumulate`.
void lockstep_winograd_f45(lockstep_winograd_stage stage, const float *input, long row_stride, long column_stride,
                           float *output, long output_row_stride, long output_column_stride, int accumulate);

/// The Bᵀ (8 × 8) and Aᵀ (4 × 8) that `lockstep_winograd_f45` implements, row-major, so a caller can check they are its own.
void lockstep_winograd_f45_matrices(float input_transform[64], float output_transform[32]);

/// 2 × 2, stride 2 max pooling of `planes` row-major planes of height × width (both even): the first maximum in the
/// order top-left, top-right, bottom-left, bottom-right; with `rectify`, max(·, 0) (0 >= v ? 0 : v, a NaN passes).
/// `winners` (may be null) gets each window's winner as channel · height · width + position in the plane, with
/// channel = plane mod `channels`.
void lockstep_max_pool_2x2(const float *input, long planes, long height, long width, long channels, float *output,
                           int *winners, int rectify);

/// Its backward: every input gradient written, the window's gradient (0 + g) at its winner, 0 elsewhere; with
/// `rectified`, 0 too where the window's output is not positive.
void lockstep_max_pool_2x2_backward(const float *output, const float *output_gradient, const int *winners, long planes,
                                    long height, long width, long channels, float *input_gradient, int rectified);

/// Samples into lanes: destination[r·destination_row_stride + c·16 + lane] = source[lane·lane_stride + r·row_stride + c]
/// for lane < `lanes` (≤ 16); the other lanes are set to 0. Strides in floats.
void lockstep_interleave_lanes(const float *source, long lane_stride, long row_stride, long lanes, long rows, long columns,
                               float *destination, long destination_row_stride);

/// Lanes back into samples: destination[lane·lane_stride + r·row_stride + c] = source[r·source_row_stride + c·16 + lane]
/// for lane < `lanes`.
void lockstep_deinterleave_lanes(const float *source, long source_row_stride, long lanes, long rows, long columns,
                                 float *destination, long lane_stride, long row_stride);

/// destination[i] = source[i] for i < count through non-temporal stores, fenced: for lines other cores have cached,
/// whose ownership ordinary stores would first have to take back.
void lockstep_copy_streaming(float *destination, const float *source, size_t count);

/// destination[c·rows + r] = source[r·columns + c]: the rows × columns row-major matrix transposed.
void lockstep_transpose(const float *source, size_t rows, size_t columns, float *destination);

/// Writes `row` (width values) into each of the `rows` rows of a row-major matrix, or with `addend` (a rows × width
/// matrix, may be null) addend's row + `row`: a GEMM's bias seed, with a residual.
void lockstep_fill_rows(float *matrix, const float *row, const float *addend, size_t rows, size_t width);

/// row[c] += Σ_r matrix[r, c] over a row-major rows × width matrix (bias gradients).
void lockstep_sum_rows(const float *matrix, float *row, size_t rows, size_t width);

/// Layer normalization over each of `rows` rows of `width` values: y = (x − mean)·invstd·weight + bias; each row's
/// mean and invstd = 1/√(var + epsilon) are stored for the backward pass.
void lockstep_layer_norm_forward(const float *input, float *output, const float *weight, const float *bias, float *means,
                                 float *inverse_deviations, size_t rows, size_t width, float epsilon);

/// Layer normalization backward: weight_gradient and bias_gradient accumulate; `input_gradient` (may be null) is
/// written, plus `addend` (a residual's gradient; may be null) when given.
void lockstep_layer_norm_backward(const float *input, const float *output_gradient, float *input_gradient,
                                  const float *addend, const float *weight, float *weight_gradient,
                                  float *bias_gradient, const float *means, const float *inverse_deviations,
                                  size_t rows, size_t width);

/// 1 when every value is finite, else 0.
int lockstep_all_finite(const float *x, size_t count);

/// out[i] = (sources[0][i] + … + sources[source_count−1][i]) · factor for begin ≤ i < end, added in source order
/// (`out` may be a source); 1 when every value written is finite, else 0. `stores` is a set of LOCKSTEP_SUM_* flags.
int lockstep_sum_sources(float *const *sources, size_t source_count, size_t begin, size_t end, float factor, float *out,
                         int stores);
/// lockstep_sum_sources: every source other than `out` is set to 0 over the range once read.
#define LOCKSTEP_SUM_CLEAR_SOURCES 1
/// lockstep_sum_sources: those zeros as non-temporal stores where whole 64-byte lines allow (then fenced).
#define LOCKSTEP_SUM_STREAM_CLEARS 2
/// lockstep_sum_sources: `out` written with non-temporal stores where whole 64-byte lines allow (then fenced).
#define LOCKSTEP_SUM_STREAM_OUT 4

/// One SGD step (PyTorch semantics): g = grad + weight_decay·p; v = g on the first step, else momentum·v + g;
/// p −= learning_rate·(nesterov ? g + momentum·v : v), or p −= learning_rate·g without momentum (velocity unused).
/// With `clearing` non-zero, each gradient is set to 0 after it is read.
void lockstep_sgd_step(float *parameters, float *gradients, float *velocity, size_t count, float learning_rate,
                       float momentum, float weight_decay, int nesterov, int first_step, int clearing);

#endif
