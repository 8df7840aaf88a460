#ifndef NN_KERNELS_H
#define NN_KERNELS_H
#include <stddef.h>

/// Element-wise kernels of the training step, written in C so that clang vectorises them and
/// builds an AVX2+FMA clone next to the baseline one (picked at load time by the CPU's flags).
/// Rows are row-major, `cols` floats each. NaN inputs give NaN outputs (divergence must show).

/// z[r][j] = 1 / (1 + exp(-(z[r][j] + bias[j])))
void nn_logistic_bias(float *z, const float *bias, long rows, long cols);

/// z[r] = softmax(z[r] + bias) for every row.
void nn_softmax_bias(float *z, const float *bias, long rows, long cols);

/// d[i] *= a[i] * (1 - a[i])   (the logistic's derivative, from its output)
void nn_logistic_backward(float *d, const float *a, long count);

/// z[r][j] = max(0, z[r][j] + bias[j]), NaN kept
void nn_relu_bias(float *z, const float *bias, long rows, long cols);

/// d[i] = 0 where a[i] <= 0   (the ReLU's derivative, from its output)
void nn_relu_backward(float *d, const float *a, long count);

/// Makes this thread's float arithmetic flush denormal results and inputs to zero (x86: MXCSR's
/// FTZ and DAZ bits; ARM: FPCR.FZ) and returns the previous mode for nn_restore_float_mode.
/// Denormals cost ~100 cycles per operation on x86, and Adam's second moment of weights whose
/// gradient is ~0 decays into them: an Adam run's epochs grew from 0.6 s to 2–3.6 s over 16
/// epochs without this.
unsigned long nn_flush_denormals(void);
void nn_restore_float_mode(unsigned long mode);

/// Which clone runs: "avx2+fma" or "baseline".
const char *nn_kernels_isa(void);

// --- The sparse first layer (inputs that are mostly zeros, like MNIST's 81 %) -------------------
// The inputs of a data set as CSR: record i's non-zeros are cols[p], vals[p] for p in
// offsets[i] ..< offsets[i+1]. A worker's slice of the first layer's weights is kept transposed,
// `wt`: inputs × ldw (ldw a multiple of 16, the columns past its `units` zero), so that one
// input's weights for all the slice's units are contiguous. Hand-vectorised for AVX-512 and
// AVX2+FMA, with a portable fallback; the CPU's best is picked on the first call.

/// z[r·ldz + j] = Σ_p vals[p] · wt[cols[p]·ldw + j] over the non-zeros p of record records[r],
/// for j < units (the slice's pre-activations for the batch, rows × units); wt has `inputs`
/// rows. Each sum runs over the record's non-zeros in input order, one FMA each, so the result
/// does not depend on the blocking: the vector versions go block by block of inputs (64 for a
/// full pass, more for a narrow one; their weights then stay in L1 while every record adds its
/// non-zeros among them), each record's
/// block of outputs in registers meanwhile. `cursor`: room for `rows` positions. The AVX2
/// version loads and stores whole registers: z's rows must be writable (ldz at least) up to units
/// rounded up to 8 floats, and wt's rows readable as far; what lands in z past `units` is the
/// sum over wt's lanes past `units` (nnd keeps those zero) and is never read by the lanes below.
void nn_sparse_forward(const int *records, long rows, const long *offsets, const int *cols, const float *vals,
                       const float *wt, long ldw, long units, long inputs, float *z, long ldz, long *cursor);

/// The same over inputs kLo ..< kHi only: wt's row 0 is input kLo (kHi − kLo rows), and z gets
/// each record's sum over its non-zeros in that range (a piece of the first layer split by
/// inputs; nn_sparse_forward is the range 0 ..< inputs). Record rec's non-zeros in the range are
/// bounds[rec · stride] ..< bounds[rec · stride + 1] (offsets, 1 for the whole range; nnd keeps
/// every piece's bounds of a record side by side, so one line holds them), or with bounds NULL
/// they are found in offsets by a binary search.
void nn_sparse_forward_range(const int *records, long rows, const long *offsets, const long *bounds, long stride,
                             const int *cols, const float *vals, const float *wt, long ldw, long units, long kLo,
                             long kHi, float *z, long ldz, long *cursor);

/// Asks for the cache lines of the non-zeros of `rows` records (indices into offsets) — those in a
/// range of inputs (bounds, stride: as for nn_sparse_forward_range), or all (bounds NULL) — so
/// that a later pass over them finds them in cache.
void nn_sparse_prefetch_records(const int *records, long rows, const long *offsets, const long *bounds, long stride,
                                const int *cols, const float *vals);

/// The non-zeros of batch rows firstRow ..< firstRow + rows (records[0 ..< rows], one shard's)
/// grouped by input (a counting sort, stable in the row order): input k's entries are the batch
/// row entryRow[e] and value entryVal[e] for e in colStart[k] ..< colStart[k+1]. colStart has
/// inputs + 1 slots, cursor `inputs`; entryRow and entryVal room for every non-zero of the rows.
void nn_sparse_batch_columns(const int *records, long rows, long firstRow, const long *offsets, const int *cols,
                             const float *vals, long inputs, long *colStart, long *cursor, int *entryRow,
                             float *entryVal);

/// The same for the inputs kLo ..< kHi only, over all `rows` records: input k's entries are at
/// colStart[k − kLo] ..< colStart[k − kLo + 1] (colStart has kHi − kLo + 1 slots, cursor kHi − kLo;
/// entryRow and entryVal room for the rows' non-zeros among those inputs). On more than 2 workers
/// each builds the batch's index for its own range of inputs, so the weight gradient loops over
/// each input once, not once per shard (4× faster for a narrow slice on 8 workers;
/// docs/performance.md, "Fifteenth session"). bounds, stride: as for nn_sparse_forward_range.
void nn_sparse_batch_column_range(const int *records, long rows, long firstRow, const long *offsets,
                                  const long *bounds, long stride, const int *cols, const float *vals, long kLo,
                                  long kHi, long *colStart, long *cursor, int *entryRow, float *entryVal);

/// What nn_sparse_weight_gradient does with its sums S (below), g being the slice's
/// transposed gradient or, in the fused modes, its transposed weights:
/// mode 0: g = S (an input no record uses gets a zero row); 1: g += S (chunks of a step);
/// 2, the seed's SGD fused: g = decay·g + scale·S (decay = 1 − α·λ/n, scale = −α/n);
/// 3, momentum fused, rounded as Optimizer.swift rounds it: ĝ = scale·S + decay·g
///   (scale = 1/n, decay = λ/n), velocity = momentum·velocity + ĝ, g = g − rate·velocity
///   (`velocity` laid out like g). The fused modes never write the gradient.
typedef struct {
    int mode;
    float decay;
    float scale;
    float momentum;
    float rate;
    float *velocity;
} nn_sparse_store;

/// S[k][j] = Σ_e entryVal[e] · delta[entryRow[e]·ldd + j] over input k's entries of every
/// shard's column index (shards 0 ..< shards in order, so the rows in order), j < units:
/// the transposed weight gradient of the slice (δ₁ᵀ·X restricted to the non-zeros), stored
/// into g (k·ldg + j) as `store` says. The AVX2 version loads and stores whole registers:
/// delta's rows must be readable, and g's (and velocity's) rows writable, up to units rounded
/// up to 8 floats. What it writes into g past `units` is computed from delta's lanes past
/// `units` (nnd keeps those zero, so its padding lanes stay zero) and is never read back into
/// the lanes below.
void nn_sparse_weight_gradient(const long *const *colStarts, const int *const *entryRows,
                               const float *const *entryVals, long shards, long inputs, const float *delta, long ldd,
                               long units, float *g, long ldg, nn_sparse_store store);

/// dst[c·ldd + r] = src[r·lds + c] for r < rows, c < cols: a worker's rows of W₁ into its
/// transposed slice and back (8 × 8 blocks in AVX registers where the CPU has AVX2).
void nn_transpose(long rows, long cols, const float *src, long lds, float *dst, long ldd);

/// Which implementation the sparse kernels use on this CPU.
const char *nn_sparse_isa(void);

/// Tests: use at most level `cap` (2 AVX-512, 1 AVX2+FMA, 0 portable) of what the CPU has, so
/// every implementation is checked on a machine that has them all. Not thread-safe; call it
/// when no kernel runs.
void nn_sparse_limit_isa(int cap);

// --- The hidden layers' small products (gemm.c) -------------------------------------------------

/// C = α · op(A) · B + β · C for small products: C is m × n (row stride ldc), B is k × n (row
/// stride ldb), op(A)(i, p) = a[i·ars + p·acs] — a row-major A with (ars, acs) = (lda, 1), or Aᵀ
/// of a row-major k × m matrix with (1, lda). β = 0: C is not read. Each element's sum runs over
/// p = 0 … k−1 in order, one FMA each, so splitting C into row ranges changes no bit. The AVX2+FMA
/// version where the CPU has it, else the portable one; nnd calls it only where it is faster than
/// OpenBLAS (BLAS.swift says where).
void nn_small_gemm(long m, long n, long k, float alpha, const float *a, long ars, long acs, const float *b, long ldb,
                   float beta, float *c, long ldc);

/// The portable version of nn_small_gemm, for the tests.
void nn_small_gemm_portable(long m, long n, long k, float alpha, const float *a, long ars, long acs,
                            const float *b, long ldb, float beta, float *c, long ldc);

/// Which implementation nn_small_gemm uses on this CPU: "AVX2+FMA" or "portable C".
const char *nn_small_gemm_isa(void);

#endif
