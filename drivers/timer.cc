#include "drivers/timer.h"

#include "drivers/loop.h"

namespace orch {

Timer::Timer(uv_loop_t* loop) : handle_(make_uv_handle<uv_timer_t>()) {
  uv_timer_init(loop, handle_.get());
  handle_->data = this;
}

Timer::~Timer() = default;  // the handle closes, and is freed in its close callback

void Timer::start(uint64_t timeout_ms, std::function<void()> cb, uint64_t repeat_ms) {
  cb_ = std::move(cb);
  uv_timer_start(
      handle_.get(),
      [](uv_timer_t* h) {
        auto* self = static_cast<Timer*>(h->data);
        if (!self) return;
        // Copy first: the callback may destroy the Timer (and with it cb_).
        auto cb = self->cb_;
        cb();
      },
      timeout_ms, repeat_ms);
}

void Timer::stop() {
  uv_timer_stop(handle_.get());
}

bool Timer::active() const {
  return uv_is_active(reinterpret_cast<uv_handle_t*>(handle_.get())) != 0;
}

void Timer::unref() {
  uv_unref(reinterpret_cast<uv_handle_t*>(handle_.get()));
}

}  // namespace orch
