#include "nn_kernels.h"
#include "cpu_level.h"

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>
#define NN_X86 1
#endif

// The hidden layers' small products: a shard's deltas through a layer's weights (32 × 100 ·
// 100 × 200 for the seed on 2 workers) and a gradient slice's δᵀ·A (50 × 64 · 64 × 200).
// OpenBLAS 0.3.21's Haswell kernels pack both operands on every call and ran these at 58–77 %
// of one core's GEMM rate on AMD Zen 3 (less the smaller the call); this kernel packs nothing
// and reaches 90–100 % for the large ones (docs/performance.md, "Twelfth session").
//
// The register block is 6 rows × 16 columns of C: 12 accumulators, the 2 registers of B's row
// and a broadcast of A take 15 of AVX2's 16 registers (a 4 × 24 block needed 16 and clang
// spilled). Each C element's sum runs over p = 0 … k−1 in order, one FMA each, whatever the
// block: a product split into row ranges (the shards, the gradient slices) gives the same bits.

void nn_small_gemm_portable(long m, long n, long k, float alpha, const float *a, long ars, long acs,
                            const float *b, long ldb, float beta, float *c, long ldc) {
    for (long i = 0; i < m; i++)
        for (long j = 0; j < n; j++) {
            float sum = 0;
            for (long p = 0; p < k; p++) sum = __builtin_fmaf(a[i * ars + p * acs], b[p * ldb + j], sum);
            float *o = c + i * ldc + j;
            *o = beta != 0 ? __builtin_fmaf(beta, *o, alpha * sum) : alpha * sum;
        }
}

#ifdef NN_X86
/// C[0..<MR, 0..<8·NV] of the block: MR rows of op(A) against NV registers of B's columns. The
/// last register covers only the lanes set in `mask` when MASKED (the columns past n are neither
/// read from B nor written to C). MR, NV and MASKED are constants in every call, so the
/// accumulators live in registers.
static inline __attribute__((target("avx2,fma"), always_inline)) void small_block(
    const int MR, const int NV, const int MASKED, long k, float alpha, const float *a, long ars, long acs,
    const float *b, long ldb, float beta, float *c, long ldc, __m256i mask) {
    __m256 acc[6][2];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_ps();
    for (long p = 0; p < k; p++) {
        // acc[i] += op(A)[i, p] · B[p, columns]
        __m256 row[2];
        for (int v = 0; v < NV; v++)
            row[v] = MASKED && v == NV - 1 ? _mm256_maskload_ps(b + p * ldb + 8 * v, mask)
                                           : _mm256_loadu_ps(b + p * ldb + 8 * v);
        for (int i = 0; i < MR; i++) {
            const __m256 x = _mm256_broadcast_ss(a + i * ars + p * acs);
            for (int v = 0; v < NV; v++) acc[i][v] = _mm256_fmadd_ps(x, row[v], acc[i][v]);
        }
    }
    // C = α·sum + β·C, C not read when β = 0
    const __m256 al = _mm256_set1_ps(alpha), be = _mm256_set1_ps(beta);
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) {
            float *o = c + i * ldc + 8 * v;
            __m256 r = _mm256_mul_ps(al, acc[i][v]);
            if (MASKED && v == NV - 1) {
                // once per row and call: AMD's masked stores are slow, but not at this rate
                if (beta != 0) r = _mm256_fmadd_ps(be, _mm256_maskload_ps(o, mask), r);
                _mm256_maskstore_ps(o, mask, r);
            } else {
                if (beta != 0) r = _mm256_fmadd_ps(be, _mm256_loadu_ps(o), r);
                _mm256_storeu_ps(o, r);
            }
        }
}

#define NN_SMALL_ROWS(NV, MASKED)                                                                          \
    switch (rows) {                                                                                        \
        case 6: small_block(6, NV, MASKED, k, alpha, ai, ars, acs, bj, ldb, beta, cij, ldc, mask); break;  \
        case 5: small_block(5, NV, MASKED, k, alpha, ai, ars, acs, bj, ldb, beta, cij, ldc, mask); break;  \
        case 4: small_block(4, NV, MASKED, k, alpha, ai, ars, acs, bj, ldb, beta, cij, ldc, mask); break;  \
        case 3: small_block(3, NV, MASKED, k, alpha, ai, ars, acs, bj, ldb, beta, cij, ldc, mask); break;  \
        case 2: small_block(2, NV, MASKED, k, alpha, ai, ars, acs, bj, ldb, beta, cij, ldc, mask); break;  \
        default: small_block(1, NV, MASKED, k, alpha, ai, ars, acs, bj, ldb, beta, cij, ldc, mask); break; \
    }

__attribute__((target("avx2,fma"))) static void small_gemm_avx2(long m, long n, long k, float alpha, const float *a,
                                                                long ars, long acs, const float *b, long ldb,
                                                                float beta, float *c, long ldc) {
    // Column blocks outside, row blocks inside: B's k × 16 strip (≤ 13 KB for k = 200) stays in
    // L1 while every row block of A goes over it.
    for (long j = 0; j < n; j += 16) {
        const long width = n - j < 16 ? n - j : 16;
        const int nv = (int)((width + 7) / 8);
        const int last = (int)(width - 8 * (nv - 1));  // columns in the last register, 1 … 8
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(last), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        const float *bj = b + j;
        for (long i = 0; i < m; i += 6) {
            const long rows = m - i < 6 ? m - i : 6;
            const float *ai = a + i * ars;
            float *cij = c + i * ldc + j;
            if (last == 8) {
                if (nv == 2) { NN_SMALL_ROWS(2, 0) } else { NN_SMALL_ROWS(1, 0) }
            } else {
                if (nv == 2) { NN_SMALL_ROWS(2, 1) } else { NN_SMALL_ROWS(1, 1) }
            }
        }
    }
}
#endif

void nn_small_gemm(long m, long n, long k, float alpha, const float *a, long ars, long acs, const float *b, long ldb,
                   float beta, float *c, long ldc) {
#ifdef NN_X86
    if (nn_cpu_level() >= 1) {
        small_gemm_avx2(m, n, k, alpha, a, ars, acs, b, ldb, beta, c, ldc);
        return;
    }
#endif
    nn_small_gemm_portable(m, n, k, alpha, a, ars, acs, b, ldb, beta, c, ldc);
}

const char *nn_small_gemm_isa(void) { return nn_cpu_level() >= 1 ? "AVX2+FMA" : "portable C"; }
