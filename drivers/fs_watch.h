// Watches a directory (uv_fs_event) and reports the names that changed once it has been quiet
// for a while: editors write in several steps (truncate, write, rename), and one report after
// the last step is what a reader of the directory wants.
//
// The FsWatch owns its uv handle: destroying it (or stop()) stops the watch at once and asks
// libuv to close the handle, whose memory is freed in the close callback. Stopping twice is
// harmless.
#pragma once
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "drivers/timer.h"

namespace orch {

class FsWatch {
 public:
  // Called with the names (relative to the directory) that changed since the last call.
  using OnChange = std::function<void(std::set<std::string> names)>;
  // Which names count (e.g. only "*.lua"); null: all.
  using Filter = std::function<bool(const std::string& name)>;

  explicit FsWatch(uv_loop_t* loop);
  ~FsWatch();
  FsWatch(const FsWatch&) = delete;
  FsWatch& operator=(const FsWatch&) = delete;

  // Watches `dir`: `on_change` runs once no change came for `debounce_ms`. False with *err
  // ("cannot watch DIR: ...", nothing left open) when the directory cannot be watched.
  bool start(const std::string& dir, int64_t debounce_ms, Filter filter, OnChange on_change,
             std::string* err);
  // Stops watching; changes not yet reported are dropped.
  void stop();
  bool watching() const { return handle_ != nullptr; }

 private:
  void changed(const char* name, int status);

  uv_loop_t* loop_;
  uv_fs_event_t* handle_ = nullptr;  // open while watching; freed by its close callback
  std::unique_ptr<Timer> debounce_;
  int64_t debounce_ms_ = 0;
  Filter filter_;
  OnChange on_change_;
  std::set<std::string> pending_;
};

}  // namespace orch
