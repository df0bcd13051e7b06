#!/usr/bin/env bash
# Benchmarks: builds orchrun in release mode (build-bench/) and prints each figure beside its
# floor on this machine. Run after scripts/setup.sh. Figures only; nothing here fails on timing.
#   bench/run.sh            # 5 runs per figure
#   RUNS=9 bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-5}"
B=build-bench
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DORCHRUN_TESTS=OFF >/dev/null
cmake --build "$B" --target bench >/dev/null
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] " (min " a[1] ", max " a[NR] ")"}'; }

echo "orchrun benchmarks — $(nproc) cores, $(uname -sr), $RUNS runs each (median, min, max)"
echo

echo "## cold start"
echo -n "orchrun --version           : "; "$B/bench/measure" "$RUNS" -- "$B/orchrun" --version
echo -n "orchrun examples/hello.lua  : "; "$B/bench/measure" "$RUNS" -- "$B/orchrun" examples/hello.lua --db "$TMP/hello.db" --quiet
echo

echo "## chain of 10,000 trivial nodes, persistence on (one commit per node)"
for i in $(seq "$RUNS"); do
  rm -f "$TMP/chain.db"*
  "$B/orchrun" bench/pipelines/chain.lua --db "$TMP/chain.db" --quiet --json |
    awk -F: '/"duration_ms"/ {gsub(/[ ,]/,"",$2); printf "%.0f\n", 10000/($2/1000)}'
done | { echo -n "orchrun nodes/s             : "; median; }
for i in $(seq "$RUNS"); do
  rm -f "$TMP/floor.db"*
  "$B/bench/sqlite_floor" "$TMP/floor.db" 10000 | sed 's/.*"nodes_per_s":\([0-9]*\).*/\1/'
done | { echo -n "floor (same rows, C++) n/s  : "; median; }
echo

echo "## o.http.request: 100 requests in flight over kept-alive connections, local epoll server"
for i in $(seq "$RUNS"); do
  rm -f "$TMP/http.db"*
  "$B/bench/http_bench" --requests 20000 --orchrun "$B/orchrun" --pipeline bench/pipelines/http.lua \
    --db "$TMP/http.db" | sed 's/.*"pipeline_req_per_s":\([0-9]*\).*/\1/'
done | { echo -n "orchrun pipeline req/s      : "; median; }
for i in $(seq "$RUNS"); do
  "$B/bench/http_bench" --requests 20000 | sed 's/.*"driver_req_per_s":\([0-9]*\).*/\1/'
done | { echo -n "driver alone (C++) req/s    : "; median; }
echo

echo "## HTTP server driver: wrk -t2 -c50 -d3s, 200 \"ok\" to every request"
if command -v wrk >/dev/null; then
  for i in $(seq "$RUNS"); do
    "$B/bench/http_server_bench" --seconds 3 | sed 's/.*"req_per_s":\([0-9]*\).*/\1/'
  done | { echo -n "server req/s                : "; median; }
else
  echo "(wrk not installed: skipped)"
fi
echo

echo "## orchrun serve"
DUR="${DUR:-5}" bench/webhook.sh "$B/orchrun"
python3 bench/reload.py "$B/orchrun" 20
