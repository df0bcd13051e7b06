// A human gate (o.approve). The gate writes an approvals row and waits: no handle keeps the
// loop alive for it, so a one-shot whose only remaining work is gates ends, and the run is
// parked as awaiting_approval. The decision (orchrun approve/reject) is read from the store:
// by the polling timer while the process still runs, or when the run is resumed.
#include "runtime/drivers/timer.h"
#include "runtime/exec/exec.h"

namespace orch {
namespace {

class ApproveExec : public Exec, public Gate {
 public:
  using Exec::Exec;
  ~ApproveExec() override { stop_waiting(); }

  void start(LuaRef in) override {
    input = std::move(in);
    if (const auto* h = run_->history_of(step_->path))
      for (const auto& r : *h) attempt_ = std::max(attempt_, r.attempt);
    Store* st = s_->store();
    auto a = st->approval(run_->id, step_->path);
    int64_t now = wall_ms();
    if (!a) {
      ApprovalRow row;
      row.run_id = run_->id;
      row.node_id = step_->path;
      row.message = step_->message;
      json approvers = step_->approvers;
      row.approvers = step_->approvers.empty() ? "" : dump_json(approvers);
      row.requested_at = now;
      row.timeout_at = step_->timeout_ms > 0 ? now + step_->timeout_ms : 0;
      row.on_timeout = step_->approve_on_timeout ? "approve" : "reject";
      st->insert_approval(row);
      attempt_++;
      started_ms_ = now;
      st->insert_node_attempt(run_->id, step_->path, attempt_, "approval", now, run_->run_attempt);
      s_->emit(run_, "node.started", step_->path, attempt_, R"({"kind":"approval"})");
      run_->summary.attempts++;
      json d{{"message", step_->message}, {"approvers", approvers}};
      if (row.timeout_at) d["timeout_at"] = iso8601_ms(row.timeout_at);
      s_->emit(run_, "node.waiting", step_->path, attempt_, dump_json(d));
      wait(row.timeout_at);
      return;
    }
    if (a->status == "waiting") {
      if (a->timeout_at && now >= a->timeout_at) {
        time_out();
        return;
      }
      s_->notify(run_, "node.waiting", step_->path, attempt_,
                 dump_json(json{{"message", a->message}, {"still_waiting", true}}));
      wait(a->timeout_at);
      return;
    }
    apply(*a);
  }

  // Gate: the scheduler's control timer asks whether someone decided meanwhile.
  void poll() override {
    if (done || !waiting_) return;
    auto a = s_->store()->approval(run_->id, step_->path);
    if (a && a->status != "waiting") apply(*a);
  }
  Run* gate_run() const override { return run_; }
  const std::string& gate_node() const override { return step_->path; }

  void cancel(const std::string& reason) override {
    if (done) return;
    if (waiting_) {
      stop_waiting();
      finish_row("cancelled", "", "cancelled", reason);
      s_->emit(run_, "node.cancelled", step_->path, attempt_, dump_json(json{{"reason", reason}}));
      run_->summary.nodes_cancelled++;
    }
    done = true;
    outcome = Outcome::Cancelled;
  }

 private:
  void wait(int64_t timeout_at) {
    waiting_ = true;
    run_->waiting_gates++;
    s_->add_gate(this);
    if (timeout_at > 0) {
      int64_t in_ms = std::max<int64_t>(0, timeout_at - wall_ms());
      timer_ = std::make_unique<Timer>(s_->loop());
      timer_->start(static_cast<uint64_t>(in_ms), [this] {
        timer_.reset();
        s_->defer([this] {
          if (!done && waiting_) time_out();
        });
      });
      // A gate's deadline alone does not keep a one-shot alive; it is checked on resume too.
      timer_->unref();
    }
  }

  void stop_waiting() {
    if (!waiting_) return;
    waiting_ = false;
    run_->waiting_gates--;
    s_->remove_gate(this);
    timer_.reset();
  }

  void time_out() {
    Store* st = s_->store();
    st->decide_approval(run_->id, step_->path, "timed_out", "timeout", "", wall_ms());
    auto a = st->approval(run_->id, step_->path);
    if (a) apply(*a);
  }

  void finish_row(const std::string& status, const std::string& output, const std::string& type,
                  const std::string& message) {
    NodeRunRow r;
    r.run_id = run_->id;
    r.node_id = step_->path;
    r.attempt = attempt_;
    r.status = status;
    r.finished_at = wall_ms();
    r.duration_ms = started_ms_ ? r.finished_at - started_ms_ : 0;
    r.output = output;
    r.error_type = type;
    r.error_message = message;
    s_->store()->finish_node_attempt(r);
  }

  void apply(const ApprovalRow& a) {
    stop_waiting();
    if (attempt_ == 0) {  // decided before this process saw the gate: give it its row
      attempt_ = 1;
      s_->store()->insert_node_attempt(run_->id, step_->path, attempt_, "approval", a.requested_at,
                                       run_->run_attempt);
      s_->emit(run_, "node.started", step_->path, attempt_, R"({"kind":"approval"})");
      run_->summary.attempts++;
    }
    if (!started_ms_) started_ms_ = a.requested_at;
    bool approved =
        a.status == "approved" || (a.status == "timed_out" && a.on_timeout == "approve");
    json out{{"approved", approved},
             {"decision", a.status},
             {"by", a.decided_by},
             {"comment", a.comment},
             {"decided_at", iso8601_ms(a.decided_at)}};
    if (approved) {
      std::string oj = dump_json(out);
      finish_row("succeeded", oj, "", "");
      s_->emit(run_, "node.succeeded", step_->path, attempt_, oj);
      lua_State* L = run_->L();
      push_json(L, out);
      output = LuaRef::pop(L);
      run_->outputs.push(L);
      lua_pushlstring(L, step_->id.data(), step_->id.size());
      output.push(L);
      lua_rawset(L, -3);
      lua_pop(L, 1);
      run_->summary.nodes_succeeded++;
      finish(Outcome::Succeeded);
      return;
    }
    std::string type = a.status == "timed_out" ? "approval_timeout" : "rejected";
    std::string msg =
        a.status == "timed_out"
            ? "no decision before the gate's timeout (on_timeout = reject)"
            : "rejected by " + a.decided_by + (a.comment.empty() ? "" : ": " + a.comment);
    finish_row("failed", "", type, msg);
    s_->emit(run_, "node.failed", step_->path, attempt_,
             dump_json(json{{"error_type", type},
                            {"message", msg},
                            {"retryable", false},
                            {"will_retry", false},
                            {"by", a.decided_by}}));
    err = {type, msg, step_->path, "", false, ""};
    run_->summary.nodes_failed++;
    finish(Outcome::Failed);
  }

  bool waiting_ = false;
  int attempt_ = 0;
  int64_t started_ms_ = 0;
  std::unique_ptr<Timer> timer_;
};

}  // namespace

std::unique_ptr<Exec> make_approve_exec(Scheduler* s, Run* run, Step* step, Exec* parent) {
  return std::make_unique<ApproveExec>(s, run, step, parent);
}

}  // namespace orch
