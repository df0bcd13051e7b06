#!/usr/bin/env bash
# Builds orchrun's libFuzzer targets (fuzz/) with clang under ASan+UBSan into ./build-fuzz,
# installing clang and libFuzzer from Debian 12's packages if they are missing, and runs them.
#   scripts/fuzz.sh build                      build only
#   scripts/fuzz.sh run [SECONDS] [TARGET...]  build, then run each target (default: all) for
#                                              SECONDS (default 45) on its corpus; exits 1 on
#                                              the first target that finds something
# New inputs go to build-fuzz/corpus/<target> (the committed corpus stays as it is); a finding
# is saved as build-fuzz/findings/<target>-crash-<sha1> (or -timeout-, -oom-, -leak-).
# Options passed to every run can be added with FUZZ_ARGS="-jobs=2 ...". See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  clang-14 libclang-rt-14-dev  # clang, and libFuzzer + the ASan/UBSan runtimes
  llvm-14                      # llvm-symbolizer: file:line in sanitizer reports
  g++ cmake ninja-build pkg-config libluajit2-5.1-dev libuv1-dev libsqlite3-dev libssl-dev
  libcurl4-openssl-dev libhttp-parser-dev nlohmann-json3-dev tzdata
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "fuzz: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

BUILD_DIR="${FUZZ_BUILD_DIR:-build-fuzz}"
# -O1 with line tables only: OSS-Fuzz's flags (findings keep file:line; the build is twice
# as fast as -O2 -g). FUZZ_CXXFLAGS overrides it.
CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="${FUZZ_CXXFLAGS:--O1 -gline-tables-only -DNDEBUG}" \
  -DORCHRUN_FUZZ=ON -DORCHRUN_TESTS=OFF >&2
cmake --build "$BUILD_DIR" --target fuzz_targets >&2

cmd="${1:-build}"
[ "$cmd" = build ] && exit 0
if [ "$cmd" != run ]; then
  echo "usage: scripts/fuzz.sh build | run [SECONDS] [TARGET...]" >&2
  exit 2
fi
seconds="${2:-45}"
shift $(($# >= 2 ? 2 : $#))
targets=("$@")
if ((${#targets[@]} == 0)); then targets=(http_request json cron tzif template pipeline json_pipeline secrets patterns); fi

# Longest input per target: enough for the seeds, short enough to stay fast. The JSON target's
# 4 KB also keeps nesting far below what would overflow the Lua stack in push_json.
declare -A MAX_LEN=([http_request]=8192 [json]=4096 [cron]=256 [tzif]=4096 [template]=4096
                    [pipeline]=8192 [json_pipeline]=8192 [secrets]=2048 [patterns]=256)
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
mkdir -p "$BUILD_DIR/findings"
for t in "${targets[@]}"; do
  bin="$BUILD_DIR/fuzz/fuzz_$t"
  [ -x "$bin" ] || { echo "fuzz: no target $t" >&2; exit 2; }
  mkdir -p "$BUILD_DIR/corpus/$t"
  dict=()
  [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
  echo "fuzz: $t for ${seconds}s" >&2
  start=$(date +%s)
  # -timeout: one input running over 10 s is a finding (a hang). rss: 2 GB.
  # shellcheck disable=SC2086
  if ! "$bin" -max_total_time="$seconds" -max_len="${MAX_LEN[$t]}" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
      -artifact_prefix="$BUILD_DIR/findings/$t-" ${FUZZ_ARGS:-} \
      "$BUILD_DIR/corpus/$t" "fuzz/corpus/$t" >"$BUILD_DIR/findings/$t.log" 2>&1; then
    tail -n 60 "$BUILD_DIR/findings/$t.log" >&2
    echo "fuzz: $t FOUND something; input saved under $BUILD_DIR/findings/$t-*; log:" \
         "$BUILD_DIR/findings/$t.log" >&2
    exit 1
  fi
  # libFuzzer's last status line ("#N DONE cov: C ft: F corp: ... exec/s: E").
  echo "fuzz: $t ok in $(($(date +%s) - start))s: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$BUILD_DIR/findings/$t.log" | tail -n1)" >&2
done
