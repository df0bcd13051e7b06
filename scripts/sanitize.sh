#!/usr/bin/env bash
# Builds orchrun and its tests with AddressSanitizer and UBSan (g++, -DORCHRUN_SANITIZE=ON) into
# ./build-asan and runs the suites that exercise memory and lifetimes the most: the store, the
# scheduler, run control, the crash test, the server, the hardening tests and the graph
# (dependencies, hooks). Any report fails.
#   scripts/sanitize.sh            build and run those suites
#   scripts/sanitize.sh "[serve]"  build and run the tests matching a Catch2 filter
# Installs nothing beyond scripts/setup.sh's packages (g++ ships the sanitizer runtimes).
set -euo pipefail
cd "$(dirname "$0")/.."
FILTER="${1:-[store],[scheduler],[control],[crash],[serve],[hardening],[orphans],[races],[graph]}"
BUILD_DIR="${ASAN_BUILD_DIR:-build-asan}"
# -O1 with line tables only, as OSS-Fuzz builds: reports keep file:line, and the build takes
# half the time of -O2 -g (the longest step of CI). SANITIZE_CXXFLAGS overrides it.
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DORCHRUN_SANITIZE=ON \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="${SANITIZE_CXXFLAGS:--O1 -g1 -DNDEBUG}" >&2
cmake --build "$BUILD_DIR" --target orchrun orchrun_tests >&2
# Leak checking stays off: LuaJIT states of runs a SIGKILL ends are not freed by design, and
# the child processes the tests kill would report their own. halt_on_error: a report stops the
# process, so the test that caused it fails.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
echo "sanitize: running $FILTER under ASan+UBSan" >&2
"$BUILD_DIR/tests/orchrun_tests" "$FILTER" --durations no
