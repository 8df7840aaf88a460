// What splitting the sparse first layer between two workers costs in the kernels themselves.
// Forward: one worker's 200 units against one of two 100-unit slices (each going over every
// non-zero of the batch, as nnd's workers do) and against half of the inputs with all 200
// units (the alternative split). Weight gradient (δ₁ᵀ·X from the two shards' column
// indexes): all 200 units against one 100-unit slice. 64 records of 150 random non-zeros
// (MNIST: median 150 of 784), best of 3000 batches, one core; then one slice for 2 to 8
// workers, its gradient from nnd's column indexes by input range and, beside it, from one index
// per shard of records (nnd before the fifteenth session); and 2, 4, 8 workers splitting by
// inputs instead (nnd since the twenty-third session), each range's part of a record searched for
// or kept (since the twenty-fourth). docs/performance.md ("Fifth session", "Fifteenth session",
// "Twenty-third session", "Twenty-fourth session") has the figures.
//
//   clang -O2 -c Sources/CKernels/sparse.c -I Sources/CKernels/include -o /tmp/sparse.o
//   clang -O2 -I Sources/CKernels/include scripts/bench-sparse-split.c /tmp/sparse.o -o /tmp/split && /tmp/split
#include <stdio.h>
#include "bench-records.h"
#include "nn_kernels.h"

enum { INPUTS = 784, UNITS = 200, BATCH = 64, SHARD = BATCH / 2, RECORDS = 4096, ROUNDS = 3000, MAX_PIECES = 8 };

// The data set as CSR, like nnd's SparseRows: record i's non-zeros at offsets[i] ..< offsets[i+1].
static long offsets[RECORDS + 1];
static int cols[RECORDS * INPUTS];
static float vals[RECORDS * INPUTS];

static void drawBatch(int *records) {
    for (int r = 0; r < BATCH; r++) records[r] = rand() % RECORDS;
}

// Each record's bounds in piece p's range of `pieces` even ranges of the inputs (keepBounds).
static long boundsStore[MAX_PIECES][2 * RECORDS];
static void keepBounds(int inputs, int pieces) {
    long cuts[MAX_PIECES + 1], *bounds[MAX_PIECES];
    for (int p = 0; p <= pieces; p++) cuts[p] = (long)inputs * p / pieces;
    for (int p = 0; p < pieces; p++) bounds[p] = boundsStore[p];
    keepRecordBounds(offsets, cols, RECORDS, cuts, pieces, bounds);
}

// The forward of `units` outputs over inputs 0 ..< inputs, in `pieces` calls over even ranges of
// them, each into its own partial sums, and the parts added (as nnd's shards add them since the
// twenty-third session; one piece: a worker's whole forward), each record's part of a range from
// `keepBounds`' bounds (`kept`) or found by the kernels' binary search: best microseconds per batch.
static double forward(int units, int ldw, int inputs, int pieces, int kept) {
    float *wt = aligned_alloc(64, sizeof(float) * INPUTS * ldw), *z[MAX_PIECES];
    for (int i = 0; i < INPUTS * ldw; i++) wt[i] = 0.01f * (i % 97);
    for (int p = 0; p < pieces; p++) z[p] = aligned_alloc(64, sizeof(float) * BATCH * ldw);
    long cursor[BATCH];
    int records[BATCH];
    if (kept) keepBounds(inputs, pieces);
    double best = 1e9;
    for (int round = 0; round < ROUNDS; round++) {
        drawBatch(records);
        double t = seconds();
        for (int p = 0; p < pieces; p++) {
            const long k0 = (long)inputs * p / pieces, k1 = (long)inputs * (p + 1) / pieces;
            nn_sparse_forward_range(records, BATCH, offsets, kept ? boundsStore[p] : NULL, 2, cols, vals, wt + k0 * ldw, ldw,
                                    units, k0, k1, z[p], ldw, cursor);
        }
        for (int p = 1; p < pieces; p++)
            for (int i = 0; i < BATCH * ldw; i++) z[0][i] += z[p][i];
        t = seconds() - t;
        if (t < best) best = t;
    }
    free(wt);
    for (int p = 0; p < pieces; p++) free(z[p]);
    return best * 1e6;
}

// The weight gradient of `units` outputs from `pieces` column indexes, built outside the timing:
// with `byInputs`, as nnd builds them (piece p: the whole batch's non-zeros among its range of
// the inputs, one kernel call per piece); else one per shard of the batch's records, as nnd
// built them before the fifteenth session (one call over all inputs and shards).
// Piece s of n things split over `pieces`, as nnd splits records and inputs: [n·s/pieces, n·(s+1)/pieces).
static int split(int n, int s, int pieces) { return n * s / pieces; }
static double gradient(int units, int ldg, int pieces, int byInputs) {
    static long colStart[MAX_PIECES][INPUTS + 1], cursor[MAX_PIECES][INPUTS];
    static int entryRow[MAX_PIECES][BATCH * INPUTS];
    static float entryVal[MAX_PIECES][BATCH * INPUTS];
    const long *colStarts[MAX_PIECES];
    const int *entryRows[MAX_PIECES];
    const float *entryVals[MAX_PIECES];
    for (int s = 0; s < MAX_PIECES; s++) colStarts[s] = colStart[s], entryRows[s] = entryRow[s], entryVals[s] = entryVal[s];
    float *delta = aligned_alloc(64, sizeof(float) * BATCH * UNITS), *g = aligned_alloc(64, sizeof(float) * INPUTS * ldg);
    for (int i = 0; i < BATCH * UNITS; i++) delta[i] = 0.001f * (i % 89);
    const nn_sparse_store store = {.mode = 0, .decay = 1, .scale = 1};
    int records[BATCH];
    double best = 1e9;
    for (int round = 0; round < ROUNDS; round++) {
        drawBatch(records);
        for (int s = 0; s < pieces; s++) {
            const int lo = split(BATCH, s, pieces), hi = split(BATCH, s + 1, pieces);
            const int k0 = split(INPUTS, s, pieces), k1 = split(INPUTS, s + 1, pieces);
            if (byInputs)
                nn_sparse_batch_column_range(records, BATCH, 0, offsets, NULL, 0, cols, vals, k0, k1, colStart[s], cursor[s],
                                             entryRow[s], entryVal[s]);
            else
                nn_sparse_batch_columns(records + lo, hi - lo, lo, offsets, cols, vals, INPUTS, colStart[s], cursor[s],
                                        entryRow[s], entryVal[s]);
        }
        double t = seconds();
        if (byInputs)
            for (int s = 0; s < pieces; s++) {
                const int k0 = split(INPUTS, s, pieces), k1 = split(INPUTS, s + 1, pieces);
                nn_sparse_weight_gradient(colStarts + s, entryRows + s, entryVals + s, 1, k1 - k0, delta, UNITS, units,
                                          g + (long)k0 * ldg, ldg, store);
            }
        else
            nn_sparse_weight_gradient(colStarts, entryRows, entryVals, pieces, INPUTS, delta, UNITS, units, g, ldg, store);
        t = seconds() - t;
        if (t < best) best = t;
    }
    free(delta);
    free(g);
    return best * 1e6;
}

int main(void) {
    srand(1);
    makeRecords(RECORDS, 150, INPUTS, offsets, cols, vals);
    printf("forward, 1 worker, 200 units, 150 non-zeros a record:       %.1f µs\n", forward(200, 208, INPUTS, 1, 0));
    printf("forward, one 100-unit slice, 150 non-zeros a record:        %.1f µs\n", forward(100, 112, INPUTS, 1, 0));
    printf("gradient, 200 units, both shards:                           %.1f µs\n", gradient(200, 208, 2, 0));
    printf("gradient, one 100-unit slice, both shards:                  %.1f µs\n", gradient(100, 112, 2, 0));
    // W workers: one slice of 200/W units, as nnd splits the first layer; what the W slices
    // cost summed, against one worker's, is the extra work the split adds (each slice goes over
    // every non-zero of the batch).
    const double one = forward(200, 208, INPUTS, 1, 0) + gradient(200, 208, 1, 1);
    for (int w = 2; w <= 8; w++) {
        const int units = 200 / w, ld = (units + 15) / 16 * 16;
        const double f = forward(units, ld, INPUTS, 1, 0), byShards = gradient(units, ld, w, 0), g = gradient(units, ld, w, 1);
        printf("%d workers, one %3d-unit slice: forward %5.1f µs, gradient %5.1f µs (indexes by shard: %5.1f µs); %d slices summed %.2fx one worker's\n",
               w, units, f, g, byShards, w, w * (f + g) / one);
    }
    // The same W workers splitting by inputs (nnd since the twenty-third session): each piece all
    // 200 units over its inputs, every non-zero visited once, the parts added; each record's part
    // of a range found by a search (the twenty-third session) or from its kept bounds (since the
    // twenty-fourth).
    for (int w = 2; w <= 8; w *= 2) {
        const double f = forward(200, 208, INPUTS, w, 0), kept = forward(200, 208, INPUTS, w, 1);
        const double g = gradient(200, 208, w, 1);
        printf("%d workers by inputs, all pieces: forward with the parts added %5.1f µs (bounds kept: %5.1f), gradient "
               "%5.1f µs; %.2fx one worker's (bounds kept: %.2fx)\n", w, f, kept, g, (f + g) / one, (kept + g) / one);
    }
    makeRecords(RECORDS, 75, INPUTS / 2, offsets, cols, vals);
    printf("forward, half of the inputs, 200 units, 75 non-zeros a record: %.1f µs\n", forward(200, 208, INPUTS / 2, 1, 0));
    return 0;
}
