// How to split the sparse first layer of one step between two cores: by units (each thread its
// half of the 200 units, over every record of the batch, in the forward and in the weight
// gradient: nnd's split until the twenty-third session), by inputs (each thread all 200 units
// over its range of the inputs for every record, the shards adding the two partial sums: nnd's
// split since; `stepByInputs`), and a split by records and inputs (each thread its own
// records through all 200 units in the forward, and the batch's non-zeros among its own range
// of inputs in the weight gradient, so that no non-zero is visited by both threads and no
// slice is padded, at the price of the W₁ rows each thread updated crossing to the other core
// for the next forward). Real MNIST records, batches of 64, the seed's SGD fused into the
// gradient (nnd's kernels from Sources/CKernels/sparse.c), two threads pinned to CPUs 0 and 1
// with spinning barriers, and one thread doing the whole step as the baseline. The hidden
// layers are left out (the same in both splits); a stand-in "shard" step turns each record's
// first-layer outputs into its δ₁ row, so the outputs and deltas cross cores as in nnd. Each
// round first times the two threads' barrier (a cache line's round trip between the cores: a
// VM's vCPUs may share a core complex or not, and the hypervisor moves them), then the three
// ways; at the end, each phase's mean per thread. docs/performance.md ("Twenty-first session",
// "Twenty-third session") has the figures.
//
//   clang -O2 -c Sources/CKernels/sparse.c -I Sources/CKernels/include -o /tmp/sparse.o
//   clang -O2 -pthread -I Sources/CKernels/include scripts/bench-first-layer-split.c /tmp/sparse.o -lz \
//       -o /tmp/first-layer-split && /tmp/first-layer-split ../shared/datasets/mnist/train-images-idx3-ubyte.gz
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <xmmintrin.h>
#include "bench-mnist.h"
#include "bench-records.h"
#include "nn_kernels.h"

enum { INPUTS = 784, UNITS = 200, LD = 208, HALF = 100, LDH = 112, BATCH = 64, STEPS = 1000, ROUNDS = 40, HANDOFFS = 20000 };

static long *offsets;
static int *cols;
static float *vals;
static long records;
static int *order;  // STEPS × BATCH record numbers

// A barrier for two spinning threads (sense-reversing).
static atomic_int arrived, sense;
static void barrier(int *local) {
    *local = !*local;
    if (atomic_fetch_add(&arrived, 1) == 1) {
        atomic_store(&arrived, 0);
        atomic_store(&sense, *local);
    } else {
        while (atomic_load_explicit(&sense, memory_order_acquire) != *local) {}
    }
}

// Pinned to `cpu`, denormals flushed to zero (as nnd's workers run).
static void pin(int cpu) {
    _mm_setcsr(_mm_getcsr() | 0x8040);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// Buffers. By units: slice t's Wᵀ (784 × 112), its outputs for the batch (64 × 112), δ₁ in
// both slices' layout (64 × 224). By records: the whole Wᵀ (784 × 208), outputs and δ₁ 64 × 208.
static float *wtHalf[2], *zHalf[2], *deltaHalves, *wtFull, *zFull, *deltaFull, *zPart[2];
// Column indexes: piece t (by units: shard t's records over all inputs; by records: all the
// batch's records over inputs [split[t], split[t+1])).
static long *colStart[2], *cursor[2], *fwdCursor[2];
static int *entryRow[2];
static float *entryVal[2];
static int split[3];
// Each record's bounds in the two ranges of inputs split[t] ..< split[t + 1], as nnd keeps them.
static long *rangeBounds[2];
// Per thread and phase (index, forward, barrier 1, deltas, barrier 2, gradient, barrier 3): seconds.
static double phase[2][7];
static double mark[2];
static inline void lap(int t, int p) {
    const double now = seconds();
    phase[t][p] += now - mark[t];
    mark[t] = now;
}
static const nn_sparse_store sgd = {.mode = 2, .decay = 1 - 0.1f / 64 * 0.01f, .scale = -0.1f / 64};

// δ₁[r, j] from the record's outputs (a stand-in for the hidden layers' backward).
static void shardDeltas(int lo, int hi, int byUnits) {
    for (int r = lo; r < hi; r++)
        for (int j = 0; j < UNITS; j++) {
            const float z = byUnits ? zHalf[j / HALF][r * LDH + j % HALF] : zFull[r * LD + j];
            if (byUnits) deltaHalves[r * 2 * LDH + (j / HALF) * LDH + j % HALF] = 1e-3f * z - 1e-4f;
            else deltaFull[r * LD + j] = 1e-3f * z - 1e-4f;
        }
}

static void stepByUnits(int t, const int *batch, int *local) {
    const int lo = t * BATCH / 2, hi = (t + 1) * BATCH / 2;
    nn_sparse_batch_columns(batch + lo, hi - lo, lo, offsets, cols, vals, INPUTS, colStart[t], cursor[t], entryRow[t],
                            entryVal[t]);
    lap(t, 0);
    nn_sparse_forward(batch, BATCH, offsets, cols, vals, wtHalf[t], LDH, HALF, INPUTS, zHalf[t], LDH, fwdCursor[t]);
    lap(t, 1);
    barrier(local);
    lap(t, 2);
    shardDeltas(lo, hi, 1);
    lap(t, 3);
    barrier(local);
    lap(t, 4);
    const long *starts[2] = {colStart[0], colStart[1]};
    const int *rows[2] = {entryRow[0], entryRow[1]};
    const float *values[2] = {entryVal[0], entryVal[1]};
    nn_sparse_weight_gradient(starts, rows, values, 2, INPUTS, deltaHalves + t * LDH, 2 * LDH, HALF, wtHalf[t], LDH, sgd);
    lap(t, 5);
    barrier(local);
    lap(t, 6);
}

// The rest of a step split by inputs: after the deltas' barrier, the gradient of Wᵀ's rows
// split[t] ..< split[t + 1] from piece t of the index (the batch's non-zeros among them).
static void gradientOfInputRange(int t, int *local) {
    barrier(local);
    lap(t, 4);
    const long *starts[1] = {colStart[t]};
    const int *rows[1] = {entryRow[t]};
    const float *values[1] = {entryVal[t]};
    nn_sparse_weight_gradient(starts, rows, values, 1, split[t + 1] - split[t], deltaFull, LD, UNITS,
                              wtFull + (long)split[t] * LD, LD, sgd);
    lap(t, 5);
    barrier(local);
    lap(t, 6);
}

static void stepByRecords(int t, const int *batch, int *local) {
    const int lo = t * BATCH / 2, hi = (t + 1) * BATCH / 2;
    nn_sparse_batch_column_range(batch, BATCH, 0, offsets, rangeBounds[t], 2, cols, vals, split[t], split[t + 1],
                                 colStart[t], cursor[t], entryRow[t], entryVal[t]);
    lap(t, 0);
    nn_sparse_forward(batch + lo, hi - lo, offsets, cols, vals, wtFull, LD, UNITS, INPUTS, zFull + lo * LD, LD,
                      fwdCursor[t]);
    lap(t, 1);
    barrier(local);
    lap(t, 2);
    shardDeltas(lo, hi, 0);
    lap(t, 3);
    gradientOfInputRange(t, local);
}

// By inputs: each thread its range of inputs for every record and all 200 units, in the forward
// (a partial sum of every record's outputs, which the shards add) and in the weight gradient
// (the rows of Wᵀ it owns): no record's non-zero is visited twice, no slice padded, and no W₁
// row, no index entry changes cores; the partial sums and δ₁ rows do.
static void stepByInputs(int t, const int *batch, int *local) {
    const int lo = t * BATCH / 2, hi = (t + 1) * BATCH / 2;
    nn_sparse_batch_column_range(batch, BATCH, 0, offsets, rangeBounds[t], 2, cols, vals, split[t], split[t + 1],
                                 colStart[t], cursor[t], entryRow[t], entryVal[t]);
    lap(t, 0);
    nn_sparse_forward_range(batch, BATCH, offsets, rangeBounds[t], 2, cols, vals, wtFull + (long)split[t] * LD, LD,
                            UNITS, split[t], split[t + 1], zPart[t], LD, fwdCursor[t]);
    lap(t, 1);
    barrier(local);
    lap(t, 2);
    for (int r = lo; r < hi; r++)
        for (int j = 0; j < UNITS; j++) zFull[r * LD + j] = zPart[0][r * LD + j] + zPart[1][r * LD + j];
    shardDeltas(lo, hi, 0);
    lap(t, 3);
    gradientOfInputRange(t, local);
}

static void stepAlone(const int *batch) {
    nn_sparse_batch_columns(batch, BATCH, 0, offsets, cols, vals, INPUTS, colStart[0], cursor[0], entryRow[0],
                            entryVal[0]);
    lap(0, 0);
    nn_sparse_forward(batch, BATCH, offsets, cols, vals, wtFull, LD, UNITS, INPUTS, zFull, LD, fwdCursor[0]);
    lap(0, 1);
    shardDeltas(0, BATCH, 0);
    lap(0, 3);
    const long *starts[1] = {colStart[0]};
    const int *rows[1] = {entryRow[0]};
    const float *values[1] = {entryVal[0]};
    nn_sparse_weight_gradient(starts, rows, values, 1, INPUTS, deltaFull, LD, UNITS, wtFull, LD, sgd);
    lap(0, 5);
}

static int mode;  // 0: barriers only (the cores' round trip), 1: by units, 2: by records and inputs
static void *other(void *arg) {
    (void)arg;
    pin(1);
    int local = 0;
    if (mode == 0) {
        for (int i = 0; i < HANDOFFS; i++) barrier(&local);
        return NULL;
    }
    mark[1] = seconds();
    for (int s = 0; s < STEPS; s++) {
        if (mode == 1) stepByUnits(1, order + s * BATCH, &local);
        else if (mode == 2) stepByRecords(1, order + s * BATCH, &local);
        else stepByInputs(1, order + s * BATCH, &local);
    }
    return NULL;
}

static void resetWeights(void) {
    for (int k = 0; k < INPUTS; k++)
        for (int j = 0; j < UNITS; j++) {
            const float w = 0.05f * ((k * 31 + j * 17) % 101 - 50) / 50.f;
            wtFull[k * LD + j] = w, wtHalf[j / HALF][k * LDH + j % HALF] = w;
        }
}

// Nanoseconds a barrier of the two threads takes: a cache line's round trip between the cores.
// A VM's two vCPUs may sit on one core complex or on two, and the hypervisor moves them.
static double roundTrip(void) {
    mode = 0;
    atomic_store(&arrived, 0);
    atomic_store(&sense, 0);
    pthread_t thread;
    pthread_create(&thread, NULL, other, NULL);
    int local = 0;
    const double t = seconds();
    for (int i = 0; i < HANDOFFS; i++) barrier(&local);
    const double ns = (seconds() - t) / HANDOFFS * 1e9;
    pthread_join(thread, NULL);
    return ns;
}

// Microseconds per step of `m` (0: one thread alone), from the same starting weights.
static double run(int m) {
    resetWeights();
    mode = m;
    atomic_store(&arrived, 0);
    atomic_store(&sense, 0);
    pthread_t thread;
    double t = seconds();
    mark[0] = t;
    if (m == 0) {
        for (int s = 0; s < STEPS; s++) stepAlone(order + s * BATCH);
    } else {
        pthread_create(&thread, NULL, other, NULL);
        int local = 0;
        for (int s = 0; s < STEPS; s++) {
            if (m == 1) stepByUnits(0, order + s * BATCH, &local);
            else if (m == 2) stepByRecords(0, order + s * BATCH, &local);
            else stepByInputs(0, order + s * BATCH, &local);
        }
        pthread_join(thread, NULL);
    }
    return (seconds() - t) / STEPS * 1e6;
}

static float *alloc(long n) {
    float *p = aligned_alloc(64, sizeof(float) * ((n + 15) / 16 * 16));
    memset(p, 0, sizeof(float) * n);
    return p;
}

static int compare(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    records = loadMNIST(argc > 1 ? argv[1] : "../shared/datasets/mnist/train-images-idx3-ubyte.gz", &offsets, &cols, &vals);
    pin(0);
    // The inputs' split for the split by inputs: half of the data set's non-zeros each side.
    split[0] = 0, split[1] = (int)halveInputsByNonZeros(offsets, cols, records), split[2] = INPUTS;
    for (int t = 0; t < 2; t++) rangeBounds[t] = malloc(sizeof(long) * 2 * records);
    keepRecordBounds(offsets, cols, records, (const long[]){0, split[1], INPUTS}, 2, rangeBounds);
    for (int t = 0; t < 2; t++) {
        wtHalf[t] = alloc(INPUTS * LDH), zHalf[t] = alloc(BATCH * LDH), zPart[t] = alloc(BATCH * LD);
        colStart[t] = malloc(sizeof(long) * (INPUTS + 1)), cursor[t] = malloc(sizeof(long) * INPUTS);
        fwdCursor[t] = malloc(sizeof(long) * BATCH);
        entryRow[t] = malloc(sizeof(int) * BATCH * INPUTS), entryVal[t] = malloc(sizeof(float) * BATCH * INPUTS);
    }
    deltaHalves = alloc(BATCH * 2 * LDH), wtFull = alloc(INPUTS * LD), zFull = alloc(BATCH * LD), deltaFull = alloc(BATCH * LD);
    order = malloc(sizeof(int) * STEPS * BATCH);
    for (long i = 0; i < (long)STEPS * BATCH; i++) order[i] = rand() % records;
    printf("MNIST: %ld records, %.1f %% non-zero; inputs split at %d for the gradient by inputs\n", records,
           100.0 * offsets[records] / (records * INPUTS), split[1]);
    double us[4][ROUNDS], phases[4][2][7] = {{{0}}}, trip[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        trip[r] = roundTrip();
        for (int m = 0; m < 4; m++) {
            memset(phase, 0, sizeof phase);
            us[m][r] = run(m);
            for (int t = 0; t < 2; t++)
                for (int p = 0; p < 7; p++) phases[m][t][p] += phase[t][p] / ((double)STEPS * ROUNDS) * 1e6;
        }
        printf("round %d: barrier %.0f ns; alone %.1f µs, by units %.1f µs (%.2fx), by records and inputs %.1f µs (%.2fx), "
               "by inputs %.1f µs (%.2fx)\n", r + 1, trip[r], us[0][r], us[1][r], us[0][r] / us[1][r], us[2][r],
               us[0][r] / us[2][r], us[3][r], us[0][r] / us[3][r]);
    }
    // Speedups in the rounds whose barrier took at most twice the fastest ("near", as nnd bench
    // classifies its pairs) and in the others. The barrier is timed before a round's three runs
    // (about half a second), and the vCPUs may move in between: a rough split.
    double fastest = trip[0];
    for (int r = 1; r < ROUNDS; r++)
        if (trip[r] < fastest) fastest = trip[r];
    for (int near = 1; near >= 0; near--) {
        double a[ROUNDS], b[ROUNDS], c[ROUNDS];
        int n = 0;
        for (int r = 0; r < ROUNDS; r++)
            if ((trip[r] <= 2 * fastest) == near)
                a[n] = us[0][r] / us[1][r], b[n] = us[0][r] / us[2][r], c[n++] = us[0][r] / us[3][r];
        if (!n) continue;
        qsort(a, n, sizeof(double), compare), qsort(b, n, sizeof(double), compare), qsort(c, n, sizeof(double), compare);
        printf("%d rounds with the cores %s (barrier %s %.0f ns): median speedup by units %.2fx, by records and inputs "
               "%.2fx, by inputs %.2fx\n", n, near ? "near" : "far", near ? "at most" : "over", 2 * fastest, a[n / 2],
               b[n / 2], c[n / 2]);
    }
    const char *names[4] = {"alone", "by units", "by records and inputs", "by inputs"};
    for (int m = 0; m < 4; m++)
        for (int t = 0; t < (m ? 2 : 1); t++)
            printf("%s, thread %d (mean µs): index %.1f, forward %.1f, wait %.1f, deltas %.1f, wait %.1f, gradient %.1f, "
                   "wait %.1f\n", names[m], t, phases[m][t][0], phases[m][t][1], phases[m][t][2], phases[m][t][3],
                   phases[m][t][4], phases[m][t][5], phases[m][t][6]);
    for (int m = 0; m < 4; m++) qsort(us[m], ROUNDS, sizeof(double), compare);
    printf("median: alone %.1f µs, by units %.1f µs (%.2fx), by records and inputs %.1f µs (%.2fx), by inputs %.1f µs "
           "(%.2fx)\n", us[0][ROUNDS / 2], us[1][ROUNDS / 2], us[0][ROUNDS / 2] / us[1][ROUNDS / 2], us[2][ROUNDS / 2],
           us[0][ROUNDS / 2] / us[2][ROUNDS / 2], us[3][ROUNDS / 2], us[0][ROUNDS / 2] / us[3][ROUNDS / 2]);
    return 0;
}
