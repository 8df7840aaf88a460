"""The seed's own numpy code (../shared/seed/simple-nn-numpy.md: feedForward, feedBackward with
einsum, gradientDescent, _batchTrain2, miniBatchTrain with annealing, Xavier init), float64 as
the seed runs it, on real MNIST: the reference nnd's "× numpy" figure is measured against, by
scripts/compare-peer.sh numpy. Prints one JSON object per epoch and a final one:
{"seconds_per_epoch_median", "test_accuracy", "numpy", ...}.

Kept as the seed wrote it (np.dot for the forward and the deltas, which numpy's BLAS runs on
every core; einsum for the weight gradients; the logistic's derivative recomputed from z), with
only what the post leaves out filled in: the update θ ← θ − α·(Σg/n + λθ/n), b ← b − α·Σg/n
(scripts/seed_pytorch.py's reading of it), a row-wise softmax (the post's softmax_a is not shown),
and the data read from the IDX files instead of CSV. One change: the weights start uniform in
±√(6/(n_in+n_out)), the range the post's text gives and nnd and seed_pytorch.py use; its code's
(rand − 0.5)·√(…) is half that, and this network then sat at 11 % for the first 2 epochs. The
time per epoch does not depend on it.
"""
import time

import numpy as np

from seed_common import mnist, print_epoch, print_result, recipe_arguments


def softmax(x):  # row by row, as the seed's softmax_a applies its softmax
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def logistic(x):
    return 1 / (1 + np.exp(-x))


def dlogistic(x):
    return np.exp(-x) / (1 + np.exp(-x)) ** 2


def cross_entropy(yhat, y):
    eps = 1e-10
    yhat = np.clip(yhat, eps, 1 - eps)
    return -np.nansum(y * np.log(yhat))


class NeuralNetwork:
    def __init__(self, sizes, lr, lam):
        self.sizes, self.lr, self.lam = sizes, lr, lam
        self.n_layers = len(sizes)
        self.thetas, self.biases = {}, {}
        for ii in range(1, self.n_layers):  # the seed's init(): 'xavier', over the range its text gives
            stdii = np.sqrt(6 / (sizes[ii - 1] + sizes[ii]))
            self.thetas[ii] = (np.random.rand(sizes[ii], sizes[ii - 1]) * 2 - 1) * stdii
            self.biases[ii] = np.zeros([1, sizes[ii]])

    def feed_forward(self, x):
        activations, weight_sums = {0: x}, {0: x}
        a1 = x
        for ii in range(1, self.n_layers):
            zii = np.dot(a1, self.thetas[ii].T) + self.biases[ii]
            aii = softmax(zii) if ii == self.n_layers - 1 else logistic(zii)
            activations[ii], weight_sums[ii] = aii, zii
            a1 = aii
        return weight_sums, activations

    def feed_backward(self, weight_sums, activations, y):
        grads, grads_bias = {}, {}
        delta = activations[self.n_layers - 1] - y
        for jj in range(self.n_layers - 1, 0, -1):
            grads[jj] = np.einsum("ij,ik->jk", delta, activations[jj - 1])
            grads_bias[jj] = np.sum(delta, axis=0, keepdims=True)
            if jj != 1:
                delta = np.dot(delta, self.thetas[jj]) * dlogistic(weight_sums[jj - 1])
        return grads, grads_bias

    def gradient_descent(self, grads, grads_bias, n):
        n = float(n)
        for jj in range(1, self.n_layers):
            self.thetas[jj] = self.thetas[jj] - self.lr * (grads[jj] / n + self.lam * self.thetas[jj] / n)
            self.biases[jj] = self.biases[jj] - self.lr * grads_bias[jj] / n

    def batch_train(self, x, y):  # the seed's _batchTrain2
        weight_sums, activations = self.feed_forward(x)
        j = cross_entropy(activations[self.n_layers - 1], y)
        grads, grads_bias = self.feed_backward(weight_sums, activations, y)
        self.gradient_descent(grads, grads_bias, len(x))
        return j

    def regularization_cost(self):
        return sum(np.sum(self.thetas[ll] ** 2) for ll in range(1, self.n_layers))

    def predict(self, x):
        return self.feed_forward(x)[1][self.n_layers - 1]


def main():
    a = recipe_arguments("The seed's own numpy code.")
    np.random.seed(a.seed)
    x, labels, tx, ty = mnist(a.data, np.float64)
    y = np.eye(10)[labels]
    nn = NeuralNetwork([784, 200, 100, 50, 10], a.lr, a.lam)
    m = len(x)
    costs, seconds = [], []
    for epoch in range(1, a.epochs + 1):  # the seed's miniBatchTrain
        start = time.perf_counter()
        j = 0.0
        order = np.random.permutation(m)
        for lo in range(0, m, a.batch):
            chosen = order[lo : lo + a.batch]
            j += nn.batch_train(x[chosen], y[chosen])
        j = j / m + nn.regularization_cost() * a.lam / m
        if len(costs) > 1 and j > costs[-1]:
            nn.lr *= 0.9
        costs.append(j)
        seconds.append(time.perf_counter() - start)
        test = float(np.mean(np.argmax(nn.predict(tx), axis=1) == ty) * 100)
        print_epoch(epoch, j, seconds[-1], test)
    train = float(np.mean(np.argmax(nn.predict(x), axis=1) == labels) * 100)
    print_result(seconds, test, train_accuracy=train, numpy=np.__version__)


if __name__ == "__main__":
    main()
