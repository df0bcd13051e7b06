#!/usr/bin/env bash
# Before and after, side by side in one run: builds the orchrun of a git revision (default
# origin's main, or HEAD~1) and of the working tree in release mode, then measures the main
# figures for both, interleaved round by round (before, after, before, after, ...) so that a
# change in the machine's load hits both. Figures only; nothing here fails on timing.
#   bench/compare.sh REV            # e.g. bench/compare.sh be4c6bb
#   RUNS=7 DUR=3 bench/compare.sh REV
#   BEFORE_BIN=/path/to/old/orchrun bench/compare.sh REV   (REV then only names it)
set -euo pipefail
cd "$(dirname "$0")/.."
REV="${1:-HEAD~1}"
RUNS="${RUNS:-5}"
DUR="${DUR:-3}"
ROOT="$PWD"
TMP="$(mktemp -d)"
WT="$TMP/before-src"
cleanup() { git -C "$ROOT" worktree remove --force "$WT" >/dev/null 2>&1 || true; rm -rf "$TMP"; }
trap cleanup EXIT

build() {  # source dir, build dir
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DORCHRUN_TESTS=OFF >/dev/null
  cmake --build "$2" --target orchrun >/dev/null
  cmake --build "$2" --target bench >/dev/null
}
AFTER_B="$ROOT/build-bench"
if [ -z "${BEFORE_BIN:-}" ]; then  # BEFORE_BIN=path/to/orchrun: a release build made already
  git -C "$ROOT" worktree add --detach "$WT" "$REV" >/dev/null 2>&1
  echo "building $REV into $ROOT/build-bench-before ..." >&2
  build "$WT" "$ROOT/build-bench-before"
  BEFORE_BIN="$ROOT/build-bench-before/orchrun"
fi
echo "building the working tree into $AFTER_B ..." >&2
build "$ROOT" "$AFTER_B"
declare -A BIN=([before]="$BEFORE_BIN" [after]="$AFTER_B/orchrun")
MEASURE="$AFTER_B/bench/measure"

# One figure per line of $TMP/<side>.<figure>.
rec() { echo "$3" >>"$TMP/$1.$2"; }
run_ms() { awk -F: '/"duration_ms"/ {gsub(/[ ,]/,"",$2); print $2; exit}'; }
once() { "$MEASURE" 1 -- "$@" | sed 's/.*"wall_ms":{"median":\([0-9.]*\).*"rss_kb":{"median":\([0-9]*\).*/\1 \2/'; }

echo "orchrun before ($REV) and after (working tree) — $(nproc) cores, $RUNS rounds, load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$RUNS"); do
  for side in before after; do
    b="${BIN[$side]}"
    read -r ms kb < <(once "$b" examples/hello.lua --db "$TMP/hello-$side.db" --quiet)
    rec $side cold_ms "$ms"; rec $side cold_kb "$kb"
    rm -f "$TMP/chain.db"*
    n=$("$b" bench/pipelines/chain.lua --db "$TMP/chain.db" --quiet --json | run_ms |
        awk '{printf "%.0f", 10000/($1/1000)}')
    rec $side chain "$n"
    rm -f "$TMP/wide.db"*
    read -r ms kb < <(once "$b" bench/pipelines/wide.lua --db "$TMP/wide.db" --quiet)
    rec $side wide_ms "$ms"; rec $side wide_kb "$kb"
    rps=$(DUR="$DUR" bench/webhook.sh "$b" | sed -n 's/^webhook runs, full load[^:]*: \([0-9]*\) runs accepted.*/\1/p' | head -1)
    rec $side webhook "${rps:-0}"
  done
done

med() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rng() { sort -n "$1" | awk '{a[NR]=$1} END {print a[1] "–" a[NR]}'; }
printf '\n| figure | before (median, range) | after (median, range) | after / before |\n|---|---|---|---|\n'
for f in "cold_ms:cold start, examples/hello.lua, wall ms" "cold_kb:cold start, peak RSS KB" \
         "chain:chain of 10,000 nodes, persisted, nodes/s" \
         "wide_ms:100,000 parallel branches sleeping 100 ms, wall ms" \
         "wide_kb:100,000 parallel branches, peak RSS KB" \
         "webhook:webhook runs accepted/s (wrk, 64 connections, ${DUR} s)"; do
  key="${f%%:*}"; label="${f#*:}"
  b=$(med "$TMP/before.$key"); a=$(med "$TMP/after.$key")
  ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}')
  echo "| $label | $b ($(rng "$TMP/before.$key")) | $a ($(rng "$TMP/after.$key")) | $ratio |"
done
