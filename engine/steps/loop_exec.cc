// o.loop: its step again (`id#k`) until done, at most max times, then an escalation. Whether
// an iteration was the last is recorded as a decision row, so a resumed run replays the same
// iterations.
#include "engine/steps/exec.h"
#include "engine/steps/gate.h"

namespace orch {
namespace {

class LoopExec : public Exec {
 public:
  using Exec::Exec;

  void begin() override {
    // An escalation of this loop that was decided before the resume settles it.
    if (const auto* h = run_->history_of(path_))
      for (const auto& r : *h) {
        if (r.kind != "approval" || r.run_attempt != run_->run_attempt) continue;
        if (r.status == NodeStatus::succeeded) {
          output = stored_output(r.output);
          publish_output(output);
          run_->summary.nodes_reused++;
          s_->notify(run_, "node.reused", path_, r.attempt, "{}");
          finish(Outcome::Succeeded);
          return;
        }
        if (r.status == NodeStatus::failed) {
          err = {r.error_type, r.error_message, path_, "", false, ""};
          run_->summary.nodes_failed++;
          finish(Outcome::Failed);
          return;
        }
      }
    iterate(1, dup(run_->L(), input));
  }

  void child_done(Exec* c) override {
    if (c->outcome == Outcome::Cancelled) {
      finish(Outcome::Cancelled);
      return;
    }
    if (c->outcome == Outcome::Failed && !c->optional_failure) {
      err = c->err;
      finish(Outcome::Failed);
      return;
    }
    last_ = passthrough(c);
    // Was this iteration the last? Asked once; a resumed run reads the answer (decision row
    // k of the loop).
    std::string verdict, reason;
    json d = stored_iteration_decision(k_);
    if (d.is_object() && d.contains("done")) {
      verdict = d.value("verdict", "");
      reason = d.value("reason", "");
      if (d["done"].get<bool>()) verdict = "pass";
    } else if (!decide(&verdict, &reason)) {
      return;
    }
    if (verdict == "pass") {
      output = dup(run_->L(), last_);
      publish_output(output);
      finish(Outcome::Succeeded);
      return;
    }
    if (verdict == "needs_human_review" || k_ >= step_->loop().max_iterations) {
      exhausted(verdict, reason);
      return;
    }
    iterate(k_ + 1, dup(run_->L(), last_));
  }

  void cancel(const std::string& reason) override {
    if (done) return;
    if (child_ && !child_->done) child_->cancel(reason);
    if (gate_) gate_->cancel(reason);
    mark_cancelled();
  }

 private:
  std::string iteration_path(int k) const { return path_ + "#" + std::to_string(k); }

  json stored_iteration_decision(int k) const {
    if (const auto* h = run_->history_of(path_))
      for (const auto& r : *h)
        if (r.kind == "decision" && r.status == NodeStatus::succeeded && r.attempt == k)
          return parse_json(r.output, nullptr);
    return json(json::value_t::discarded);
  }

  void iterate(int k, LuaRef in) {
    k_ = k;
    // The previous iteration has reported (this runs from its child_done); what it may still
    // have queued holds weak tokens, so it can go now.
    child_.reset();
    child_ = make_exec(s_, run_, step_->children[0].get(), this, iteration_path(k));
    child_->scope_.iteration = k;
    child_->start(std::move(in));
  }

  // Asks `done` (or reads the iteration's verdict) and records the answer: the loop's decision
  // row number k (its own path; a function body already uses the iteration's path).
  bool decide(std::string* verdict, std::string* reason) {
    lua_State* L = run_->L();
    ErrorInfo e;
    if (!step_->loop().done.empty()) {
      scope_.iteration = k_;
      if (!call_predicate(step_->loop().done, &e, &last_)) {
        e.message = "loop '" + step_->id + "': done failed: " + e.message;
        record_decision("failed", "", &e, "", "", k_);
        err = e;
        run_->summary.nodes_failed++;
        finish(Outcome::Failed);
        return false;
      }
      *verdict = lua_toboolean(L, -1) ? "pass" : "retryable";
      lua_pop(L, 1);
    } else {
      last_.push(L);
      if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "verdict");
        if (lua_type(L, -1) == LUA_TSTRING) *verdict = lua_tostring(L, -1);
        lua_pop(L, 1);
        lua_getfield(L, -1, "reason");
        if (lua_type(L, -1) == LUA_TSTRING) *reason = lua_tostring(L, -1);
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
      if (*verdict != "pass" && *verdict != "retryable" && *verdict != "needs_human_review") {
        e = {"no_verdict",
             "loop '" + step_->id + "': iteration " + std::to_string(k_) +
                 (verdict->empty() ? " returned no verdict"
                                   : " returned the unknown verdict '" + *verdict + "'") +
                 " and the loop has no done function; return o.verdict.pass/retryable/"
                 "needs_human_review, or give done = function(ctx, output)",
             path_,
             "",
             false,
             ""};
        record_decision("failed", "", &e, "", "", k_);
        err = e;
        run_->summary.nodes_failed++;
        finish(Outcome::Failed);
        return false;
      }
    }
    json out{{"done", *verdict == "pass"}, {"iteration", k_}};
    if (*verdict != "pass") out["verdict"] = *verdict;
    if (!reason->empty()) out["reason"] = *reason;
    record_decision("succeeded", dump_json(out), nullptr, "", "", k_);
    return true;
  }

  // The cap was reached (or an iteration asked for a person).
  void exhausted(const std::string& verdict, const std::string& reason) {
    std::string why = verdict == "needs_human_review"
                          ? "iteration " + std::to_string(k_) + " needs human review"
                          : "not done after " + std::to_string(k_) + " iteration" +
                                (k_ == 1 ? "" : "s") + " (max " +
                                std::to_string(step_->loop().max_iterations) + ")";
    if (!reason.empty()) why += " (" + reason + ")";
    if (!step_->loop().escalate.enabled) {
      err = {"loop_exhausted", "loop '" + step_->id + "': " + why, path_, "", false, ""};
      run_->summary.nodes_failed++;
      finish(Outcome::Failed);
      return;
    }
    int last = k_;  // the decision rows of this loop are numbered 1..k
    if (const auto* h = run_->history_of(path_))
      for (const auto& r : *h) last = std::max(last, r.attempt);
    gate_ = std::make_unique<GateAttempt>(s_, run_, path_,
                                          [this](const ApprovalRow& a) { decided(a); });
    GateSpec spec;
    spec.kind = "escalation";
    const Escalation& x = step_->loop().escalate;
    spec.message = !x.message.empty()
                       ? x.message
                       : "loop '" + path_ + "': " + why +
                             ": approve to accept the last iteration's output, reject to fail";
    spec.approvers = x.approvers;
    spec.timeout_ms = x.timeout_ms;
    spec.approve_on_timeout = x.approve_on_timeout;
    spec.details = {{"iterations", k_}, {"verdict", verdict}, {"reason", reason}};
    gate_->begin(spec, last);
  }

  void decided(const ApprovalRow& a) {
    if (!GateAttempt::approved(a)) {
      err = gate_->refuse(a);
      run_->summary.nodes_failed++;
      finish(Outcome::Failed);
      return;
    }
    succeed(gate_->accept(a, last_));
  }

  int k_ = 0;
  LuaRef last_;
  std::unique_ptr<Exec> child_;  // the current iteration
  std::unique_ptr<GateAttempt> gate_;
};

}  // namespace

std::unique_ptr<Exec> make_loop_exec(StepHost* s, Run* run, Step* step, Exec* parent,
                                     const std::string& prefix) {
  return std::make_unique<LoopExec>(s, run, step, parent, prefix);
}

}  // namespace orch
