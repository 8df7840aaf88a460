// The hidden layers' small products, OpenBLAS against nnd's own kernel (CKernels/gemm.c), one
// core, each call timed alone (best of 20,000, operands in cache): a shard's deltas through W₂…W₄
// (32 or 64 rows, `bwd`), a gradient slice's δᵀ·A (1 or 2 workers, `grad`), the dense first
// layer's gradient slice, and a batch-gradient chunk (1,024 records), where OpenBLAS stays.
// docs/performance.md ("Twelfth session") has the figures.
//
//   clang -O3 -c Sources/CKernels/gemm.c -I Sources/CKernels/include -o /tmp/gemm.o
//   clang -O2 -I Sources/CKernels/include scripts/bench-small-gemm.c /tmp/gemm.o -lopenblas -lm -o /tmp/small && /tmp/small
#include <cblas.h>
#include <stdio.h>
#include <string.h>
#include "bench-records.h"
#include "nn_kernels.h"

void openblas_set_num_threads(int);
char *openblas_get_corename(void);

static float *filled(long count) {
    float *p = aligned_alloc(64, sizeof(float) * count);
    for (long i = 0; i < count; i++) p[i] = 0.001f * ((i * 7) % 97);
    return p;
}

// C (m × n) = -0.001 · op(A) · B (k × n) + beta · C; op(A) = Aᵀ of a k × m matrix when transA.
static void compare(const char *name, int transA, int m, int n, int k, float beta, int repeats) {
    const long lda = transA ? m : k, ldb = n, ldc = n;
    float *a = filled((transA ? k : m) * lda), *b = filled(k * ldb), *c = filled(m * ldc);
    double blas = 1e9, own = 1e9;
    for (int i = 0; i < repeats; i++) {
        double t = seconds();
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, CblasNoTrans, m, n, k, -0.001f, a, lda, b, ldb,
                    beta, c, ldc);
        t = seconds() - t;
        if (t < blas) blas = t;
        t = seconds();
        nn_small_gemm(m, n, k, -0.001f, a, transA ? 1 : lda, transA ? lda : 1, b, ldb, beta, c, ldc);
        t = seconds() - t;
        if (t < own) own = t;
    }
    const double flop = 2.0 * m * n * k;
    printf("%-26s m %4d n %3d k %4d   OpenBLAS %7.2f µs %5.1f GFLOP/s   nnd %7.2f µs %5.1f GFLOP/s\n", name, m, n,
           k, blas * 1e6, flop / blas / 1e9, own * 1e6, flop / own / 1e9);
    free(a);
    free(b);
    free(c);
}

int main(void) {
    openblas_set_num_threads(1);
    // Debian's OpenBLAS 0.3.21 falls back to its Prescott (SSE3) kernels on CPUs it does not
    // know (Intel model 207 among them) and reads OPENBLAS_CORETYPE only as it loads; nnd sets
    // it and re-executes itself, this program does not. Say which kernels ran, so a Prescott
    // figure is not taken for OpenBLAS's best.
    const char *core = openblas_get_corename();
    printf("OpenBLAS kernels: %s%s\n", core,
           strcmp(core, "Prescott") == 0 ? " (SSE3 fallback: run again with OPENBLAS_CORETYPE=SkylakeX or Haswell)" : "");
    printf("nn_small_gemm: %s\n", nn_small_gemm_isa());
    for (int rows = 64; rows >= 32; rows /= 2) {
        printf("a shard of %d rows (the seed's network on %d worker%s):\n", rows, 64 / rows, rows == 64 ? "" : "s");
        compare("  bwd δ₃ = δ₄·W₄", 0, rows, 50, 10, 0, 20000);
        compare("  bwd δ₂ = δ₃·W₃", 0, rows, 100, 50, 0, 20000);
        compare("  bwd δ₁ = δ₂·W₂", 0, rows, 200, 100, 0, 20000);
    }
    for (int workers = 1; workers <= 2; workers++) {
        printf("a gradient slice with the fused SGD update, %d worker%s:\n", workers, workers == 1 ? "" : "s");
        compare("  grad W₂ slice", 1, 100 / workers, 200, 64, 0.999f, 20000);
        compare("  grad W₃ slice", 1, 50 / workers, 100, 64, 0.999f, 20000);
        compare("  grad W₄ slice", 1, 10 / workers, 50, 64, 0.999f, 20000);
    }
    printf("the dense first layer's gradient slice, and a batch-gradient chunk:\n");
    compare("  grad W₁ slice (dense)", 1, 100, 784, 64, 0.999f, 3000);
    compare("  chunk grad W₂ (k 1024)", 1, 100, 200, 1024, 1.0f, 1000);
    return 0;
}
