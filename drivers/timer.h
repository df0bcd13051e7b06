// A one-shot or repeating timer owned by a C++ object. Destroying the Timer stops it at once;
// the uv handle's memory is released later, in libuv's close callback.
#pragma once
#include <uv.h>

#include <cstdint>
#include <functional>

#include "drivers/uv_handle.h"

namespace orch {

class Timer {
 public:
  explicit Timer(uv_loop_t* loop);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Calls `cb` after `timeout_ms` (and every `repeat_ms` after that if non-zero). Restarting
  // replaces the previous callback. The callback may destroy the Timer.
  void start(uint64_t timeout_ms, std::function<void()> cb, uint64_t repeat_ms = 0);
  void stop();
  bool active() const;
  // A timer that does not keep the loop alive by itself (e.g. the live view's refresh).
  void unref();

 private:
  UvHandle<uv_timer_t> handle_;
  std::function<void()> cb_;
};

}  // namespace orch
