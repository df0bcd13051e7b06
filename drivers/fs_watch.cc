#include "drivers/fs_watch.h"

#include "drivers/loop.h"

namespace orch {

FsWatch::FsWatch(uv_loop_t* loop) : loop_(loop) {}

FsWatch::~FsWatch() {
  stop();
}

bool FsWatch::start(const std::string& dir, int64_t debounce_ms, Filter filter, OnChange on_change,
                    std::string* err) {
  stop();
  handle_ = new uv_fs_event_t;
  uv_fs_event_init(loop_, handle_);
  handle_->data = this;
  int rc = uv_fs_event_start(
      handle_,
      [](uv_fs_event_t* h, const char* name, int events, int status) {
        if (auto* self = static_cast<FsWatch*>(h->data)) self->changed(name, status);
      },
      dir.c_str(), 0);
  if (rc != 0) {
    *err = "cannot watch " + dir + ": " + uv_strerror(rc);
    close_and_delete(handle_);
    handle_ = nullptr;
    return false;
  }
  debounce_ms_ = debounce_ms;
  filter_ = std::move(filter);
  on_change_ = std::move(on_change);
  debounce_ = std::make_unique<Timer>(loop_);
  return true;
}

void FsWatch::changed(const char* name, int status) {
  if (status < 0 || !name || (filter_ && !filter_(name))) return;
  pending_.insert(name);
  // Each change restarts the wait: the report comes once the directory is quiet.
  debounce_->start(static_cast<uint64_t>(debounce_ms_), [this] {
    auto names = std::move(pending_);
    pending_.clear();
    auto cb = on_change_;  // the callback may destroy this FsWatch
    cb(std::move(names));
  });
}

void FsWatch::stop() {
  if (handle_) {
    uv_fs_event_stop(handle_);
    close_and_delete(handle_);
    handle_ = nullptr;
  }
  debounce_.reset();
  pending_.clear();
}

}  // namespace orch
