"""The seed's recipe (784-200-100-50-10, logistic hidden layers, softmax, cross-entropy + L2,
Xavier init, mini-batch SGD of 64 with annealing) in PyTorch, float32, on the given threads:
the peer nnd is compared with by scripts/compare-peer.sh pytorch (`make compare`). Prints one
JSON object per epoch and a final one: {"seconds_per_epoch_median", "test_accuracy", ...}.

The update is the seed's: θ ← θ − (α/n)·Σg − (α·λ/n)·θ for weights, b ← b − (α/n)·Σg, i.e. SGD
with learning rate α on mean cross-entropy, weight decay λ/n on the weights only. After each
epoch J = ΣJ_i/m + (λ/m)·Σθ²; from the third epoch on, a rising J multiplies α by 0.9.
"""
import math, time

import numpy as np
import torch

from seed_common import mnist, print_epoch, print_result, recipe_arguments


def main():
    a = recipe_arguments("The seed's recipe in PyTorch.", threads=True)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    x, y, tx, ty = (torch.from_numpy(v) for v in mnist(a.data, np.float32))
    sizes = [784, 200, 100, 50, 10]
    layers = [torch.nn.Linear(i, o) for i, o in zip(sizes, sizes[1:])]
    for layer in layers:  # Xavier uniform ±√(6/(n_in+n_out)), zero biases (as nnd)
        limit = math.sqrt(6 / (layer.in_features + layer.out_features))
        torch.nn.init.uniform_(layer.weight, -limit, limit)
        torch.nn.init.zeros_(layer.bias)
    model = torch.nn.Sequential(
        layers[0], torch.nn.Sigmoid(), layers[1], torch.nn.Sigmoid(), layers[2], torch.nn.Sigmoid(), layers[3])
    weights = [l.weight for l in layers]
    biases = [l.bias for l in layers]
    m = x.shape[0]
    lr = a.lr
    opt = torch.optim.SGD(
        [{"params": weights, "weight_decay": a.lam / a.batch}, {"params": biases, "weight_decay": 0}], lr=lr)
    costs, seconds = [], []
    for epoch in range(1, a.epochs + 1):
        order = torch.randperm(m)
        start = time.perf_counter()
        total = 0.0
        for lo in range(0, m, a.batch):
            idxs = order[lo : lo + a.batch]
            # PyTorch's fused softmax + cross-entropy, as a user would write it (the seed clips
            # probabilities at 1e-10, which changes nothing unless the model is certain and wrong).
            ce = torch.nn.functional.cross_entropy(model(x[idxs]), y[idxs], reduction="sum")
            opt.zero_grad(set_to_none=True)
            (ce / len(idxs)).backward()
            opt.step()
            total += float(ce.detach())
        seconds.append(time.perf_counter() - start)
        with torch.no_grad():
            j = total / m + a.lam / m * sum(float((w * w).sum()) for w in weights)
        if len(costs) > 1 and j > costs[-1]:
            lr *= 0.9
            for group in opt.param_groups:
                group["lr"] = lr
        costs.append(j)
        with torch.no_grad():
            test = float((model(tx).argmax(1) == ty).float().mean()) * 100
        print_epoch(epoch, j, seconds[-1], test)
    print_result(seconds, test, epochs=a.epochs, threads=a.threads, torch=torch.__version__)

if __name__ == "__main__":
    main()
