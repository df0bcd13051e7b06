// Child processes: posix_spawn (vfork-like: no copy of the parent's page tables, unlike the
// fork() of libuv 1.44's uv_spawn) in their own session and process group (setsid), reaped
// through one SIGCHLD watcher per loop; stdout/stderr captured with a head and tail excerpt for
// large outputs; a timeout that signals the whole group (SIGTERM, then SIGKILL after a grace
// period).
//
// A Process owns its uv handles and frees itself once the child has exited and every pipe is
// closed. Its owner may stop listening at any time (detach), e.g. when a node is cancelled: the
// process is then terminated and reaped without anyone waiting for it.
#pragma once
#include <uv.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_set>
#include <vector>

namespace orch {

// Keeps the first and the last `limit/2` bytes of a stream.
class Capture {
 public:
  explicit Capture(size_t limit = 1 << 20) : half_(limit / 2) {}
  void append(const char* data, size_t n);
  // The text kept; when truncated, a marker line says how many bytes were left out.
  std::string text() const;
  uint64_t total() const { return total_; }
  bool truncated() const { return total_ > head_.size() + std::min(tail_.size(), half_); }

 private:
  size_t half_;
  std::string head_, tail_;
  uint64_t total_ = 0;
};

struct ProcessSpec {
  std::vector<std::string> argv;
  std::string cwd;               // empty: inherit
  std::vector<std::string> env;  // KEY=VALUE, used as the whole environment if set_env
  bool set_env = false;
  std::string stdin_data;
  bool has_stdin = false;        // false: stdin is /dev/null
  int64_t timeout_ms = 0;        // 0: none
  int64_t kill_grace_ms = 2000;  // between SIGTERM and SIGKILL
  size_t max_capture = 1 << 20;  // bytes kept per stream
};

struct ProcessResult {
  int pid = 0;
  int64_t exit_code = -1;
  int term_signal = 0;
  bool timed_out = false;
  int64_t duration_ms = 0;
  Capture out, err;
};

class ProcessTable;
class ChildWatcher;
// Closes a loop's SIGCHLD watcher whatever it still waits for (Loop::close only).
void close_child_watcher(ChildWatcher* w);

class Process {
 public:
  using DoneFn = std::function<void(ProcessResult&)>;
  // Starts the process. On failure returns nullptr, sets *err ("ENOENT: no such file or
  // directory") and *code ("ENOENT").
  static Process* spawn(uv_loop_t* loop, ProcessTable* table, const ProcessSpec& spec,
                        DoneFn on_done, std::string* err, std::string* code);

  // The owner no longer wants the result: terminate the group and reap it quietly.
  void detach(int64_t grace_ms);
  // SIGTERM to the group, SIGKILL after grace_ms (0: SIGKILL at once).
  void terminate(int64_t grace_ms);
  int pid() const { return result_.pid; }

 private:
  Process(uv_loop_t* loop, ProcessTable* table, const ProcessSpec& spec);
  ~Process();
  void on_exit(int64_t status, int sig);
  friend class ChildWatcher;
  void maybe_finish();
  void close_handles();
  void handle_closed();

  uv_loop_t* loop_;
  ProcessTable* table_;
  uv_pipe_t out_{}, err_{}, in_{};
  uv_timer_t timer_{};       // the timeout, then the post-exit drain limit
  uv_timer_t kill_timer_{};  // SIGKILL for the group when the grace after SIGTERM ends
  uv_write_t write_req_{};
  std::string stdin_data_;
  int open_handles_ = 0;
  bool exited_ = false, out_eof_ = false, err_eof_ = false, finished_ = false;
  bool killing_ = false;  // SIGTERM sent; SIGKILL pending on kill_timer_
  int64_t timeout_ms_, kill_grace_ms_;
  uint64_t start_ns_;
  DoneFn on_done_;
  ProcessResult result_;
  friend class ProcessTable;
};

// The live processes of one loop, so that shutdown can kill what is left.
class ProcessTable {
 public:
  // Kills what is left and lets each process forget the table (they free themselves later).
  ~ProcessTable();
  void kill_all();
  size_t size() const { return live_.size(); }
  // Called with a process's pid (its group's id) once it has been reaped and its group
  // signalled as its owner asked: the process is no longer this table's.
  std::function<void(int pid)> on_gone;

 private:
  friend class Process;
  std::unordered_set<Process*> live_;
};

}  // namespace orch
