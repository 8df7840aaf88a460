#!/usr/bin/env bash
# Measures what driving the engine through the daemon costs: the same spec trained by
# `nnd train` (foreground) and by `nnd serve` while a client polls its status 10 times a
# second. Prints seconds per epoch of both and the overhead. Release build.
#   scripts/daemon-overhead.sh [SPEC] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=${1:-etc/nnd/runs/mnist-seed.yaml}
EPOCHS=${2:-10}
BIN=$PWD/.build/release
tmp=$(mktemp -d); trap 'kill $pid 2>/dev/null || true; rm -rf $tmp' EXIT
fg=$("$BIN/nnd" train "$SPEC" --epochs "$EPOCHS" --json --set checkpoint.every_seconds=30 | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds_per_epoch"])')
"$BIN/nnd" serve --socket "$tmp/s.sock" --state-dir "$tmp/state" 2>"$tmp/log" & pid=$!
for _ in $(seq 100); do "$BIN/nnctl" --help >/dev/null; [ -S "$tmp/s.sock" ] && break; sleep 0.1; done
id=$("$BIN/nnctl" start "$SPEC" --set training.epochs="$EPOCHS" --set checkpoint.every_seconds=30 --socket "$tmp/s.sock" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
polls=0
while true; do
  state=$(curl -s --unix-socket "$tmp/s.sock" "http://nnd/v1/runs/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  polls=$((polls+1))
  [ "$state" = completed ] && break
  sleep 0.1
done
dm=$(curl -s --unix-socket "$tmp/s.sock" "http://nnd/v1/runs/$id" | python3 -c 'import json,sys; h=json.load(sys.stdin)["history"]; print(sum(e["seconds"] for e in h)/len(h))')
python3 - "$fg" "$dm" "$polls" <<'PY'
import sys
fg, dm, polls = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"nnd train: {fg:.3f} s/epoch; nnd serve with {polls} status polls at ~10/s: {dm:.3f} s/epoch; overhead {100*(dm/fg-1):+.1f}%")
PY
