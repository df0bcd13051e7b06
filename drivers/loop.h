// The one libuv loop that owns everything in a process, and its orderly shutdown.
#pragma once
#include <uv.h>

#include <cstdint>
#include <string>
#include <vector>

namespace orch {

class Loop {
 public:
  Loop();
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  uv_loop_t* get() { return &loop_; }
  void run() { uv_run(&loop_, UV_RUN_DEFAULT); }
  uint64_t now_ms() { return uv_now(&loop_); }

  // Closes every handle still open, runs the loop until uv_loop_close succeeds or `limit_ms`
  // passes. Returns the names of handles that were still open when it started closing them
  // (empty when the owners had already closed everything: the clean case tests check for).
  std::vector<std::string> close(uint64_t limit_ms = 2000);
  bool closed() const { return closed_; }

 private:
  uv_loop_t loop_{};
  bool closed_ = false;
};

// Names the handles still active or open on a loop, e.g. "timer", "process".
std::vector<std::string> open_handles(uv_loop_t* loop);

// Frees a handle allocated with `new T` once libuv is done with it.
template <typename T>
void close_and_delete(T* handle) {
  auto* h = reinterpret_cast<uv_handle_t*>(handle);
  if (uv_is_closing(h)) return;
  h->data = nullptr;
  uv_close(h, [](uv_handle_t* hh) { delete reinterpret_cast<T*>(hh); });
}

}  // namespace orch
