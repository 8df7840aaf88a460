// What building a shard's column index costs (nn_sparse_batch_columns: the batch's non-zeros
// grouped by input, for the sparse weight gradient), written record by record over all inputs
// (how nnd wrote it until the sixth session) against block by block of 128 inputs (how
// sparse.c writes it now). 64 records of 150 random non-zeros (MNIST: median 150 of 784),
// records drawn from 60,000, best of 3000 batches, one core, each batch's records already in
// cache (both versions read them once before they are timed). docs/performance.md ("Sixth
// session") has the figures.
//
//   clang -O2 -c Sources/CKernels/sparse.c -I Sources/CKernels/include -o /tmp/sparse.o
//   clang -O2 -I Sources/CKernels/include scripts/bench-batch-columns.c /tmp/sparse.o -o /tmp/columns && /tmp/columns
#include <stdio.h>
#include "bench-records.h"
#include "nn_kernels.h"

enum { INPUTS = 784, NON_ZEROS = 150, ROWS = 64, RECORDS = 60000, ROUNDS = 3000 };

// The data set as CSR (bench-records.h).
static long offsets[RECORDS + 1];
static int cols[RECORDS * NON_ZEROS];
static float vals[RECORDS * NON_ZEROS];

// The column index as nnd wrote it before: count, prefix sums, then each record's entries in turn.
static void columnsRecordByRecord(const int *records, long *colStart, long *cursor, int *entryRow,
                                  float *entryVal) {
    memset(colStart, 0, sizeof(long) * (INPUTS + 1));
    for (long r = 0; r < ROWS; r++)
        for (long p = offsets[records[r]]; p < offsets[records[r] + 1]; p++) colStart[cols[p] + 1]++;
    for (long k = 0; k < INPUTS; k++) {
        colStart[k + 1] += colStart[k];
        cursor[k] = colStart[k];
    }
    for (long r = 0; r < ROWS; r++)
        for (long p = offsets[records[r]]; p < offsets[records[r] + 1]; p++) {
            long e = cursor[cols[p]]++;
            entryRow[e] = (int)r;
            entryVal[e] = vals[p];
        }
}

int main(void) {
    makeRecords(RECORDS, NON_ZEROS, INPUTS, offsets, cols, vals);
    long colStart[INPUTS + 1], cursor[INPUTS];
    int *entryRow = malloc(sizeof(int) * ROWS * NON_ZEROS), *entryRowBefore = malloc(sizeof(int) * ROWS * NON_ZEROS);
    float *entryVal = malloc(sizeof(float) * ROWS * NON_ZEROS), *entryValBefore = malloc(sizeof(float) * ROWS * NON_ZEROS);
    double bestBefore = 1, bestNow = 1;
    int records[ROWS];
    for (int round = 0; round < ROUNDS; round++) {
        for (int r = 0; r < ROWS; r++) records[r] = rand() % RECORDS;
        columnsRecordByRecord(records, colStart, cursor, entryRowBefore, entryValBefore);  // in cache now
        double t = seconds();
        columnsRecordByRecord(records, colStart, cursor, entryRowBefore, entryValBefore);
        double before = seconds() - t;
        t = seconds();
        nn_sparse_batch_columns(records, ROWS, 0, offsets, cols, vals, INPUTS, colStart, cursor, entryRow, entryVal);
        double now = seconds() - t;
        if (memcmp(entryRow, entryRowBefore, sizeof(int) * ROWS * NON_ZEROS) != 0 ||
            memcmp(entryVal, entryValBefore, sizeof(float) * ROWS * NON_ZEROS) != 0) {
            fprintf(stderr, "the two column indexes differ (round %d)\n", round);
            return 1;
        }
        if (before < bestBefore) bestBefore = before;
        if (now < bestNow) bestNow = now;
    }
    printf("column index of %d records × %d non-zeros: record by record %.1f µs, block by block (sparse.c) %.1f µs\n",
           ROWS, NON_ZEROS, bestBefore * 1e6, bestNow * 1e6);
    return 0;
}
