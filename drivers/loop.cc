#include "drivers/loop.h"

#include <stdexcept>

#include "drivers/process.h"

namespace orch {

Loop::Loop() {
  int rc = uv_loop_init(&loop_);
  if (rc != 0) throw std::runtime_error(std::string("uv_loop_init: ") + uv_strerror(rc));
  loop_.data = this;
}

Loop::~Loop() {
  if (!closed_) close();
}

std::vector<std::string> open_handles(uv_loop_t* loop) {
  std::vector<std::string> names;
  uv_walk(
      loop,
      [](uv_handle_t* h, void* arg) {
        if (uv_is_closing(h)) return;
        static_cast<std::vector<std::string>*>(arg)->push_back(uv_handle_type_name(h->type));
      },
      &names);
  return names;
}

std::vector<std::string> Loop::close(uint64_t limit_ms) {
  if (closed_) return {};
  // The SIGCHLD watcher closes itself once its children are reaped; one still open here has
  // children nobody waited for (named below as a "signal" handle).
  std::vector<std::string> leaked = open_handles(&loop_);
  if (child_watcher_) close_child_watcher(child_watcher_);
  // Handles left open belong to owners that forgot to close them; closing them here lets the
  // loop finish, and the names go back to the caller to report.
  uv_walk(
      &loop_,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
  uint64_t start = uv_hrtime();
  while (uv_loop_close(&loop_) == UV_EBUSY) {
    uv_run(&loop_, UV_RUN_NOWAIT);
    if ((uv_hrtime() - start) / 1000000 > limit_ms) {
      leaked.push_back("(loop still busy after close limit)");
      return leaked;
    }
  }
  closed_ = true;
  return leaked;
}

}  // namespace orch
