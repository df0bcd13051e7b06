#!/usr/bin/env bash
# Webhook-triggered runs accepted per second, with wrk (Debian's wrk) against orchrun serve on
# loopback. Each request is a signed delivery; the answer (202) is sent once the run is
# committed. Prints requests/s and the latency percentiles, at full load (64 connections) and
# at a light load (4 connections).
#   bench/webhook.sh [ORCHRUN_BINARY]     (default build-bench/orchrun; run bench/run.sh once)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-build-bench/orchrun}"
DUR="${DUR:-5}"
TMP="$(mktemp -d)"
PID=""
cleanup() { [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

start_serve() {
  ORCHRUN_SECRET_BENCH_HOOK=bench-secret "$BIN" serve bench/pipelines/serve --listen 127.0.0.1:0 \
    --db "$TMP/serve.db" 2>"$TMP/serve.log" &
  PID=$!
  for _ in $(seq 100); do
    PORT=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$TMP/serve.log")
    [ -n "$PORT" ] && return
    sleep 0.05
  done
  echo "serve did not start:"; cat "$TMP/serve.log"; exit 1
}

export BODY='{"version":"4","status":"firing","alerts":[{"labels":{"alertname":"Bench","severity":"warning"},"annotations":{}}]}'
export SIG=$(printf '%s' "$BODY" | openssl dgst -sha256 -hmac bench-secret | awk '{print $NF}')
start_serve
URL="http://127.0.0.1:$PORT/hooks/bench"
report() {  # label, wrk output
  local rps p50 p90 p99 non2xx
  rps=$(echo "$2" | awk '/Requests\/sec/ {printf "%.0f", $2}')
  p50=$(echo "$2" | awk '$1=="50%" {print $2}')
  p90=$(echo "$2" | awk '$1=="90%" {print $2}')
  p99=$(echo "$2" | awk '$1=="99%" {print $2}')
  non2xx=$(echo "$2" | awk '/Non-2xx/ {print $NF}')
  echo "$1: ${rps} runs accepted/s  p50 ${p50}  p90 ${p90}  p99 ${p99}  non-2xx ${non2xx:-0}"
  RPS=$rps
}
report "webhook runs, full load (wrk 64 connections)   " \
  "$(wrk -t2 -c64 -d${DUR}s --latency -s bench/webhook.lua "$URL")"
# Half the rate measured above, paced: 16 connections, each waiting between requests.
half=$((RPS / 2))
if [ "$half" -gt 0 ]; then
  export DELAY_MS=$((16 * 1000 / half))
  report "webhook runs, paced at ~half ($half/s target)      " \
    "$(wrk -t2 -c16 -d${DUR}s --latency -s bench/webhook.lua "$URL")"
  unset DELAY_MS
fi
kill -TERM "$PID"; wait "$PID" || true; PID=""
runs=$(sqlite3 "$TMP/serve.db" "select count(*) from runs")
ok=$(sqlite3 "$TMP/serve.db" "select count(*) from runs where status='succeeded'")
echo "runs in the store: $runs ($ok succeeded; the rest resume on the next start)"
