// What finding each record's non-zeros in a worker's range of inputs costs the sparse first
// layer's index and forward (nn_sparse_batch_column_range, nn_sparse_forward_range): by a binary
// search over the record's columns in every pass (nnd until the twenty-fourth session), or from
// bounds computed once per data set, two per record side by side (SparseFirstLayer's
// recordBounds). Real MNIST records in random batches of 64 (so the index is their first
// touch, as in nnd), one core, the two ranges nnd gives 2 workers and the whole range; the
// binary search costs only the ranges that do not begin at input 0. docs/performance.md
// ("Twenty-fourth session") has the figures.
//
//   clang -O2 -c Sources/CKernels/sparse.c -I Sources/CKernels/include -o /tmp/sparse.o
//   clang -O2 -I scripts -I Sources/CKernels/include scripts/bench-record-bounds.c /tmp/sparse.o -lz \
//       -o /tmp/record-bounds && taskset -c 1 /tmp/record-bounds ../shared/datasets/mnist/train-images-idx3-ubyte.gz
#include "bench-mnist.h"
#include "bench-records.h"
#include "nn_kernels.h"

enum { UNITS = 200, LD = 208, BATCH = 64, STEPS = 2000, ROUNDS = 3 };

int main(int argc, char **argv) {
    long *offsets;
    int *cols;
    float *vals;
    const long records =
        loadMNIST(argc > 1 ? argv[1] : "../shared/datasets/mnist/train-images-idx3-ubyte.gz", &offsets, &cols, &vals);
    const long split = halveInputsByNonZeros(offsets, cols, records);
    const long ranges[3][2] = {{0, split}, {split, MNIST_INPUTS}, {0, MNIST_INPUTS}};
    // The two ranges' bounds, as recordBounds keeps them.
    long *bounds[2] = {malloc(sizeof(long) * 2 * records), malloc(sizeof(long) * 2 * records)};
    keepRecordBounds(offsets, cols, records, (const long[]){0, split, MNIST_INPUTS}, 2, bounds);
    int *order = malloc(sizeof(int) * STEPS * BATCH);
    for (long i = 0; i < (long)STEPS * BATCH; i++) order[i] = rand() % records;
    float *wt = aligned_alloc(64, sizeof(float) * MNIST_INPUTS * LD);
    for (long i = 0; i < MNIST_INPUTS * LD; i++) wt[i] = i % LD < UNITS ? 0.001f * (i % 97) : 0;
    float *z = aligned_alloc(64, sizeof(float) * BATCH * LD);
    long cursor[BATCH], colStart[MNIST_INPUTS + 1], columnCursor[MNIST_INPUTS];
    int *entryRow = malloc(sizeof(int) * BATCH * MNIST_INPUTS);
    float *entryVal = malloc(sizeof(float) * BATCH * MNIST_INPUTS);
    printf("MNIST: %ld records; µs per batch of %d, mean of %d batches (%s kernels)\n", records, BATCH, STEPS,
           nn_sparse_isa());
    for (int round = 0; round < ROUNDS; round++) {
        for (int kept = 0; kept < 2; kept++) {
            for (int q = 0; q < 3; q++) {
                const long lo = ranges[q][0], hi = ranges[q][1];
                // the whole range's bounds are the offsets themselves (stride 1)
                const long *b = !kept ? NULL : q == 2 ? offsets : bounds[q];
                const long stride = q == 2 ? 1 : 2;
                double index = 0, forward = 0;
                for (int s = 0; s < STEPS; s++) {
                    const int *batch = order + (long)s * BATCH;
                    const double t0 = seconds();
                    nn_sparse_batch_column_range(batch, BATCH, 0, offsets, b, stride, cols, vals, lo, hi, colStart,
                                                 columnCursor, entryRow, entryVal);
                    const double t1 = seconds();
                    nn_sparse_forward_range(batch, BATCH, offsets, b, stride, cols, vals, wt + lo * LD, LD, UNITS, lo,
                                            hi, z, LD, cursor);
                    forward += seconds() - t1;
                    index += t1 - t0;
                }
                printf("round %d, %-6s inputs %3ld..<%3ld: index %5.2f, forward %5.2f\n", round + 1,
                       kept ? "bounds" : "search", lo, hi, index / STEPS * 1e6, forward / STEPS * 1e6);
            }
        }
    }
    return 0;
}
