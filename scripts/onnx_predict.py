#!/usr/bin/env python3
"""Classify IDX images with an ONNX model exported by `nnctl export --format onnx`.

Checks the file with onnx.checker first (full check, with shape inference), then runs it with
onnxruntime on the CPU. This is the way a user's own service would use the model, and the
tests use it to check the export against nnd's own predictions.

  python3 scripts/onnx_predict.py mnist.onnx t10k-images-idx3-ubyte.gz \
      --labels t10k-labels-idx1-ubyte.gz --limit 1000

Prints `LABEL PROBABILITY` per record and, with --labels, the accuracy; --json prints one
object: {"labels": [...], "probabilities": [[...]], "accuracy": percent or null}.
Needs: pip install onnx onnxruntime numpy.
"""
import argparse
import gzip
import json
import struct
import sys

import numpy as np
import onnx
import onnxruntime


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, kind, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or kind != 0x08:
        sys.exit(f"{path}: not an IDX file of unsigned bytes")
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        sys.exit(f"{path}: header says {shape}, the file holds {body.size} bytes")
    return body.reshape(shape[0], -1) if dims > 1 else body


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("images", help="IDX image file (plain or .gz)")
    parser.add_argument("--labels", help="IDX label file: print the accuracy")
    parser.add_argument("--limit", type=int, help="only the first N records")
    parser.add_argument("--feature-scale", type=float, default=255.0, help="divide pixels by this, as in training")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    model = onnx.load(args.model)
    onnx.checker.check_model(model, full_check=True)
    session = onnxruntime.InferenceSession(args.model, providers=["CPUExecutionProvider"])

    images = read_idx(args.images)[: args.limit].astype(np.float32) / np.float32(args.feature_scale)
    (probabilities,) = session.run(["probabilities"], {"input": images})
    labels = probabilities.argmax(axis=1)
    accuracy = None
    if args.labels:
        truth = read_idx(args.labels)[: len(labels)]
        accuracy = float((labels == truth).mean() * 100)

    if args.json:
        json.dump(
            {"labels": labels.tolist(), "probabilities": probabilities.tolist(), "accuracy": accuracy},
            sys.stdout,
        )
        print()
        return
    for label, row in zip(labels, probabilities):
        print(f"{label} {row[label]:.4f}")
    if accuracy is not None:
        print(f"accuracy {accuracy:.2f}% ({len(labels)} records, onnxruntime {onnxruntime.__version__})")


if __name__ == "__main__":
    main()
