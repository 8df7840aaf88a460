#!/usr/bin/env bash
# Coverage-guided fuzzing of nnd's file readers (IDX, gzip, CSV, checkpoint) with libFuzzer,
# for a bounded time per reader. Part of `make test`, so CI runs it on every change.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default $NND_FUZZ_SECONDS or 30)
#
# The harness (Fuzz/, built with -sanitize=fuzzer,address) checks what users rely on: a reader
# either accepts an input with consistent results or refuses it with its own error naming the
# file — any trap, sanitizer report or other error is a finding. Seeds are made from the real
# MNIST files in ../shared/datasets/mnist; the corpus grows in .build/fuzz/<target>/corpus and
# is reused by the next run. On a finding the crashing input is in .build/fuzz/<target>/ and
# the script fails: fix the reader, then keep the input in Fuzz/regressions/<target>/ (the
# test FuzzRegressionTests replays every kept input).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-${NND_FUZZ_SECONDS:-30}}
mnist=${NND_FUZZ_MNIST:-$(cd .. && pwd)/shared/datasets/mnist}
out=$PWD/.build/fuzz

# lld: gold fails on the fuzzer runtime's duplicate-main handling. The fuzz package has its
# own .build, so it never disturbs the main build.
(cd Fuzz && swift build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld 2>&1 | grep -E "error|warning: unre|Compiling nnd|Build complete" || true)
bin=Fuzz/.build/release/nnd-fuzz
[ -x "$bin" ] || { echo "fuzz: harness did not build"; exit 1; }

export SWIFT_BACKTRACE=enable=no   # let libFuzzer report the trap itself
# Each fuzzer is one process on one core: run as many at once as there are cores (2 on CI's
# machine), so the four targets take half the wall time with the same seconds each.
jobs=${NND_FUZZ_JOBS:-$(nproc)}
targets=(idx gzip csv checkpoint)

# Runs one target for `seconds`; its exit status is the finding (non-zero) or not.
fuzz_one() {
  local target=$1 dir=$out/$1
  mkdir -p "$dir/corpus" "$dir/artifacts"
  NND_FUZZ_TARGET=$target NND_FUZZ_WRITE_SEEDS="$dir/seeds" NND_FUZZ_MNIST="$mnist" "$bin"
  NND_FUZZ_TARGET=$target "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" "$dir/corpus" "$dir/seeds" >"$dir/fuzz.log" 2>&1
}

# `jobs` targets at a time; found[target] is 1 when its fuzzer failed (a finding).
declare -A pid found
for ((i = 0; i < ${#targets[@]}; i += jobs)); do
  for target in "${targets[@]:i:jobs}"; do fuzz_one "$target" & pid[$target]=$!; done
  for target in "${targets[@]:i:jobs}"; do
    if wait "${pid[$target]}"; then found[$target]=0; else found[$target]=1; fi
  done
done

failed=0
for target in "${targets[@]}"; do
  dir=$out/$target
  log=$dir/fuzz.log
  if [ "${found[$target]}" = 0 ]; then
    runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log")
    cov=$(grep -oE "cov: [0-9]+" "$log" | tail -1)
    echo "fuzz $target: $runs inputs in ${seconds} s, $cov, corpus $(ls "$dir/corpus" | wc -l) files, 0 findings"
  else
    failed=1
    echo "fuzz $target: FINDING — input kept in $(ls -t "$dir/artifacts" | head -1 | sed "s|^|$dir/artifacts/|"); log $log:"
    grep -E "ERROR|Fatal error|SUMMARY|#[0-9]+ 0x.* in \\\$s" "$log" | head -12
  fi
done
exit $failed
