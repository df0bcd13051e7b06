// The yield/resume bridge: the one way a binding makes its task wait for a driver.
//
//   int l_thing(lua_State* L) {
//     ...check the arguments (misuse raises)...
//     AsyncOp op = AsyncOp::begin(L, "o.thing");  // raises unless this task can wait
//     ...start the driver; its callback calls op.complete(...) or op.fail(...)...
//     ...it did not start: return nil, message, code (no yield)...
//     return op.yield(L, [driver] { ...stop it... });
//   }
//
// The callback finds its task by id: an answer that arrives after the task is gone (cancelled,
// timed out, its run over) is ignored. Only the scheduler resumes the coroutine.
// begin() and yield() may raise (longjmp): call them with no C++ object that has a destructor
// alive in the calling frame.
#pragma once
#include <functional>
#include <lua.hpp>
#include <string_view>

#include "bindings/task.h"

namespace orch {

// How a binding's start function went. It runs with C++ locals alive, so it never raises
// itself; the binding's C function then raises, returns or yields.
enum class Start {
  Started,  // the driver runs: yield
  Misuse,   // wrong use: the error is on the Lua stack, to raise
  Failed,   // could not start: nil, message, code are on the stack, to return
};

class AsyncOp {
 public:
  // An operation of no task: completing it does nothing.
  AsyncOp() = default;

  // Checks that the calling coroutine is a node's task that may wait now (inside a node body
  // while the pipeline runs, not waiting already, able to yield) and raises a Lua error
  // naming `fname` and the pipeline author's file:line otherwise.
  static AsyncOp begin(lua_State* L, const char* fname);

  // Ends the binding's C function (`return op.yield(L, ...)`): the task waits until the
  // operation completes; `cancel` stops the driver if the task is cancelled or times out first.
  int yield(lua_State* L, std::function<void()> cancel) const;
  // The same for a job that cannot be stopped (libuv's thread pool): a cancel empties *slot
  // (where the job keeps this operation), so the job's completion is then a no-op that does not
  // even reach the host.
  int yield_detached(lua_State* L, AsyncOp* slot) const;

  // The task while it waits for this operation; null when it is gone or has moved on.
  Task* task() const;
  TaskHost* host() const { return host_; }
  // While the task waits for this operation: what a cancel does from now on (a driver that
  // goes from one stage to the next, e.g. from a timer to a pool job). No-op otherwise.
  void on_cancel(std::function<void()> cancel) const;

  // The driver's answer: `push` pushes the results onto the task's coroutine and returns how
  // many; the hook is cleared and the scheduler resumes the task on its next pump. False (and
  // `push` not called) when the task is gone or no longer waits for this operation.
  bool complete(const std::function<int(lua_State* co)>& push) const;
  // Completes with nil, message, code (an operational failure).
  bool fail(std::string_view message, std::string_view code) const;

 private:
  TaskHost* host_ = nullptr;
  uint64_t task_id_ = 0;
  uint64_t seq_ = 0;
};

// Stops what `t` waits for, if anything: runs its cancel hook once and forgets it. The only
// place a cancel hook runs; a later answer of the driver is ignored.
void cancel_wait(Task* t);

// Raises a Lua error (naming `fname`) unless called from a task's coroutine that may wait;
// returns the task. AsyncOp::begin() uses it; so do bindings that need a node's task without
// waiting (ctx:use_artifact, o.ingest).
Task* require_task(lua_State* L, const char* fname);

// Pushes nil, message, code and returns 3: an operation that could not start.
int push_failure(lua_State* L, std::string_view message, std::string_view code);

}  // namespace orch
