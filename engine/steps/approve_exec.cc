// Approval gates (engine/steps/gate.h) and the o.approve step.
#include "drivers/timer.h"
#include "engine/steps/gate.h"

namespace orch {

GateAttempt::GateAttempt(StepHost* s, Run* run, std::string path, Decided on_decided)
    : s_(s), run_(run), path_(std::move(path)), on_decided_(std::move(on_decided)) {}

GateAttempt::~GateAttempt() {
  stop_waiting();
}

void GateAttempt::open_row(int attempt, int64_t started_at) {
  attempt_ = attempt;
  started_ms_ = started_at;
  row_open_ = true;
  const char* kind = signal_ ? "signal" : "approval";
  s_->store()->insert_node_attempt(run_->id, path_, attempt_, kind, started_at, run_->run_attempt);
  s_->emit(run_, "node.started", path_, attempt_, dump_json(json{{"kind", kind}}));
  run_->summary.attempts++;
}

void GateAttempt::begin(const GateSpec& spec, int last_attempt) {
  attempt_ = last_attempt;
  signal_ = spec.kind == "signal";
  if (signal_) signal_name_ = spec.message;
  const char* row_kind = signal_ ? "signal" : "approval";
  // A row left open by the process that stopped while this gate waited.
  if (const auto* h = run_->history_of(path_))
    for (const auto& r : *h)
      if (r.attempt == last_attempt && r.kind == row_kind && r.status == NodeStatus::running &&
          r.run_attempt == run_->run_attempt) {
        row_open_ = true;
        started_ms_ = r.started_at;
      }
  Store* st = s_->store();
  auto a = st->approval(run_->id, path_);
  // The gate of an earlier attempt of the run (before `orchrun retry`) does not count, decided
  // or not: this attempt asks again, on a row of its own.
  if (a && a->run_attempt != run_->run_attempt) a.reset();
  int64_t now = wall_ms();
  if (!a) {
    ApprovalRow row;
    row.run_id = run_->id;
    row.node_id = path_;
    row.run_attempt = run_->run_attempt;
    row.kind = spec.kind;
    row.message = spec.message;
    json approvers = spec.approvers;
    row.approvers = spec.approvers.empty() ? "" : dump_json(approvers);
    row.requested_at = now;
    row.timeout_at = spec.timeout_ms > 0 ? now + spec.timeout_ms : 0;
    // A signal's: what its step does past the timeout (o.wait's on_timeout).
    row.on_timeout = signal_ ? (spec.approve_on_timeout ? "continue" : "fail")
                             : (spec.approve_on_timeout ? "approve" : "reject");
    st->insert_approval(row);
    open_row(last_attempt + 1, now);
    json d = spec.details.is_object() ? spec.details : json::object();
    if (signal_) {
      d["signal"] = spec.message;
    } else {
      d["message"] = spec.message;
      d["approvers"] = approvers;
    }
    d["gate"] = spec.kind;
    if (row.timeout_at) d["timeout_at"] = iso8601_ms(row.timeout_at);
    s_->emit(run_, "node.waiting", path_, attempt_, dump_json(d));
    wait(row.timeout_at);
    return;
  }
  if (a->status == ApprovalStatus::waiting) {
    if (a->timeout_at && now >= a->timeout_at) {
      time_out();
      return;
    }
    if (!row_open_) open_row(last_attempt + 1, a->requested_at);
    s_->notify(run_, "node.waiting", path_, attempt_,
               dump_json(json{{signal_ ? "signal" : "message", a->message},
                              {"gate", a->kind},
                              {"still_waiting", true}}));
    wait(a->timeout_at);
    return;
  }
  decided(*a);
}

void GateAttempt::poll() {
  if (!waiting_) return;
  auto a = s_->store()->approval(run_->id, path_);
  if (a && a->status != ApprovalStatus::waiting) decided(*a);
}

void GateAttempt::wait(int64_t timeout_at) {
  waiting_ = true;
  run_->waiting_gates++;
  if (signal_) run_->waiting_signals++;
  s_->add_gate(this);
  s_->gate_opened(run_);
  if (timeout_at > 0) {
    int64_t in_ms = std::max<int64_t>(0, timeout_at - wall_ms());
    timer_ = std::make_unique<Timer>(s_->loop());
    timer_->start(static_cast<uint64_t>(in_ms), [this] {
      timer_.reset();
      s_->defer([this, alive = std::weak_ptr<char>(alive_)] {
        if (!alive.expired() && waiting_) time_out();
      });
    });
    // A gate's deadline alone does not keep a one-shot alive; it is checked on resume too.
    timer_->unref();
  }
}

void GateAttempt::stop_waiting() {
  if (!waiting_) return;
  waiting_ = false;
  run_->waiting_gates--;
  if (signal_) run_->waiting_signals--;
  s_->remove_gate(this);
  timer_.reset();
  s_->gate_closed(run_);
}

void GateAttempt::time_out() {
  Store* st = s_->store();
  st->decide_approval(run_->id, path_, run_->run_attempt, ApprovalStatus::timed_out, "timeout", "",
                      wall_ms());
  auto a = st->approval(run_->id, path_);
  if (a) decided(*a);
}

void GateAttempt::decided(const ApprovalRow& a) {
  stop_waiting();
  // Decided before this process saw the gate open: give the decision its row.
  if (!row_open_) open_row(attempt_ + 1, a.requested_at);
  if (!started_ms_) started_ms_ = a.requested_at;
  on_decided_(a);
}

void GateAttempt::finish_row(const std::string& status, const std::string& output,
                             const std::string& type, const std::string& message) {
  NodeRunRow r;
  r.run_id = run_->id;
  r.node_id = path_;
  r.attempt = attempt_;
  r.status = status;
  r.finished_at = wall_ms();
  r.duration_ms = started_ms_ ? r.finished_at - started_ms_ : 0;
  r.output = output;
  r.error_type = type;
  r.error_message = message;
  run_->redact(&r.output);
  run_->redact(&r.error_message);
  s_->store()->finish_node_attempt(r);
  row_open_ = false;
}

void GateAttempt::cancel(const std::string& reason) {
  if (!waiting_) return;
  stop_waiting();
  finish_row("cancelled", "", "cancelled", reason);
  s_->emit(run_, "node.cancelled", path_, attempt_, dump_json(json{{"reason", reason}}));
  run_->summary.nodes_cancelled++;
}

json GateAttempt::decision_json(const ApprovalRow& a) {
  return json{{"approved", approved(a)},
              {"decision", a.status},
              {"by", a.decided_by},
              {"comment", a.comment},
              {"decided_at", iso8601_ms(a.decided_at)}};
}

ErrorInfo GateAttempt::refuse(const ApprovalRow& a) {
  std::string type = a.status == ApprovalStatus::timed_out ? "approval_timeout" : "rejected";
  std::string msg =
      a.status == ApprovalStatus::timed_out
          ? "no decision before the gate's timeout (on_timeout = reject)"
          : "rejected by " + a.decided_by + (a.comment.empty() ? "" : ": " + a.comment);
  finish_row("failed", "", type, msg);
  s_->emit(run_, "node.failed", path_, attempt_,
           dump_json(json{{"error_type", type},
                          {"message", msg},
                          {"retryable", false},
                          {"will_retry", false},
                          {"by", a.decided_by}}));
  return {type, msg, path_, "", false, ""};
}

LuaRef GateAttempt::accept(const ApprovalRow& a, const LuaRef& last) {
  lua_State* L = run_->L();
  json j;
  std::string e;
  last.push(L);
  if (!lua_to_json(L, lua_gettop(L), &j, &e)) j = json::object();
  lua_pop(L, 1);
  if (j.is_object()) j["review"] = decision_json(a);
  finish_row("succeeded", dump_json(j), "", "");
  s_->emit(run_, "node.succeeded", path_, attempt_,
           dump_json(json{{"via", "escalation"}, {"by", a.decided_by}}));
  push_json(L, j);
  return LuaRef::pop(L);
}

namespace {

class ApproveExec : public Exec {
 public:
  using Exec::Exec;

  void begin() override {
    int last = 0;
    if (const auto* h = run_->history_of(path_))
      for (const auto& r : *h) last = std::max(last, r.attempt);
    gate_ =
        std::make_unique<GateAttempt>(s_, run_, path_, [this](const ApprovalRow& a) { apply(a); });
    GateSpec spec;
    spec.message = step_->approve().message;
    spec.approvers = step_->approve().approvers;
    spec.timeout_ms = step_->approve().timeout_ms;
    spec.approve_on_timeout = step_->approve().approve_on_timeout;
    gate_->begin(spec, last);
  }

  void cancel(const std::string& reason) override {
    if (done) return;
    if (gate_) gate_->cancel(reason);
    mark_cancelled();
  }

 private:
  void apply(const ApprovalRow& a) {
    json out = GateAttempt::decision_json(a);
    int attempt = gate_->attempt();
    if (GateAttempt::approved(a)) {
      std::string oj = dump_json(out);
      gate_->finish_row("succeeded", oj, "", "");
      s_->emit(run_, "node.succeeded", path_, attempt, oj);
      succeed(out);
      return;
    }
    err = gate_->refuse(a);
    run_->summary.nodes_failed++;
    finish(Outcome::Failed);
  }

  std::unique_ptr<GateAttempt> gate_;
};

}  // namespace

std::unique_ptr<Exec> make_approve_exec(StepHost* s, Run* run, Step* step, Exec* parent,
                                        const std::string& prefix) {
  return std::make_unique<ApproveExec>(s, run, step, parent, prefix);
}

}  // namespace orch
