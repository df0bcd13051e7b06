#include "runtime/scheduler.h"

#include "runtime/signals.h"

#include <unistd.h>

#include <cassert>
#include <cstring>

#include "bindings/convert.h"
#include "runtime/drivers/timer.h"
#include "runtime/duration.h"
#include "runtime/ids.h"
#include "runtime/json_util.h"

namespace orch {

enum class Outcome { Succeeded, Failed, Skipped, Cancelled };

struct ErrorInfo {
  std::string type, message, node, traceback;
  bool retryable = false;
  std::string details;  // JSON or empty
};

// What the scheduler calls when a task's coroutine has finished (returned or raised).
class TaskOwner {
 public:
  virtual ~TaskOwner() = default;
  virtual void task_finished(Task* t, int status) = 0;
  virtual void task_log(std::string_view level, std::string_view message,
                        const std::string& fields_json) = 0;
};

namespace {

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

}  // namespace

// ---------------------------------------------------------------------------------------------
// Run: the state of one run while it executes.
class Run {
 public:
  std::string id, trace_id;
  Pipeline* p = nullptr;
  int version = 0;
  LuaRef input;    // the pipeline input
  LuaRef outputs;  // id -> output, given to nodes as ctx.outputs
  LuaRef ctx_mt;   // { __index = run-level ctx }
  std::unique_ptr<Exec> root;
  int64_t started_ms = 0;
  bool finished = false;
  std::string cancel_reason;
  RunSummary summary;
  // Resumed runs: what the store already says about each node (attempt rows, in order).
  std::unordered_map<std::string, std::vector<NodeRunRow>> history;
  const std::vector<NodeRunRow>* history_of(const std::string& path) const {
    auto it = history.find(path);
    return it == history.end() ? nullptr : &it->second;
  }
  lua_State* L() const { return p->engine->L(); }
};

// ---------------------------------------------------------------------------------------------
// Exec: a step being executed. Finishing is reported to the parent through the pump, so that
// whatever the step wrote is committed before the parent moves on.
class Exec {
 public:
  Exec(Scheduler* s, Run* run, Step* step, Exec* parent)
      : s_(s), run_(run), step_(step), parent_(parent) {}
  virtual ~Exec() = default;
  virtual void start(LuaRef input) = 0;
  // Stops the step and everything under it, synchronously, recording what was cancelled. The
  // parent is not notified: whoever cancels knows.
  virtual void cancel(const std::string& reason) = 0;
  virtual void child_done(Exec* child) {}

  bool done = false;
  Outcome outcome = Outcome::Succeeded;
  LuaRef output;                  // empty when the step produced none
  bool optional_failure = false;  // failed, but marked optional: the run goes on
  ErrorInfo err;
  LuaRef input;
  Step* step() const { return step_; }

 protected:
  void finish(Outcome o) {
    done = true;
    outcome = o;
    Exec* parent = parent_;
    Run* run = run_;
    Scheduler* s = s_;
    if (parent)
      s->defer([parent, this] {
        if (!parent->done) parent->child_done(this);
      });
    else
      s->defer([s, run] { s->run_finished(run); });
  }
  // What a step passes on: its output, or its input when it has none (skipped, optional).
  LuaRef passthrough(Exec* c) { return dup(run_->L(), c->output.empty() ? c->input : c->output); }

  // ctx for conditions (no attempt).
  void push_ctx(lua_State* L, const std::string& path, int attempt) {
    lua_createtable(L, 0, 4);
    lua_pushlstring(L, path.data(), path.size());
    lua_setfield(L, -2, "node");
    lua_pushlstring(L, step_->id.data(), step_->id.size());
    lua_setfield(L, -2, "id");
    lua_pushinteger(L, attempt);
    lua_setfield(L, -2, "attempt");
    std::string key = run_->id + ":" + path;
    lua_pushlstring(L, key.data(), key.size());
    lua_setfield(L, -2, "idempotency_key");
    run_->ctx_mt.push(L);
    lua_setmetatable(L, -2);
  }

  // Calls a condition/selector function (or reads a boolean) synchronously. On success pushes
  // the result and returns true; otherwise fills *e.
  bool call_predicate(const LuaRef& fn, ErrorInfo* e) {
    lua_State* L = run_->L();
    fn.push(L);
    if (!lua_isfunction(L, -1)) return true;  // a constant (boolean)
    int base = lua_gettop(L);
    lua_pushcfunction(L, traceback_msgh);
    lua_insert(L, base);
    push_ctx(L, step_->path, 0);
    input.push(L);
    // A condition is bounded by its step's timeout, or 10 s.
    LuaEngine* eng = run_->p->engine.get();
    uint64_t limit_ms = step_->timeout_ms > 0 ? static_cast<uint64_t>(step_->timeout_ms) : 10000;
    eng->predicate_deadline_ns = uv_hrtime() + limit_ms * 1000000;
    int rc = lua_pcall(L, 2, 1, base);
    eng->predicate_deadline_ns = 0;
    if (rc != 0) {
      std::string m = lua_isstring(L, -1) ? lua_tostring(L, -1) : "error in condition";
      auto nl = m.find("\nstack traceback:");
      e->type = "error";
      e->message = m.substr(0, nl);
      if (nl != std::string::npos) e->traceback = m.substr(nl + 1);
      e->retryable = false;
      e->node = step_->path;
      lua_settop(L, base - 1);
      return false;
    }
    lua_remove(L, base);
    return true;
  }

  // A decision (when/switch) is recorded like a node so that it is visible and replayable.
  void record_decision(const std::string& status, const std::string& output,
                       const ErrorInfo* e) {
    int64_t now = wall_ms();
    int attempt = 1;
    if (const auto* h = run_->history_of(step_->path))
      for (const auto& x : *h) attempt = std::max(attempt, x.attempt + 1);
    NodeRunRow r;
    r.run_id = run_->id;
    r.node_id = step_->path;
    r.attempt = attempt;
    r.kind = "decision";
    r.status = status;
    r.started_at = r.finished_at = now;
    r.output = output;
    if (e) {
      r.error_type = e->type;
      r.error_message = e->message;
    }
    s_->store()->insert_node_final(r);
    json d = parse_json(output.empty() ? "{}" : output, nullptr);
    if (e) d = json{{"error_type", e->type}, {"message", e->message}, {"retryable", false}};
    s_->emit(run_, status == "succeeded" ? "node.succeeded" : "node.failed", step_->path, attempt,
             dump_json(d));
  }

  void record_skipped_subtree(Step* st, const std::string& reason);

  Scheduler* s_;
  Run* run_;
  Step* step_;
  Exec* parent_;
};

std::unique_ptr<Exec> make_exec(Scheduler* s, Run* run, Step* step, Exec* parent);

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
    r.started_at = r.finished_at = now;
    r.error_message = reason;
    s_->store()->insert_node_final(r);
    s_->emit(run_, "node.skipped", st->path, 1, dump_json(json{{"reason", reason}}));
    run_->summary.nodes_skipped++;
    return;
  }
  for (auto& c : st->children) record_skipped_subtree(c.get(), reason);
}

// ---------------------------------------------------------------------------------------------
class NodeExec : public Exec, public TaskOwner {
 public:
  using Exec::Exec;
  ~NodeExec() override { drop(); }

  void start(LuaRef in) override {
    input = std::move(in);
    if (const auto* h = run_->history_of(step_->path)) {
      if (replay(*h)) return;
    }
    if (!step_->skip_if.empty()) {
      ErrorInfo e;
      if (!call_predicate(step_->skip_if, &e)) {
        e.message = "skip_if failed: " + e.message;
        begin_row(attempt_ + 1, "body");
        finish_row("failed", "", e);
        s_->emit(run_, "node.failed", step_->path, attempt_,
                 dump_json(json{{"error_type", e.type}, {"message", e.message},
                                {"retryable", false}, {"will_retry", false}}));
        fail_final(e);
        return;
      }
      lua_State* L = run_->L();
      bool skip = lua_toboolean(L, -1);
      lua_pop(L, 1);
      if (skip) {
        record_skipped_subtree(step_, "skip_if");
        finish(Outcome::Skipped);
        return;
      }
    }
    begin_attempt(1, false);
  }

  void cancel(const std::string& reason) override {
    if (done) return;
    retry_timer_.reset();
    timeout_timer_.reset();
    if (task_) {
      if (task_->cancel_hook) {
        auto hook = std::move(task_->cancel_hook);
        task_->cancel_hook = nullptr;
        hook();
      }
      drop();
      finish_row("cancelled", "", {"cancelled", reason, step_->path, "", false, ""});
    }
    s_->emit(run_, "node.cancelled", step_->path, attempt_, dump_json(json{{"reason", reason}}));
    run_->summary.nodes_cancelled++;
    done = true;
    outcome = Outcome::Cancelled;
  }

  void task_log(std::string_view level, std::string_view message,
                const std::string& fields_json) override {
    json d{{"level", std::string(level)}, {"message", std::string(message)}};
    if (!fields_json.empty()) d["fields"] = parse_json(fields_json, nullptr);
    s_->emit(run_, "log", step_->path, attempt_, dump_json(d));
  }

  void task_finished(Task* t, int status) override {
    timeout_timer_.reset();
    lua_State* L = run_->L();
    lua_State* co = t->co;
    if (status != 0 && interrupt_requested()) {
      // Ctrl-C stopped the body; the loop is about to cancel the run.
      ErrorInfo e = error_from(L, co, false);
      drop();
      finish_row("cancelled", "", {"cancelled", e.message, step_->path, e.traceback, true, ""});
      return;
    }
    if (status != 0) {
      ErrorInfo e = error_from(L, co, t->timed_out);
      if (t->timed_out) {
        // The hook's message starts with where the body was when it was stopped.
        std::string where = e.message.substr(0, e.message.find("timeout: node ran past"));
        if (where.size() > 2) where = " at " + where.substr(0, where.size() - 2);
        e.message = "timed out after " + format_duration_ms(step_->timeout_ms) + where +
                    " (the body kept running without yielding; stopped by the deadline hook)";
      }
      drop();
      failure(e);
      return;
    }
    int n = lua_gettop(co);
    if (n == 0) {
      lua_newtable(L);
    } else if (lua_istable(co, 1)) {
      lua_settop(co, 1);
      lua_xmove(co, L, 1);
    } else {
      ErrorInfo e{"bad_output",
                  std::string("node must return a table (or nothing), got ") +
                      luaL_typename(co, 1),
                  step_->path, "", false, ""};
      drop();
      failure(e);
      return;
    }
    drop();
    json j;
    std::string err;
    if (!lua_to_json(L, lua_gettop(L), &j, &err)) {
      lua_pop(L, 1);
      failure({"bad_output", "output cannot be stored: " + err, step_->path, "", false, ""});
      return;
    }
    LuaRef out = LuaRef::pop(L);
    success(std::move(out), dump_json(j));
  }

 private:
  // Continues from what the store says about this node. Returns true when the node is settled
  // (reused success, skip, final failure) or a new attempt has started.
  bool replay(const std::vector<NodeRunRow>& rows) {
    const NodeRunRow* fallback_row = nullptr;
    int max_attempt = 0;
    for (const auto& r : rows) {
      max_attempt = std::max(max_attempt, r.attempt);
      if (r.status == "succeeded") {
        lua_State* L = run_->L();
        json j = parse_json(r.output.empty() ? "{}" : r.output, nullptr);
        push_json(L, j.is_discarded() ? json::object() : j);
        LuaRef out = LuaRef::pop(L);
        attempt_ = r.attempt;
        run_->outputs.push(L);
        lua_pushlstring(L, step_->id.data(), step_->id.size());
        out.push(L);
        lua_rawset(L, -3);
        lua_pop(L, 1);
        output = std::move(out);
        run_->summary.nodes_succeeded++;
        run_->summary.nodes_reused++;
        s_->notify(run_, "node.reused", step_->path, r.attempt, "{}");
        finish(Outcome::Succeeded);
        return true;
      }
      if (r.status == "skipped") {
        run_->summary.nodes_skipped++;
        s_->notify(run_, "node.skipped", step_->path, r.attempt, R"({"reason":"skipped before the resume"})");
        finish(Outcome::Skipped);
        return true;
      }
      if (r.kind == "fallback") fallback_row = &r;
      if (r.kind == "body" && r.status == "failed" && r.error_type != "interrupted") tries_++;
    }
    attempt_ = max_attempt;
    const NodeRunRow& last = rows.back();
    ErrorInfo e{last.error_type, last.error_message, step_->path, last.traceback, last.retryable, ""};
    if (fallback_row) {
      if (fallback_row->error_type == "interrupted") {
        last_err_ = e;
        begin_attempt(attempt_ + 1, true);
      } else {
        fail_final(e);
      }
      return true;
    }
    bool exhausted = tries_ >= step_->retry.max_attempts ||
                     (last.status == "failed" && last.error_type != "interrupted" && !last.retryable);
    if (exhausted) {
      if (!step_->fallback.empty()) {
        last_err_ = e;
        begin_attempt(attempt_ + 1, true);
      } else {
        fail_final(e);
      }
      return true;
    }
    begin_attempt(attempt_ + 1, false);
    return true;
  }

  void begin_row(int attempt, const char* kind) {
    attempt_ = attempt;
    started_ms_ = wall_ms();
    started_ns_ = uv_hrtime();
    s_->store()->insert_node_attempt(run_->id, step_->path, attempt, kind, started_ms_);
    s_->emit(run_, "node.started", step_->path, attempt,
             in_fallback_ ? R"({"kind":"fallback"})" : "{}");
    run_->summary.attempts++;
  }

  void begin_attempt(int attempt, bool fallback) {
    in_fallback_ = fallback;
    if (!fallback) tries_++;
    begin_row(attempt, fallback ? "fallback" : "body");
    task_.reset(s_->new_task(run_, static_cast<TaskOwner*>(this), step_->path));
    lua_State* co = task_->co;
    (fallback ? step_->fallback : step_->fn).push(co);
    push_ctx(co, step_->path, attempt);
    input.push(co);
    int nargs = 2;
    if (fallback) {
      lua_createtable(co, 0, 4);
      lua_pushstring(co, last_err_.message.c_str());
      lua_setfield(co, -2, "message");
      lua_pushstring(co, last_err_.type.c_str());
      lua_setfield(co, -2, "type");
      lua_pushboolean(co, last_err_.retryable);
      lua_setfield(co, -2, "retryable");
      lua_pushinteger(co, attempt - 1);
      lua_setfield(co, -2, "attempts");
      nargs = 3;
    }
    if (step_->timeout_ms > 0) {
      task_->deadline_ns = started_ns_ + static_cast<uint64_t>(step_->timeout_ms) * 1000000;
      timeout_timer_ = std::make_unique<Timer>(s_->loop());
      timeout_timer_->start(static_cast<uint64_t>(step_->timeout_ms), [this] { on_timeout(); });
    }
    s_->run_task(task_.get(), nargs);
  }

  void on_timeout() {
    timeout_timer_.reset();
    if (!task_) return;
    if (task_->cancel_hook) {
      auto hook = std::move(task_->cancel_hook);
      task_->cancel_hook = nullptr;
      hook();  // stops the timer, kills the process group, ...
    }
    drop();
    failure({"timeout", "timed out after " + format_duration_ms(step_->timeout_ms), step_->path,
             "", true, ""});
  }

  void finish_row(const std::string& status, const std::string& output, const ErrorInfo& e) {
    NodeRunRow r;
    r.run_id = run_->id;
    r.node_id = step_->path;
    r.attempt = attempt_;
    r.status = status;
    r.finished_at = wall_ms();
    r.duration_ms = static_cast<int64_t>((uv_hrtime() - started_ns_) / 1000000);
    r.output = output;
    r.error_type = e.type;
    r.error_message = e.message;
    r.traceback = e.traceback;
    r.retryable = e.retryable;
    s_->store()->finish_node_attempt(r);
  }

  void success(LuaRef out, const std::string& out_json) {
    finish_row("succeeded", out_json, {});
    int64_t dur = static_cast<int64_t>((uv_hrtime() - started_ns_) / 1000000);
    json d{{"duration_ms", dur}};
    if (in_fallback_) d["via"] = "fallback";
    s_->emit(run_, "node.succeeded", step_->path, attempt_, dump_json(d));
    lua_State* L = run_->L();
    run_->outputs.push(L);
    lua_pushlstring(L, step_->id.data(), step_->id.size());
    out.push(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    output = std::move(out);
    run_->summary.nodes_succeeded++;
    finish(Outcome::Succeeded);
  }

  void failure(ErrorInfo e) {
    e.node = step_->path;
    finish_row("failed", "", e);
    bool will_retry = !in_fallback_ && e.retryable && tries_ < step_->retry.max_attempts;
    int64_t delay = will_retry ? step_->retry.delay_ms(attempt_ + 1, s_->random_unit()) : 0;
    json d{{"error_type", e.type}, {"message", e.message}, {"retryable", e.retryable},
           {"will_retry", will_retry}};
    if (will_retry) d["retry_in_ms"] = delay;
    if (!will_retry && !in_fallback_ && !step_->fallback.empty()) d["fallback"] = true;
    if (!e.details.empty()) d["details"] = parse_json(e.details, nullptr);
    s_->emit(run_, "node.failed", step_->path, attempt_, dump_json(d));
    last_err_ = e;
    if (will_retry) {
      int next = attempt_ + 1;
      retry_timer_ = std::make_unique<Timer>(s_->loop());
      retry_timer_->start(static_cast<uint64_t>(delay), [this, next] {
        retry_timer_.reset();
        s_->defer([this, next] {
          if (!done) begin_attempt(next, false);
        });
      });
      return;
    }
    if (!in_fallback_ && !step_->fallback.empty()) {
      int next = attempt_ + 1;
      s_->defer([this, next] {
        if (!done) begin_attempt(next, true);
      });
      return;
    }
    fail_final(e);
  }

  void fail_final(const ErrorInfo& e) {
    err = e;
    err.node = step_->path;
    optional_failure = step_->optional;
    run_->summary.nodes_failed++;
    finish(Outcome::Failed);
  }

  // Forgets the task. A driver still working for it (timer, process, file job) is told to
  // stop first, so that nothing ever calls back into a freed task.
  void drop() {
    if (task_) {
      if (task_->cancel_hook) {
        auto hook = std::move(task_->cancel_hook);
        task_->cancel_hook = nullptr;
        hook();
      }
      s_->drop_task(task_.get());
      task_.reset();
    }
  }

  std::unique_ptr<Task> task_;
  std::unique_ptr<Timer> timeout_timer_, retry_timer_;
  int attempt_ = 0;  // the attempt row number (attempts interrupted by a crash included)
  int tries_ = 0;    // body attempts that count against retry.max
  bool in_fallback_ = false;
  int64_t started_ms_ = 0;
  uint64_t started_ns_ = 0;
  ErrorInfo last_err_;
};

// ---------------------------------------------------------------------------------------------
class SeqExec : public Exec {
 public:
  using Exec::Exec;
  void start(LuaRef in) override {
    input = std::move(in);
    if (step_->children.empty()) {
      output = dup(run_->L(), input);
      finish(Outcome::Succeeded);
      return;
    }
    start_child(0, dup(run_->L(), input));
  }
  void child_done(Exec* c) override {
    if (c->outcome == Outcome::Failed && !c->optional_failure) {
      err = c->err;
      finish(Outcome::Failed);
      return;
    }
    if (c->outcome == Outcome::Cancelled) {
      finish(Outcome::Cancelled);
      return;
    }
    LuaRef next_in = passthrough(c);
    if (index_ + 1 < step_->children.size()) {
      start_child(index_ + 1, std::move(next_in));
    } else {
      output = std::move(next_in);
      finish(Outcome::Succeeded);
    }
  }
  void cancel(const std::string& reason) override {
    if (done) return;
    if (current_ && !current_->done) current_->cancel(reason);
    done = true;
    outcome = Outcome::Cancelled;
  }

 private:
  void start_child(size_t i, LuaRef in) {
    index_ = i;
    children_.push_back(make_exec(s_, run_, step_->children[i].get(), this));
    current_ = children_.back().get();
    current_->start(std::move(in));
  }
  size_t index_ = 0;
  Exec* current_ = nullptr;
  std::vector<std::unique_ptr<Exec>> children_;
};

// ---------------------------------------------------------------------------------------------
class ParallelExec : public Exec {
 public:
  using Exec::Exec;
  void start(LuaRef in) override {
    input = std::move(in);
    size_t n = step_->children.size();
    need_ = step_->join == 0 ? static_cast<int>(n) : step_->join < 0 ? 1 : step_->join;
    lua_State* L = run_->L();
    lua_createtable(L, 0, static_cast<int>(n));
    output = LuaRef::pop(L);
    for (size_t i = 0; i < n; i++) children_.push_back(make_exec(s_, run_, step_->children[i].get(), this));
    launch();
  }
  void child_done(Exec* c) override {
    running_--;
    finished_++;
    bool ok = c->outcome == Outcome::Succeeded || c->outcome == Outcome::Skipped;
    if (ok) {
      ok_++;
      if (!c->output.empty()) {
        lua_State* L = run_->L();
        output.push(L);
        lua_pushlstring(L, c->step()->id.data(), c->step()->id.size());
        c->output.push(L);
        lua_rawset(L, -3);
        lua_pop(L, 1);
      }
    } else if (c->outcome == Outcome::Failed) {
      if (c->optional_failure && step_->join == 0) {
        tolerated_++;
      } else if (first_err_.type.empty()) {
        first_err_ = c->err;
      }
    }
    int total = static_cast<int>(children_.size());
    if (step_->join == 0) {
      if (c->outcome == Outcome::Failed && !c->optional_failure) {
        cancel_rest("branch '" + c->step()->id + "' failed");
        err = c->err;
        finish(Outcome::Failed);
        return;
      }
      if (finished_ == total) {
        finish(Outcome::Succeeded);
        return;
      }
    } else {
      if (ok_ >= need_) {
        cancel_rest("join satisfied");
        finish(Outcome::Succeeded);
        return;
      }
      int possible = ok_ + (total - finished_);
      if (possible < need_) {
        cancel_rest("join can no longer be satisfied");
        err = first_err_;
        err.message = "parallel '" + step_->id + "': " + std::to_string(ok_) + " of " +
                      std::to_string(total) + " branches succeeded, " + std::to_string(need_) +
                      " needed; first failure: " + first_err_.message;
        finish(Outcome::Failed);
        return;
      }
    }
    launch();
  }
  void cancel(const std::string& reason) override {
    if (done) return;
    cancel_rest(reason, false);
    done = true;
    outcome = Outcome::Cancelled;
  }

 private:
  void launch() {
    int limit = step_->max_concurrency > 0 ? step_->max_concurrency : INT32_MAX;
    while (next_ < children_.size() && running_ < limit) {
      running_++;
      children_[next_++]->start(dup(run_->L(), input));
    }
  }
  // Cancels running branches; branches not started yet are recorded as skipped when the
  // parallel step is settled (join satisfied or impossible), and left without a row when the
  // whole run is being cancelled.
  void cancel_rest(const std::string& reason, bool record_unstarted = true) {
    for (size_t i = 0; i < children_.size(); i++) {
      if (i < next_) {
        if (!children_[i]->done) children_[i]->cancel(reason);
      } else if (record_unstarted) {
        record_skipped_subtree(step_->children[i].get(), reason);
      }
    }
    next_ = children_.size();
  }
  std::vector<std::unique_ptr<Exec>> children_;
  size_t next_ = 0;
  int running_ = 0, finished_ = 0, ok_ = 0, tolerated_ = 0, need_ = 0;
  ErrorInfo first_err_;
};

// ---------------------------------------------------------------------------------------------
// when and switch: decide, record the decision, run the chosen branch.
class BranchExec : public Exec {
 public:
  using Exec::Exec;
  void start(LuaRef in) override {
    input = std::move(in);
    // A resumed run takes the branch it took before: the decision is part of the record.
    if (const auto* h = run_->history_of(step_->path)) {
      for (const auto& r : *h) {
        if (r.status != "succeeded") continue;
        json d = parse_json(r.output, nullptr);
        int chosen = -1;
        if (step_->kind == StepKind::When && d.is_object() && d.contains("branch"))
          chosen = d["branch"] == "then" ? 0 : 1;
        if (step_->kind == StepKind::Switch && d.is_object() && d.contains("case"))
          for (size_t i = 0; i < step_->case_keys.size(); i++)
            if (d["case"] == step_->case_keys[i]) chosen = static_cast<int>(i);
        if (chosen >= 0) {
          run_->summary.nodes_reused++;
          s_->notify(run_, "node.reused", step_->path, r.attempt, r.output);
          take(chosen);
          return;
        }
      }
    }
    ErrorInfo e;
    if (!call_predicate(step_->cond, &e)) {
      record_decision("failed", "", &e);
      err = e;
      run_->summary.nodes_failed++;
      finish(Outcome::Failed);
      return;
    }
    lua_State* L = run_->L();
    int chosen = -1;
    json decision;
    if (step_->kind == StepKind::When) {
      bool v = lua_toboolean(L, -1);
      lua_pop(L, 1);
      chosen = v ? 0 : 1;
      decision = {{"branch", v ? "then" : "else"}};
    } else {
      std::string key;
      if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
        key = lua_tostring(L, -1);
      } else if (lua_type(L, -1) == LUA_TBOOLEAN) {
        key = lua_toboolean(L, -1) ? "true" : "false";
      }
      bool valid = lua_type(L, -1) != LUA_TNIL && !key.empty();
      std::string tname = luaL_typename(L, -1);
      lua_pop(L, 1);
      for (size_t i = 0; valid && i < step_->case_keys.size(); i++)
        if (step_->case_keys[i] == key) chosen = static_cast<int>(i);
      for (size_t i = 0; chosen < 0 && i < step_->case_keys.size(); i++)
        if (step_->case_keys[i] == "default") chosen = static_cast<int>(i);
      if (chosen < 0) {
        std::string cases;
        for (auto& k : step_->case_keys) cases += (cases.empty() ? "" : ", ") + k;
        e = {"no_case",
             "switch '" + step_->id + "': the selector returned " +
                 (valid ? "'" + key + "'" : "a " + tname) +
                 " and there is no such case and no default (cases: " + cases + ")",
             step_->path, "", false, ""};
        record_decision("failed", "", &e);
        err = e;
        run_->summary.nodes_failed++;
        finish(Outcome::Failed);
        return;
      }
      decision = {{"case", step_->case_keys[chosen]}, {"value", key}};
    }
    record_decision("succeeded", dump_json(decision), nullptr);
    take(chosen);
  }

  void take(int chosen) {
    for (size_t i = 0; i < step_->children.size(); i++)
      if (static_cast<int>(i) != chosen)
        record_skipped_subtree(step_->children[i].get(), "branch not taken");
    Step* target = chosen < static_cast<int>(step_->children.size()) ? step_->children[chosen].get()
                                                                     : nullptr;
    if (!target) {  // when without else, condition false
      finish(Outcome::Skipped);
      return;
    }
    child_ = make_exec(s_, run_, target, this);
    child_->start(dup(run_->L(), input));
  }
  void child_done(Exec* c) override {
    err = c->err;
    optional_failure = c->optional_failure;
    if (!c->output.empty()) output = dup(run_->L(), c->output);
    if (c->outcome == Outcome::Succeeded && !output.empty()) {
      lua_State* L = run_->L();
      run_->outputs.push(L);
      lua_pushlstring(L, step_->id.data(), step_->id.size());
      output.push(L);
      lua_rawset(L, -3);
      lua_pop(L, 1);
    }
    finish(c->outcome);
  }
  void cancel(const std::string& reason) override {
    if (done) return;
    if (child_) child_->cancel(reason);
    done = true;
    outcome = Outcome::Cancelled;
  }

 private:
  std::unique_ptr<Exec> child_;
};

std::unique_ptr<Exec> make_exec(Scheduler* s, Run* run, Step* step, Exec* parent) {
  switch (step->kind) {
    case StepKind::Node: return std::make_unique<NodeExec>(s, run, step, parent);
    case StepKind::Seq: return std::make_unique<SeqExec>(s, run, step, parent);
    case StepKind::Parallel: return std::make_unique<ParallelExec>(s, run, step, parent);
    case StepKind::When:
    case StepKind::Switch: return std::make_unique<BranchExec>(s, run, step, parent);
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
Scheduler::Scheduler(Loop* loop, Store* store)
    : loop_(loop), store_(store), check_(new uv_check_t), idle_(new uv_idle_t) {
  std::random_device rd;
  rng_.seed((static_cast<uint64_t>(rd()) << 32) ^ rd());
  uv_check_init(loop_->get(), check_);
  check_->data = this;
  uv_check_start(check_, [](uv_check_t* h) { static_cast<Scheduler*>(h->data)->pump(); });
  // The check handle runs the pump every loop turn but must not keep the loop alive by itself.
  uv_unref(reinterpret_cast<uv_handle_t*>(check_));
  uv_idle_init(loop_->get(), idle_);
  idle_->data = this;
}

Scheduler::~Scheduler() {
  cancel_all("shutdown");
  queue_.clear();
  runs_.clear();
  finished_runs_.clear();
  store_->commit();
  processes_.kill_all();
  close_and_delete(check_);
  close_and_delete(idle_);
}

void Scheduler::defer(std::function<void()> fn) {
  queue_.push_back(std::move(fn));
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(idle_)))
    uv_idle_start(idle_, [](uv_idle_t*) {});  // keeps poll from blocking until the pump runs
}

void Scheduler::pump() {
  if (pumping_) return;
  pumping_ = true;
  while (!queue_.empty()) {
    store_->commit();
    if (store_->failed()) break;
    std::vector<std::function<void()>> batch;
    batch.swap(queue_);
    for (auto& fn : batch) fn();
  }
  store_->commit();
  if (store_->failed()) fail_fatal();
  finished_runs_.clear();
  if (queue_.empty()) uv_idle_stop(idle_);
  pumping_ = false;
}

void Scheduler::fail_fatal() {
  if (!fatal_.empty()) return;
  fatal_ = "store error: " + store_->error() + " (" + store_->path() + ")";
  fprintf(stderr, "orchrun: %s; stopping all runs\n", fatal_.c_str());
  queue_.clear();
  for (auto& [id, run] : runs_) run->root->cancel("store error");
  processes_.kill_all();
  uv_stop(loop_->get());
}

void Scheduler::resume(Task* task, int nargs) {
  uint64_t id = task->id;
  defer([this, id, nargs] {
    auto it = tasks_.find(id);
    if (it != tasks_.end()) run_task(it->second, nargs);
  });
}

Task* Scheduler::new_task(Run* run, void* owner, const std::string& node) {
  lua_State* L = run->L();
  auto* t = new Task();
  t->id = next_task_id_++;
  t->co = lua_newthread(L);
  t->thread = LuaRef::pop(L);
  t->node = node;
  t->engine = run->p->engine.get();
  t->owner = owner;
  t->engine->bind_task(t);
  tasks_[t->id] = t;
  return t;
}

void Scheduler::drop_task(Task* t) {
  tasks_.erase(t->id);
  t->engine->unbind_task(t);
  t->thread.reset();
  // The owner deletes the Task object itself.
}

void Scheduler::run_task(Task* t, int nargs) {
  LuaEngine* e = t->engine;
  e->current = t;
  int rc = lua_resume(t->co, nargs);
  e->current = nullptr;
  if (rc == LUA_YIELD) {
    if (t->waiting) return;
    // A plain coroutine.yield() in a node body: nothing would ever resume it.
    lua_settop(t->co, 0);
    lua_pushstring(t->co, "node body yielded outside an orchrun async call (coroutine.yield "
                          "cannot be used directly in a node; use o.sleep, o.exec, ...)");
    rc = LUA_ERRRUN;
  }
  static_cast<TaskOwner*>(t->owner)->task_finished(t, rc);
}

double Scheduler::random_unit() {
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
}

void Scheduler::emit(Run* run, const char* kind, const std::string& node, int attempt,
                     std::string data) {
  Event e;
  e.ts = wall_ms();
  e.kind = kind;
  e.run_id = run->id;
  e.trace_id = run->trace_id;
  e.pipeline = run->p->name;
  e.version = run->version;
  e.node = node;
  e.attempt = attempt;
  e.data = std::move(data);
  store_->insert_event(e);
  for (auto* s : sinks_) s->on_event(e);
}

void Scheduler::notify(Run* run, const char* kind, const std::string& node, int attempt,
                       std::string data) {
  if (sinks_.empty()) return;
  Event e;
  e.ts = wall_ms();
  e.kind = kind;
  e.run_id = run->id;
  e.trace_id = run->trace_id;
  e.pipeline = run->p->name;
  e.version = run->version;
  e.node = node;
  e.attempt = attempt;
  e.data = std::move(data);
  for (auto* s : sinks_) s->on_event(e);
}

void Scheduler::log(Task* task, std::string_view level, std::string_view message,
                    const std::string& fields_json) {
  if (!task || !task->owner) {
    fprintf(stderr, "[%.*s] %.*s\n", static_cast<int>(level.size()), level.data(),
            static_cast<int>(message.size()), message.data());
    return;
  }
  static_cast<TaskOwner*>(task->owner)->task_log(level, message, fields_json);
}

Run* Scheduler::make_run(Pipeline* p, const std::string& id, const std::string& trace_id,
                         int version, const json& input, int64_t started_ms) {
  auto run = std::make_unique<Run>();
  Run* r = run.get();
  r->id = id;
  r->trace_id = trace_id;
  r->p = p;
  r->version = version;
  r->started_ms = started_ms;
  lua_State* L = p->engine->L();
  push_json(L, input);
  r->input = LuaRef::pop(L);
  lua_newtable(L);
  r->outputs = LuaRef::pop(L);
  // Run-level ctx fields, shared by every attempt through __index.
  lua_createtable(L, 0, 2);
  lua_createtable(L, 0, 8);
  lua_pushlstring(L, r->id.data(), r->id.size());
  lua_setfield(L, -2, "run_id");
  lua_pushlstring(L, r->trace_id.data(), r->trace_id.size());
  lua_setfield(L, -2, "trace_id");
  lua_pushlstring(L, p->name.data(), p->name.size());
  lua_setfield(L, -2, "pipeline");
  lua_pushinteger(L, r->version);
  lua_setfield(L, -2, "version");
  r->input.push(L);
  lua_setfield(L, -2, "input");
  r->outputs.push(L);
  lua_setfield(L, -2, "outputs");
  p->engine->push_logger(L);
  lua_setfield(L, -2, "log");
  lua_setfield(L, -2, "__index");
  r->ctx_mt = LuaRef::pop(L);
  r->summary.run_id = r->id;
  r->summary.trace_id = r->trace_id;
  r->summary.pipeline = p->name;
  r->summary.version = r->version;
  r->root = make_exec(this, r, p->root.get(), nullptr);
  runs_[r->id] = std::move(run);
  return r;
}

std::string Scheduler::start_run(Pipeline* p, const RunOptions& opts, std::string* err) {
  int64_t now = wall_ms();
  auto def = store_->upsert_definition(p->name, p->sha256, p->source, p->file, now);
  if (!def) {
    *err = "store error: " + store_->error();
    return "";
  }
  std::string perr;
  json input = parse_json(opts.input_json, &perr);
  if (input.is_discarded()) {
    *err = "invalid input JSON: " + perr;
    return "";
  }
  Run* r = make_run(p, new_ulid(now), new_trace_id(), def->version, input, now);
  RunRow row;
  row.id = r->id;
  row.trace_id = r->trace_id;
  row.pipeline = p->name;
  row.version = r->version;
  row.status = "running";
  row.source = opts.source;
  row.environment = opts.environment;
  row.input = dump_json(input);
  row.created_at = now;
  row.started_at = now;
  row.idempotency_key = opts.idempotency_key;
  row.owner_pid = getpid();
  bool duplicate = false;
  store_->insert_run(row, &duplicate);
  if (duplicate) {
    *err = "duplicate idempotency key";
    runs_.erase(r->id);
    return "";
  }
  emit(r, "run.started", "", 0,
       dump_json(json{{"source", opts.source}, {"file", p->file}, {"sha256", p->sha256}}));
  if (store_->failed()) {
    *err = "store error: " + store_->error();
    runs_.erase(r->id);
    return "";
  }
  defer([this, r] {
    if (r->finished || r->root->done) return;  // cancelled before it started
    LuaRef in = dup(r->L(), r->input);
    r->root->start(std::move(in));
  });
  return r->id;
}

bool Scheduler::resume_run(Pipeline* p, const RunRow& row, std::string* err) {
  if (runs_.count(row.id)) {
    *err = "run " + row.id + " is already active here";
    return false;
  }
  std::string perr;
  json input = parse_json(row.input.empty() ? "{}" : row.input, &perr);
  if (input.is_discarded()) input = json::object();
  int64_t now = wall_ms();
  int interrupted = store_->mark_interrupted(row.id, now);
  Run* r = make_run(p, row.id, row.trace_id, row.version, input,
                    row.started_at ? row.started_at : row.created_at);
  for (auto& n : store_->node_runs(row.id)) {
    r->summary.attempts++;
    r->history[n.node_id].push_back(std::move(n));
  }
  store_->set_run_status(row.id, "running", now);
  emit(r, "run.resumed", "", 0,
       dump_json(json{{"pid", getpid()}, {"previous_owner", row.owner_pid},
                      {"interrupted_attempts", interrupted},
                      {"nodes_with_history", r->history.size()}}));
  if (store_->failed()) {
    *err = "store error: " + store_->error();
    runs_.erase(r->id);
    return false;
  }
  defer([this, r] {
    if (r->finished || r->root->done) return;  // cancelled before it started
    LuaRef in = dup(r->L(), r->input);
    r->root->start(std::move(in));
  });
  return true;
}

void Scheduler::run_finished(Run* r) {
  if (r->finished) return;
  r->finished = true;
  Exec* root = r->root.get();
  const char* status = "succeeded";
  if (!r->cancel_reason.empty() || root->outcome == Outcome::Cancelled)
    status = "cancelled";
  else if (root->outcome == Outcome::Failed)
    status = "failed";
  std::string out_json;
  if (std::string(status) == "succeeded" && !root->output.empty()) {
    lua_State* L = r->L();
    root->output.push(L);
    json j;
    std::string e;
    if (lua_to_json(L, lua_gettop(L), &j, &e)) out_json = dump_json(j);
    lua_settop(L, 0);
  }
  int64_t now = wall_ms();
  ErrorInfo e = root->err;
  if (std::string(status) == "cancelled") e = {"cancelled", r->cancel_reason, "", "", true, ""};
  if (std::string(status) == "succeeded") e = {};
  store_->finish_run(r->id, status, out_json, e.type, e.message, e.node, e.retryable, now);
  json d{{"duration_ms", now - r->started_ms}};
  if (!e.type.empty()) {
    d["error_type"] = e.type;
    d["message"] = e.message;
    d["node"] = e.node;
    d["retryable"] = e.retryable;
  }
  emit(r, (std::string("run.") + status).c_str(), "", 0, dump_json(d));
  store_->commit();
  RunSummary sum = r->summary;
  sum.status = status;
  sum.duration_ms = now - r->started_ms;
  sum.error_type = e.type;
  sum.error_message = e.message;
  sum.error_node = e.node;
  sum.output_json = out_json;
  auto it = runs_.find(r->id);
  if (it != runs_.end()) {
    finished_runs_.push_back(std::move(it->second));
    runs_.erase(it);
  }
  if (on_run_finished) on_run_finished(sum);
}

void Scheduler::cancel_run(const std::string& run_id, const std::string& reason) {
  auto it = runs_.find(run_id);
  if (it == runs_.end()) return;
  Run* r = it->second.get();
  if (r->finished) return;
  if (r->root->done && r->root->outcome != Outcome::Cancelled) return;  // finishing already
  r->cancel_reason = reason;
  r->root->cancel(reason);
  run_finished(r);
}

void Scheduler::cancel_all(const std::string& reason) {
  std::vector<std::string> ids;
  for (auto& [id, r] : runs_) ids.push_back(id);
  for (auto& id : ids) cancel_run(id, reason);
}

}  // namespace orch
