#!/usr/bin/env bash
# nnd's training speed beside other busy work on the same machine: the seed recipe alone, and
# beside one `nice -n 19` busy loop per core, rounds alternated (the VM's speed drifts, so only
# runs side by side compare). A nice-19 loop is entitled to about 1.5 % of a core next to a
# nice-0 thread, so a trainer that keeps its cores runs about as fast loaded as alone; one that
# yields them at its barriers does not (docs/performance.md, "Sixteenth session"). Not part of
# `make test`.
#
#   scripts/bench-beside-load.sh [ROUNDS] [EPOCHS] [NND_BINARY...]
#
# Defaults: 4 rounds, 3 epochs, .build/release/nnd (built first); LOAD_NICE=0 runs the loops at
# nnd's own priority instead (then a fair share is half of each core). Name several binaries — say the
# build before a change and the one after — and each round runs each of them alone and loaded.
# Prints each run's seconds per epoch (`nnd train … --workers $(nproc)`), then per binary the
# median over the rounds and the median of the rounds' loaded / alone ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-4}
epochs=${2:-3}
shift $(($# < 2 ? $# : 2))
binaries=("$@")
if [ ${#binaries[@]} = 0 ]; then
  make -s build 2>&1 | tail -1
  binaries=(.build/release/nnd)
fi
data=${NND_DATA_DIR:-$(cd .. && pwd)/shared/datasets/mnist}
cores=$(nproc)
load_nice=${LOAD_NICE:-19}

loops=()
start_loops() { for _ in $(seq "$cores"); do nice -n "$load_nice" sh -c 'while :; do :; done' & loops+=($!); done; sleep 0.3; }
stop_loops() { [ ${#loops[@]} = 0 ] || kill "${loops[@]}" 2>/dev/null; wait "${loops[@]}" 2>/dev/null || true; loops=(); }
trap stop_loops EXIT

# Seconds per epoch of one run (nnd train's last line: "(0.248 s/epoch over 3 epochs)").
epoch_seconds() {
  "$1" train etc/nnd/runs/mnist-seed.yaml --data "$data" --epochs "$epochs" --workers "$cores" 2>&1 \
    | sed -nE 's/.*\(([0-9.]+) s\/epoch over.*/\1/p'
}

results=$(mktemp)
echo "seed recipe, $epochs epochs, $cores workers; loaded: $cores × nice -n $load_nice busy loop"
for ((r = 1; r <= rounds; r++)); do
  for bin in "${binaries[@]}"; do
    # Alternate the order from round to round, so that neither always runs first.
    if ((r % 2)); then
      alone=$(epoch_seconds "$bin"); start_loops; loaded=$(epoch_seconds "$bin"); stop_loops
    else
      start_loops; loaded=$(epoch_seconds "$bin"); stop_loops; alone=$(epoch_seconds "$bin")
    fi
    [ -n "$alone" ] && [ -n "$loaded" ] || { echo "bench-beside-load: $bin train printed no s/epoch" >&2; exit 1; }
    echo "$bin $alone $loaded" >> "$results"
    printf 'round %d  %-28s alone %s s/epoch, loaded %s s/epoch\n' "$r" "$bin" "$alone" "$loaded"
  done
done
python3 - "$results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    b, a, l = line.split()
    runs.setdefault(b, []).append((float(a), float(l)))
for b, rs in runs.items():
    alone = statistics.median(a for a, _ in rs)
    loaded = statistics.median(l for _, l in rs)
    ratio = statistics.median(l / a for a, l in rs)
    print(f"{b}: median alone {alone:.3f}, loaded {loaded:.3f} s/epoch; loaded / alone {ratio:.2f}x (median of rounds)")
PY
rm -f "$results"
