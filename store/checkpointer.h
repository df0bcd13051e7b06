// WAL checkpoints off the loop thread (orchrun serve). SQLite's automatic checkpoint runs inside
// the commit that crosses the WAL size threshold, with an fsync of the database: the loop stops
// for milliseconds while requests wait. Here the store's connection does not checkpoint; a
// second connection on libuv's thread pool does (PASSIVE: it never blocks the writer), every
// `interval_ms` while the WAL has grown. A store that is not SQLite's has none: nothing to do.
#pragma once
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

#include "drivers/timer.h"
#include "store/store.h"

namespace orch {

class Checkpointer {
 public:
  Checkpointer(uv_loop_t* loop, Store* store, int64_t interval_ms = 500);
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;
  uint64_t checkpoints() const;

 private:
  struct State;
  void tick();
  uv_loop_t* loop_;
  Store* store_;
  std::shared_ptr<State> st_;
  std::unique_ptr<Timer> timer_;
};

}  // namespace orch
