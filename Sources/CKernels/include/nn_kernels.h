#ifndef NN_KERNELS_H
#define NN_KERNELS_H
#include <stddef.h>

/// Element-wise kernels of the training step, written in C so that clang vectorises them and
/// builds an AVX2+FMA clone next to the baseline one (picked at load time by the CPU's flags).
/// Rows are row-major, `cols` floats each. NaN inputs give NaN outputs (divergence must show).

/// z[r][j] = 1 / (1 + exp(-(z[r][j] + bias[j])))
void nn_logistic_bias(float *z, const float *bias, long rows, long cols);

/// z[r] = softmax(z[r] + bias) for every row.
void nn_softmax_bias(float *z, const float *bias, long rows, long cols);

/// d[i] *= a[i] * (1 - a[i])   (the logistic's derivative, from its output)
void nn_logistic_backward(float *d, const float *a, long count);

/// z[r][j] = max(0, z[r][j] + bias[j]), NaN kept
void nn_relu_bias(float *z, const float *bias, long rows, long cols);

/// d[i] = 0 where a[i] <= 0   (the ReLU's derivative, from its output)
void nn_relu_backward(float *d, const float *a, long count);

/// Which clone runs: "avx2+fma" or "baseline".
const char *nn_kernels_isa(void);

#endif
