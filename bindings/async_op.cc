#include "bindings/async_op.h"

#include "bindings/lua_state.h"

namespace orch {

Task* require_task(lua_State* L, const char* fname) {
  LuaEngine* e = LuaEngine::from(L);
  Task* t = e ? e->task_of(L) : nullptr;
  if (!t || !e->host()) {
    push_user_where(L);
    lua_pushfstring(L, "%s can only be called inside a node body while the pipeline runs", fname);
    lua_concat(L, 2);
    lua_error(L);
    return nullptr;
  }
  if (t->waiting) {
    luaL_error(L, "%s: the task is already waiting", fname);
    return nullptr;
  }
  // Checked before any driver starts: a yield that fails after the operation has begun would
  // leave a timer or a process pointing at a task that has moved on.
  if (!lua_isyieldable(L)) {
    push_user_where(L);
    lua_pushfstring(L,
                    "%s cannot wait here: it was called from inside a C function (a "
                    "table.sort comparator, a gsub callback, a metamethod...); call it "
                    "directly in the node body",
                    fname);
    lua_concat(L, 2);
    lua_error(L);
    return nullptr;
  }
  return t;
}

AsyncOp AsyncOp::begin(lua_State* L, const char* fname) {
  Task* t = require_task(L, fname);
  AsyncOp op;
  op.host_ = LuaEngine::from(L)->host();
  op.task_id_ = t->id;
  op.seq_ = ++t->wait_seq;
  return op;
}

int AsyncOp::yield(lua_State* L, std::function<void()> cancel) const {
  // begin() found the task a moment ago, in this same C function.
  Task* t = host_->find_task(task_id_);
  t->waiting = true;
  t->cancel_hook = std::move(cancel);
  return lua_yield(L, 0);
}

int AsyncOp::yield_detached(lua_State* L, AsyncOp* slot) const {
  return yield(L, [slot] { *slot = AsyncOp(); });
}

Task* AsyncOp::task() const {
  Task* t = host_ ? host_->find_task(task_id_) : nullptr;
  return t && t->waiting && t->wait_seq == seq_ ? t : nullptr;
}

void AsyncOp::on_cancel(std::function<void()> cancel) const {
  if (Task* t = task()) t->cancel_hook = std::move(cancel);
}

bool AsyncOp::complete(const std::function<int(lua_State* co)>& push) const {
  Task* t = task();
  if (!t) return false;
  t->waiting = false;
  t->cancel_hook = nullptr;
  int nargs = push(t->co);
  host_->resume(t, nargs);
  return true;
}

bool AsyncOp::fail(std::string_view message, std::string_view code) const {
  return complete([&](lua_State* co) { return push_failure(co, message, code); });
}

void cancel_wait(Task* t) {
  t->waiting = false;
  if (!t->cancel_hook) return;
  auto hook = std::move(t->cancel_hook);
  t->cancel_hook = nullptr;
  hook();
}

int push_failure(lua_State* L, std::string_view message, std::string_view code) {
  lua_pushnil(L);
  lua_pushlstring(L, message.data(), message.size());
  lua_pushlstring(L, code.data(), code.size());
  return 3;
}

}  // namespace orch
