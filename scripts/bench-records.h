// Shared by the C micro-benchmarks in scripts/: a timer, and synthetic records as CSR like
// nnd's SparseRows (record i's non-zeros at offsets[i] ..< offsets[i+1], in input order).
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
#endif
