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
med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }  # the median alone
# One measured run of a command: prints "WALL_MS PEAK_RSS_KB" (bench/measure: wait4's rusage).
once() {
  "$B/bench/measure" 1 -- "$@" |
    sed 's/.*"wall_ms":{"median":\([0-9.]*\).*"rss_kb":{"median":\([0-9]*\).*/\1 \2/'
}
# A run's own duration from `orchrun FILE --json` (the first, top-level duration_ms).
run_ms() { awk -F: '/"duration_ms"/ {gsub(/[ ,]/,"",$2); print $2; exit}'; }

echo "orchrun benchmarks — $(nproc) cores, $(uname -sr), $RUNS runs each (median, min, max)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

echo "## cold start"
echo -n "orchrun --version           : "; "$B/bench/measure" "$RUNS" -- "$B/orchrun" --version
echo -n "orchrun examples/hello.lua  : "; "$B/bench/measure" "$RUNS" -- "$B/orchrun" examples/hello.lua --db "$TMP/hello.db" --quiet
if command -v luajit >/dev/null; then
  echo -n "floor: luajit -e ''         : "; "$B/bench/measure" "$RUNS" -- luajit -e ''
else
  echo "floor: luajit -e ''         : (no luajit binary: scripts/setup.sh installs luajit2)"
fi
echo

echo "## chain of 10,000 trivial nodes"
for i in $(seq "$RUNS"); do
  rm -f "$TMP/chain.db"*
  "$B/orchrun" bench/pipelines/chain.lua --db "$TMP/chain.db" --quiet --json |
    run_ms | awk '{printf "%.0f\n", 10000/($1/1000)}'
done | { echo -n "persistence on, nodes/s     : "; median; }
# --db :memory: is SQLite's in-memory database: the same code path and the same SQL, one
# transaction per 5 ms slice of work, but nothing is written to disk (no file, no WAL, no fsync).
for i in $(seq "$RUNS"); do
  "$B/orchrun" bench/pipelines/chain.lua --db :memory: --quiet --json |
    run_ms | awk '{printf "%.0f\n", 10000/($1/1000)}'
done | { echo -n "persistence off (:memory:)  : "; median; }
for i in $(seq "$RUNS"); do
  rm -f "$TMP/floor.db"*
  "$B/bench/sqlite_floor" "$TMP/floor.db" 10000 | sed 's/.*"nodes_per_s":\([0-9]*\).*/\1/'
done | { echo -n "floor: same rows from C++, one commit per node, n/s      : "; median; }
for i in $(seq "$RUNS"); do
  rm -f "$TMP/floor.db"*
  "$B/bench/sqlite_floor" "$TMP/floor.db" 10000 5 | sed 's/.*"nodes_per_s":\([0-9]*\).*/\1/'
done | { echo -n "floor: same rows from C++, one commit per 5 ms (orchrun's), n/s: "; median; }
echo

echo "## 100,000 parallel branches, each sleeping 100 ms (peak RSS; bytes per waiting branch ="
echo "## (peak RSS - peak RSS with 1 branch) / 100,000)"
sed 's/100000/1/' bench/pipelines/wide.lua >"$TMP/wide1.lua"
for i in $(seq "$RUNS"); do
  rm -f "$TMP/wide.db"*; once "$B/orchrun" bench/pipelines/wide.lua --db "$TMP/wide.db" --quiet
done >"$TMP/wide.txt"
for i in $(seq "$RUNS"); do
  rm -f "$TMP/wide.db"*; once "$B/orchrun" "$TMP/wide1.lua" --db "$TMP/wide.db" --quiet
done >"$TMP/wide1.txt"
for i in $(seq "$RUNS"); do once "$B/bench/coro_floor" 100000; done >"$TMP/coro.txt"
for i in $(seq "$RUNS"); do once "$B/bench/coro_floor" 1; done >"$TMP/coro1.txt"
wide_report() {  # label, N-branch file, 1-branch file
  local base
  base=$(awk '{print $2}' "$3" | med)
  echo -n "$1 wall ms     : "; awk '{print $1}' "$2" | median
  echo -n "$1 peak RSS KB : "; awk '{print $2}' "$2" | median
  echo -n "$1 bytes/branch: "
  awk -v b="$base" '{printf "%.0f\n", ($2 - b) * 1024 / 100000}' "$2" | median
  echo "$1 (1-branch peak RSS: $base KB)"
}
wide_report "orchrun (persisted)" "$TMP/wide.txt" "$TMP/wide1.txt"
wide_report "floor: coro_floor " "$TMP/coro.txt" "$TMP/coro1.txt"
echo

echo "## 2,000 /bin/true process nodes at concurrency 2"
{ printf 'rule t\n  command = /bin/true\n'
  for i in $(seq 2000); do echo "build o$i: t"; done; } >"$TMP/build.ninja"
# Interleaved (orchrun, then ninja, RUNS times) so that a change in the machine's load hits both.
# ninja runs in a fresh directory each time: no .ninja_log, so each of the 2,000 edges runs once.
: >"$TMP/procs.txt"; : >"$TMP/ninja.txt"
for i in $(seq "$RUNS"); do
  rm -f "$TMP/procs.db"*
  once "$B/orchrun" bench/pipelines/procs.lua --db "$TMP/procs.db" --quiet |
    awk '{print $1}' >>"$TMP/procs.txt"
  rm -rf "$TMP/nj"; mkdir "$TMP/nj"; cp "$TMP/build.ninja" "$TMP/nj/"
  once ninja -C "$TMP/nj" -j2 --quiet | awk '{print $1}' >>"$TMP/ninja.txt"
done
echo -n "orchrun procs.lua wall ms   : "; median <"$TMP/procs.txt"
echo -n "floor: ninja -j2 wall ms    : "; median <"$TMP/ninja.txt"
awk -v o="$(med <"$TMP/procs.txt")" -v n="$(med <"$TMP/ninja.txt")" \
  'BEGIN {printf "ratio orchrun/ninja (medians): %.2f\n", o / n}'
echo

echo "## recovery: orchrun resume --all of 10,000 interrupted runs (bench/resume.sh 10000)"
for i in $(seq "$RUNS"); do
  B="$B" bench/resume.sh 10000 | sed -n 's/^resume --all of [0-9]* runs: \([0-9.]*\) s.*/\1/p'
done | { echo -n "seconds                     : "; median; }
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
