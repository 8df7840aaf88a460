// Would a pipeline by layers split the seed's sparse step better over 2 cores than nnd's
// phases do? (docs/performance.md, "Fifteenth session".) A one-off measurement with nnd's own
// kernels, not nnd's engine: the 784-200-100-50-10 logistic network, fused SGD, 64 records of
// 150 random non-zeros (MNIST: median 150 of 784), OpenBLAS for layers 2-4.
//   one core:  the step as nnd's 1-worker engine runs it: index, first layer, layers 2-4 on
//              all 64 rows, their updates, the first layer's fused gradient;
//   pipeline:  thread 0 owns the first layer (W1), thread 1 the column index and layers 2-4
//              (W2..W4); the batch goes through as two micro-batches of 32, so thread 1 runs
//              layers 2-4 on one while thread 0 computes the other's first layer or gradient.
//              No parameter ever changes cores; A1 goes one way and delta1 the other.
// The two are alternated, 200 steps each, and each pair's ratio printed with their median.
// Measured (Intel Xeon model 207, AVX-512, 2 vCPUs): 1.36-1.49x in three runs, 1.66x in a run
// where the host had slowed the one-core step to 480 us; nnd's own split gives 1.62x (median
// of twelve `nnd bench` runs the same day). So it was not built into the engine.
//
//   clang -O3 -c Sources/CKernels/sparse.c -I Sources/CKernels/include -o /tmp/sparse.o
//   clang -O3 -c Sources/CKernels/kernels.c -I Sources/CKernels/include -o /tmp/kernels.o
//   clang -O2 -I Sources/CKernels/include scripts/bench-layer-pipeline.c /tmp/sparse.o /tmp/kernels.o \
//       -lopenblas -lpthread -lm -o /tmp/pipeline && OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS=1 /tmp/pipeline
#include <cblas.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include "bench-records.h"
#include "nn_kernels.h"

enum { IN = 784, H1 = 200, LD1 = 208, H2 = 100, H3 = 50, OUT = 10, B = 64, M = 32, RECORDS = 8192, NZ = 150 };
enum { STEPS = 200, PAIRS = 30 };

static long offsets[RECORDS + 1];
static int cols[RECORDS * NZ];
static float vals[RECORDS * NZ];
static int labels[RECORDS];

// Parameters: W1 transposed (IN x LD1, padding columns zero), the rest row-major as nnd keeps them.
static float *W1t, b1[H1], *W2, b2[H2], *W3, b3[H3], *W4, b4[OUT];
// Batch buffers. A1 and the column index alternate by step parity (the next step's first
// layer and index are written while the last step's W2 gradient and W1 gradient still read them).
static float *A1[2], *D1, A2[B * H2], A3[B * H3], A4[B * OUT], D2[B * H2], D3[B * H3], D4[B * OUT];
static long colStart[2][2][IN + 1], cursor[2][2][IN], fcursor[B];
static int entryRow[2][2][M * IN];
static float entryVal[2][2][M * IN];
static int batchRecords[2][B];
static const float rate = 0.1f, lambda = 0.01f;

static void drawBatch(int *records) {
    for (int r = 0; r < B; r++) records[r] = rand() % RECORDS;
}

// Micro-batch mb's column index (its 32 rows' non-zeros grouped by input), step parity p.
static void gatherIndex(int p, int mb) {
    nn_sparse_batch_columns(batchRecords[p] + mb * M, M, mb * M, offsets, cols, vals, IN, colStart[p][mb],
                            cursor[p][mb], entryRow[p][mb], entryVal[p][mb]);
}

// A1[rows] = logistic(X[rows] . W1^T + b1)   (rows x 200, row stride LD1)
static void firstLayerForward(int p, int row, int rows) {
    float *a = A1[p] + row * LD1;
    nn_sparse_forward(batchRecords[p] + row, rows, offsets, cols, vals, W1t, LD1, H1, IN, a, LD1, fcursor);
    for (int r = 0; r < rows; r++) nn_logistic_bias(a + r * LD1, b1, 1, H1);
}

// Layers 2-4 forward, the output delta and the deltas down to delta1 of batch rows row..<row+rows.
static void upperLayers(int p, int row, int rows) {
    const float *a1 = A1[p] + row * LD1;
    float *a2 = A2 + row * H2, *a3 = A3 + row * H3, *a4 = A4 + row * OUT;
    float *d2 = D2 + row * H2, *d3 = D3 + row * H3, *d4 = D4 + row * OUT, *d1 = D1 + row * LD1;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, H2, H1, 1, a1, LD1, W2, H1, 0, a2, H2);
    nn_logistic_bias(a2, b2, rows, H2);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, H3, H2, 1, a2, H2, W3, H2, 0, a3, H3);
    nn_logistic_bias(a3, b3, rows, H3);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, OUT, H3, 1, a3, H3, W4, H3, 0, a4, OUT);
    nn_softmax_bias(a4, b4, rows, OUT);
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < OUT; j++) d4[r * OUT + j] = a4[r * OUT + j];
        d4[r * OUT + labels[batchRecords[p][row + r]]] -= 1;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, H3, OUT, 1, d4, OUT, W4, H3, 0, d3, H3);
    nn_logistic_backward(d3, a3, rows * H3);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, H2, H3, 1, d3, H3, W3, H2, 0, d2, H2);
    nn_logistic_backward(d2, a2, rows * H2);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, H1, H2, 1, d2, H2, W2, H1, 0, d1, LD1);
    for (int r = 0; r < rows; r++) nn_logistic_backward(d1 + r * LD1, a1 + r * LD1, H1);
}

static void biasUpdate(float *b, const float *d, int ld, int units) {
    const float s = rate / B;
    for (int j = 0; j < units; j++) {
        float sum = 0;
        for (int r = 0; r < B; r++) sum += d[r * ld + j];
        b[j] -= s * sum;
    }
}

// W_l <- (1 - a.l/n) W_l - (a/n) delta_l^T . A_{l-1} for layers 2-4, and their biases.
static void upperUpdate(int p) {
    const float s = rate / B, decay = 1 - rate * lambda / B;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, H3, B, -s, D4, OUT, A3, H3, decay, W4, H3);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H3, H2, B, -s, D3, H3, A2, H2, decay, W3, H2);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H2, H1, B, -s, D2, H2, A1[p], LD1, decay, W2, H1);
    biasUpdate(b4, D4, OUT, OUT);
    biasUpdate(b3, D3, H3, H3);
    biasUpdate(b2, D2, H2, H2);
}

// W1^T fused SGD from micro-batches first ..< first + count of the index (decay applied with the first).
static void firstLayerGradient(int p, int first, int count, int withDecay) {
    const long *starts[2] = {colStart[p][0], colStart[p][1]};
    const int *rowsOf[2] = {entryRow[p][0], entryRow[p][1]};
    const float *valsOf[2] = {entryVal[p][0], entryVal[p][1]};
    nn_sparse_store store = {.mode = 2, .decay = withDecay ? 1 - rate * lambda / B : 1, .scale = -rate / B};
    nn_sparse_weight_gradient(starts + first, rowsOf + first, valsOf + first, count, IN, D1, LD1, H1, W1t, LD1, store);
}

static void oneCoreStep(int p) {
    drawBatch(batchRecords[p]);
    gatherIndex(p, 0);
    gatherIndex(p, 1);
    firstLayerForward(p, 0, B);
    upperLayers(p, 0, B);
    upperUpdate(p);
    firstLayerGradient(p, 0, 2, 1);
    biasUpdate(b1, D1, LD1, H1);
}

// Pipeline hand-offs: each holds the number of the last step for which it is done.
static _Atomic long indexReady, a1Ready[2], d1Ready[2], batchDrawn;

static void waitFor(_Atomic long *flag, long step) {
    while (atomic_load_explicit(flag, memory_order_acquire) < step) _mm_pause();
}

static void publish(_Atomic long *flag, long step) { atomic_store_explicit(flag, step, memory_order_release); }

static long firstStep;

// Thread 1: the column index, layers 2-4 on each micro-batch as its A1 arrives, their update.
static void *upperThread(void *unused) {
    (void)unused;
    unsigned long mode = nn_flush_denormals();
    for (long step = firstStep; step < firstStep + STEPS; step++) {
        int p = step & 1;
        waitFor(&batchDrawn, step);
        gatherIndex(p, 0);
        gatherIndex(p, 1);
        publish(&indexReady, step);
        for (int mb = 0; mb < 2; mb++) {
            waitFor(&a1Ready[mb], step);
            upperLayers(p, mb * M, M);
            publish(&d1Ready[mb], step);
        }
        upperUpdate(p);
    }
    nn_restore_float_mode(mode);
    return NULL;
}

// Thread 0: the first layer, forward for both micro-batches, then each one's gradient.
static void pipelineSteps(void) {
    pthread_t t;
    pthread_create(&t, NULL, upperThread, NULL);
    for (long step = firstStep; step < firstStep + STEPS; step++) {
        int p = step & 1;
        drawBatch(batchRecords[p]);
        publish(&batchDrawn, step);
        for (int mb = 0; mb < 2; mb++) {
            firstLayerForward(p, mb * M, M);
            publish(&a1Ready[mb], step);
        }
        waitFor(&indexReady, step);
        for (int mb = 0; mb < 2; mb++) {
            waitFor(&d1Ready[mb], step);
            firstLayerGradient(p, mb, 1, mb == 0);
        }
        biasUpdate(b1, D1, LD1, H1);
    }
    pthread_join(t, NULL);
    firstStep += STEPS;
}

static int byValue(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(void) {
    srand(7);
    makeRecords(RECORDS, NZ, IN, offsets, cols, vals);
    for (int i = 0; i < RECORDS; i++) labels[i] = rand() % OUT;
    W1t = aligned_alloc(64, sizeof(float) * IN * LD1);
    W2 = aligned_alloc(64, sizeof(float) * H2 * H1);
    W3 = aligned_alloc(64, sizeof(float) * H3 * H2);
    W4 = aligned_alloc(64, sizeof(float) * OUT * H3);
    for (int p = 0; p < 2; p++) A1[p] = aligned_alloc(64, sizeof(float) * B * LD1);
    D1 = aligned_alloc(64, sizeof(float) * B * LD1);
    memset(D1, 0, sizeof(float) * B * LD1);
    for (int p = 0; p < 2; p++) memset(A1[p], 0, sizeof(float) * B * LD1);
    for (int k = 0; k < IN; k++)
        for (int j = 0; j < LD1; j++) W1t[k * LD1 + j] = j < H1 ? 0.05f * ((rand() % 200) / 100.f - 1) : 0;
    for (int i = 0; i < H2 * H1; i++) W2[i] = 0.1f * ((rand() % 200) / 100.f - 1);
    for (int i = 0; i < H3 * H2; i++) W3[i] = 0.15f * ((rand() % 200) / 100.f - 1);
    for (int i = 0; i < OUT * H3; i++) W4[i] = 0.3f * ((rand() % 200) / 100.f - 1);
    unsigned long mode = nn_flush_denormals();
    printf("sparse kernels %s; %d pairs of %d steps: one core, then the 2-thread pipeline\n", nn_sparse_isa(), PAIRS,
           STEPS);
    double ratios[PAIRS], one[PAIRS], two[PAIRS];
    for (int i = 0; i < 20; i++) oneCoreStep(i & 1);
    firstStep = 1;
    pipelineSteps();
    for (int pair = 0; pair < PAIRS; pair++) {
        double t = seconds();
        for (int s = 0; s < STEPS; s++) oneCoreStep(s & 1);
        one[pair] = (seconds() - t) / STEPS * 1e6;
        t = seconds();
        pipelineSteps();
        two[pair] = (seconds() - t) / STEPS * 1e6;
        ratios[pair] = one[pair] / two[pair];
        printf("pair %2d: one core %.1f us, pipeline %.1f us: %.2fx\n", pair + 1, one[pair], two[pair], ratios[pair]);
    }
    nn_restore_float_mode(mode);
    qsort(ratios, PAIRS, sizeof(double), byValue);
    qsort(one, PAIRS, sizeof(double), byValue);
    qsort(two, PAIRS, sizeof(double), byValue);
    printf("median: one core %.1f us, pipeline %.1f us; median of the pairs' ratios %.2fx (best pair %.2fx)\n",
           one[PAIRS / 2], two[PAIRS / 2], ratios[PAIRS / 2], ratios[PAIRS - 1]);
    return 0;
}
