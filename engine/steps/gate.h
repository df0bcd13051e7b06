// Approval gates: the wait for a person's decision, shared by o.approve and by escalations
// (a node's needs_human_review verdict, retryable verdicts past the retry cap, a loop that
// reached its max). The gate writes an approvals row and waits: no handle keeps the loop alive
// for it, so a one-shot whose only remaining work is gates ends, and the run is parked as
// awaiting_approval. The decision (orchrun approve/reject) is read from the store: by the
// scheduler's polling timer while the process still runs, or when the run is resumed.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/steps/exec.h"

namespace orch {

class Timer;

struct GateSpec {
  std::string kind = "gate";  // gate | escalation | signal (message: the signal's name)
  std::string message;
  std::vector<std::string> approvers;
  int64_t timeout_ms = 0;
  bool approve_on_timeout = false;
  json details;  // added to the node.waiting event (e.g. the verdict that escalated)
};

// One approval attempt of a step: its node_runs row (kind 'approval'), its events, the
// approvals row, and the wait.
class GateAttempt : public Gate {
 public:
  using Decided = std::function<void(const ApprovalRow&)>;
  GateAttempt(StepHost* s, Run* run, std::string path, Decided on_decided);
  ~GateAttempt() override;
  GateAttempt(const GateAttempt&) = delete;
  GateAttempt& operator=(const GateAttempt&) = delete;

  // Opens the gate, or rejoins the one this run attempt already has (after a resume).
  // `last_attempt` is the highest attempt number the step has on record. Calls on_decided at
  // once when the decision is already there.
  void begin(const GateSpec& spec, int last_attempt);
  // Writes the outcome of the approval row once decided.
  void finish_row(const std::string& status, const std::string& output, const std::string& type,
                  const std::string& message);
  // Stops waiting and records the attempt as cancelled.
  void cancel(const std::string& reason);
  bool waiting() const { return waiting_; }
  int attempt() const { return attempt_; }

  // Gate
  void poll() override;
  Run* gate_run() const override { return run_; }
  const std::string& gate_node() const override { return path_; }
  bool is_signal() const override { return signal_; }
  std::string signal_name() const override { return signal_ ? signal_name_ : ""; }

  // The step output of an approved gate.
  static json decision_json(const ApprovalRow& a);
  static bool approved(const ApprovalRow& a) {
    return a.status == ApprovalStatus::approved ||
           (a.status == ApprovalStatus::timed_out && a.on_timeout == "approve");
  }
  // Settles the approval row of a gate that was not approved (rejected, or timed out with
  // on_timeout = reject) and emits node.failed; returns the step's error.
  ErrorInfo refuse(const ApprovalRow& a);
  // Settles the approval row of an approved escalation: the accepted output is `last` (what
  // the node or the loop produced last) with `review` added; emits node.succeeded.
  LuaRef accept(const ApprovalRow& a, const LuaRef& last);

 private:
  void wait(int64_t timeout_at);
  void stop_waiting();
  void time_out();
  void decided(const ApprovalRow& a);
  void open_row(int attempt, int64_t started_at);

  StepHost* s_;
  Run* run_;
  std::string path_;
  Decided on_decided_;
  bool waiting_ = false;
  bool signal_ = false;  // a wait for a signal (o.wait), not for a person
  std::string signal_name_;
  bool row_open_ = false;
  int attempt_ = 0;
  int64_t started_ms_ = 0;
  std::unique_ptr<Timer> timer_;
  // Deferred work holds a weak token of it: the gate may be gone by then.
  std::shared_ptr<char> alive_ = std::make_shared<char>(0);
};

}  // namespace orch
