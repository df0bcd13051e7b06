// A node: its attempts, retries with backoff, timeout, fallback, optional, skip_if, and what a
// resumed run reuses from the store.
#include <uv.h>

#include "runtime/drivers/timer.h"
#include "runtime/duration.h"
#include "runtime/exec/exec.h"
#include "runtime/signals.h"

namespace orch {
namespace {

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
                 dump_json(json{{"error_type", e.type},
                                {"message", e.message},
                                {"retryable", false},
                                {"will_retry", false}}));
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
                  std::string("node must return a table (or nothing), got ") + luaL_typename(co, 1),
                  step_->path,
                  "",
                  false,
                  ""};
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
    const NodeRunRow* last = nullptr;
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
        s_->notify(run_, "node.skipped", step_->path, r.attempt,
                   R"({"reason":"skipped before the resume"})");
        finish(Outcome::Skipped);
        return true;
      }
      // Failures of an earlier attempt of the whole run (before `orchrun retry`) do not count:
      // retrying a run runs its failed nodes again with their full retry budget.
      if (r.run_attempt != run_->run_attempt) continue;
      last = &r;
      if (r.kind == "fallback") fallback_row = &r;
      if (r.kind == "body" && r.status == "failed" && r.error_type != "interrupted") tries_++;
    }
    attempt_ = max_attempt;
    if (!last) {
      begin_attempt(attempt_ + 1, false);
      return true;
    }
    ErrorInfo e{last->error_type, last->error_message, step_->path,
                last->traceback,  last->retryable,     ""};
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
                     (last->status == "failed" && last->error_type != "interrupted" &&
                      last->error_type != "cancelled" && !last->retryable);
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
    s_->store()->insert_node_attempt(run_->id, step_->path, attempt, kind, started_ms_,
                                     run_->run_attempt);
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
    failure({"timeout", "timed out after " + format_duration_ms(step_->timeout_ms), step_->path, "",
             true, ""});
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
    for (std::string* text : {&r.output, &r.error_message, &r.traceback}) run_->redact(text);
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
    json d{{"error_type", e.type},
           {"message", e.message},
           {"retryable", e.retryable},
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

}  // namespace

std::unique_ptr<Exec> make_node_exec(Scheduler* s, Run* run, Step* step, Exec* parent) {
  return std::make_unique<NodeExec>(s, run, step, parent);
}

}  // namespace orch
