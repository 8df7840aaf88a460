#!/usr/bin/env bash
# nnd against the seed's own numpy code (scripts/seed_numpy.py) on the same recipe and cores,
# rounds alternated (the VM's speed drifts, so only ratios measured side by side mean anything).
# Needs python3 with numpy (`make deps` installs it); numpy's BLAS uses every core, as in the seed.
#
#   scripts/compare-numpy.sh [ROUNDS] [EPOCHS]        (defaults 3 and 2; `make compare-numpy`)
#
# Each round runs `nnd train etc/nnd/runs/mnist-seed.yaml --epochs EPOCHS --json` (release
# build) and scripts/seed_numpy.py with the same epochs, and prints both runs' median seconds per
# epoch and test accuracy; at the end the medians over the rounds and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
epochs=${2:-2}
threads=$(nproc)
data=${NND_DATA_DIR:-$(cd .. && pwd)/shared/datasets/mnist}
make -s build 2>&1 | tail -1
nnd_times=()
numpy_times=()
for round in $(seq "$rounds"); do
  nnd=$(.build/release/nnd train etc/nnd/runs/mnist-seed.yaml --data "$data" --epochs "$epochs" --workers "$threads" --json |
    python3 -c 'import json,statistics,sys
lines=[json.loads(l) for l in sys.stdin]
s=[l["seconds"] for l in lines if l.get("kind")=="epoch"]
print("%.4f %.2f" % (statistics.median(s), lines[-1]["test_accuracy"]))')
  numpy=$(python3 scripts/seed_numpy.py --data "$data" --epochs "$epochs" |
    python3 -c 'import json,sys
r=[json.loads(l) for l in sys.stdin][-1]
print("%.4f %.2f %s" % (r["seconds_per_epoch_median"], r["test_accuracy"], r["numpy"]))')
  read -r ns na <<<"$nnd"
  read -r ps pa pv <<<"$numpy"
  nnd_times+=("$ns")
  numpy_times+=("$ps")
  echo "round $round: nnd $ns s/epoch (test $na %), numpy $pv $ps s/epoch (test $pa %), ratio $(python3 -c "print('%.1f' % ($ps / $ns))")x"
done
python3 - "${nnd_times[*]}" "${numpy_times[*]}" <<'PY'
import statistics, sys
n = [float(v) for v in sys.argv[1].split()]
p = [float(v) for v in sys.argv[2].split()]
print("median: nnd %.4f s/epoch, numpy %.4f s/epoch: nnd is %.1fx faster (per-round ratios %s)" % (
    statistics.median(n), statistics.median(p), statistics.median(p) / statistics.median(n),
    ", ".join("%.1f" % (b / a) for a, b in zip(n, p))))
PY
