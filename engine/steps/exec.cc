#include "engine/steps/exec.h"

namespace orch {

namespace {
// Free tokens of this thread; freed with it.
struct TokenPool {
  ExecRef::Token* free = nullptr;
  ~TokenPool() {
    while (free) delete std::exchange(free, free->next_free);
  }
};
thread_local TokenPool tokens;
}  // namespace

ExecRef ExecRef::make(Exec* e) {
  ExecRef r;
  if (tokens.free)
    r.t_ = std::exchange(tokens.free, tokens.free->next_free);
  else
    r.t_ = new Token;
  *r.t_ = {e, 1, nullptr};
  return r;
}

void ExecRef::release() {
  if (!t_ || --t_->refs > 0) return;
  t_->next_free = tokens.free;
  tokens.free = std::exchange(t_, nullptr);
}

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

void Exec::record_skipped_subtree(Step* st, const std::string& prefix, const std::string& reason) {
  if (!st) return;
  std::string path = st->id.empty() ? prefix : prefix.empty() ? st->id : prefix + "/" + st->id;
  if (st->depended_on) settled(Outcome::Skipped, reason == "upstream_failed", path);
  // A node, or a step whose inner ids exist only at run time (map items, loop iterations,
  // child runs): one row for the step itself.
  bool leaf = st->kind() == StepKind::Node || st->kind() == StepKind::Map ||
              st->kind() == StepKind::Loop || st->kind() == StepKind::Call ||
              st->kind() == StepKind::Approve || st->kind() == StepKind::Wait;
  if (leaf) {
    if (path.empty() || run_->history_of(path)) return;  // recorded before the resume
    int64_t now = wall_ms();
    NodeRunRow r;
    r.run_id = run_->id;
    r.node_id = path;
    r.attempt = 1;
    r.status = NodeStatus::skipped;
    r.run_attempt = run_->run_attempt;
    r.started_at = r.finished_at = now;
    r.error_message = reason;
    s_->store()->insert_node_final(r);
    s_->emit(run_, "node.skipped", path, 1, dump_json(json{{"reason", reason}}));
    run_->summary.nodes_skipped++;
    return;
  }
  for (auto& c : st->children) record_skipped_subtree(c.get(), path, reason);
}

void Exec::settled(Outcome o, bool upstream_failed, const std::string& path) {
  run_->settled[path.empty() ? path_ : path] = {o, path.empty() && optional_failure,
                                                upstream_failed};
  if (run_->graph_waiters.empty()) return;
  // Told from the pump, like a parent: what the step wrote is committed first.
  s_->defer([waiters = run_->graph_waiters] {
    for (const auto& w : waiters)
      if (Exec* e = deref(w); e && !e->done) e->deps_changed();
  });
}

std::unique_ptr<Exec> make_exec(StepHost* s, Run* run, Step* step, Exec* parent,
                                const std::string& prefix) {
  static const ExecFactory kFactories[] = {make_node_exec,   make_seq_exec,    make_parallel_exec,
                                           make_branch_exec, make_branch_exec, make_approve_exec,
                                           make_map_exec,    make_loop_exec,   make_call_exec,
                                           make_wait_exec};
  return kFactories[static_cast<int>(step->kind())](s, run, step, parent, prefix);
}

}  // namespace orch
