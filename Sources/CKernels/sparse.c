#include "nn_kernels.h"
#include "cpu_level.h"
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>
#define NN_X86 1
#endif

// The sparse first layer. The forward keeps a block of a record's outputs in registers across
// its non-zeros (a plain loop over an output row per non-zero runs 4× slower than the dense
// GEMM), going block by block of inputs so that their weights stay in L1; the weight gradient
// goes input by input over the batch's entries for
// that input, in registers, and writes each row of the gradient once (a scatter-add into a
// zeroed gradient is slower than the dense GEMM). Sums run in a fixed order (non-zeros in
// column order, entries in row order), so results are reproducible.

// How many records ahead the kernels ask for a record's non-zeros: a batch's records are
// scattered over a data set far larger than a core's own caches (MNIST's non-zeros: 72 MB), so each
// record's first touch would otherwise wait on memory.
#define NN_PREFETCH_AHEAD 4

/// Asks for the cache lines of column numbers and values b ..< e (a record's, or its part in a range).
static inline void prefetch_span(long b, long e, const int *cols, const float *vals) {
    for (const char *p = (const char *)(cols + b); p < (const char *)(cols + e); p += 64) __builtin_prefetch(p);
    for (const char *p = (const char *)(vals + b); p < (const char *)(vals + e); p += 64) __builtin_prefetch(p);
}

/// Asks for the cache lines of record rec's column numbers and values.
static inline void prefetch_record(long rec, const long *offsets, const int *cols, const float *vals) {
    prefetch_span(offsets[rec], offsets[rec + 1], cols, vals);
}

// The first of a record's non-zeros (cols[lo ..< hi], in input order) at input kLo or above; a
// binary search unless the first one is (every record when kLo is 0).
static inline long first_at_or_above(const int *cols, long lo, long hi, long kLo) {
    if (lo < hi && cols[lo] >= kLo) return lo;
    while (lo < hi) {
        const long mid = lo + (hi - lo) / 2;
        if (cols[mid] < kLo) lo = mid + 1; else hi = mid;
    }
    return lo;
}

// Record rec's first non-zero at input kLo or above: bounds[rec · stride] (see nn_kernels.h), or
// by a binary search — ≈ 15 ns a record that several passes over a batch's records paid each, on
// every worker but the one whose range begins at input 0 (docs/performance.md, "Twenty-fourth
// session").
static inline long start_in_range(long rec, const long *offsets, const long *bounds, long stride, const int *cols,
                                  long kLo) {
    return bounds ? bounds[rec * stride] : first_at_or_above(cols, offsets[rec], offsets[rec + 1], kLo);
}

// One past record rec's last non-zero below the range's end (bounds), or its last (offsets).
static inline long end_in_range(long rec, const long *offsets, const long *bounds, long stride) {
    return bounds ? bounds[rec * stride + 1] : offsets[rec + 1];
}

// Asks for record rec's non-zeros in the range (bounds), or all of them (offsets).
static inline void prefetch_in_range(long rec, const long *offsets, const long *bounds, long stride, const int *cols,
                                     const float *vals) {
    if (bounds) prefetch_span(bounds[rec * stride], bounds[rec * stride + 1], cols, vals);
    else prefetch_record(rec, offsets, cols, vals);
}

// ---- portable ------------------------------------------------------------------------------

static void forward_portable(const int *records, long rows, const long *offsets, const long *bounds, long stride,
                             const int *cols, const float *vals, const float *wt, long ldw, long units, long kLo,
                             long kHi, float *z, long ldz) {
    for (long r = 0; r < rows; r++) {
        if (r + NN_PREFETCH_AHEAD < rows)
            prefetch_in_range(records[r + NN_PREFETCH_AHEAD], offsets, bounds, stride, cols, vals);
        float *out = z + r * ldz;  // zeroed by nn_sparse_forward
        const long rec = records[r], end = end_in_range(rec, offsets, bounds, stride);
        for (long p = start_in_range(rec, offsets, bounds, stride, cols, kLo); p < end && cols[p] < kHi; p++) {
            const float v = vals[p];
            const float *w = wt + (long)(cols[p] - kLo) * ldw;
            for (long j = 0; j < units; j++) out[j] += v * w[j];
        }
    }
}

static void gradient_portable(const long *const *colStarts, const int *const *entryRows,
                              const float *const *entryVals, long shards, long inputs, const float *delta, long ldd,
                              long units, float *g, long ldg, const nn_sparse_store *st) {
    for (long k = 0; k < inputs; k++) {
        float *out = g + k * ldg;
        float *vel = st->velocity ? st->velocity + k * ldg : 0;
        for (long j = 0; j < units; j++) {
            float acc = 0;
            for (long s = 0; s < shards; s++)
                for (long e = colStarts[s][k]; e < colStarts[s][k + 1]; e++)
                    acc += entryVals[s][e] * delta[(long)entryRows[s][e] * ldd + j];
            if (st->mode == 3) {
                // the momentum rule of Optimizer.swift, operation by operation
                const float gj = acc * st->scale + st->decay * out[j];
                vel[j] = st->momentum * vel[j] + gj;
                out[j] = out[j] - st->rate * vel[j];
            } else {
                out[j] = st->mode == 0 ? acc : st->mode == 1 ? out[j] + acc : st->decay * out[j] + st->scale * acc;
            }
        }
    }
}

#ifdef NN_X86
// ---- AVX-512 --------------------------------------------------------------------------------
// Up to 8 registers (128 outputs) per pass: one pass over a record's non-zeros covers the
// seed's 100-unit slices, and the 8 independent accumulators hide the FMA latency. NV (the
// registers a pass uses) is a compile-time constant in each specialisation below, so the
// accumulator array lives in registers.

// Calls the specialisation NAME_1 … NAME_8 for nv registers (nv ≥ 8: NAME_8) with ARGS;
// NN_BY_REGISTERS13 likewise up to NAME_13 (AVX2: 13 accumulators, the broadcast and a load
// fill its 16 registers).
#define NN_CASES_1_TO_7(NAME, ...)                                                                           \
    case 1: NAME##_1(__VA_ARGS__); break;                                                                    \
    case 2: NAME##_2(__VA_ARGS__); break;                                                                    \
    case 3: NAME##_3(__VA_ARGS__); break;                                                                    \
    case 4: NAME##_4(__VA_ARGS__); break;                                                                    \
    case 5: NAME##_5(__VA_ARGS__); break;                                                                    \
    case 6: NAME##_6(__VA_ARGS__); break;                                                                    \
    case 7: NAME##_7(__VA_ARGS__); break;
#define NN_BY_REGISTERS(NAME, nv, ...)                                                                       \
    switch ((nv) > 8 ? 8 : (nv)) {                                                                           \
        NN_CASES_1_TO_7(NAME, __VA_ARGS__)                                                                   \
        default: NAME##_8(__VA_ARGS__); break;                                                               \
    }
#define NN_BY_REGISTERS13(NAME, nv, ...)                                                                     \
    switch ((nv) > 13 ? 13 : (nv)) {                                                                         \
        NN_CASES_1_TO_7(NAME, __VA_ARGS__)                                                                   \
        case 8: NAME##_8(__VA_ARGS__); break;                                                                \
        case 9: NAME##_9(__VA_ARGS__); break;                                                                \
        case 10: NAME##_10(__VA_ARGS__); break;                                                              \
        case 11: NAME##_11(__VA_ARGS__); break;                                                              \
        case 12: NAME##_12(__VA_ARGS__); break;                                                              \
        default: NAME##_13(__VA_ARGS__); break;                                                              \
    }

#define NN_MASK16(left) ((left) >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (left)) - 1))

// One record's non-zeros from *pos on, up to input k1 (or its end e), added into its block of
// outputs (`out`, which holds the sums so far), the block in registers meanwhile.
#define NN_FORWARD512(NV)                                                                                    \
    static inline __attribute__((target("avx512f"), always_inline)) void forward512_##NV(                    \
        long *pos, long e, long k1, const int *cols, const float *vals, const float *wt, long ldw, long j0,  \
        long units, float *out) {                                                                            \
        __m512 a[NV];                                                                                        \
        for (int v = 0; v < NV; v++)                                                                         \
            a[v] = _mm512_maskz_loadu_ps(NN_MASK16(units - j0 - 16 * v), out + j0 + 16 * v);                 \
        long p = *pos;                                                                                       \
        for (; p < e && cols[p] < k1; p++) {                                                                 \
            const __m512 x = _mm512_set1_ps(vals[p]);                                                        \
            const float *w = wt + (long)cols[p] * ldw + j0;                                                  \
            for (int v = 0; v < NV; v++) a[v] = _mm512_fmadd_ps(x, _mm512_loadu_ps(w + 16 * v), a[v]);       \
        }                                                                                                    \
        *pos = p;                                                                                            \
        for (int v = 0; v < NV; v++) _mm512_mask_storeu_ps(out + j0 + 16 * v, NN_MASK16(units - j0 - 16 * v), a[v]); \
    }
NN_FORWARD512(1)
NN_FORWARD512(2)
NN_FORWARD512(3)
NN_FORWARD512(4)
NN_FORWARD512(5)
NN_FORWARD512(6)
NN_FORWARD512(7)
NN_FORWARD512(8)

// Inputs per block of the blocked forward: the rows of a slice's transposed weights that a pass
// reads stay in L1 while every record of the batch adds its non-zeros among them. A full pass
// takes 64 rows (AVX-512: 128 units, 32 KB; AVX2: 104 units, 26 KB); a narrower pass takes as
// many rows as fit in the same bytes. Each (record, block) costs a call with its loads and
// stores of the record's outputs, and for the narrow slices of many workers that cost
// dominated (docs/performance.md, "Fifteenth session"). The sums run in input order whatever
// the block, so the size changes no result.
static inline long forward_block(long nv, long width, long pass) {
    const long rows = 64 * pass / (nv * width);
    return rows < 64 ? 64 : rows;
}

// The blocked forward for one instruction set: passes of PASS units (KERNEL_n takes n registers
// of WIDTH floats; BY picks it), in each pass the inputs block by block, in each block every
// record's next non-zeros from its cursor on.
#define NN_FORWARD_DRIVER(NAME, TARGET, BY, KERNEL, WIDTH, PASS)                                             \
    __attribute__((target(TARGET))) static void NAME(const int *records, long rows, const long *offsets,     \
                                                     const long *bounds, long stride, const int *cols,       \
                                                     const float *vals, const float *wt, long ldw,           \
                                                     long units, long kLo, long kHi, float *z, long ldz,     \
                                                     long *cursor) {                                         \
        /* wt's row 0 is input kLo: the kernels index it by input number from this base */                  \
        const float *base = (const float *)((uintptr_t)wt - (uintptr_t)(kLo * ldw) * sizeof(float));       \
        for (long j0 = 0; j0 < units; j0 += PASS) {                                                          \
            const long nv = (units - j0 + WIDTH - 1) / WIDTH;                                                \
            for (long r = 0; r < rows; r++) {                                                                \
                const long rec = records[r];                                                                 \
                cursor[r] = start_in_range(rec, offsets, bounds, stride, cols, kLo);                         \
            }                                                                                                \
            const long block = forward_block(nv, WIDTH, PASS);                                               \
            for (long k0 = kLo; k0 < kHi; k0 += block) {                                                     \
                const long k1 = k0 + block < kHi ? k0 + block : kHi;                                         \
                for (long r = 0; r < rows; r++) {                                                            \
                    if (k0 == kLo && j0 == 0 && r + NN_PREFETCH_AHEAD < rows)                                \
                        prefetch_in_range(records[r + NN_PREFETCH_AHEAD], offsets, bounds, stride, cols,     \
                                          vals);                                                             \
                    const long e = end_in_range(records[r], offsets, bounds, stride);                        \
                    if (cursor[r] >= e || cols[cursor[r]] >= k1) continue;                                   \
                    /* wt's rows are padded to ldw, so every load stays inside */                            \
                    BY(KERNEL, nv, cursor + r, e, k1, cols, vals, base, ldw, j0, units, z + r * ldz)         \
                }                                                                                            \
            }                                                                                                \
        }                                                                                                    \
    }

NN_FORWARD_DRIVER(forward_avx512, "avx512f", NN_BY_REGISTERS, forward512, 16, 128)

// The gradient drivers: one copy of the loops per store mode, the mode a constant in each.
// With the mode read at run time, the code after the entry loop kept every mode's stores
// alive, and clang copied the 8 accumulators between registers on every entry (16 moves for
// 8 FMAs): the AVX2 kernel ran 1.4× slower on AMD Zen 3 (docs/performance.md, "Eleventh session").
#define NN_GRADIENT_BY_MODE(NAME, TARGET)                                                                      \
    __attribute__((target(TARGET))) static void NAME(const long *const *colStarts, const int *const *entryRows,  \
                                                     const float *const *entryVals, long shards, long inputs,   \
                                                     const float *delta, long ldd, long units, float *g, long ldg, \
                                                     const nn_sparse_store *st) {                               \
        switch (st->mode) {                                                                                    \
            case 0: NAME##_mode(colStarts, entryRows, entryVals, shards, inputs, delta, ldd, units, g, ldg, st, 0); break; \
            case 1: NAME##_mode(colStarts, entryRows, entryVals, shards, inputs, delta, ldd, units, g, ldg, st, 1); break; \
            case 2: NAME##_mode(colStarts, entryRows, entryVals, shards, inputs, delta, ldd, units, g, ldg, st, 2); break; \
            default: NAME##_mode(colStarts, entryRows, entryVals, shards, inputs, delta, ldd, units, g, ldg, st, 3); break; \
        }                                                                                                      \
    }

// The stores of nn_sparse_store's modes (see nn_kernels.h), one register of one input's row;
// vel: the same place in the velocity (mode 3 only).
static inline __attribute__((target("avx512f"), always_inline)) void store512(
    __m512 a, __mmask16 m, float *o, float *vel, const nn_sparse_store *st, const int mode) {
    if (mode == 1) a = _mm512_add_ps(_mm512_maskz_loadu_ps(m, o), a);
    if (mode == 2)
        a = _mm512_fmadd_ps(_mm512_set1_ps(st->scale), a, _mm512_mul_ps(_mm512_set1_ps(st->decay), _mm512_maskz_loadu_ps(m, o)));
    if (mode == 3) {
        /* momentum, as Optimizer.swift rounds it: ĝ = S/n + (λ/n)·w; v = μ·v + ĝ; w = w − α·v */
        const __m512 w = _mm512_maskz_loadu_ps(m, o);
        const __m512 g = _mm512_add_ps(_mm512_mul_ps(a, _mm512_set1_ps(st->scale)), _mm512_mul_ps(_mm512_set1_ps(st->decay), w));
        const __m512 u = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(st->momentum), _mm512_maskz_loadu_ps(m, vel)), g);
        _mm512_mask_storeu_ps(vel, m, u);
        a = _mm512_sub_ps(w, _mm512_mul_ps(_mm512_set1_ps(st->rate), u));
    }
    _mm512_mask_storeu_ps(o, m, a);
}

#define NN_GRADIENT512(NV)                                                                                   \
    static inline __attribute__((target("avx512f"), always_inline)) void gradient512_##NV(                   \
        const long *const *colStarts, const int *const *entryRows, const float *const *entryVals, long shards, long k, const float *delta, long ldd, long j0,     \
        long units, float *out, float *vel, const nn_sparse_store *st, const int mode) {                     \
        __m512 a[NV];                                                                                        \
        __mmask16 m[NV];                                                                                     \
        for (int v = 0; v < NV; v++) {                                                                       \
            a[v] = _mm512_setzero_ps();                                                                      \
            m[v] = NN_MASK16(units - j0 - 16 * v);                                                           \
        }                                                                                                    \
        for (long s = 0; s < shards; s++) {                                                                  \
            const int *entryRow = entryRows[s];                                                              \
            const float *entryVal = entryVals[s];                                                            \
            for (long p = colStarts[s][k]; p < colStarts[s][k + 1]; p++) {                                   \
                const __m512 x = _mm512_set1_ps(entryVal[p]);                                                \
                const float *d = delta + (long)entryRow[p] * ldd + j0;                                       \
                for (int v = 0; v < NV; v++) a[v] = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m[v], d + 16 * v), a[v]); \
            }                                                                                                \
        }                                                                                                    \
        for (int v = 0; v < NV; v++)                                                                         \
            store512(a[v], m[v], out + j0 + 16 * v, vel ? vel + j0 + 16 * v : 0, st, mode);                  \
    }
NN_GRADIENT512(1)
NN_GRADIENT512(2)
NN_GRADIENT512(3)
NN_GRADIENT512(4)
NN_GRADIENT512(5)
NN_GRADIENT512(6)
NN_GRADIENT512(7)

// Two inputs' sums at once, in passes of up to 7 registers (112 units) from unit j0. With one
// input's accumulators, each entry's FMAs wait for the last entry's (4 cycles): a 25-unit slice
// took as long as a 100-unit one, and a 100-unit slice's 7 loads an entry, which the two load
// ports take in 3.5 cycles, waited 4 too. Two inputs' entries interleaved keep two chains in
// flight (2 × 7 accumulators of the 32 registers; 7 masks of the 7 mask registers, so passes
// stop at 7 registers: an 8th mask was reloaded from the stack at every entry). Each input's
// sum still runs over its own entries in order, so the results are the same bits.
#define NN_GRADIENT512_PAIR(NV)                                                                              \
    static inline __attribute__((target("avx512f"), always_inline)) void gradient512x2_##NV(                 \
        const long *const *colStarts, const int *const *entryRows, const float *const *entryVals, long shards, \
        long k, const float *delta, long ldd, long j0, long units, float *out, long ldg, float *vel,          \
        const nn_sparse_store *st, const int mode) {                                                         \
        __m512 a[NV], b[NV];                                                                                 \
        __mmask16 m[NV];                                                                                     \
        for (int v = 0; v < NV; v++) {                                                                       \
            a[v] = b[v] = _mm512_setzero_ps();                                                               \
            m[v] = NN_MASK16(units - j0 - 16 * v);                                                           \
        }                                                                                                    \
        delta += j0;                                                                                         \
        out += j0;                                                                                           \
        if (vel) vel += j0;                                                                                  \
        for (long s = 0; s < shards; s++) {                                                                  \
            const int *row = entryRows[s];                                                                   \
            const float *val = entryVals[s];                                                                 \
            long p = colStarts[s][k], q = colStarts[s][k + 1];                                               \
            const long e = q, f = colStarts[s][k + 2];                                                       \
            for (; p < e && q < f; p++, q++) {                                                               \
                const __m512 x = _mm512_set1_ps(val[p]), y = _mm512_set1_ps(val[q]);                         \
                const float *d = delta + (long)row[p] * ldd, *c = delta + (long)row[q] * ldd;                \
                for (int v = 0; v < NV; v++) {                                                               \
                    a[v] = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m[v], d + 16 * v), a[v]);                \
                    b[v] = _mm512_fmadd_ps(y, _mm512_maskz_loadu_ps(m[v], c + 16 * v), b[v]);                \
                }                                                                                            \
            }                                                                                                \
            for (; p < e; p++) {                                                                             \
                const __m512 x = _mm512_set1_ps(val[p]);                                                     \
                const float *d = delta + (long)row[p] * ldd;                                                 \
                for (int v = 0; v < NV; v++) a[v] = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m[v], d + 16 * v), a[v]); \
            }                                                                                                \
            for (; q < f; q++) {                                                                             \
                const __m512 y = _mm512_set1_ps(val[q]);                                                     \
                const float *c = delta + (long)row[q] * ldd;                                                 \
                for (int v = 0; v < NV; v++) b[v] = _mm512_fmadd_ps(y, _mm512_maskz_loadu_ps(m[v], c + 16 * v), b[v]); \
            }                                                                                                \
        }                                                                                                    \
        for (int v = 0; v < NV; v++) {                                                                       \
            store512(a[v], m[v], out + 16 * v, vel ? vel + 16 * v : 0, st, mode);                            \
            store512(b[v], m[v], out + ldg + 16 * v, vel ? vel + ldg + 16 * v : 0, st, mode);                \
        }                                                                                                    \
    }
NN_GRADIENT512_PAIR(1)
NN_GRADIENT512_PAIR(2)
NN_GRADIENT512_PAIR(3)
NN_GRADIENT512_PAIR(4)
NN_GRADIENT512_PAIR(5)
NN_GRADIENT512_PAIR(6)
NN_GRADIENT512_PAIR(7)

#define NN_BY_REGISTERS7(NAME, nv, ...)                                                                      \
    switch ((nv) > 7 ? 7 : (nv)) {                                                                           \
        case 1: NAME##_1(__VA_ARGS__); break;                                                                \
        case 2: NAME##_2(__VA_ARGS__); break;                                                                \
        case 3: NAME##_3(__VA_ARGS__); break;                                                                \
        case 4: NAME##_4(__VA_ARGS__); break;                                                                \
        case 5: NAME##_5(__VA_ARGS__); break;                                                                \
        case 6: NAME##_6(__VA_ARGS__); break;                                                                \
        default: NAME##_7(__VA_ARGS__); break;                                                               \
    }

// A pass's units: 7 registers (see the pair kernels).
#define NN_AVX512_GRADIENT_PASS 112

static inline __attribute__((target("avx512f"), always_inline)) void gradient_avx512_mode(
    const long *const *colStarts, const int *const *entryRows, const float *const *entryVals, long shards, long inputs,
    const float *delta, long ldd, long units, float *g, long ldg, const nn_sparse_store *st, const int mode) {
    long k = 0;
    for (; k + 1 < inputs; k += 2) {
        float *vel = st->velocity ? st->velocity + k * ldg : 0;
        for (long j0 = 0; j0 < units; j0 += NN_AVX512_GRADIENT_PASS) {
            const long nv = (units - j0 + 15) / 16;
            NN_BY_REGISTERS7(gradient512x2, nv, colStarts, entryRows, entryVals, shards, k, delta, ldd, j0, units,
                             g + k * ldg, ldg, vel, st, mode)
        }
    }
    for (; k < inputs; k++) {
        float *out = g + k * ldg;
        float *vel = st->velocity ? st->velocity + k * ldg : 0;
        for (long j0 = 0; j0 < units; j0 += NN_AVX512_GRADIENT_PASS) {
            const long nv = (units - j0 + 15) / 16;
            NN_BY_REGISTERS7(gradient512, nv, colStarts, entryRows, entryVals, shards, k, delta, ldd, j0, units, out, vel, st, mode)
        }
    }
}

NN_GRADIENT_BY_MODE(gradient_avx512, "avx512f")

// ---- AVX2 + FMA: the same with 8-float registers, up to 13 of them (104 outputs) per pass -------
// 13 accumulators, the broadcast and a load use 15 of the 16 registers; a 100-unit slice (the
// seed's first layer on 2 workers) is one pass over the records' non-zeros, not two.
#define NN_AVX2_PASS 104

// No masks: every AVX2 load and store covers a whole register, the rows being padded
// (nn_kernels.h). AMD's masked stores are microcoded (Zen 3: one every ~12 cycles and more);
// one per register made these kernels 2× slower there, and even one for a row's last, partial
// register, with the masks kept in registers, cost the forward a sixth of its time and the
// gradient more (docs/performance.md, tenth and eleventh sessions).
#define NN_FORWARD256(NV)                                                                                    \
    static inline __attribute__((target("avx2,fma"), always_inline)) void forward256_##NV(                   \
        long *pos, long e, long k1, const int *cols, const float *vals, const float *wt, long ldw, long j0,  \
        long units, float *out) {                                                                            \
        __m256 a[NV];                                                                                        \
        for (int v = 0; v < NV; v++) a[v] = _mm256_loadu_ps(out + j0 + 8 * v);                                \
        long p = *pos;                                                                                       \
        for (; p < e && cols[p] < k1; p++) {                                                                 \
            const __m256 x = _mm256_set1_ps(vals[p]);                                                        \
            const float *w = wt + (long)cols[p] * ldw + j0;                                                  \
            for (int v = 0; v < NV; v++) a[v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(w + 8 * v), a[v]);        \
        }                                                                                                    \
        *pos = p;                                                                                            \
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(out + j0 + 8 * v, a[v]);                               \
    }
NN_FORWARD256(1)
NN_FORWARD256(2)
NN_FORWARD256(3)
NN_FORWARD256(4)
NN_FORWARD256(5)
NN_FORWARD256(6)
NN_FORWARD256(7)
NN_FORWARD256(8)
NN_FORWARD256(9)
NN_FORWARD256(10)
NN_FORWARD256(11)
NN_FORWARD256(12)
NN_FORWARD256(13)

// Blocks of inputs as in forward_avx512; 104 units per pass, so a full pass's 64 inputs are
// 26 KB of weights (a narrower pass takes as many inputs as fit in those bytes).
NN_FORWARD_DRIVER(forward_avx2, "avx2,fma", NN_BY_REGISTERS13, forward256, 8, NN_AVX2_PASS)

#define NN_GRADIENT256(NV)                                                                                   \
    static inline __attribute__((target("avx2,fma"), always_inline)) void gradient256_##NV(                  \
        const long *const *colStarts, const int *const *entryRows, const float *const *entryVals, long shards, long k, const float *delta, long ldd, long j0,     \
        long units, float *out, float *vel, const nn_sparse_store *st, const int mode) {                     \
        __m256 a[NV];                                                                                        \
        for (int v = 0; v < NV; v++) a[v] = _mm256_setzero_ps();                                             \
        for (long s = 0; s < shards; s++) {                                                                  \
            const int *entryRow = entryRows[s];                                                              \
            const float *entryVal = entryVals[s];                                                            \
            for (long p = colStarts[s][k]; p < colStarts[s][k + 1]; p++) {                                   \
                const __m256 x = _mm256_set1_ps(entryVal[p]);                                                \
                const float *d = delta + (long)entryRow[p] * ldd + j0;                                       \
                /* whole registers, unmasked: delta's rows are padded (nn_kernels.h) */                      \
                for (int v = 0; v < NV; v++) a[v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(d + 8 * v), a[v]);    \
            }                                                                                                \
        }                                                                                                    \
        for (int v = 0; v < NV; v++) {                                                                       \
            float *o = out + j0 + 8 * v;                                                                     \
            if (mode == 1) a[v] = _mm256_add_ps(_mm256_loadu_ps(o), a[v]);                                    \
            if (mode == 2)                                                                                   \
                a[v] = _mm256_fmadd_ps(_mm256_set1_ps(st->scale), a[v],                                      \
                                       _mm256_mul_ps(_mm256_set1_ps(st->decay), _mm256_loadu_ps(o)));         \
            if (mode == 3) {                                                                                 \
                const __m256 w = _mm256_loadu_ps(o);                                                          \
                const __m256 g = _mm256_add_ps(_mm256_mul_ps(a[v], _mm256_set1_ps(st->scale)),               \
                                               _mm256_mul_ps(_mm256_set1_ps(st->decay), w));                 \
                const __m256 u = _mm256_add_ps(                                                              \
                    _mm256_mul_ps(_mm256_set1_ps(st->momentum), _mm256_loadu_ps(vel + j0 + 8 * v)), g);       \
                _mm256_storeu_ps(vel + j0 + 8 * v, u);                                                        \
                a[v] = _mm256_sub_ps(w, _mm256_mul_ps(_mm256_set1_ps(st->rate), u));                         \
            }                                                                                                \
            _mm256_storeu_ps(o, a[v]);                                                                        \
        }                                                                                                    \
    }
NN_GRADIENT256(1)
NN_GRADIENT256(2)
NN_GRADIENT256(3)
NN_GRADIENT256(4)
NN_GRADIENT256(5)
NN_GRADIENT256(6)
NN_GRADIENT256(7)
NN_GRADIENT256(8)

static inline __attribute__((target("avx2,fma"), always_inline)) void gradient_avx2_mode(
    const long *const *colStarts, const int *const *entryRows, const float *const *entryVals, long shards, long inputs,
    const float *delta, long ldd, long units, float *g, long ldg, const nn_sparse_store *st, const int mode) {
    for (long k = 0; k < inputs; k++) {
        float *out = g + k * ldg;
        float *vel = st->velocity ? st->velocity + k * ldg : 0;
        for (long j0 = 0; j0 < units; j0 += 64) {
            long nv = (units - j0 + 7) / 8;
            NN_BY_REGISTERS(gradient256, nv, colStarts, entryRows, entryVals, shards, k, delta, ldd, j0, units, out, vel, st, mode)
        }
    }
}

NN_GRADIENT_BY_MODE(gradient_avx2, "avx2,fma")
#endif

// ---- dispatch --------------------------------------------------------------------------------


static int level_cap = 2;

static int sparse_level(void) {  // 2: AVX-512, 1: AVX2+FMA, 0: portable
    const int level = nn_cpu_level();
    return level < level_cap ? level : level_cap;
}

void nn_sparse_limit_isa(int cap) { level_cap = cap < 0 ? 0 : cap > 2 ? 2 : cap; }

void nn_sparse_forward_range(const int *records, long rows, const long *offsets, const long *bounds, long stride,
                             const int *cols, const float *vals, const float *wt, long ldw, long units, long kLo,
                             long kHi, float *z, long ldz, long *cursor) {
    // Every version adds into z (the vector ones block by block of inputs), AVX2 in whole registers.
    for (long r = 0; r < rows; r++) memset(z + r * ldz, 0, (size_t)((units + 7) / 8 * 8) * sizeof(float));
#ifdef NN_X86
    switch (sparse_level()) {
        case 2:
            forward_avx512(records, rows, offsets, bounds, stride, cols, vals, wt, ldw, units, kLo, kHi, z, ldz, cursor);
            return;
        case 1:
            forward_avx2(records, rows, offsets, bounds, stride, cols, vals, wt, ldw, units, kLo, kHi, z, ldz, cursor);
            return;
        default: break;
    }
#endif
    forward_portable(records, rows, offsets, bounds, stride, cols, vals, wt, ldw, units, kLo, kHi, z, ldz);
}

void nn_sparse_forward(const int *records, long rows, const long *offsets, const int *cols, const float *vals,
                       const float *wt, long ldw, long units, long inputs, float *z, long ldz, long *cursor) {
    nn_sparse_forward_range(records, rows, offsets, offsets, 1, cols, vals, wt, ldw, units, 0, inputs, z, ldz, cursor);
}

void nn_sparse_weight_gradient(const long *const *colStarts, const int *const *entryRows,
                               const float *const *entryVals, long shards, long inputs, const float *delta, long ldd,
                               long units, float *g, long ldg, nn_sparse_store store) {
#ifdef NN_X86
    switch (sparse_level()) {
        case 2: gradient_avx512(colStarts, entryRows, entryVals, shards, inputs, delta, ldd, units, g, ldg, &store); return;
        case 1: gradient_avx2(colStarts, entryRows, entryVals, shards, inputs, delta, ldd, units, g, ldg, &store); return;
        default: break;
    }
#endif
    gradient_portable(colStarts, entryRows, entryVals, shards, inputs, delta, ldd, units, g, ldg, &store);
}

void nn_sparse_prefetch_records(const int *records, long rows, const long *offsets, const long *bounds, long stride,
                                const int *cols, const float *vals) {
    for (long r = 0; r < rows; r++) prefetch_in_range(records[r], offsets, bounds, stride, cols, vals);
}

// The batch's column index is written block by block of NN_COLUMN_BLOCK inputs, for groups of
// up to NN_COLUMN_GROUP records (the group's cursors live on the stack).
#define NN_COLUMN_BLOCK 128
#define NN_COLUMN_GROUP 256

void nn_sparse_batch_column_range(const int *records, long rows, long firstRow, const long *offsets,
                                  const long *bounds, long stride, const int *cols, const float *vals, long kLo,
                                  long kHi, long *colStart, long *cursor, int *entryRow, float *entryVal) {
    const long width = kHi - kLo;
    for (long k = 0; k <= width; k++) colStart[k] = 0;
    // This is the first touch of the batch's records: ask for the first ones now, and for the
    // one NN_PREFETCH_AHEAD rows on while counting each.
    for (long r = 0; r < rows && r < NN_PREFETCH_AHEAD; r++)
        prefetch_in_range(records[r], offsets, bounds, stride, cols, vals);
    for (long r = 0; r < rows; r++) {
        if (r + NN_PREFETCH_AHEAD < rows)
            prefetch_in_range(records[r + NN_PREFETCH_AHEAD], offsets, bounds, stride, cols, vals);
        const long rec = records[r], end = end_in_range(rec, offsets, bounds, stride);
        for (long p = start_in_range(rec, offsets, bounds, stride, cols, kLo); p < end && cols[p] < kHi; p++)
            colStart[cols[p] - kLo + 1]++;
    }
    for (long k = 0; k < width; k++) {
        colStart[k + 1] += colStart[k];
        cursor[k] = colStart[k];
    }
    // The entries go out block by block of inputs, a group of records at a time: a block's
    // entries (≈ 1/6 of the shard's) stay in L1 while every record adds its non-zeros among them.
    // Record by record over all inputs, each entry landed on a cache line of its own among all
    // the inputs', and the whole function took 1.7× as long (37 against 22 µs for 64 records of
    // 150 non-zeros in cache; scripts/bench-batch-columns.c). A column's entries still come in
    // row order: blocks split the inputs, groups follow the rows.
    long next[NN_COLUMN_GROUP];  // each record's first non-zero not written yet
    for (long g = 0; g < rows; g += NN_COLUMN_GROUP) {
        const long n = rows - g < NN_COLUMN_GROUP ? rows - g : NN_COLUMN_GROUP;
        for (long r = 0; r < n; r++) {
            next[r] = start_in_range(records[g + r], offsets, bounds, stride, cols, kLo);
        }
        for (long k0 = kLo; k0 < kHi; k0 += NN_COLUMN_BLOCK) {
            const long k1 = k0 + NN_COLUMN_BLOCK < kHi ? k0 + NN_COLUMN_BLOCK : kHi;
            for (long r = 0; r < n; r++) {
                const long end = end_in_range(records[g + r], offsets, bounds, stride);
                long p = next[r];
                for (; p < end && cols[p] < k1; p++) {
                    long e = cursor[cols[p] - kLo]++;
                    entryRow[e] = (int)(firstRow + g + r);
                    entryVal[e] = vals[p];
                }
                next[r] = p;
            }
        }
    }
}

void nn_sparse_batch_columns(const int *records, long rows, long firstRow, const long *offsets, const int *cols,
                             const float *vals, long inputs, long *colStart, long *cursor, int *entryRow,
                             float *entryVal) {
    nn_sparse_batch_column_range(records, rows, firstRow, offsets, offsets, 1, cols, vals, 0, inputs, colStart, cursor,
                                 entryRow, entryVal);
}

const char *nn_sparse_isa(void) {
    switch (sparse_level()) {
        case 2: return "AVX-512";
        case 1: return "AVX2+FMA";
        default: return "portable C";
    }
}

// ---- transposing a worker's slice of W₁ (and its optimiser state) in and out -----------------

#ifdef NN_X86
/// dst (8 × 8, row stride ldd) = src (8 × 8, row stride lds) transposed, in registers.
static inline __attribute__((target("avx2"), always_inline)) void transpose8x8(const float *src, long lds, float *dst,
                                                                             long ldd) {
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds), r2 = _mm256_loadu_ps(src + 2 * lds),
           r3 = _mm256_loadu_ps(src + 3 * lds), r4 = _mm256_loadu_ps(src + 4 * lds),
           r5 = _mm256_loadu_ps(src + 5 * lds), r6 = _mm256_loadu_ps(src + 6 * lds),
           r7 = _mm256_loadu_ps(src + 7 * lds);
    // pairs of rows interleaved, then quadruples, then the 128-bit halves swapped across
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
           t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
           u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
           u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
           u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

__attribute__((target("avx2"))) static void transpose_avx2(long rows, long cols, const float *src, long lds,
                                                           float *dst, long ldd) {
    const long r8 = rows / 8 * 8, c8 = cols / 8 * 8;
    for (long r = 0; r < r8; r += 8)
        for (long c = 0; c < c8; c += 8) transpose8x8(src + r * lds + c, lds, dst + c * ldd + r, ldd);
    // the edges: the last rows % 8 rows, and the last cols % 8 columns of the others
    for (long r = r8; r < rows; r++)
        for (long c = 0; c < cols; c++) dst[c * ldd + r] = src[r * lds + c];
    for (long r = 0; r < r8; r++)
        for (long c = c8; c < cols; c++) dst[c * ldd + r] = src[r * lds + c];
}
#endif

void nn_transpose(long rows, long cols, const float *src, long lds, float *dst, long ldd) {
#ifdef NN_X86
    if (sparse_level() >= 1) {
        transpose_avx2(rows, cols, src, lds, dst, ldd);
        return;
    }
#endif
    for (long r = 0; r < rows; r++)
        for (long c = 0; c < cols; c++) dst[c * ldd + r] = src[r * lds + c];
}
