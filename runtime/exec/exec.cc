#include "runtime/exec/exec.h"

namespace orch {

LuaRef dup(lua_State* L, const LuaRef& r) {
  r.push(L);
  return LuaRef::pop(L);
}

int traceback_msgh(lua_State* L) {
  const char* msg = lua_tostring(L, 1);
  if (!msg) return 1;  // keep tables (o.fail errors) as they are
  luaL_traceback(L, L, msg, 1);
  return 1;
}

// Turns the error value on top of `co` into an ErrorInfo (does not pop it).
ErrorInfo error_from(lua_State* L, lua_State* co, bool timed_out) {
  ErrorInfo e;
  e.type = "error";
  e.retryable = true;
  // Raw reads only: this runs outside any protected call, so an __index (or __tostring) from
  // pipeline code must not run here (it could raise and panic the state, or loop forever).
  auto raw = [co](const char* k) {
    lua_pushstring(co, k);
    lua_rawget(co, -2);
  };
  if (lua_istable(co, -1)) {
    raw("message");
    e.message = lua_type(co, -1) == LUA_TSTRING || lua_type(co, -1) == LUA_TNUMBER
                    ? lua_tostring(co, -1)
                    : "(error object is a table without a message)";
    lua_pop(co, 1);
    raw("retryable");
    if (lua_isboolean(co, -1)) e.retryable = lua_toboolean(co, -1);
    lua_pop(co, 1);
    raw("type");
    if (lua_type(co, -1) == LUA_TSTRING) e.type = lua_tostring(co, -1);
    lua_pop(co, 1);
    raw("details");
    if (lua_istable(co, -1)) {
      json j;
      std::string err;
      if (lua_to_json(co, lua_gettop(co), &j, &err)) e.details = dump_json(j);
    }
    lua_pop(co, 1);
  } else if (lua_type(co, -1) == LUA_TSTRING || lua_type(co, -1) == LUA_TNUMBER) {
    e.message = lua_tostring(co, -1);
  } else {
    e.message = std::string("(error object is a ") + luaL_typename(co, -1) + " value)";
  }
  if (timed_out) {
    e.type = "timeout";
    e.retryable = true;
  }
  luaL_traceback(L, co, nullptr, 0);
  if (lua_isstring(L, -1)) e.traceback = lua_tostring(L, -1);
  lua_pop(L, 1);
  return e;
}

void Exec::record_skipped_subtree(Step* st, const std::string& reason) {
  if (!st) return;
  if (st->kind == StepKind::Node) {
    if (run_->history_of(st->path)) return;  // recorded before the run was resumed
    int64_t now = wall_ms();
    NodeRunRow r;
    r.run_id = run_->id;
    r.node_id = st->path;
    r.attempt = 1;
    r.status = "skipped";
    r.run_attempt = run_->run_attempt;
    r.started_at = r.finished_at = now;
    r.error_message = reason;
    s_->store()->insert_node_final(r);
    s_->emit(run_, "node.skipped", st->path, 1, dump_json(json{{"reason", reason}}));
    run_->summary.nodes_skipped++;
    return;
  }
  for (auto& c : st->children) record_skipped_subtree(c.get(), reason);
}

std::unique_ptr<Exec> make_exec(Scheduler* s, Run* run, Step* step, Exec* parent) {
  switch (step->kind) {
    case StepKind::Node:
      return make_node_exec(s, run, step, parent);
    case StepKind::Seq:
      return make_seq_exec(s, run, step, parent);
    case StepKind::Parallel:
      return make_parallel_exec(s, run, step, parent);
    case StepKind::When:
    case StepKind::Switch:
      return make_branch_exec(s, run, step, parent);
    case StepKind::Approve:
      return make_approve_exec(s, run, step, parent);
  }
  return nullptr;
}

}  // namespace orch
