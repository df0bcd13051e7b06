// A task (one coroutine the scheduler drives) and what the bindings that make it wait need
// from the scheduler. Waiting itself goes through bindings/async_op.h.
#pragma once
#include <uv.h>

#include <cstdint>
#include <functional>
#include <lua.hpp>
#include <string>

#include "bindings/lua_ref.h"

namespace orch {

class ProcessTable;
class HttpClient;
class LuaEngine;
class NodeServices;

// One coroutine running a node body (or a fallback, a condition ...).
struct Task {
  uint64_t id = 0;
  lua_State* co = nullptr;
  LuaRef thread;  // anchors the coroutine while the task lives
  // While the task waits on a driver (async_op.h): stops that driver when the task is
  // cancelled or times out. Run only through cancel_wait().
  std::function<void()> cancel_hook;
  bool waiting = false;   // yielded from an orchrun async call
  uint64_t wait_seq = 0;  // numbers the task's async calls: a late answer to an old one is ignored
  uint64_t deadline_ns = 0;  // uv_hrtime() after which the count hook raises
  bool timed_out = false;
  std::string node;  // node path, for messages
  LuaEngine* engine = nullptr;
  void* owner = nullptr;  // the scheduler's TaskOwner
};

// What the bindings need from the scheduler to run an operation outside Lua.
class TaskHost {
 public:
  virtual ~TaskHost() = default;
  virtual uv_loop_t* loop() = 0;
  virtual ProcessTable* processes() = 0;
  // The loop's HTTP client (o.http.request, SMTP); null where the host offers none.
  virtual HttpClient* http() { return nullptr; }
  // A binding is about to act outside the process (spawn a process, send a request): what was
  // recorded so far (the attempt that acts, and everything before it) is committed first, so
  // that the trace of a run never misses a step whose effect happened.
  virtual void before_effect() {}
  // o.exec started process group `pid` for `task` (`command`: its argv[0]): the host records
  // it, so that a successor can end it if this process dies first.
  virtual void process_started(Task* task, int pid, const std::string& command) {}
  // The task with this id while it lives; null once it is gone.
  virtual Task* find_task(uint64_t id) = 0;
  // The driver has pushed `nargs` results onto task->co: resume it on the next pump.
  virtual void resume(Task* task, int nargs) = 0;
  // Records and logs for node bodies (bindings/node_services.h); null where there are none.
  virtual NodeServices* services() { return nullptr; }
};

}  // namespace orch
