#!/usr/bin/env bash
# Installs orchrun's build dependencies from Debian 12's packages (only what is missing, so it
# is cheap to run again) and builds orchrun into ./build.
#   scripts/setup.sh            release build with tests (RelWithDebInfo)
#   BUILD_DIR=out scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  g++ cmake ninja-build pkg-config   # toolchain
  libluajit2-5.1-dev                 # LuaJIT 2.1 (OpenResty's maintained branch): pipelines
  libuv1-dev                         # the event loop: timers, processes, pipes, signals
  libsqlite3-dev                     # the store
  libssl-dev                         # SHA-256 of pipeline sources, HMAC of webhooks (libcrypto)
  libcurl4-openssl-dev               # o.http.request: libcurl's multi interface on the loop
  libhttp-parser-dev                 # orchrun serve: the HTTP/1.1 request parser
  tzdata                             # time zones of o.schedule (/usr/share/zoneinfo)
  ca-certificates                    # the system CA store o.http.request checks TLS against
  nlohmann-json3-dev                 # JSON for outputs, events and the CLI
  catch2                             # tests
  sqlite3                            # the sqlite3 shell, to look into the store by hand
  procps                             # ps/pgrep, used by the tests to check child processes
  python3-aiosmtpd                   # test-only: local SMTP server for o.notify.email tests
  wrk                                # bench-only: HTTP load generator for the webhook benchmark
  luajit2                            # bench-only: the luajit interpreter of the same LuaJIT
                                     # branch, cold-start floor (`luajit -e ''`); Debian's
                                     # `luajit` conflicts with libluajit2-5.1-2 (it would remove
                                     # libluajit2-5.1-dev)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

BUILD_DIR="${BUILD_DIR:-build}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" >&2
cmake --build "$BUILD_DIR" >&2
