// A node: its attempts, retries with backoff, timeout, fallback, optional, skip_if, and what a
// resumed run reuses from the store.
#include <unistd.h>
#include <uv.h>

#include <algorithm>

#include "base/duration.h"
#include "bindings/async_op.h"
#include "drivers/signals.h"
#include "drivers/timer.h"
#include "engine/steps/exec.h"
#include "engine/steps/gate.h"

namespace orch {
namespace {

// What a node's output says about the work it judged (o.verdict).
struct Verdict {
  std::string kind, reason;  // pass | retryable | needs_human_review
  LuaRef output;
  std::string output_json;
};

class NodeExec : public Exec, public TaskOwner, public SlotWaiter {
 public:
  using Exec::Exec;
  ~NodeExec() override {
    drop();
    release_slot();
  }

  void begin() override {
    if (const auto* h = run_->history_of(path_)) {
      if (replay(*h)) return;
    }
    if (!step_->node().skip_if.empty()) {
      ErrorInfo e;
      if (!call_predicate(step_->node().skip_if, &e)) {
        e.message = "skip_if failed: " + e.message;
        begin_row(attempt_ + 1, "body");
        finish_row("failed", "", e);
        s_->emit(run_, "node.failed", path_, attempt_,
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
        record_skipped_subtree(step_, prefix_, "skip_if");
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
    if (gate_ && gate_->waiting()) {
      gate_->cancel(reason);
      release_slot();
      mark_cancelled();
      return;
    }
    release_slot();
    if (task_) {
      cancel_wait(task_.get());
      drop();
      finish_row("cancelled", "", {"cancelled", reason, path_, "", false, ""});
    }
    s_->emit(run_, "node.cancelled", path_, attempt_, dump_json(json{{"reason", reason}}));
    run_->summary.nodes_cancelled++;
    mark_cancelled();
  }

  void task_log(std::string_view level, std::string_view message,
                const std::string& fields_json) override {
    json d{{"level", std::string(level)}, {"message", std::string(message)}};
    if (!fields_json.empty()) d["fields"] = parse_json(fields_json, nullptr);
    s_->emit(run_, "log", path_, attempt_, dump_json(d));
  }

  void task_finished(Task* t, int status) override {
    timeout_timer_.reset();
    lua_State* L = run_->L();
    lua_State* co = t->co;
    if (status != 0 && interrupt_requested()) {
      // Ctrl-C stopped the body; the loop is about to cancel the run.
      ErrorInfo e = error_from(L, co, false);
      drop();
      finish_row("cancelled", "", {"cancelled", e.message, path_, e.traceback, true, ""});
      return;
    }
    if (status != 0) {
      ErrorInfo e = error_from(L, co, t->timed_out);
      if (t->timed_out) {
        // The hook's message starts with where the body was when it was stopped.
        std::string where = e.message.substr(0, e.message.find("timeout: node ran past"));
        if (where.size() > 2) where = " at " + where.substr(0, where.size() - 2);
        e.message = "timed out after " + format_duration_ms(step_->node().timeout_ms) + where +
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
                  path_,
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
      failure({"bad_output", "output cannot be stored: " + err, path_, "", false, ""});
      return;
    }
    Verdict v;
    std::string bad;
    if (!read_verdict(L, lua_gettop(L), &v, &bad)) {
      lua_pop(L, 1);
      failure({"bad_output", bad, path_, "", false, ""});
      return;
    }
    LuaRef out = LuaRef::pop(L);
    if (v.kind == "retryable" || v.kind == "needs_human_review") {
      v.output = std::move(out);
      v.output_json = dump_json(j);
      verdict_failure(std::move(v));
      return;
    }
    success(std::move(out), dump_json(j), v.kind, v.reason);
  }

  bool task_where(Run** run, std::string* node, int* attempt) override {
    *run = run_;
    *node = path_;
    *attempt = attempt_;
    return true;
  }

  bool task_artifact(ArtifactRow a, std::string* record, std::string* err) override {
    a.run_id = run_->id;
    a.node_id = path_;
    a.attempt = attempt_;
    a.created_at = wall_ms();
    a.id = s_->store()->insert_artifact(a);
    if (!a.id) {
      *err = "store error: " + s_->store()->error();
      return false;
    }
    json rec = artifact_json(a, run_->workspace);
    s_->emit(run_, "artifact.recorded", path_, attempt_, dump_json(rec));
    artifacts_.push_back(rec);
    *record = dump_json(rec);
    return true;
  }

  // o.ingest: the incidents go to the store in the open transaction (committed with the
  // node's other writes); the first one becomes the run's, and every later event carries it.
  bool task_incidents(const std::string& incidents_json, std::string* records,
                      std::string* err) override {
    json list = parse_json(incidents_json, nullptr);
    if (!list.is_array()) {
      *err = "incidents must be a list";
      return false;
    }
    std::vector<IncidentIn> in;
    for (const json& j : list) {
      if (!j.is_object()) {
        *err = "each incident must be an object";
        return false;
      }
      IncidentIn a;
      a.fingerprint = j.value("fingerprint", "");
      a.title = j.value("title", "");
      a.severity = j.value("severity", "unknown");
      a.status = j.value("status", "firing");
      a.source = j.value("source", "generic");
      a.labels = dump_json(j.value("labels", json::object()));
      a.annotations = dump_json(j.value("annotations", json::object()));
      a.starts_at = j.value("starts_at", "");
      a.ends_at = j.value("ends_at", "");
      if (a.fingerprint.empty() || a.title.empty() ||
          (a.status != "firing" && a.status != "resolved")) {
        *err = "an incident needs a fingerprint, a title and a status of firing or resolved";
        return false;
      }
      run_->redact(&a.title);
      run_->redact(&a.labels);
      run_->redact(&a.annotations);
      in.push_back(std::move(a));
    }
    Store* st = s_->store();
    std::vector<IncidentRow> rows = st->record_incidents(in, run_->id, path_, attempt_, wall_ms());
    if (st->failed()) {
      *err = "store error: " + st->error();
      return false;
    }
    if (run_->incident_id == 0 && !rows.empty()) {
      run_->incident_id = rows[0].id;
      run_->fingerprint = rows[0].fingerprint;
      st->set_run_incident(run_->id, rows[0].id, rows[0].fingerprint);
    }
    json out = json::array();
    for (const IncidentRow& r : rows) {
      json rec{{"id", r.id},       {"fingerprint", r.fingerprint}, {"status", r.status},
               {"count", r.count}, {"first_seen", r.first_seen},   {"last_seen", r.last_seen},
               {"new", r.is_new}};
      if (r.resolved_at) rec["resolved_at"] = r.resolved_at;
      s_->emit(run_, "incident.recorded", path_, attempt_,
               dump_json(json{{"incident_id", r.id},
                              {"fingerprint", r.fingerprint},
                              {"title", r.title},
                              {"severity", r.severity},
                              {"status", r.status},
                              {"count", r.count},
                              {"new", r.is_new}}));
      out.push_back(std::move(rec));
    }
    *records = dump_json(out);
    return true;
  }

  bool task_use_artifact(const std::string& name, std::string* record, std::string* err) override {
    lua_State* L = run_->L();
    run_->artifacts.push(L);
    lua_pushlstring(L, name.data(), name.size());
    lua_rawget(L, -2);
    json rec;
    std::string cerr;
    bool found = lua_istable(L, -1) && lua_to_json(L, lua_gettop(L), &rec, &cerr);
    std::string known;
    if (!found) {
      lua_pop(L, 1);
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING)
          known += (known.empty() ? "" : ", ") + std::string(lua_tostring(L, -1));
      }
      lua_pop(L, 1);
      *err =
          "no upstream artifact named '" + name + "'" +
          (known.empty() ? " (no node before this one recorded any)" : " (known: " + known + ")");
      return false;
    }
    lua_pop(L, 2);
    s_->store()->insert_artifact_use(rec.value("id", int64_t{0}), run_->id, path_, attempt_,
                                     wall_ms());
    s_->emit(run_, "artifact.used", path_, attempt_,
             dump_json(json{{"name", name}, {"from", rec.value("node", "")}}));
    *record = dump_json(rec);
    return true;
  }

  // SlotWaiter: the node waits for a slot of its concurrency key.
  const std::string& slot_key() const override { return step_->node().concurrency_key; }
  void try_slot() override {
    if (done || !queued_) return;
    if (acquire()) {
      queued_ = false;
      s_->remove_slot_waiter(this);
      slot_timer_.reset();
      auto go = std::move(after_slot_);
      go();
    }
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
      if (r.status == NodeStatus::succeeded) {
        attempt_ = r.attempt;
        reuse_success(r);
        return true;
      }
      // A step a graph skipped because of its upstream, in an earlier attempt of the run: the
      // graph decided again this time (after `orchrun retry`), and it is to run.
      if (r.status == NodeStatus::skipped && r.run_attempt != run_->run_attempt &&
          r.error_message.rfind("upstream_", 0) == 0)
        continue;
      if (r.status == NodeStatus::skipped) {
        run_->summary.nodes_skipped++;
        s_->notify(run_, "node.skipped", path_, r.attempt,
                   R"({"reason":"skipped before the resume"})");
        finish(Outcome::Skipped);
        return true;
      }
      // Failures of an earlier attempt of the whole run (before `orchrun retry`) do not count:
      // retrying a run runs its failed nodes again with their full retry budget.
      if (r.run_attempt != run_->run_attempt) continue;
      last = &r;
      if (r.kind == "fallback") fallback_row = &r;
      if (r.kind == "body" && r.status == NodeStatus::failed && r.error_type != "interrupted")
        tries_++;
    }
    attempt_ = max_attempt;
    if (!last) {
      begin_attempt(attempt_ + 1, false);
      return true;
    }
    ErrorInfo e{last->error_type, last->error_message, path_, last->traceback, last->retryable, ""};
    // A verdict that asked for a person (or ran out of retries), or an escalation in progress.
    const NodeRunRow* verdict_row = nullptr;
    for (const auto& r : rows)
      if (r.run_attempt == run_->run_attempt && !r.verdict.empty() && r.verdict != "pass")
        verdict_row = &r;
    bool escalating = last->kind == "approval" ||
                      (last == verdict_row && (last->verdict == "needs_human_review" ||
                                               tries_ >= step_->node().retry.max_attempts));
    if (last->kind == "approval" &&
        last->status == NodeStatus::failed) {  // the escalation was refused
      fail_final(e);
      return true;
    }
    if (verdict_row && escalating) {
      last_err_ = e;
      Verdict v;
      v.kind = verdict_row->verdict;
      v.reason = verdict_row->verdict_reason;
      v.output_json = verdict_row->output;
      v.output = stored_output(v.output_json);
      if (step_->node().escalate.enabled)
        escalate(std::move(v));
      else
        fail_final(e);
      return true;
    }
    if (fallback_row) {
      if (fallback_row->error_type == "interrupted") {
        last_err_ = e;
        begin_attempt(attempt_ + 1, true);
      } else {
        fail_final(e);
      }
      return true;
    }
    bool exhausted = tries_ >= step_->node().retry.max_attempts ||
                     (last->status == NodeStatus::failed && last->error_type != "interrupted" &&
                      last->error_type != "cancelled" && !last->retryable);
    if (exhausted) {
      if (!step_->node().fallback.empty()) {
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
    s_->store()->insert_node_attempt(run_->id, path_, attempt, kind, started_ms_,
                                     run_->run_attempt);
    s_->emit(run_, "node.started", path_, attempt, in_fallback_ ? R"({"kind":"fallback"})" : "{}");
    run_->summary.attempts++;
  }

  void begin_attempt(int attempt, bool fallback) {
    // Shutting down: the attempt is not started; the next start resumes the run here.
    if (s_->draining()) return;
    if (!step_->node().concurrency_key.empty() && !holding_) {
      if (!acquire()) {
        queue_for_slot([this, attempt, fallback] { begin_attempt(attempt, fallback); });
        return;
      }
    }
    in_fallback_ = fallback;
    artifacts_.clear();
    if (!fallback) tries_++;
    begin_row(attempt, fallback ? "fallback" : "body");
    task_.reset(s_->new_task(run_, static_cast<TaskOwner*>(this), path_));
    lua_State* co = task_->co;
    (fallback ? step_->node().fallback : step_->node().fn).push(co);
    push_ctx(co, path_, attempt);
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
    if (step_->node().timeout_ms > 0) {
      task_->deadline_ns = started_ns_ + static_cast<uint64_t>(step_->node().timeout_ms) * 1000000;
      timeout_timer_ = std::make_unique<Timer>(s_->loop());
      timeout_timer_->start(static_cast<uint64_t>(step_->node().timeout_ms),
                            [this] { on_timeout(); });
    }
    s_->run_task(task_.get(), nargs);
  }

  void on_timeout() {
    timeout_timer_.reset();
    if (!task_) return;
    cancel_wait(task_.get());  // stops the timer, kills the process group, ...
    drop();
    failure({"timeout", "timed out after " + format_duration_ms(step_->node().timeout_ms), path_,
             "", true, ""});
  }

  void finish_row(const std::string& status, const std::string& output, const ErrorInfo& e,
                  const std::string& verdict = "", const std::string& reason = "") {
    NodeRunRow r;
    r.verdict = verdict;
    r.verdict_reason = reason;
    r.run_id = run_->id;
    r.node_id = path_;
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

  void success(LuaRef out, const std::string& out_json, const std::string& verdict = "",
               const std::string& reason = "") {
    finish_row("succeeded", out_json, {}, verdict, reason);
    int64_t dur = static_cast<int64_t>((uv_hrtime() - started_ns_) / 1000000);
    json d{{"duration_ms", dur}};
    if (in_fallback_) d["via"] = "fallback";
    if (!verdict.empty()) d["verdict"] = verdict;
    if (!reason.empty()) d["reason"] = reason;
    s_->emit(run_, "node.succeeded", path_, attempt_, dump_json(d));
    settle_success(std::move(out));
  }

  // A verdict of retryable or needs_human_review: the attempt failed, with its output kept.
  // Inside a loop, a verdict the node's own retries cannot settle goes to the loop: the node
  // succeeds with it, and the loop runs another iteration (or escalates when it is at its max).
  void verdict_failure(Verdict v) {
    bool will_retry = v.kind == "retryable" && tries_ < step_->node().retry.max_attempts;
    if (!will_retry && scope_.iteration > 0) {
      success(std::move(v.output), v.output_json, v.kind, v.reason);
      return;
    }
    ErrorInfo e{"verdict",
                "verdict " + v.kind + (v.reason.empty() ? "" : " (" + v.reason + ")"),
                path_,
                "",
                v.kind == "retryable",
                ""};
    failure(e, &v);
  }

  void failure(ErrorInfo e, Verdict* v = nullptr) {
    e.node = path_;
    finish_row("failed", v ? v->output_json : "", e, v ? v->kind : "", v ? v->reason : "");
    bool will_retry = !in_fallback_ && e.retryable && tries_ < step_->node().retry.max_attempts;
    int64_t delay = will_retry ? step_->node().retry.delay_ms(attempt_ + 1, s_->random_unit()) : 0;
    // A server that said when to come back (HTTP 429/503 Retry-After, as the o.http-based
    // drivers report it in details.retry_after_ms) is honoured: the retry waits at least that
    // long, up to an hour.
    int64_t retry_after = 0;
    if (will_retry && !e.details.empty()) {
      json det = parse_json(e.details, nullptr);
      if (det.is_object() && det.contains("retry_after_ms") && det["retry_after_ms"].is_number())
        retry_after = std::clamp<int64_t>(det["retry_after_ms"].get<int64_t>(), 0, 3600000);
      delay = std::max(delay, retry_after);
    }
    json d{{"error_type", e.type},
           {"message", e.message},
           {"retryable", e.retryable},
           {"will_retry", will_retry}};
    if (will_retry) d["retry_in_ms"] = delay;
    if (retry_after > 0) d["retry_after_ms"] = retry_after;
    bool escalating = v && !will_retry && step_->node().escalate.enabled;
    if (!will_retry && !in_fallback_ && !step_->node().fallback.empty() && !v) d["fallback"] = true;
    if (v) {
      d["verdict"] = v->kind;
      if (!v->reason.empty()) d["reason"] = v->reason;
      if (escalating) d["escalate"] = true;
    }
    if (!e.details.empty()) d["details"] = parse_json(e.details, nullptr);
    s_->emit(run_, "node.failed", path_, attempt_, dump_json(d));
    last_err_ = e;
    if (will_retry) {
      int next = attempt_ + 1;
      retry_timer_ = std::make_unique<Timer>(s_->loop());
      retry_timer_->start(static_cast<uint64_t>(delay), [this, next] {
        retry_timer_.reset();
        s_->defer(guarded([this, next] {
          if (!done) begin_attempt(next, false);
        }));
      });
      return;
    }
    if (v) {
      if (escalating)
        escalate(std::move(*v));
      else
        fail_final(e);
      return;
    }
    if (!in_fallback_ && !step_->node().fallback.empty()) {
      int next = attempt_ + 1;
      s_->defer(guarded([this, next] {
        if (!done) begin_attempt(next, true);
      }));
      return;
    }
    fail_final(e);
  }

  void fail_final(const ErrorInfo& e) {
    err = e;
    err.node = path_;
    optional_failure = step_->node().optional;
    run_->summary.nodes_failed++;
    release_slot();
    finish(Outcome::Failed);
  }

  // The node cannot settle by itself: a person decides. Approving accepts the last output.
  void escalate(Verdict v) {
    escalated_ = std::move(v);
    gate_ = std::make_unique<GateAttempt>(s_, run_, path_,
                                          [this](const ApprovalRow& a) { escalation_decided(a); });
    GateSpec spec;
    spec.kind = "escalation";
    const Escalation& x = step_->node().escalate;
    std::string why = escalated_.kind == "needs_human_review"
                          ? "needs human review"
                          : "is still retryable after " + std::to_string(tries_) + " attempt" +
                                (tries_ == 1 ? "" : "s");
    spec.message = !x.message.empty()
                       ? x.message
                       : "node '" + path_ + "' " + why +
                             (escalated_.reason.empty() ? "" : " (" + escalated_.reason + ")") +
                             ": approve to accept its last output, reject to fail it";
    spec.approvers = x.approvers;
    spec.timeout_ms = x.timeout_ms;
    spec.approve_on_timeout = x.approve_on_timeout;
    spec.details = {{"verdict", escalated_.kind}, {"reason", escalated_.reason}, {"tries", tries_}};
    gate_->begin(spec, attempt_);
  }

  void escalation_decided(const ApprovalRow& a) {
    attempt_ = gate_->attempt();
    if (!GateAttempt::approved(a)) {
      fail_final(gate_->refuse(a));
      return;
    }
    // The accepted output: the last one the node produced, with the review that accepted it.
    settle_success(gate_->accept(a, escalated_.output));
  }

  // The node's artifacts join ctx.artifacts, its slot is given back, and it succeeds with `out`.
  void settle_success(LuaRef out) {
    for (auto& rec : artifacts_) publish_artifact(rec);
    release_slot();
    succeed(std::move(out));
  }

  // Reads output.verdict / output.reason (raw: no metamethods) of the table at `idx`.
  static bool read_verdict(lua_State* L, int idx, Verdict* v, std::string* bad) {
    lua_pushstring(L, "verdict");
    lua_rawget(L, idx);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      return true;
    }
    v->kind = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    lua_pop(L, 1);
    if (v->kind != "pass" && v->kind != "retryable" && v->kind != "needs_human_review") {
      *bad = "output.verdict must be \"pass\", \"retryable\" or \"needs_human_review\" " +
             std::string("(see o.verdict), got ") +
             (v->kind.empty() ? "a value that is not a string" : "'" + v->kind + "'");
      return false;
    }
    lua_pushstring(L, "reason");
    lua_rawget(L, idx);
    if (lua_type(L, -1) == LUA_TSTRING) v->reason = lua_tostring(L, -1);
    lua_pop(L, 1);
    return true;
  }

  // --- concurrency keys ---
  bool acquire() {
    holding_ =
        s_->store()->acquire_slot(step_->node().concurrency_key, step_->node().concurrency_limit,
                                  run_->id, path_, getpid(), wall_ms(), &queue_position_);
    return holding_;
  }
  void queue_for_slot(std::function<void()> then) {
    after_slot_ = std::move(then);
    if (!queued_) {
      queued_ = true;
      s_->emit(run_, "node.queued", path_, attempt_ + 1,
               dump_json(json{{"concurrency_key", step_->node().concurrency_key},
                              {"limit", step_->node().concurrency_limit},
                              {"ahead", queue_position_}}));
      s_->add_slot_waiter(this);
    }
    // Slots held by other processes are released without telling us: look again regularly.
    // The timer keeps a one-shot alive while it waits.
    slot_timer_ = std::make_unique<Timer>(s_->loop());
    slot_timer_->start(
        200, [this] { s_->defer(guarded([this] { try_slot(); })); }, 200);
  }
  void release_slot() {
    if (queued_) {
      queued_ = false;
      s_->remove_slot_waiter(this);
      slot_timer_.reset();
      s_->store()->release_slot(run_->id, path_);  // our place in the queue
    }
    if (!holding_) return;
    holding_ = false;
    s_->store()->release_slot(run_->id, path_);
    s_->slot_released(step_->node().concurrency_key);
  }

  // Forgets the task. A driver still working for it (timer, process, file job) is told to
  // stop first, so that nothing ever calls back into a freed task.
  void drop() {
    if (task_) {
      cancel_wait(task_.get());
      s_->drop_task(task_.get());
      task_.reset();
    }
  }

  std::unique_ptr<Task> task_;
  std::unique_ptr<Timer> timeout_timer_, retry_timer_, slot_timer_;
  std::unique_ptr<GateAttempt> gate_;
  Verdict escalated_;
  bool holding_ = false, queued_ = false;
  int queue_position_ = 0;
  std::function<void()> after_slot_;
  std::vector<json> artifacts_;  // recorded by the current attempt
  int attempt_ = 0;  // the attempt row number (attempts interrupted by a crash included)
  int tries_ = 0;    // body attempts that count against retry.max
  bool in_fallback_ = false;
  int64_t started_ms_ = 0;
  uint64_t started_ns_ = 0;
  ErrorInfo last_err_;
};

}  // namespace

std::unique_ptr<Exec> make_node_exec(StepHost* s, Run* run, Step* step, Exec* parent,
                                     const std::string& prefix) {
  return std::make_unique<NodeExec>(s, run, step, parent, prefix);
}

}  // namespace orch
