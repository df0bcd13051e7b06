// The one libuv loop that owns everything in a process, and its orderly shutdown.
#pragma once
#include <uv.h>

#include <cstdint>
#include <string>
#include <vector>

#include "drivers/uv_handle.h"

namespace orch {

class ChildWatcher;  // drivers/process.cc

class Loop {
 public:
  Loop();
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  uv_loop_t* get() { return &loop_; }
  // The Loop a uv loop belongs to (every loop in orchrun is one: its `data` points here).
  static Loop* from(uv_loop_t* loop) { return static_cast<Loop*>(loop->data); }
  void run() { uv_run(&loop_, UV_RUN_DEFAULT); }
  uint64_t now_ms() { return uv_now(&loop_); }

  // Closes every handle still open, runs the loop until uv_loop_close succeeds or `limit_ms`
  // passes. Returns the names of handles that were still open when it started closing them
  // (empty when the owners had already closed everything: the clean case tests check for).
  std::vector<std::string> close(uint64_t limit_ms = 2000);
  bool closed() const { return closed_; }

  // The loop's one SIGCHLD watcher, while a child it spawned is unreaped (drivers/process.cc
  // creates it with the first spawn and clears this when it closes).
  ChildWatcher*& child_watcher() { return child_watcher_; }

 private:
  uv_loop_t loop_{};
  bool closed_ = false;
  ChildWatcher* child_watcher_ = nullptr;
};

// Names the handles still active or open on a loop, e.g. "timer", "process".
std::vector<std::string> open_handles(uv_loop_t* loop);

}  // namespace orch
