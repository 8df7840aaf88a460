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
# One lightweight client process polls GET /v1/runs/ID every 0.1 s until the run completes.
read -r polls dm < <(python3 - "$tmp/s.sock" "$id" <<'PY'
import http.client, json, socket, sys, time
class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path): super().__init__("nnd"); self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); self.sock.connect(self.path)
path, run = sys.argv[1], sys.argv[2]
polls = 0
while True:
    c = UnixConnection(path); c.request("GET", "/v1/runs/" + run); r = json.loads(c.getresponse().read()); c.close()
    polls += 1
    if r["state"] in ("completed", "failed", "stopped"): break
    time.sleep(0.1)
h = r["history"]
print(polls, sum(e["seconds"] for e in h) / len(h))
PY
)
python3 - "$fg" "$dm" "$polls" <<'PY'
import sys
fg, dm, polls = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"nnd train: {fg:.3f} s/epoch; nnd serve with {polls} status polls (every 0.1 s): {dm:.3f} s/epoch; overhead {100*(dm/fg-1):+.1f}%")
PY
