// o.wait: the step waits for a signal from outside. It is a gate (engine/steps/gate.h) whose
// approvals row has kind 'signal' and the signal's name as its message; delivering the signal
// (engine/control.cc deliver_signal) settles the row with the payload as its comment and the
// sender as decided_by. The wait is durable like a gate's: a one-shot parks the run (status
// waiting) and `orchrun resume` picks the payload up from the store.
#include "base/duration.h"
#include "engine/steps/gate.h"

namespace orch {
namespace {

class WaitExec : public Exec {
 public:
  using Exec::Exec;

  void begin() override {
    int last = 0;
    if (const auto* h = run_->history_of(path_))
      for (const auto& r : *h) {
        last = std::max(last, r.attempt);
        // The signal came (or the wait timed out and went on) before: an outside system sends
        // it once, so a resume or a retry keeps what it sent.
        if (r.status == NodeStatus::succeeded) {
          reuse_success(r);
          return;
        }
      }
    gate_ =
        std::make_unique<GateAttempt>(s_, run_, path_, [this](const ApprovalRow& a) { apply(a); });
    const WaitSpec& w = step_->wait();
    GateSpec spec;
    spec.kind = "signal";
    spec.message = w.signal;
    spec.timeout_ms = w.timeout_ms;
    spec.approve_on_timeout = w.continue_on_timeout;
    gate_->begin(spec, last);
  }

  void cancel(const std::string& reason) override {
    if (done) return;
    if (gate_) gate_->cancel(reason);
    mark_cancelled();
  }

 private:
  void apply(const ApprovalRow& a) {
    const WaitSpec& w = step_->wait();
    int attempt = gate_->attempt();
    if (a.status == ApprovalStatus::approved) {
      json payload = nullptr;
      if (!a.comment.empty()) {
        payload = parse_json(a.comment, nullptr);
        if (payload.is_discarded()) payload = a.comment;  // stored as text: kept as text
      }
      std::string oj = dump_json(payload);
      gate_->finish_row("succeeded", oj, "", "");
      s_->emit(run_, "node.succeeded", path_, attempt,
               dump_json(json{{"via", "signal"}, {"signal", w.signal}, {"by", a.decided_by}}));
      succeed(payload);
      return;
    }
    if (a.status == ApprovalStatus::timed_out && w.continue_on_timeout) {
      json out{{"timed_out", true}, {"signal", w.signal}};
      std::string oj = dump_json(out);
      gate_->finish_row("succeeded", oj, "", "");
      s_->emit(run_, "node.succeeded", path_, attempt,
               dump_json(json{{"via", "timeout"}, {"signal", w.signal}}));
      succeed(out);
      return;
    }
    std::string type = a.status == ApprovalStatus::timed_out ? "signal_timeout" : "signal_refused";
    std::string msg =
        a.status == ApprovalStatus::timed_out
            ? "no signal '" + w.signal + "' within " + format_duration_ms(w.timeout_ms) +
                  " (on_timeout = fail)"
            : "the wait for signal '" + w.signal + "' was closed: " + to_string(a.status) +
                  (a.decided_by.empty() ? "" : " by " + a.decided_by);
    gate_->finish_row("failed", "", type, msg);
    s_->emit(run_, "node.failed", path_, attempt,
             dump_json(json{{"error_type", type},
                            {"message", msg},
                            {"retryable", false},
                            {"will_retry", false},
                            {"signal", w.signal}}));
    err = {type, msg, path_, "", false, ""};
    run_->summary.nodes_failed++;
    finish(Outcome::Failed);
  }

  std::unique_ptr<GateAttempt> gate_;
};

}  // namespace

std::unique_ptr<Exec> make_wait_exec(StepHost* s, Run* run, Step* step, Exec* parent,
                                     const std::string& prefix) {
  return std::make_unique<WaitExec>(s, run, step, parent, prefix);
}

}  // namespace orch
