#!/usr/bin/env bash
# The 2-worker target of docs/performance.md ("2 workers ≥ 1.7× one where the GEMM reference
# itself scales ≥ 1.85×"), measured as the sessions have measured it:
#   scripts/bench-two-workers.sh [RUNS] [OTHER_NND]     (`make bench-two-workers RUNS=10`)
# runs `nnd bench --rounds 3 --seconds 0.5 --json` RUNS times (default 10) with the release build
# (.build/release/nnd; `make build` first) and prints, per run, the sparse step's all-worker /
# 1-worker ratio in its best round and in the alternating pairs where GEMM scaled, then
#   - the median over the runs of the best-round ratio, and
#   - the pairs of all the runs pooled, where GEMM scaled ≥ 92.5 % of linear: their median.
# With OTHER_NND (another build's nnd, e.g. a copy of the build before a change) the runs
# alternate between the two binaries, one then the other, and both are summarised: a shared VM
# drifts by tens of per cent within minutes, so only alternated runs compare builds.
# OPENBLAS_CORETYPE is unset so that nnd picks the GEMM kernels for the CPU itself.
set -euo pipefail
runs=${1:-10}
other=${2:+$(realpath -m -- "$2")}  # before the cd: a path relative to where it was called from
cd "$(dirname "$0")/.."
this=.build/release/nnd
[[ -x $this ]] || { echo "bench-two-workers: $this not found: run \`make build\` first" >&2; exit 1; }
[[ -z $other || -x $other ]] || { echo "bench-two-workers: $other is not an executable nnd" >&2; exit 1; }
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "bench-two-workers: RUNS must be a positive integer, got '$runs'" >&2; exit 1; }
out=$(mktemp -d /tmp/nnd-bench-two-workers.XXXXXX)
trap 'rm -rf "$out"' EXIT
binaries=("$this")
[[ -n $other ]] && binaries+=("$other")
echo "CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) CPUs"
for ((r = 1; r <= runs; r++)); do
    for ((b = 0; b < ${#binaries[@]}; b++)); do
        # Alternate which binary goes first, so that neither always runs after the other.
        i=$(((b + r) % ${#binaries[@]}))
        env -u OPENBLAS_CORETYPE "${binaries[$i]}" bench --rounds 3 --seconds 0.5 --json \
            > "$out/$i-$r.json" 2> "$out/$i-$r.log" \
            || { echo "bench-two-workers: ${binaries[$i]} bench failed:" >&2; cat "$out/$i-$r.log" >&2; exit 1; }
    done
done
python3 - "$out" "$runs" "${binaries[@]}" <<'EOF'
import json, statistics, sys
out, runs, binaries = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
bests = []
for i, binary in enumerate(binaries):
    best, pooled = [], []
    bests.append(best)
    print(f"{binary}:")
    for r in range(1, runs + 1):
        b = json.load(open(f"{out}/{i}-{r}.json"))
        workers = b["workers"]
        p = b["pairs"]
        threshold = p["gemm_scaling_threshold"]
        # nnd gives each run's median over these pairs; pooling the runs needs the pairs themselves.
        pooled += [x for g, x in zip(p["gemm_speedups"], p["sparse_speedups"]) if g >= threshold]
        best.append(b["sparse_speedup"])
        m = p.get("sparse_median_speedup_where_gemm_scales")
        where = f"{m:.2f}× in {p['quads_where_gemm_scales']} of {p['count']}" if m else f"none of {p['count']}"
        print(f"  run {r:2d}: sparse step {workers} workers / 1 by best round {b['sparse_speedup']:.2f}×, "
              f"GEMM {b['gemm_speedup']:.2f}×; pairs where GEMM scaled ≥ {threshold:.2f}×: {where}")
    pooled_text = f"{statistics.median(pooled):.3f}× ({len(pooled)} pairs)" if pooled else "no pair where GEMM scaled"
    print(f"  median of {runs} runs by best round {statistics.median(best):.3f}×; "
          f"pairs where GEMM scaled, pooled: {pooled_text}")
if len(bests) == 2:
    higher = sum(a > b for a, b in zip(*bests))
    print(f"{binaries[0]} higher by best round in {higher} of {runs} alternated runs")
EOF
