// Shared by the C micro-benchmarks in scripts/ that read real MNIST: its images as CSR like nnd's
// SparseRows (record i's non-zeros at offsets[i] ..< offsets[i+1], in input order, value/255).
// Link with -lz.
#ifndef NN_BENCH_MNIST_H
#define NN_BENCH_MNIST_H
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

enum { MNIST_INPUTS = 784 };

// Reads an IDX image file (gzip); returns the record count and sets the three arrays.
static long loadMNIST(const char *path, long **offsets, int **cols, float **vals) {
    gzFile f = gzopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    unsigned char header[16];
    if (gzread(f, header, 16) != 16) { fprintf(stderr, "%s: short header\n", path); exit(1); }
    const long records = (header[4] << 24) | (header[5] << 16) | (header[6] << 8) | header[7];
    unsigned char *pixels = malloc(records * MNIST_INPUTS);
    if (gzread(f, pixels, records * MNIST_INPUTS) != records * MNIST_INPUTS) {
        fprintf(stderr, "%s: short read\n", path);
        exit(1);
    }
    gzclose(f);
    *offsets = malloc(sizeof(long) * (records + 1));
    *cols = malloc(sizeof(int) * records * MNIST_INPUTS);
    *vals = malloc(sizeof(float) * records * MNIST_INPUTS);
    long p = 0;
    for (long i = 0; i < records; i++) {
        (*offsets)[i] = p;
        for (int k = 0; k < MNIST_INPUTS; k++)
            if (pixels[i * MNIST_INPUTS + k]) (*cols)[p] = k, (*vals)[p++] = pixels[i * MNIST_INPUTS + k] / 255.f;
    }
    (*offsets)[records] = p;
    free(pixels);
    return records;
}

// Where SparseFirstLayer.inputRanges cuts the inputs in two pieces: the first takes inputs while
// their running count of non-zeros stays within half of all (MNIST's training set: 406).
static long halveInputsByNonZeros(const long *offsets, const int *cols, long records) {
    long perInput[MNIST_INPUTS] = {0}, total = offsets[records], sum = 0, k = 0;
    for (long p = 0; p < total; p++) perInput[cols[p]]++;
    while (k < MNIST_INPUTS - 1 && sum + perInput[k] <= total / 2) sum += perInput[k++];
    return k;
}
#endif
