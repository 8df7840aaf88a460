#include "nn_kernels.h"
#include <stdint.h>
#include <string.h>

// exp(x) for the vectorised loops: Cephes' single-precision range reduction and polynomial
// (relative error about 2e-7, like expf). Written without calls and branches so that clang
// vectorises the loops that inline it. The input is clamped to [-87.3, 88.3], where 2^n
// stays a normal float; the comparisons are written so that a NaN passes through unchanged
// and comes out as NaN.
static inline float exp_approx(float x) {
    x = x > 88.3762626647949f ? 88.3762626647949f : x;
    x = x < -87.3365447505531f ? -87.3365447505531f : x;
    // n = round(x / ln 2) by the 1.5·2^23 trick (vectorises without SSE4.1's roundps).
    const float shifter = 12582912.0f;
    float n = (x * 1.44269504088896341f + shifter) - shifter;
    float r = x - n * 0.693359375f;         // ln 2, high part (exact in float)
    r = r - n * -2.12194440e-4f;           // ln 2, low part
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#if defined(__x86_64__) && defined(__clang__)
// One clone per x86-64 level the loader can pick from: v4 (AVX-512F/BW/DQ/VL, 16 floats per
// instruction), v3 (AVX2+FMA), and the baseline; the CPU's best is chosen once, at load time.
#define NN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NN_CLONES
#endif

NN_CLONES
void nn_logistic_bias(float *restrict z, const float *restrict bias, long rows, long cols) {
    for (long r = 0; r < rows; r++) {
        float *restrict row = z + r * cols;
        for (long j = 0; j < cols; j++) {
            row[j] = 1.0f / (1.0f + exp_approx(-(row[j] + bias[j])));
        }
    }
}

NN_CLONES
void nn_softmax_bias(float *restrict z, const float *restrict bias, long rows, long cols) {
    for (long r = 0; r < rows; r++) {
        float *restrict row = z + r * cols;
        float m = -__builtin_inff();
        int nan = 0;
        for (long j = 0; j < cols; j++) {
            float v = row[j] + bias[j];
            row[j] = v;
            nan |= v != v;
            m = v > m ? v : m;
        }
        if (nan) { for (long j = 0; j < cols; j++) row[j] = __builtin_nanf(""); continue; }
        float s = 0;
        for (long j = 0; j < cols; j++) {
            float e = exp_approx(row[j] - m);
            row[j] = e;
            s += e;
        }
        float inv = 1.0f / s;
        for (long j = 0; j < cols; j++) row[j] *= inv;
    }
}

NN_CLONES
void nn_logistic_backward(float *restrict d, const float *restrict a, long count) {
    for (long i = 0; i < count; i++) d[i] *= a[i] * (1.0f - a[i]);
}

NN_CLONES
void nn_relu_bias(float *restrict z, const float *restrict bias, long rows, long cols) {
    for (long r = 0; r < rows; r++) {
        float *restrict row = z + r * cols;
        for (long j = 0; j < cols; j++) {
            float v = row[j] + bias[j];
            row[j] = v < 0.0f ? 0.0f : v;   // NaN < 0 is false: NaN stays
        }
    }
}

NN_CLONES
void nn_relu_backward(float *restrict d, const float *restrict a, long count) {
    for (long i = 0; i < count; i++) d[i] = a[i] <= 0.0f ? 0.0f : d[i];
}

const char *nn_kernels_isa(void) {
#if defined(__x86_64__) && defined(__clang__)
    __builtin_cpu_init();
    // The same test the loader's clone resolver makes (GCC/clang's x86-64 levels).
    if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4 (AVX-512)";
    if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3 (AVX2+FMA)";
    return "x86-64 baseline (SSE2)";
#else
    return "portable C";
#endif
}

unsigned long nn_flush_denormals(void) {
#if defined(__x86_64__)
    const unsigned int mode = __builtin_ia32_stmxcsr();
    __builtin_ia32_ldmxcsr(mode | 0x8040);  // FTZ (bit 15) | DAZ (bit 6)
    return mode;
#elif defined(__aarch64__)
    unsigned long mode;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(mode));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(mode | (1UL << 24)));  // FZ
    return mode;
#else
    return 0;
#endif
}

void nn_restore_float_mode(unsigned long mode) {
#if defined(__x86_64__)
    __builtin_ia32_ldmxcsr((unsigned int)mode);
#elif defined(__aarch64__)
    __asm__ __volatile__("msr fpcr, %0" : : "r"(mode));
#else
    (void)mode;
#endif
}
