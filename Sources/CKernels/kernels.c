// Elementwise kernels in 16-float vectors, compiled for three ISAs and dispatched once at load time.
//
// Every variant executes the same IEEE operations in the same order (contraction into FMA is off and there is no
// reciprocal approximation), so results are bit-identical whichever the CPU picks: ranks on different x86 CPUs stay
// in agreement, and deterministic runs do not depend on the ISA. Reductions keep 16 partial sums on every ISA.
#include "lockstep_kernels.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#pragma clang fp contract(off)
// The 16-float helpers below are always inlined, so no vector ever crosses a call boundary: the ABI note is moot.
#pragma clang diagnostic ignored "-Wpsabi"

typedef float v16f __attribute__((ext_vector_type(16)));
typedef int v16i __attribute__((ext_vector_type(16)));
#define LANES 16
#define INLINE static inline __attribute__((always_inline))

INLINE v16f splat(float value) { return (v16f)value; }
INLINE v16f load(const float *p) { v16f v; __builtin_memcpy(&v, p, sizeof v); return v; }
INLINE void store(float *p, v16f v) { __builtin_memcpy(p, &v, sizeof v); }
/// The first `count` (< 16) floats from p, the other lanes `pad`.
INLINE v16f load_partial(const float *p, size_t count, float pad) {
    float lanes[LANES];
    for (int i = 0; i < LANES; i++) lanes[i] = pad;
    __builtin_memcpy(lanes, p, count * sizeof(float));
    return load(lanes);
}
INLINE void store_partial(float *p, v16f v, size_t count) {
    float lanes[LANES];
    store(lanes, v);
    __builtin_memcpy(p, lanes, count * sizeof(float));
}
/// Lanes where `mask` is set take `a`, the others `b`.
INLINE v16f blend(v16i mask, v16f a, v16f b) { return (v16f)((mask & (v16i)a) | (~mask & (v16i)b)); }
INLINE v16f limit(v16f x, float lower, float upper) {
    x = blend(x < splat(lower), splat(lower), x);
    return blend(x > splat(upper), splat(upper), x);
}
/// Fixed left-to-right order, the same on every ISA.
INLINE float horizontal_sum(v16f v) {
    float sum = v[0];
    for (int i = 1; i < LANES; i++) sum += v[i];
    return sum;
}

/// e^x: n = round(x/ln 2) by the 1.5·2²³ trick, r = x − n·ln 2 in two parts, e^r by its degree-6 Taylor polynomial
/// (truncation < 1.2e-7·e^r on |r| ≤ 0.347), times 2ⁿ built from n's bits. The same operations as FastMath.exp.
INLINE v16f vexp(v16f x) {
    const v16f shifter = splat(12582912.0f);
    v16f clamped = limit(x, -87.0f, 88.0f);
    v16f shifted = clamped * 1.44269504f + shifter;
    v16f n = shifted - shifter;
    v16f r = (clamped - n * 0.69314575f) - n * 1.4286068e-6f;
    v16f p = splat(1.0f / 720.0f);
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    v16i integer = (v16i)shifted - (v16i)shifter;
    v16f scale = (v16f)((integer + 127) << 23);
    return p * scale;
}

static const float gelu_c = 0.79788456f;  // √(2/π)

/// σ(2u) = 0.5·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³).
INLINE v16f gelu_gate(v16f v) {
    v16f u = gelu_c * (v + 0.044715f * v * v * v);
    return 1.0f / (1.0f + vexp(-2.0f * u));
}

/// gelu'(x) = s + 2·x·s·(1 − s)·u'(x).
INLINE v16f gelu_derivative(v16f v, v16f s) {
    v16f slope = gelu_c * (1.0f + 3.0f * 0.044715f * v * v);
    v16f spread = 2.0f * v * s * (1.0f - s);
    return s + spread * slope;
}

INLINE void exp_body(const float *x, float *y, size_t count) {
    size_t i = 0;
    for (; i + LANES <= count; i += LANES) store(y + i, vexp(load(x + i)));
    if (i < count) store_partial(y + i, vexp(load_partial(x + i, count - i, 0)), count - i);
}

INLINE void gelu_forward_body(const float *x, float *y, float *gates, size_t count) {
    size_t i = 0;
    for (; i + LANES <= count; i += LANES) {
        v16f v = load(x + i), s = gelu_gate(v);
        store(y + i, v * s);
        if (gates) store(gates + i, s);
    }
    if (i < count) {
        v16f v = load_partial(x + i, count - i, 0), s = gelu_gate(v);
        store_partial(y + i, v * s, count - i);
        if (gates) store_partial(gates + i, s, count - i);
    }
}

INLINE void gelu_backward_body(const float *x, const float *dy, float *dx, const float *gates, size_t count) {
    size_t i = 0;
    for (; i + LANES <= count; i += LANES) {
        v16f v = load(x + i);
        v16f s = gates ? load(gates + i) : gelu_gate(v);
        store(dx + i, load(dy + i) * gelu_derivative(v, s));
    }
    if (i < count) {
        size_t rest = count - i;
        v16f v = load_partial(x + i, rest, 0);
        v16f s = gates ? load_partial(gates + i, rest, 0) : gelu_gate(v);
        store_partial(dx + i, load_partial(dy + i, rest, 0) * gelu_derivative(v, s), rest);
    }
}

INLINE float maximum(const float *x, size_t count) {
    size_t i = 0;
    v16f maxima = splat(x[0]);
    for (; i + LANES <= count; i += LANES) { v16f v = load(x + i); maxima = blend(v > maxima, v, maxima); }
    if (i < count) { v16f v = load_partial(x + i, count - i, x[0]); maxima = blend(v > maxima, v, maxima); }
    float result = maxima[0];
    for (int lane = 1; lane < LANES; lane++) if (maxima[lane] > result) result = maxima[lane];
    return result;
}

/// Σ e^(x − shift) over `count` values, each stored to `y` when it is non-null.
INLINE float shifted_exp_sum(const float *x, float *y, size_t count, float shift) {
    v16f sums = splat(0);
    size_t i = 0;
    for (; i + LANES <= count; i += LANES) {
        v16f e = vexp(load(x + i) - shift);
        if (y) store(y + i, e);
        sums += e;
    }
    if (i < count) {
        size_t rest = count - i;
        // Padding lanes get x = shift; their e^0 is dropped before the sum.
        v16f e = vexp(load_partial(x + i, rest, shift) - shift);
        if (y) store_partial(y + i, e, rest);
        v16i lane = (v16i){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
        sums += blend(lane < (int)rest, e, splat(0));
    }
    return horizontal_sum(sums);
}

INLINE void softmax_body(const float *x, float *y, size_t count) {
    float sum = shifted_exp_sum(x, y, count, maximum(x, count));
    v16f inverse = splat(1.0f / sum);
    size_t i = 0;
    for (; i + LANES <= count; i += LANES) store(y + i, load(y + i) * inverse);
    if (i < count) store_partial(y + i, load_partial(y + i, count - i, 0) * inverse, count - i);
}

/// Lanes 0..<16 as ints, for masks by position.
INLINE v16i lane_index(void) { return (v16i){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}; }

/// Softmax over x[0..<visible], zeros in y[visible..<count]: a causal attention row. Whole 16-float vectors of the
/// `count`-long row are read and masked by position, so rows of every visible length avoid partial loads.
INLINE void masked_softmax_body(const float *x, float *y, size_t count, size_t visible) {
    size_t full = count & ~(size_t)(LANES - 1), used = (visible + LANES - 1) & ~(size_t)(LANES - 1);
    if (used > full) { softmax_body(x, y, visible); for (size_t j = visible; j < count; j++) y[j] = 0; return; }
    v16f maxima = splat(x[0]);
    for (size_t i = 0; i < used; i += LANES) {
        v16i inside = lane_index() + (int)i < (int)visible;
        v16f v = blend(inside, load(x + i), splat(x[0]));
        maxima = blend(v > maxima, v, maxima);
    }
    float shift = maxima[0];
    for (int lane = 1; lane < LANES; lane++) if (maxima[lane] > shift) shift = maxima[lane];
    v16f sums = splat(0);
    for (size_t i = 0; i < used; i += LANES) {
        v16i inside = lane_index() + (int)i < (int)visible;
        v16f e = blend(inside, vexp(blend(inside, load(x + i), splat(shift)) - shift), splat(0));
        store(y + i, e);
        sums += e;
    }
    v16f inverse = splat(1.0f / horizontal_sum(sums));
    for (size_t i = 0; i < used; i += LANES) store(y + i, load(y + i) * inverse);
    for (size_t i = used; i < full; i += LANES) store(y + i, splat(0));
    for (size_t j = full; j < count; j++) y[j] = 0;
}

/// Softmax backward in place over a row: g = p ⊙ (g − ⟨g, p⟩), over the first `visible` values (the rest of p is 0,
/// so g becomes 0 there).
INLINE void softmax_backward_body(const float *p, float *g, size_t count, size_t visible) {
    size_t full = count & ~(size_t)(LANES - 1), used = (visible + LANES - 1) & ~(size_t)(LANES - 1);
    float dot;
    if (used > full) {
        dot = 0;
        for (size_t j = 0; j < visible; j++) dot += p[j] * g[j];
        for (size_t j = 0; j < visible; j++) g[j] = p[j] * (g[j] - dot);
        for (size_t j = visible; j < count; j++) g[j] = 0;
        return;
    }
    v16f sums = splat(0);
    for (size_t i = 0; i < used; i += LANES) {
        v16i inside = lane_index() + (int)i < (int)visible;
        sums += blend(inside, load(p + i) * load(g + i), splat(0));
    }
    v16f d = splat(horizontal_sum(sums));
    for (size_t i = 0; i < used; i += LANES) {
        v16i inside = lane_index() + (int)i < (int)visible;
        store(g + i, blend(inside, load(p + i) * (load(g + i) - d), splat(0)));
    }
    for (size_t i = used; i < full; i += LANES) store(g + i, splat(0));
    for (size_t j = full; j < count; j++) g[j] = 0;
}

/// Values row i of a block sees: `visible`, or visible + i (at most count) when `causal`.
INLINE size_t visible_in_row(size_t i, size_t count, size_t visible, int causal) {
    return causal ? (visible + i < count ? visible + i : count) : visible;
}

/// masked_softmax over each row of a rows × count block, row i seeing visible_in_row values (a causal attention
/// block is visible 1, causal). One call per block, not per row.
INLINE void masked_softmax_rows_body(const float *x, float *y, size_t rows, size_t count, size_t visible, int causal) {
    for (size_t i = 0; i < rows; i++)
        masked_softmax_body(x + i * count, y + i * count, count, visible_in_row(i, count, visible, causal));
}

/// softmax_backward over each row of a rows × count block, visible lengths as in masked_softmax_rows.
INLINE void softmax_backward_rows_body(const float *p, float *g, size_t rows, size_t count, size_t visible, int causal) {
    for (size_t i = 0; i < rows; i++)
        softmax_backward_body(p + i * count, g + i * count, count, visible_in_row(i, count, visible, causal));
}

INLINE float log_sum_exp_body(const float *x, size_t count) {
    float largest = maximum(x, count);
    return logf(shifted_exp_sum(x, NULL, count, largest)) + largest;
}

/// Every row of matrix[rows, width] = row, or addend's row + row (a GEMM's bias seed, with a residual): vector
/// stores, no call per row.
INLINE void fill_rows_body(float *matrix, const float *row, const float *addend, size_t rows, size_t width) {
    size_t full = width & ~(size_t)(LANES - 1);
    for (size_t r = 0; r < rows; r++) {
        float *m = matrix + r * width;
        if (addend) {
            const float *a = addend + r * width;
            for (size_t c = 0; c < full; c += LANES) store(m + c, load(a + c) + load(row + c));
            for (size_t c = full; c < width; c++) m[c] = a[c] + row[c];
        } else {
            for (size_t c = 0; c < full; c += LANES) store(m + c, load(row + c));
            for (size_t c = full; c < width; c++) m[c] = row[c];
        }
    }
}

/// row[c] += Σ_r matrix[r, c], row by row (each column's order is the plain loop's).
INLINE void sum_rows_body(const float *matrix, float *row, size_t rows, size_t width) {
    size_t full = width & ~(size_t)(LANES - 1);
    for (size_t r = 0; r < rows; r++) {
        const float *m = matrix + r * width;
        for (size_t c = 0; c < full; c += LANES) store(row + c, load(row + c) + load(m + c));
        for (size_t c = full; c < width; c++) row[c] += m[c];
    }
}

/// Σ x over `width` values, in 16 partial sums then left to right (zero-padded tail).
INLINE float row_sum(const float *x, size_t width) {
    v16f sums = splat(0);
    size_t i = 0;
    for (; i + LANES <= width; i += LANES) sums += load(x + i);
    if (i < width) sums += load_partial(x + i, width - i, 0);
    return horizontal_sum(sums);
}

/// Layer normalization of `rows` rows of `width` values: y = (x − mean)·invstd·weight + bias, two passes (mean, then
/// squared deviations) so there is no cancellation when |mean| ≫ std. Stores each row's mean and invstd.
INLINE void layer_norm_forward_body(const float *input, float *output, const float *weight, const float *bias,
                                    float *means, float *inverse_deviations, size_t rows, size_t width, float epsilon) {
    for (size_t row = 0; row < rows; row++) {
        const float *x = input + row * width;
        float *y = output + row * width;
        float mean = row_sum(x, width) / (float)width;
        v16f squares = splat(0);
        size_t i = 0;
        for (; i + LANES <= width; i += LANES) { v16f d = load(x + i) - mean; squares += d * d; }
        if (i < width) {
            v16i inside = lane_index() < (int)(width - i);
            v16f d = blend(inside, load_partial(x + i, width - i, 0) - mean, splat(0));
            squares += d * d;
        }
        float inverse = 1.0f / sqrtf(horizontal_sum(squares) / (float)width + epsilon);
        means[row] = mean;
        inverse_deviations[row] = inverse;
        for (i = 0; i + LANES <= width; i += LANES)
            store(y + i, (load(x + i) - mean) * inverse * load(weight + i) + load(bias + i));
        if (i < width) {
            size_t rest = width - i;
            store_partial(y + i, (load_partial(x + i, rest, 0) - mean) * inverse * load_partial(weight + i, rest, 0)
                                     + load_partial(bias + i, rest, 0), rest);
        }
    }
}

/// Its backward: weight and bias gradients accumulate; with `input_gradient` non-null,
/// dx = (addend +) invstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ · x̂)) with ĝ = dy · weight.
INLINE void layer_norm_backward_body(const float *input, const float *output_gradient, float *input_gradient,
                                     const float *addend, const float *weight, float *weight_gradient,
                                     float *bias_gradient, const float *means, const float *inverse_deviations,
                                     size_t rows, size_t width) {
    size_t full = width & ~(size_t)(LANES - 1);
    for (size_t row = 0; row < rows; row++) {
        const float *x = input + row * width, *dy = output_gradient + row * width;
        float mean = means[row], inverse = inverse_deviations[row];
        v16f gradient_sums = splat(0), projection_sums = splat(0);
        for (size_t i = 0; i < full; i += LANES) {
            v16f normalized = (load(x + i) - mean) * inverse, g = load(dy + i);
            store(weight_gradient + i, load(weight_gradient + i) + g * normalized);
            store(bias_gradient + i, load(bias_gradient + i) + g);
            v16f scaled = g * load(weight + i);
            gradient_sums += scaled;
            projection_sums += scaled * normalized;
        }
        float mean_gradient = horizontal_sum(gradient_sums), mean_projection = horizontal_sum(projection_sums);
        for (size_t j = full; j < width; j++) {
            float normalized = (x[j] - mean) * inverse;
            weight_gradient[j] += dy[j] * normalized;
            bias_gradient[j] += dy[j];
            float scaled = dy[j] * weight[j];
            mean_gradient += scaled;
            mean_projection += scaled * normalized;
        }
        if (!input_gradient) continue;
        mean_gradient /= (float)width;
        mean_projection /= (float)width;
        float *dx = input_gradient + row * width;
        const float *a = addend ? addend + row * width : NULL;
        for (size_t i = 0; i < full; i += LANES) {
            v16f normalized = (load(x + i) - mean) * inverse;
            v16f value = inverse * (load(dy + i) * load(weight + i) - mean_gradient - normalized * mean_projection);
            store(dx + i, a ? load(a + i) + value : value);
        }
        for (size_t j = full; j < width; j++) {
            float normalized = (x[j] - mean) * inverse;
            float value = inverse * (dy[j] * weight[j] - mean_gradient - normalized * mean_projection);
            dx[j] = a ? a[j] + value : value;
        }
    }
}

/// Whether every value is finite: x·0 is NaN exactly for NaN and ±Inf, summed in independent lanes.
INLINE int all_finite_body(const float *x, size_t count) {
    v16f bad = splat(0);
    size_t i = 0;
    for (; i + LANES <= count; i += LANES) bad += load(x + i) * 0.0f;
    if (i < count) bad += load_partial(x + i, count - i, 0) * 0.0f;
    return !isnan(horizontal_sum(bad));
}

/// out[i] = (sources[0][i] + … + sources[n−1][i]) · factor for i in [begin, end), in source order; `out` may be a
/// source. Returns whether every value written is finite. `stores`: LOCKSTEP_SUM_* flags.
INLINE int sum_sources_body(float *const *sources, size_t source_count, size_t begin, size_t end, float factor,
                            float *out, int stores) {
    const int clearing = stores & LOCKSTEP_SUM_CLEAR_SOURCES;
    // Whole lines without taking them from the cache of the rank that holds them (see copy_streaming_body).
    const int streaming_clears = stores & LOCKSTEP_SUM_STREAM_CLEARS, streaming_out = stores & LOCKSTEP_SUM_STREAM_OUT;
    v16f bad = splat(0);
    size_t i = begin;
    for (; i + LANES <= end; i += LANES) {
        v16f total = load(sources[0] + i);
        for (size_t s = 1; s < source_count; s++) total += load(sources[s] + i);
        v16f result = total * factor;
        bad += result * 0.0f;
        if (clearing)
            for (size_t s = 0; s < source_count; s++) {
                if (sources[s] == out) continue;
                if (streaming_clears && ((uintptr_t)(sources[s] + i) & 63) == 0)
                    __builtin_nontemporal_store(splat(0), (v16f *)(sources[s] + i));
                else
                    store(sources[s] + i, splat(0));
            }
        if (streaming_out && ((uintptr_t)(out + i) & 63) == 0)
            __builtin_nontemporal_store(result, (v16f *)(out + i));
        else
            store(out + i, result);
    }
    if (streaming_clears || streaming_out) __builtin_ia32_sfence();
    float bad_tail = 0;
    for (; i < end; i++) {
        float total = sources[0][i];
        for (size_t s = 1; s < source_count; s++) total += sources[s][i];
        if (clearing)
            for (size_t s = 0; s < source_count; s++)
                if (sources[s] != out) sources[s][i] = 0;
        out[i] = total * factor;
        bad_tail += out[i] * 0.0f;
    }
    return !isnan(horizontal_sum(bad) + bad_tail);
}

/// SGD with momentum and L2 weight decay (PyTorch's semantics): g = grad + wd·p; on the first step v = g, later
/// v = μ·v + g; p −= lr·(nesterov ? g + μ·v : v). Without momentum p −= lr·g. With `clearing`, each gradient is
/// zeroed right after it is read.
INLINE void sgd_step_body(float *parameters, float *gradients, float *velocity, size_t count, float learning_rate,
                          float momentum, float weight_decay, int nesterov, int first_step, int clearing) {
    size_t full = count & ~(size_t)(LANES - 1);
    for (size_t i = 0; i < full; i += LANES) {
        v16f p = load(parameters + i);
        v16f g = load(gradients + i) + weight_decay * p;
        if (clearing) store(gradients + i, splat(0));
        v16f step;
        if (momentum == 0) {
            step = g;
        } else {
            v16f v = first_step ? g : momentum * load(velocity + i) + g;
            store(velocity + i, v);
            step = nesterov ? g + momentum * v : v;
        }
        store(parameters + i, p - learning_rate * step);
    }
    for (size_t i = full; i < count; i++) {
        float p = parameters[i];
        float g = gradients[i] + weight_decay * p;
        if (clearing) gradients[i] = 0;
        float step;
        if (momentum == 0) {
            step = g;
        } else {
            float v = first_step ? g : momentum * velocity[i] + g;
            velocity[i] = v;
            step = nesterov ? g + momentum * v : v;
        }
        parameters[i] = p - learning_rate * step;
    }
}

/// out = P · in · Qᵀ (or out += …) over a tile of 16-float vectors (Winograd's tile transforms): `in` is
/// [P.columns, Q.columns] vectors at the given strides (in floats), `temp` holds P.rows × Q.columns vectors. Only the
/// nonzero coefficients are visited; every P row has one (the matrices have full rank).
INLINE void tile_transform_body(const lockstep_sparse_matrix *p, const lockstep_sparse_matrix *q, const float *input,
                                long row_stride, long column_stride, float *temp, float *output, long output_row_stride,
                                long output_column_stride, int accumulate) {
    long width = q->columns;
    for (long i = 0; i < p->rows; i++) {
        float *row = temp + i * width * LANES;
        long entry = p->starts[i], end = p->starts[i + 1];
        float coefficient = p->values[entry];
        const float *source = input + p->indices[entry] * row_stride;
        for (long j = 0; j < width; j++) store(row + j * LANES, coefficient * load(source + j * column_stride));
        for (entry++; entry < end; entry++) {
            coefficient = p->values[entry];
            source = input + p->indices[entry] * row_stride;
            for (long j = 0; j < width; j++)
                store(row + j * LANES, load(row + j * LANES) + coefficient * load(source + j * column_stride));
        }
    }
    for (long i = 0; i < p->rows; i++) {
        const float *row = temp + i * width * LANES;
        for (long l = 0; l < q->rows; l++) {
            v16f sum = splat(0);
            for (long entry = q->starts[l]; entry < q->starts[l + 1]; entry++)
                sum += q->values[entry] * load(row + q->indices[entry] * LANES);
            float *target = output + i * output_row_stride + l * output_column_stride;
            store(target, accumulate ? load(target) + sum : sum);
        }
    }
}


/// Winograd F(4×4, 5×5) with the points 0, ±1, ±2, ±1/2, ∞ (the matrices `WinogradTransform` builds for m = 4,
/// r = 5): the 1-D transforms written out, each pair of points ±p sharing its even and odd parts, so a tile transform
/// takes about half the operations of the sparse one and stays in registers.
static const float f45_input_transform[8][8] = {
    {-1, 0, 5.25f, 0, -5.25f, 0, 1, 0},       {0, 1, 1, -4.25f, -4.25f, 1, 1, 0},
    {0, -1, 1, 4.25f, -4.25f, -1, 1, 0},      {0, 0.5f, 0.25f, -2.5f, -1.25f, 2, 1, 0},
    {0, -0.5f, 0.25f, 2.5f, -1.25f, -2, 1, 0}, {0, 2, 4, -2.5f, -5, 0.5f, 1, 0},
    {0, -2, 4, 2.5f, -5, -0.5f, 1, 0},         {0, -1, 0, 5.25f, 0, -5.25f, 0, 1},
};
static const float f45_output_transform[4][8] = {
    {1, 1, 1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0.5f, -0.5f, 0},
    {0, 1, 1, 4, 4, 0.25f, 0.25f, 0}, {0, 1, -1, 8, -8, 0.125f, -0.125f, 1},
};

/// y = Bᵀ x (8 → 8).
INLINE void f45_input_1d(const v16f x[8], v16f y[8]) {
    y[0] = (x[6] - x[0]) + 5.25f * (x[2] - x[4]);
    y[7] = (x[7] - x[1]) + 5.25f * (x[3] - x[5]);
    v16f even = (x[2] + x[6]) - 4.25f * x[4], odd = (x[1] + x[5]) - 4.25f * x[3];
    y[1] = even + odd; y[2] = even - odd;
    even = (0.25f * x[2] - 1.25f * x[4]) + x[6]; odd = (0.5f * x[1] - 2.5f * x[3]) + 2.0f * x[5];
    y[3] = even + odd; y[4] = even - odd;
    even = (4.0f * x[2] - 5.0f * x[4]) + x[6]; odd = (2.0f * x[1] - 2.5f * x[3]) + 0.5f * x[5];
    y[5] = even + odd; y[6] = even - odd;
}

/// y = B x (8 → 8), the adjoint of `f45_input_1d`.
INLINE void f45_input_adjoint_1d(const v16f x[8], v16f y[8]) {
    v16f s12 = x[1] + x[2], d12 = x[1] - x[2], s34 = x[3] + x[4], d34 = x[3] - x[4], s56 = x[5] + x[6], d56 = x[5] - x[6];
    y[0] = -x[0];
    y[1] = ((d12 + 0.5f * d34) + 2.0f * d56) - x[7];
    y[2] = ((5.25f * x[0] + s12) + 0.25f * s34) + 4.0f * s56;
    y[3] = ((5.25f * x[7] - 4.25f * d12) - 2.5f * d34) - 2.5f * d56;
    y[4] = ((-5.25f * x[0] - 4.25f * s12) - 1.25f * s34) - 5.0f * s56;
    y[5] = ((d12 + 2.0f * d34) + 0.5f * d56) - 5.25f * x[7];
    y[6] = ((x[0] + s12) + s34) + s56;
    y[7] = x[7];
}

/// y = Aᵀ x (8 → 4).
INLINE void f45_output_1d(const v16f x[8], v16f y[4]) {
    v16f s12 = x[1] + x[2], d12 = x[1] - x[2], s34 = x[3] + x[4], d34 = x[3] - x[4], s56 = x[5] + x[6], d56 = x[5] - x[6];
    y[0] = ((x[0] + s12) + s34) + s56;
    y[1] = (d12 + 2.0f * d34) + 0.5f * d56;
    y[2] = (s12 + 4.0f * s34) + 0.25f * s56;
    y[3] = ((d12 + 8.0f * d34) + 0.125f * d56) + x[7];
}

/// y = A x (4 → 8), the adjoint of `f45_output_1d`.
INLINE void f45_output_adjoint_1d(const v16f x[4], v16f y[8]) {
    y[0] = x[0];
    v16f even = x[0] + x[2], odd = x[1] + x[3];
    y[1] = even + odd; y[2] = even - odd;
    even = x[0] + 4.0f * x[2]; odd = 2.0f * x[1] + 8.0f * x[3];
    y[3] = even + odd; y[4] = even - odd;
    even = x[0] + 0.25f * x[2]; odd = 0.5f * x[1] + 0.125f * x[3];
    y[5] = even + odd; y[6] = even - odd;
    y[7] = x[3];
}

/// out = T · in · Tᵀ for the 1-D transform T (IN → OUT values): T on each column, then on each row.
#define F45_TILE(NAME, ONE_D, IN, OUT)                                                                               \
    INLINE void NAME(const float *input, long row_stride, long column_stride, float *output, long output_row_stride,  \
                     long output_column_stride, int accumulate) {                                                     \
        v16f temp[OUT][IN];                                                                                           \
        for (int j = 0; j < IN; j++) {                                                                                \
            v16f column[IN], result[OUT];                                                                             \
            for (int i = 0; i < IN; i++) column[i] = load(input + i * row_stride + j * column_stride);                \
            ONE_D(column, result);                                                                                    \
            for (int i = 0; i < OUT; i++) temp[i][j] = result[i];                                                     \
        }                                                                                                             \
        for (int i = 0; i < OUT; i++) {                                                                               \
            v16f result[OUT];                                                                                         \
            ONE_D(temp[i], result);                                                                                   \
            for (int l = 0; l < OUT; l++) {                                                                           \
                float *target = output + i * output_row_stride + l * output_column_stride;                            \
                store(target, accumulate ? load(target) + result[l] : result[l]);                                     \
            }                                                                                                         \
        }                                                                                                             \
    }
F45_TILE(f45_input_tile, f45_input_1d, 8, 8)
F45_TILE(f45_input_adjoint_tile, f45_input_adjoint_1d, 8, 8)
F45_TILE(f45_output_tile, f45_output_1d, 8, 4)
F45_TILE(f45_output_adjoint_tile, f45_output_adjoint_1d, 4, 8)

INLINE void winograd_f45_body(lockstep_winograd_stage stage, const float *input, long row_stride, long column_stride,
                              float *output, long output_row_stride, long output_column_stride, int accumulate) {
    switch (stage) {
    case LOCKSTEP_WINOGRAD_INPUT:
        f45_input_tile(input, row_stride, column_stride, output, output_row_stride, output_column_stride, accumulate);
        break;
    case LOCKSTEP_WINOGRAD_INPUT_ADJOINT:
        f45_input_adjoint_tile(input, row_stride, column_stride, output, output_row_stride, output_column_stride, accumulate);
        break;
    case LOCKSTEP_WINOGRAD_OUTPUT:
        f45_output_tile(input, row_stride, column_stride, output, output_row_stride, output_column_stride, accumulate);
        break;
    case LOCKSTEP_WINOGRAD_OUTPUT_ADJOINT:
        f45_output_adjoint_tile(input, row_stride, column_stride, output, output_row_stride, output_column_stride, accumulate);
        break;
    }
}

/// 2 × 2, stride 2 max pooling of `planes` planes of height × width (both even), first maximum in the order
/// top-left, top-right, bottom-left, bottom-right, as the scalar loop it replaces; `rectify` applies max(·, 0) as
/// Swift's max(v, 0) does (0 >= v ? 0 : v: a NaN passes). `winners` (may be null) gets each window's winner as an
/// index inside its sample (channel · height · width + position in the plane). Rows go 16 windows at a time; a
/// window group that runs past its row computes and stores neighbours that are overwritten later in the same pass
/// (stores only go forward), so only the tensor's last rows fall back to single windows.
INLINE void max_pool_2x2_body(const float *input, long planes, long height, long width, long channels, float *output,
                              int *winners, int rectify) {
    long columns = width / 2, rows = height / 2, input_total = planes * height * width, output_total = planes * rows * columns;
    const v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    for (long p = 0; p < planes; p++) {
        int plane_offset = (int)((p % channels) * height * width);
        for (long oh = 0; oh < rows; oh++) {
            const float *top = input + (p * height + 2 * oh) * width, *bottom = top + width;
            long out = (p * rows + oh) * columns;
            for (long ow = 0; ow < columns; ow += LANES) {
                if ((bottom - input) + 2 * ow + 2 * LANES <= input_total && out + ow + LANES <= output_total) {
                    v16f t0 = load(top + 2 * ow), t1 = load(top + 2 * ow + LANES);
                    v16f b0 = load(bottom + 2 * ow), b1 = load(bottom + 2 * ow + LANES);
                    v16f a = __builtin_shufflevector(t0, t1, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                    v16f b = __builtin_shufflevector(t0, t1, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
                    v16f c = __builtin_shufflevector(b0, b1, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                    v16f d = __builtin_shufflevector(b0, b1, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
                    v16i first = plane_offset + (int)(2 * oh * width) + 2 * ((int)ow + lane);
                    v16f value = a;
                    v16i best = first;
                    v16i m = b > value;
                    value = blend(m, b, value); best = (m & (first + 1)) | (~m & best);
                    m = c > value;
                    value = blend(m, c, value); best = (m & (first + (int)width)) | (~m & best);
                    m = d > value;
                    value = blend(m, d, value); best = (m & (first + (int)width + 1)) | (~m & best);
                    if (rectify) value = blend(splat(0) >= value, splat(0), value);
                    store(output + out + ow, value);
                    if (winners) __builtin_memcpy(winners + out + ow, &best, sizeof best);
                    continue;
                }
                for (long j = ow; j < columns && j < ow + LANES; j++) {
                    long a = 2 * oh * width + 2 * j, c = a + width;
                    const float *x = input + p * height * width;
                    long best = a;
                    float value = x[a];
                    if (x[a + 1] > value) { best = a + 1; value = x[a + 1]; }
                    if (x[c] > value) { best = c; value = x[c]; }
                    if (x[c + 1] > value) { best = c + 1; value = x[c + 1]; }
                    output[out + j] = rectify && 0 >= value ? 0 : value;
                    if (winners) winners[out + j] = plane_offset + (int)best;
                }
            }
        }
    }
}

/// Backward of `max_pool_2x2`: each input element gets its window's gradient if it won (and, `rectified`, the
/// window's output is positive), else 0 (as 0 + g, the sign of zero the clear-then-add loop gave). Writes every input
/// gradient, so needs no clearing; the same forward-only stores as the forward pass.
INLINE void max_pool_2x2_backward_body(const float *output, const float *output_gradient, const int *winners,
                                       long planes, long height, long width, long channels, float *input_gradient,
                                       int rectified) {
    long columns = width / 2, rows = height / 2, input_total = planes * height * width, output_total = planes * rows * columns;
    const v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    for (long p = 0; p < planes; p++) {
        int plane_offset = (int)((p % channels) * height * width);
        for (long oh = 0; oh < rows; oh++) {
            long out = (p * rows + oh) * columns;
            // The top row's windows first, then the bottom row's: stores keep going forward.
            for (int half = 0; half < 2; half++) {
                float *dx = input_gradient + (p * height + 2 * oh + half) * width;
                for (long ow = 0; ow < columns; ow += LANES) {
                    if ((dx - input_gradient) + 2 * ow + 2 * LANES <= input_total && out + ow + LANES <= output_total) {
                        v16f g = load(output_gradient + out + ow);
                        if (rectified) g = blend(load(output + out + ow) > splat(0), g, splat(0));
                        g = splat(0) + g;
                        v16i won;
                        __builtin_memcpy(&won, winners + out + ow, sizeof won);
                        v16i relative = won - (plane_offset + (int)((2 * oh + half) * width) + 2 * ((int)ow + lane));
                        v16f left = blend(relative == 0, g, splat(0)), right = blend(relative == 1, g, splat(0));
                        store(dx + 2 * ow, __builtin_shufflevector(left, right, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23));
                        store(dx + 2 * ow + LANES,
                              __builtin_shufflevector(left, right, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31));
                        continue;
                    }
                    for (long j = ow; j < columns && j < ow + LANES; j++) {
                        float g = rectified && !(output[out + j] > 0) ? 0 : output_gradient[out + j];
                        long left = plane_offset + (2 * oh + half) * width + 2 * j;
                        dx[2 * j] = winners[out + j] == left ? 0 + g : 0;
                        dx[2 * j + 1] = winners[out + j] == left + 1 ? 0 + g : 0;
                    }
                }
            }
        }
    }
}

/// m[i][j] ← m[j][i] for a 16 × 16 block held as 16 vectors: four rounds, each exchanging one bit of the row index
/// with the same bit of the column index (the off-diagonal h × h blocks of every 2h × 2h block swap places).
INLINE void transpose16(v16f m[LANES]) {
    for (int r = 0; r < LANES; r++) if (!(r & 8)) {
        v16f x = m[r], y = m[r + 8];
        m[r] = __builtin_shufflevector(x, y, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
        m[r + 8] = __builtin_shufflevector(x, y, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    }
    for (int r = 0; r < LANES; r++) if (!(r & 4)) {
        v16f x = m[r], y = m[r + 4];
        m[r] = __builtin_shufflevector(x, y, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
        m[r + 4] = __builtin_shufflevector(x, y, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    }
    for (int r = 0; r < LANES; r++) if (!(r & 2)) {
        v16f x = m[r], y = m[r + 2];
        m[r] = __builtin_shufflevector(x, y, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
        m[r + 2] = __builtin_shufflevector(x, y, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
    }
    for (int r = 0; r < LANES; r++) if (!(r & 1)) {
        v16f x = m[r], y = m[r + 1];
        m[r] = __builtin_shufflevector(x, y, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
        m[r + 1] = __builtin_shufflevector(x, y, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
    }
}

typedef float v4f __attribute__((ext_vector_type(4)));
INLINE v4f load4(const float *p) { v4f v; __builtin_memcpy(&v, p, sizeof v); return v; }
INLINE void store4(float *p, v4f v) { __builtin_memcpy(p, &v, sizeof v); }
/// Four rows of four floats, row-major, as one vector.
INLINE v16f load4x4(const float *p, long row_stride) {
    v4f r0 = load4(p), r1 = load4(p + row_stride), r2 = load4(p + 2 * row_stride), r3 = load4(p + 3 * row_stride);
    typedef float v8f __attribute__((ext_vector_type(8)));
    v8f low = __builtin_shufflevector(r0, r1, 0, 1, 2, 3, 4, 5, 6, 7);
    v8f high = __builtin_shufflevector(r2, r3, 0, 1, 2, 3, 4, 5, 6, 7);
    return __builtin_shufflevector(low, high, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}
INLINE void store4x4(float *p, long row_stride, v16f v) {
    store4(p, v.s0123); store4(p + row_stride, v.s4567); store4(p + 2 * row_stride, v.s89ab);
    store4(p + 3 * row_stride, v.scdef);
}

/// Lane interleaving (Winograd's samples-in-lanes layout): destination[r·drs + c·16 + lane] = source[lane·ls + r·rs + c],
/// lanes ≥ `lanes` set to 0. With all 16 lanes, 4 × 4 blocks of the window go through a register transpose (one vector
/// per lane in, one per position out); the rest element by element. Pure copies: every ISA gives the same bits.
INLINE void interleave_lanes_body(const float *source, long lane_stride, long row_stride, long lanes, long rows,
                                  long columns, float *destination, long destination_row_stride) {
    long block_rows = lanes == LANES ? rows / 4 * 4 : 0, block_columns = lanes == LANES ? columns / 4 * 4 : 0;
    for (long r = 0; r < block_rows; r += 4) {
        for (long c = 0; c < block_columns; c += 4) {
            v16f m[LANES];
            for (int lane = 0; lane < LANES; lane++) m[lane] = load4x4(source + lane * lane_stride + r * row_stride + c, row_stride);
            transpose16(m);
            for (int k = 0; k < LANES; k++) store(destination + (r + k / 4) * destination_row_stride + (c + k % 4) * LANES, m[k]);
        }
    }
    for (long r = 0; r < rows; r++) {
        const float *row = source + r * row_stride;
        float *target = destination + r * destination_row_stride;
        for (long c = r < block_rows ? block_columns : 0; c < columns; c++) {
            for (long lane = 0; lane < lanes; lane++) target[c * LANES + lane] = row[lane * lane_stride + c];
            for (long lane = lanes; lane < LANES; lane++) target[c * LANES + lane] = 0;
        }
    }
}

/// The inverse: destination[lane·ls + r·rs + c] = source[r·srs + c·16 + lane] for lane < `lanes`.
INLINE void deinterleave_lanes_body(const float *source, long source_row_stride, long lanes, long rows, long columns,
                                    float *destination, long lane_stride, long row_stride) {
    long block_rows = lanes == LANES ? rows / 4 * 4 : 0, block_columns = lanes == LANES ? columns / 4 * 4 : 0;
    for (long r = 0; r < block_rows; r += 4) {
        for (long c = 0; c < block_columns; c += 4) {
            v16f m[LANES];
            for (int k = 0; k < LANES; k++) m[k] = load(source + (r + k / 4) * source_row_stride + (c + k % 4) * LANES);
            transpose16(m);
            for (int lane = 0; lane < LANES; lane++) store4x4(destination + lane * lane_stride + r * row_stride + c, row_stride, m[lane]);
        }
    }
    for (long r = 0; r < rows; r++) {
        const float *row = source + r * source_row_stride;
        float *target = destination + r * row_stride;
        for (long c = r < block_rows ? block_columns : 0; c < columns; c++)
            for (long lane = 0; lane < lanes; lane++) target[lane * lane_stride + c] = row[c * LANES + lane];
    }
}

/// destination[c·rows + r] = source[r·columns + c]: 16 × 16 blocks through the register transpose, the edges element
/// by element. Pure copies: every ISA gives the same bits.
INLINE void transpose_body(const float *source, size_t rows, size_t columns, float *destination) {
    size_t block_rows = rows / LANES * LANES, block_columns = columns / LANES * LANES;
    for (size_t r = 0; r < block_rows; r += LANES) {
        for (size_t c = 0; c < block_columns; c += LANES) {
            v16f m[LANES];
            for (int k = 0; k < LANES; k++) m[k] = load(source + (r + k) * columns + c);
            transpose16(m);
            for (int k = 0; k < LANES; k++) store(destination + (c + k) * rows + r, m[k]);
        }
    }
    for (size_t r = 0; r < rows; r++)
        for (size_t c = r < block_rows ? block_columns : 0; c < columns; c++) destination[c * rows + r] = source[r * columns + c];
}

/// destination[i] = source[i] with non-temporal stores (write-combined whole lines that skip the cache hierarchy),
/// then a store fence so a following barrier publishes them like ordinary stores.
INLINE void copy_streaming_body(float *destination, const float *source, size_t count) {
    size_t i = 0;
    // Up to the first 64-byte boundary of the destination: whole-line stores need an aligned start.
    while (i < count && ((uintptr_t)(destination + i) & 63)) { destination[i] = source[i]; i++; }
    for (; i + LANES <= count; i += LANES) __builtin_nontemporal_store(load(source + i), (v16f *)(destination + i));
    for (; i < count; i++) destination[i] = source[i];
    __builtin_ia32_sfence();
}

// Each kernel three times: the bodies above inline into functions compiled for each ISA.
#define VARIANTS(return_type, name, parameters, arguments)                                                      \
    __attribute__((target("avx512f"))) static return_type name##_avx512 parameters { return name##_body arguments; } \
    __attribute__((target("avx2"))) static return_type name##_avx2 parameters { return name##_body arguments; }     \
    static return_type name##_baseline parameters { return name##_body arguments; }

VARIANTS(void, exp, (const float *x, float *y, size_t count), (x, y, count))
VARIANTS(void, gelu_forward, (const float *x, float *y, float *gates, size_t count), (x, y, gates, count))
VARIANTS(void, gelu_backward, (const float *x, const float *dy, float *dx, const float *gates, size_t count),
         (x, dy, dx, gates, count))
VARIANTS(void, softmax, (const float *x, float *y, size_t count), (x, y, count))
VARIANTS(float, log_sum_exp, (const float *x, size_t count), (x, count))
VARIANTS(void, masked_softmax_rows, (const float *x, float *y, size_t rows, size_t count, size_t visible, int causal),
         (x, y, rows, count, visible, causal))
VARIANTS(void, tile_transform,
         (const lockstep_sparse_matrix *p, const lockstep_sparse_matrix *q, const float *input, long row_stride,
          long column_stride, float *temp, float *output, long output_row_stride, long output_column_stride,
          int accumulate),
         (p, q, input, row_stride, column_stride, temp, output, output_row_stride, output_column_stride, accumulate))
VARIANTS(void, interleave_lanes,
         (const float *source, long lane_stride, long row_stride, long lanes, long rows, long columns, float *destination,
          long destination_row_stride),
         (source, lane_stride, row_stride, lanes, rows, columns, destination, destination_row_stride))
VARIANTS(void, deinterleave_lanes,
         (const float *source, long source_row_stride, long lanes, long rows, long columns, float *destination,
          long lane_stride, long row_stride),
         (source, source_row_stride, lanes, rows, columns, destination, lane_stride, row_stride))
VARIANTS(void, winograd_f45,
         (lockstep_winograd_stage stage, const float *input, long row_stride, long column_stride, float *output,
          long output_row_stride, long output_column_stride, int accumulate),
         (stage, input, row_stride, column_stride, output, output_row_stride, output_column_stride, accumulate))
VARIANTS(void, max_pool_2x2,
         (const float *input, long planes, long height, long width, long channels, float *output, int *winners,
          int rectify),
         (input, planes, height, width, channels, output, winners, rectify))
VARIANTS(void, max_pool_2x2_backward,
         (const float *output, const float *output_gradient, const int *winners, long planes, long height, long width,
          long channels, float *input_gradient, int rectified),
         (output, output_gradient, winners, planes, height, width, channels, input_gradient, rectified))
VARIANTS(void, fill_rows, (float *matrix, const float *row, const float *addend, size_t rows, size_t width),
         (matrix, row, addend, rows, width))
VARIANTS(void, sum_rows, (const float *matrix, float *row, size_t rows, size_t width), (matrix, row, rows, width))
VARIANTS(void, layer_norm_forward,
         (const float *input, float *output, const float *weight, const float *bias, float *means,
          float *inverse_deviations, size_t rows, size_t width, float epsilon),
         (input, output, weight, bias, means, inverse_deviations, rows, width, epsilon))
VARIANTS(void, layer_norm_backward,
         (const float *input, const float *output_gradient, float *input_gradient, const float *addend,
          const float *weight, float *weight_gradient, float *bias_gradient, const float *means,
          const float *inverse_deviations, size_t rows, size_t width),
         (input, output_gradient, input_gradient, addend, weight, weight_gradient, bias_gradient, means,
          inverse_deviations, rows, width))
VARIANTS(int, all_finite, (const float *x, size_t count), (x, count))
VARIANTS(int, sum_sources,
         (float *const *sources, size_t source_count, size_t begin, size_t end, float factor, float *out, int stores),
         (sources, source_count, begin, end, factor, out, stores))
VARIANTS(void, sgd_step,
         (float *parameters, float *gradients, float *velocity, size_t count, float learning_rate, float momentum,
          float weight_decay, int nesterov, int first_step, int clearing),
         (parameters, gradients, velocity, count, learning_rate, momentum, weight_decay, nesterov, first_step, clearing))
VARIANTS(void, copy_streaming, (float *destination, const float *source, size_t count), (destination, source, count))
VARIANTS(void, transpose, (const float *source, size_t rows, size_t columns, float *destination),
         (source, rows, columns, destination))
VARIANTS(void, softmax_backward_rows, (const float *p, float *g, size_t rows, size_t count, size_t visible, int causal),
         (p, g, rows, count, visible, causal))

typedef struct kernel_table {
    void (*exp)(const float *, float *, size_t);
    void (*gelu_forward)(const float *, float *, float *, size_t);
    void (*gelu_backward)(const float *, const float *, float *, const float *, size_t);
    void (*softmax)(const float *, float *, size_t);
    float (*log_sum_exp)(const float *, size_t);
    void (*masked_softmax_rows)(const float *, float *, size_t, size_t, size_t, int);
    void (*softmax_backward_rows)(const float *, float *, size_t, size_t, size_t, int);
    void (*tile_transform)(const lockstep_sparse_matrix *, const lockstep_sparse_matrix *, const float *, long, long,
                           float *, float *, long, long, int);
    void (*winograd_f45)(lockstep_winograd_stage, const float *, long, long, float *, long, long, int);
    void (*max_pool_2x2)(const float *, long, long, long, long, float *, int *, int);
    void (*max_pool_2x2_backward)(const float *, const float *, const int *, long, long, long, long, float *, int);
    void (*interleave_lanes)(const float *, long, long, long, long, long, float *, long);
    void (*deinterleave_lanes)(const float *, long, long, long, long, float *, long, long);
    void (*fill_rows)(float *, const float *, const float *, size_t, size_t);
    void (*sum_rows)(const float *, float *, size_t, size_t);
    void (*layer_norm_forward)(const float *, float *, const float *, const float *, float *, float *, size_t, size_t,
                               float);
    void (*layer_norm_backward)(const float *, const float *, float *, const float *, const float *, float *, float *,
                                const float *, const float *, size_t, size_t);
    int (*all_finite)(const float *, size_t);
    int (*sum_sources)(float *const *, size_t, size_t, size_t, float, float *, int);
    void (*sgd_step)(float *, float *, float *, size_t, float, float, float, int, int, int);
    void (*transpose)(const float *, size_t, size_t, float *);
    void (*copy_streaming)(float *, const float *, size_t);
} kernel_table;

#define TABLE(suffix) { exp_##suffix, gelu_forward_##suffix, gelu_backward_##suffix, softmax_##suffix, log_sum_exp_##suffix, \
                        masked_softmax_rows_##suffix, softmax_backward_rows_##suffix, \
                        tile_transform_##suffix, winograd_f45_##suffix, max_pool_2x2_##suffix, max_pool_2x2_backward_##suffix, interleave_lanes_##suffix, deinterleave_lanes_##suffix, fill_rows_##suffix, sum_rows_##suffix, layer_norm_forward_##suffix, layer_norm_backward_##suffix, \
                        all_finite_##suffix, sum_sources_##suffix, sgd_step_##suffix, transpose_##suffix, \
                        copy_streaming_##suffix }
static const kernel_table tables[3] = { TABLE(baseline), TABLE(avx2), TABLE(avx512) };

static lockstep_kernels_isa active = LOCKSTEP_KERNELS_BASELINE;
static kernel_table kernels = TABLE(baseline);

static int supported(lockstep_kernels_isa isa) {
    __builtin_cpu_init();
    switch (isa) {
    case LOCKSTEP_KERNELS_BASELINE: return 1;
    case LOCKSTEP_KERNELS_AVX2: return __builtin_cpu_supports("avx2");
    case LOCKSTEP_KERNELS_AVX512: return __builtin_cpu_supports("avx512f");
    }
    return 0;
}

int lockstep_kernels_select(lockstep_kernels_isa isa) {
    if (isa < LOCKSTEP_KERNELS_BASELINE || isa > LOCKSTEP_KERNELS_AVX512 || !supported(isa)) return 0;
    active = isa;
    kernels = tables[isa];
    return 1;
}

lockstep_kernels_isa lockstep_kernels_active(void) { return active; }

// Runs before main (and before any Swift code), so the table is never written while kernels run.
__attribute__((constructor)) static void choose_kernels(void) {
    lockstep_kernels_isa widest = supported(LOCKSTEP_KERNELS_AVX512) ? LOCKSTEP_KERNELS_AVX512
                                : supported(LOCKSTEP_KERNELS_AVX2)   ? LOCKSTEP_KERNELS_AVX2
                                                                     : LOCKSTEP_KERNELS_BASELINE;
    const char *requested = getenv("LOCKSTEP_KERNELS");
    if (requested && strcmp(requested, "baseline") == 0 && widest >= LOCKSTEP_KERNELS_BASELINE) widest = LOCKSTEP_KERNELS_BASELINE;
    else if (requested && strcmp(requested, "avx2") == 0 && widest >= LOCKSTEP_KERNELS_AVX2) widest = LOCKSTEP_KERNELS_AVX2;
    lockstep_kernels_select(widest);
}

void lockstep_exp(const float *x, float *y, size_t count) { kernels.exp(x, y, count); }
void lockstep_gelu_forward(const float *x, float *y, float *gates, size_t count) { kernels.gelu_forward(x, y, gates, count); }
void lockstep_gelu_backward(const float *x, const float *dy, float *dx, const float *gates, size_t count) {
    kernels.gelu_backward(x, dy, dx, gates, count);
}
void lockstep_softmax(const float *x, float *y, size_t count) { kernels.softmax(x, y, count); }
float lockstep_log_sum_exp(const float *x, size_t count) { return kernels.log_sum_exp(x, count); }
void lockstep_masked_softmax(const float *x, float *y, size_t rows, size_t count, size_t visible, int causal) {
    kernels.masked_softmax_rows(x, y, rows, count, visible, causal);
}
void lockstep_softmax_backward(const float *p, float *g, size_t rows, size_t count, size_t visible, int causal) {
    kernels.softmax_backward_rows(p, g, rows, count, visible, causal);
}
void lockstep_sum_rows(const float *matrix, float *row, size_t rows, size_t width) {
    kernels.sum_rows(matrix, row, rows, width);
}
void lockstep_layer_norm_forward(const float *input, float *output, const float *weight, const float *bias, float *means,
                                 float *inverse_deviations, size_t rows, size_t width, float epsilon) {
    kernels.layer_norm_forward(input, output, weight, bias, means, inverse_deviations, rows, width, epsilon);
}
void lockstep_layer_norm_backward(const float *input, const float *output_gradient, float *input_gradient,
                                  const float *addend, const float *weight, float *weight_gradient,
                                  float *bias_gradient, const float *means, const float *inverse_deviations,
                                  size_t rows, size_t width) {
    kernels.layer_norm_backward(input, output_gradient, input_gradient, addend, weight, weight_gradient, bias_gradient,
                                means, inverse_deviations, rows, width);
}
int lockstep_all_finite(const float *x, size_t count) { return kernels.all_finite(x, count); }
int lockstep_sum_sources(float *const *sources, size_t source_count, size_t begin, size_t end, float factor, float *out,
                         int stores) {
    return kernels.sum_sources(sources, source_count, begin, end, factor, out, stores);
}
void lockstep_sgd_step(float *parameters, float *gradients, float *velocity, size_t count, float learning_rate,
                       float momentum, float weight_decay, int nesterov, int first_step, int clearing) {
    kernels.sgd_step(parameters, gradients, velocity, count, learning_rate, momentum, weight_decay, nesterov, first_step,
                     clearing);
}
void lockstep_copy_streaming(float *destination, const float *source, size_t count) {
    kernels.copy_streaming(destination, source, count);
}
void lockstep_transpose(const float *source, size_t rows, size_t columns, float *destination) {
    kernels.transpose(source, rows, columns, destination);
}
void lockstep_fill_rows(float *matrix, const float *row, const float *addend, size_t rows, size_t width) {
    kernels.fill_rows(matrix, row, addend, rows, width);
}
void lockstep_tile_transform(const lockstep_sparse_matrix *p, const lockstep_sparse_matrix *q, const float *input,
                             long row_stride, long column_stride, float *temp, float *output, long output_row_stride,
                             long output_column_stride, int accumulate) {
    kernels.tile_transform(p, q, input, row_stride, column_stride, temp, output, output_row_stride, output_column_stride,
                           accumulate);
}
void lockstep_interleave_lanes(const float *source, long lane_stride, long row_stride, long lanes, long rows, long columns,
                               float *destination, long destination_row_stride) {
    kernels.interleave_lanes(source, lane_stride, row_stride, lanes, rows, columns, destination, destination_row_stride);
}
void lockstep_deinterleave_lanes(const float *source, long source_row_stride, long lanes, long rows, long columns,
                                 float *destination, long lane_stride, long row_stride) {
    kernels.deinterleave_lanes(source, source_row_stride, lanes, rows, columns, destination, lane_stride, row_stride);
}
void lockstep_winograd_f45(lockstep_winograd_stage stage, const float *input, long row_stride, long column_stride,
                           float *output, long output_row_stride, long output_column_stride, int accumulate) {
    kernels.winograd_f45(stage, input, row_stride, column_stride, output, output_row_stride, output_column_stride,
                         accumulate);
}
void lockstep_winograd_f45_matrices(float input_transform[64], float output_transform[32]) {
    memcpy(input_transform, f45_input_transform, sizeof f45_input_transform);
    memcpy(output_transform, f45_output_transform, sizeof f45_output_transform);
}
void lockstep_max_pool_2x2(const float *input, long planes, long height, long width, long channels, float *output,
                           int *winners, int rectify) {
    kernels.max_pool_2x2(input, planes, height, width, channels, output, winners, rectify);
}
void lockstep_max_pool_2x2_backward(const float *output, const float *output_gradient, const int *winners, long planes,
                                    long height, long width, long channels, float *input_gradient, int rectified) {
    kernels.max_pool_2x2_backward(output, output_gradient, winners, planes, height, width, channels, input_gradient,
                                  rectified);
}
