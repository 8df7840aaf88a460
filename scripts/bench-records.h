// Shared by the C micro-benchmarks in scripts/: a timer, synthetic records as CSR like nnd's
// SparseRows (record i's non-zeros at offsets[i] ..< offsets[i+1], in input order), and each
// record's bounds in ranges of the inputs as nnd keeps them.
#ifndef NN_BENCH_RECORDS_H
#define NN_BENCH_RECORDS_H
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

// Gives each of `records` records `nonZeros` distinct random inputs below `range`, with values
// k/255 like MNIST's pixels. offsets has records + 1 slots; cols and vals room for every non-zero.
static void makeRecords(long records, int nonZeros, int range, long *offsets, int *cols, float *vals) {
    long p = 0;
    char used[range];
    for (long i = 0; i < records; i++) {
        offsets[i] = p;
        memset(used, 0, sizeof used);
        for (int chosen = 0; chosen < nonZeros;) {
            int k = rand() % range;
            if (!used[k]) used[k] = 1, chosen++;
        }
        for (int k = 0; k < range; k++)
            if (used[k]) cols[p] = k, vals[p++] = (rand() % 255) / 255.f;
    }
    offsets[records] = p;
}

// Each record's bounds in the `pieces` ranges of the inputs cuts[p] ..< cuts[p + 1] (cuts[0] = 0),
// as SparseFirstLayer.recordBounds keeps them: bounds[p][2·rec] its first non-zero in range p,
// bounds[p][2·rec + 1] one past its last (each bounds[p] room for 2 · records).
static inline void keepRecordBounds(const long *offsets, const int *cols, long records, const long *cuts, int pieces,
                                    long **bounds) {
    for (long i = 0; i < records; i++) {
        long q = offsets[i];
        for (int p = 0; p < pieces; p++) {
            bounds[p][2 * i] = q;
            while (q < offsets[i + 1] && cols[q] < cuts[p + 1]) q++;
            bounds[p][2 * i + 1] = q;
        }
    }
}
#endif
