// Ctrl-C that works even while Lua code holds the loop thread.
//
// libuv's signal watchers run on the loop, so a node body that never yields (or a condition
// that never returns) would keep SIGINT from being seen at all. Instead a plain sigaction
// handler counts signals (async-signal-safe: an atomic and uv_async_send): the loop cancels
// the runs from the async callback, and the Lua count hook stops whatever Lua code is running.
// A second signal kills the child process groups still registered and exits at once.
#pragma once
#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "drivers/uv_handle.h"

namespace orch {

class InterruptHandler {
 public:
  // `on_interrupt` runs on the loop after the first SIGINT/SIGTERM. With `stop_lua`, Lua code
  // running at that moment is stopped with an error (one-shot runs: Ctrl-C must be prompt);
  // without, node bodies go on (serve: they get a grace period to finish).
  //
  // `force_after_ms` (> 0): a watchdog thread that, when the handler is still installed that
  // long after the first signal (the loop is stuck in C code, or the shutdown hangs), kills the
  // registered child groups and exits the process with 128 + the signal. What was committed
  // stays committed; the runs are resumed like those of a crashed process.
  InterruptHandler(uv_loop_t* loop, std::function<void(int signo)> on_interrupt,
                   bool stop_lua = true, int64_t force_after_ms = 0);
  ~InterruptHandler();
  InterruptHandler(const InterruptHandler&) = delete;
  InterruptHandler& operator=(const InterruptHandler&) = delete;
  int count() const;
  int signo() const;

 private:
  UvHandle<uv_async_t> async_;
  std::function<void(int)> cb_;
  struct Watchdog;
  std::unique_ptr<Watchdog> watchdog_;
};

// True once SIGINT/SIGTERM arrived while an InterruptHandler is installed. Read by the count
// hook; the text of the error it raises is "interrupted by SIGINT" (or SIGTERM).
bool interrupt_requested();
const char* interrupt_name();

// Child process groups to SIGKILL on a forced exit (a fixed table: the handler cannot lock).
void register_child_group(pid_t pgid);
void unregister_child_group(pid_t pgid);

}  // namespace orch
