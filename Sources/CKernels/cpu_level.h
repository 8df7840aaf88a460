#ifndef NN_CPU_LEVEL_H
#define NN_CPU_LEVEL_H
// The vector level the hand-vectorised kernels (sparse.c, gemm.c) may use on this CPU, asked of
// the CPU once per file: 2 AVX-512, 1 AVX2+FMA, 0 neither (or not x86-64 with clang).
static inline int nn_cpu_level(void) {
#if defined(__x86_64__) && defined(__clang__)
    static int level = -1;
    if (level < 0) {
        __builtin_cpu_init();
        level = __builtin_cpu_supports("avx512f")                                          ? 2
                : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1
                                                                                    : 0;
    }
    return level;
#else
    return 0;
#endif
}
#endif
