#!/usr/bin/env bash
# The main job on local defaults, no root needed: build, fetch and verify MNIST, start the
# daemon in the user's state dir and socket, train the seed's recipe on all of MNIST through
# nnctl, watch it to the end and print the accuracy, then stop the daemon.
#   SPEC=etc/nnd/runs/mnist-fast.yaml make demo     # the fast preset instead
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=${SPEC:-etc/nnd/runs/mnist-seed.yaml}
make -s build 2>&1 | tail -1
BIN=$PWD/.build/release
"$BIN/nnd" info
"$BIN/nnd" dataset fetch mnist

started=""
if ! "$BIN/nnctl" status >/dev/null 2>&1; then
  log=${XDG_STATE_HOME:-$HOME/.local/state}/nnd-demo.log
  mkdir -p "$(dirname "$log")"
  "$BIN/nnd" serve >>"$log" 2>&1 &
  started=$!
  trap 'kill -TERM $started 2>/dev/null; wait $started 2>/dev/null || true' EXIT
  for _ in $(seq 100); do "$BIN/nnctl" status >/dev/null 2>&1 && break; sleep 0.1; done
  echo "nnd serve started (pid $started, log $log)"
fi
"$BIN/nnctl" status
"$BIN/nnctl" start "$SPEC" --wait
