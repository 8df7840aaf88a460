#!/usr/bin/env bash
# nnd against a peer on the seed's recipe and the same cores, rounds alternated (the VM's speed
# drifts, so only ratios measured side by side mean anything). Not part of `make test`.
#
#   scripts/compare-peer.sh pytorch [ROUNDS] [EPOCHS]   PyTorch (CPU) in a venv of its own,
#                                                        scripts/seed_pytorch.py (`make compare`)
#   scripts/compare-peer.sh numpy [ROUNDS] [EPOCHS]     the seed's own numpy code with python3's
#                                                        numpy, scripts/seed_numpy.py (`make compare-numpy`)
#
# Each round runs `nnd train etc/nnd/runs/mnist-seed.yaml --epochs EPOCHS --json` (release
# build) and the peer's script with the same epochs, batch, learning rate, λ, annealing and cores,
# and prints both runs' median seconds per epoch and test accuracy; at the end the medians over
# the rounds and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
peer=${1:?name a peer: pytorch or numpy}
rounds=${2:-5}
epochs=${3:-5}
threads=$(nproc)
data=${NND_DATA_DIR:-$(cd .. && pwd)/shared/datasets/mnist}
case "$peer" in
  pytorch)
    venv=.build/pytorch-venv
    # The CPU build of PyTorch: PyPI's default torch wheel pulls in gigabytes of CUDA libraries.
    # TORCH_SPEC overrides the requirement (e.g. torch==2.13.0+cpu where a CPU wheel is served).
    torch_spec=${TORCH_SPEC:-torch==2.13.0+cpu}
    if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
      python3 -m venv "$venv"
      "$venv/bin/pip" install -q numpy "$torch_spec"
    fi
    run_peer=("$venv/bin/python" scripts/seed_pytorch.py --threads "$threads")
    name=PyTorch version_key=torch ;;
  numpy)
    # numpy's BLAS runs on every core, as in the seed.
    run_peer=(python3 scripts/seed_numpy.py)
    name=numpy version_key=numpy ;;
  *) echo "compare-peer.sh: unknown peer '$peer' (pytorch or numpy)" >&2; exit 2 ;;
esac
make -s build 2>&1 | tail -1
nnd_times=()
peer_times=()
for round in $(seq "$rounds"); do
  nnd=$(.build/release/nnd train etc/nnd/runs/mnist-seed.yaml --data "$data" --epochs "$epochs" --workers "$threads" --json |
    python3 -c 'import json,statistics,sys
lines=[json.loads(l) for l in sys.stdin]
s=[l["seconds"] for l in lines if l.get("kind")=="epoch"]
print("%.4f %.2f" % (statistics.median(s), lines[-1]["test_accuracy"]))')
  other=$("${run_peer[@]}" --data "$data" --epochs "$epochs" |
    python3 -c 'import json,sys
r=[json.loads(l) for l in sys.stdin][-1]
print("%.4f %.2f %s" % (r["seconds_per_epoch_median"], r["test_accuracy"], r[sys.argv[1]]))' "$version_key")
  read -r ns na <<<"$nnd"
  read -r ps pa pv <<<"$other"
  nnd_times+=("$ns")
  peer_times+=("$ps")
  echo "round $round: nnd $ns s/epoch (test $na %), $name $pv $ps s/epoch (test $pa %), ratio $(python3 -c "print('%.2f' % ($ps / $ns))")x"
done
python3 - "$name" "${nnd_times[*]}" "${peer_times[*]}" <<'PY'
import statistics, sys
name = sys.argv[1]
n = [float(v) for v in sys.argv[2].split()]
p = [float(v) for v in sys.argv[3].split()]
print("median: nnd %.4f s/epoch, %s %.4f s/epoch: nnd is %.2fx faster (per-round ratios %s)" % (
    statistics.median(n), name, statistics.median(p), statistics.median(p) / statistics.median(n),
    ", ".join("%.2f" % (b / a) for a, b in zip(n, p))))
PY
