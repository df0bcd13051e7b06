#!/usr/bin/env bash
# Recovery: time from `orchrun resume --all` to all of N interrupted runs finished.
# One run is started and killed with SIGKILL while its second node waits; its rows are then
# copied N-1 times under new ids (the same state a crash of N runs leaves), and the flag that
# made the node wait is removed so that the resumed work itself is trivial.
#   bench/resume.sh [N]     (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
B="${B:-build-bench}"
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DORCHRUN_TESTS=OFF >/dev/null
cmake --build "$B" --target bench >/dev/null
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
DB="$TMP/r.db"; FLAG="$TMP/flag"; touch "$FLAG"
"$B/orchrun" bench/pipelines/interruptible.lua --db "$DB" --quiet --input "{\"flag\":\"$FLAG\"}" &
PID=$!
for _ in $(seq 100); do
  sleep 0.05
  [ "$(sqlite3 "$DB" "select count(*) from node_runs where node_id='second' and status='running'" 2>/dev/null || echo 0)" = 1 ] && break
done
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
rm -f "$FLAG"
sqlite3 "$DB" <<SQL
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N - 1)
INSERT INTO runs(id, trace_id, pipeline, version, status, source, input, attempts, created_at,
                 started_at, owner_pid)
  SELECT r.id || printf('%06d', i), printf('%032x', i), pipeline, version, status, source, input,
         attempts, created_at, started_at, owner_pid FROM runs r, n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N - 1)
INSERT INTO node_runs(run_id, node_id, attempt, seq, kind, status, started_at, finished_at,
                      duration_ms, output, run_attempt)
  SELECT nr.run_id || printf('%06d', i), node_id, attempt, seq + i * 10, kind, status,
         started_at, finished_at, duration_ms, output, run_attempt FROM node_runs nr, n;
SQL
echo "interrupted runs: $(sqlite3 "$DB" "select count(*) from runs where status='running'")"
start=$(date +%s.%N)
"$B/orchrun" resume --all --db "$DB" --quiet
end=$(date +%s.%N)
echo "resumed and finished: $(sqlite3 "$DB" "select count(*) from runs where status='succeeded'") runs"
echo "reused successes: $(sqlite3 "$DB" "select count(*) from node_runs where node_id='first'") first-node rows (one per run, none re-run)"
awk -v s="$start" -v e="$end" -v n="$N" 'BEGIN { printf "resume --all of %d runs: %.3f s (%.2f ms per run)\n", n, e - s, (e - s) * 1000 / n }'
