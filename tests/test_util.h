// Shared test helpers: temporary directories, running the real binary, reading the store,
// and an in-process harness that runs a pipeline on a real loop with a real SQLite file.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <exception>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "drivers/loop.h"
#include "engine/pipeline_loader.h"
#include "engine/scheduler.h"
#include "store/events.h"
#include "store/store.h"

// Skips the rest of a test, visibly: the line is printed, and ctest (tests/CMakeLists.txt sets
// SKIP_REGULAR_EXPRESSION) reports the test as skipped, not passed. Catch2 2.x has no SKIP().
#define ORCH_SKIP(why)                                 \
  do {                                                 \
    std::cout << "ORCHRUN_SKIP: " << why << std::endl; \
    SUCCEED("skipped");                                \
    return;                                            \
  } while (0)

namespace orch::test {

// A fresh directory under $TMPDIR, removed (recursively) at the end of the test.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& content);
std::string read_file(const std::string& path);

struct CmdResult {
  int exit_code = -1;  // 128+N when killed by signal N
  std::string out, err;
  double seconds = 0;
};
// What a forked child executes, built before fork(): the child of a process with other threads
// running may only call async-signal-safe functions until it execs (an allocation can wait
// forever for a lock another thread held at the fork, as ASan's allocator does).
class ExecImage {
 public:
  // argv[0] is a path or found in PATH. The environment is ours (or only `env` when
  // `inherit` is false), with each KEY=VALUE of `env` replacing or adding KEY.
  ExecImage(std::vector<std::string> argv, const std::vector<std::string>& env = {},
            bool inherit = true);
  // In the child: execs, or _exit(127). Allocates nothing.
  [[noreturn]] void exec() const;

 private:
  std::vector<std::string> argv_, env_;
  std::vector<char*> a_, e_;
};

// A thread of a test: what it throws (a failed REQUIRE) is rethrown by join() on the test's own
// thread, where Catch reports it, instead of ending the whole test program in std::terminate.
class TestThread {
 public:
  template <class F>
  explicit TestThread(F fn)
      : thread_([this, fn = std::move(fn)]() mutable {
          try {
            fn();
          } catch (...) {
            error_ = std::current_exception();
          }
        }) {}
  ~TestThread() {
    if (thread_.joinable()) thread_.join();
  }
  void join() {
    thread_.join();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::exception_ptr error_;
  std::thread thread_;
};

// Runs argv (argv[0] is a path or found in PATH) with extra environment entries (KEY=VALUE),
// in `cwd` if given, killing it after timeout_s.
CmdResult run_cmd(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
                  const std::string& cwd = "", int timeout_s = 60);
// Starts argv in the background with stdin/stdout/stderr on /dev/null; the caller reaps it.
pid_t spawn_quiet(const std::vector<std::string>& argv);
// Runs the real orchrun binary with --db <db> appended when db is non-empty.
CmdResult orchrun(std::vector<std::string> args, const std::string& db,
                  const std::vector<std::string>& env = {}, const std::string& cwd = "");
std::string orchrun_bin();
std::string source_dir();

// Query a database file with a separate connection. Values come back as text ("" for NULL).
std::vector<std::vector<std::string>> query(const std::string& db, const std::string& sql);
int64_t query_int(const std::string& db, const std::string& sql);
// For polling another process's database: never fails; `fallback` while the file or its
// tables do not exist yet.
int64_t poll_int(const std::string& db, const std::string& sql, int64_t fallback = -1);
std::string query_str(const std::string& db, const std::string& sql);
// A string as an SQL literal: 'it''s'.
std::string sql_literal(const std::string& s);

// Collects every event the scheduler emits.
struct EventLog : EventSink {
  std::vector<Event> events;
  void on_event(const Event& e) override { events.push_back(e); }
  int count(const std::string& kind, const std::string& node = "") const;
};

// Runs pipelines in-process: a real loop, a real store in a temp dir, the real scheduler.
class Harness {
 public:
  Harness();
  ~Harness();
  // Loads `source` as a pipeline file named test.lua (REQUIREs that it is valid), runs it to
  // the end and returns the summary. input_json is the pipeline input.
  RunSummary run(const std::string& source, const std::string& input_json = "{}");
  // Loads without running; returns diagnostics (empty when valid).
  static std::vector<Diagnostic> diagnose(const std::string& source, const SandboxOptions& sb = {});
  // Closes the loop and returns the names of handles that were still open (should be none).
  std::vector<std::string> close();

  TempDir dir;
  std::string db_path;
  std::unique_ptr<Store> store;
  EventLog log;
  double last_seconds = 0;
  // How run() loads pipelines (sandbox options, the secrets file).
  LoadOptions load_options;
  // Called once the run has started (e.g. to schedule a cancel).
  std::function<void(Scheduler&, const std::string& run_id)> on_started;

 private:
  std::vector<std::unique_ptr<Pipeline>> pipelines_;
  std::unique_ptr<Loop> loop_;
};

}  // namespace orch::test
