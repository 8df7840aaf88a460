#!/usr/bin/env bash
# nnd against PyTorch on the same recipe and cores, rounds alternated (the VM's speed drifts,
# so only ratios measured side by side mean anything). Not part of `make test`: it installs
# PyTorch (CPU) into a venv of its own.
#
#   scripts/compare-pytorch.sh [ROUNDS] [EPOCHS]        (defaults 5 and 5; `make compare`)
#
# Each round runs `nnd train etc/nnd/runs/mnist-seed.yaml --epochs EPOCHS --json` (release
# build) and scripts/seed_pytorch.py with the same epochs, batch, learning rate, λ, annealing
# and thread count, and prints both runs' median seconds per epoch and test accuracy; at the end
# the medians over the rounds and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
epochs=${2:-5}
threads=$(nproc)
data=${NND_DATA_DIR:-$(cd .. && pwd)/shared/datasets/mnist}
venv=.build/pytorch-venv
# The CPU build of PyTorch: PyPI's default torch wheel pulls in gigabytes of CUDA libraries.
# TORCH_SPEC overrides the requirement (e.g. torch==2.13.0+cpu where a CPU wheel is served).
torch_spec=${TORCH_SPEC:-torch==2.13.0+cpu}
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy "$torch_spec"
fi
make -s build 2>&1 | tail -1
nnd_times=()
torch_times=()
for round in $(seq "$rounds"); do
  nnd=$(.build/release/nnd train etc/nnd/runs/mnist-seed.yaml --data "$data" --epochs "$epochs" --workers "$threads" --json |
    python3 -c 'import json,statistics,sys
lines=[json.loads(l) for l in sys.stdin]
s=[l["seconds"] for l in lines if l.get("kind")=="epoch"]
print("%.4f %.2f" % (statistics.median(s), lines[-1]["test_accuracy"]))')
  torch=$("$venv/bin/python" scripts/seed_pytorch.py --data "$data" --epochs "$epochs" --threads "$threads" |
    python3 -c 'import json,sys
r=[json.loads(l) for l in sys.stdin][-1]
print("%.4f %.2f %s" % (r["seconds_per_epoch_median"], r["test_accuracy"], r["torch"]))')
  read -r ns na <<<"$nnd"
  read -r ts ta tv <<<"$torch"
  nnd_times+=("$ns")
  torch_times+=("$ts")
  echo "round $round: nnd $ns s/epoch (test $na %), PyTorch $tv $ts s/epoch (test $ta %), ratio $(python3 -c "print('%.2f' % ($ts / $ns))")x"
done
python3 - "${nnd_times[*]}" "${torch_times[*]}" <<'PY'
import statistics, sys
n = [float(v) for v in sys.argv[1].split()]
t = [float(v) for v in sys.argv[2].split()]
print("median: nnd %.4f s/epoch, PyTorch %.4f s/epoch: nnd is %.2fx faster (per-round ratios %s)" % (
    statistics.median(n), statistics.median(t), statistics.median(t) / statistics.median(n),
    ", ".join("%.2f" % (b / a) for a, b in zip(n, t))))
PY
