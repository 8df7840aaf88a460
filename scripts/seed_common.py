"""What the seed recipe's peer scripts share (scripts/seed_pytorch.py, scripts/seed_numpy.py): the
recipe's command line, MNIST from the IDX files, and the JSON lines compare-peer.sh reads."""
import argparse, gzip, json, statistics

import numpy as np


def idx(path):
    """An IDX file (plain or gzip) as a numpy array of its shape."""
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def recipe_arguments(description, threads=False):
    """The seed's recipe: 64-record batches, α 0.1, λ 0.01; --data is the MNIST directory."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=50)
    if threads:
        p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--lam", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args()


def mnist(directory, dtype):
    """(train images scaled to [0, 1], train labels, test images, test labels)."""
    images = lambda name: idx(f"{directory}/{name}-images-idx3-ubyte.gz").reshape(-1, 784).astype(dtype) / 255
    labels = lambda name: idx(f"{directory}/{name}-labels-idx1-ubyte.gz").astype(np.int64)
    return images("train"), labels("train"), images("t10k"), labels("t10k")


def print_epoch(epoch, cost, seconds, test_accuracy):
    print(json.dumps({"kind": "epoch", "epoch": epoch, "cost": cost, "seconds": seconds,
                      "test_accuracy": test_accuracy}), flush=True)


def print_result(seconds, test_accuracy, **extra):
    """The last line: the median seconds per epoch, the final test accuracy, and `extra`."""
    print(json.dumps({"kind": "result", "seconds_per_epoch_median": statistics.median(seconds),
                      "test_accuracy": test_accuracy, **extra}), flush=True)
