// Steps whose inner ids exist only at run time: o.map (one instance of its step per item,
// `id[i]`) and o.loop (one per iteration, `id#k`). What they decided (the list of items, whether
// an iteration was the last) is recorded as decision rows, so a resumed run replays the same
// fan-out and the same iterations instead of asking again.
#include <climits>

#include "engine/steps/exec.h"
#include "engine/steps/gate.h"

namespace orch {
namespace {

class MapExec : public Exec {
 public:
  using Exec::Exec;

  void start(LuaRef in) override {
    input = std::move(in);
    json d = stored_decision(path_);
    if (d.is_object() && d.contains("items") && d["items"].is_array()) {
      items_ = d["items"];
      run_->summary.nodes_reused++;
      s_->notify(run_, "node.reused", path_, 1, dump_json(json{{"count", items_.size()}}));
    } else if (!evaluate_items()) {
      return;
    }
    size_t n = items_.size();
    lua_State* L = run_->L();
    lua_createtable(L, static_cast<int>(n), 0);
    push_array_mt(L);
    lua_setmetatable(L, -2);
    output = LuaRef::pop(L);
    if (n == 0) {
      publish_output(output);
      finish(Outcome::Succeeded);
      return;
    }
    for (size_t i = 0; i < n; i++) {
      auto c = make_exec(s_, run_, step_->children[0].get(), this,
                         path_ + "[" + std::to_string(i + 1) + "]");
      c->scope_.index = static_cast<int>(i + 1);
      index_of_[c.get()] = i;
      children_.push_back(std::move(c));
    }
    launch();
  }

  void child_done(Exec* c) override {
    running_--;
    finished_++;
    size_t i = index_of_[c];
    if (c->outcome == Outcome::Failed && !c->optional_failure) {
      cancel_rest("item " + std::to_string(i + 1) + " failed");
      err = c->err;
      finish(Outcome::Failed);
      return;
    }
    if (c->outcome == Outcome::Cancelled) {
      cancel_rest("cancelled");
      finish(Outcome::Cancelled);
      return;
    }
    lua_State* L = run_->L();
    output.push(L);
    if (c->outcome == Outcome::Succeeded && !c->output.empty())
      c->output.push(L);
    else
      push_json(L, nullptr);  // a skipped item or a tolerated (optional) failure
    lua_rawseti(L, -2, static_cast<int>(i + 1));
    lua_pop(L, 1);
    if (finished_ == children_.size()) {
      publish_output(output);
      finish(Outcome::Succeeded);
      return;
    }
    launch();
  }

  void cancel(const std::string& reason) override {
    if (done) return;
    cancel_rest(reason);
    done = true;
    outcome = Outcome::Cancelled;
  }

 private:
  // Asks the pipeline for the list and records it. False when the map has already failed.
  bool evaluate_items() {
    ErrorInfo e;
    lua_State* L = run_->L();
    bool ok = call_predicate(step_->items, &e);
    std::string why;
    if (ok) {
      json j;
      std::string cerr;
      if (lua_istable(L, -1) && lua_to_json(L, lua_gettop(L), &j, &cerr)) {
        if (j.is_array())
          items_ = std::move(j);
        else if (j.is_object() && j.empty())
          items_ = json::array();
        else
          why = "items must be a list (a table with keys 1..n), got a table with other keys";
      } else {
        why = lua_istable(L, -1)
                  ? "items cannot be stored: " + cerr
                  : std::string("items must be a list, got a ") + luaL_typename(L, -1);
      }
      lua_pop(L, 1);
      if (!why.empty()) e = {"bad_items", "map '" + step_->id + "': " + why, path_, "", false, ""};
    }
    if (!ok || !why.empty()) {
      if (ok) e.message = e.message;
      record_decision("failed", "", &e);
      err = e;
      run_->summary.nodes_failed++;
      finish(Outcome::Failed);
      return false;
    }
    record_decision("succeeded", dump_json(json{{"items", items_}}), nullptr, "",
                    dump_json(json{{"count", items_.size()}}));
    return true;
  }

  void launch() {
    int limit = step_->max_concurrency > 0 ? step_->max_concurrency : INT32_MAX;
    lua_State* L = run_->L();
    while (next_ < children_.size() && running_ < limit) {
      running_++;
      size_t i = next_++;
      push_json(L, items_[i]);
      children_[i]->start(LuaRef::pop(L));
    }
  }

  // Running items are cancelled; items not started yet are not recorded (they have no id on
  // record, and a retry starts them afresh).
  void cancel_rest(const std::string& reason) {
    for (size_t i = 0; i < next_ && i < children_.size(); i++)
      if (!children_[i]->done) children_[i]->cancel(reason);
    next_ = children_.size();
  }

  json items_ = json::array();
  std::vector<std::unique_ptr<Exec>> children_;
  std::unordered_map<Exec*, size_t> index_of_;
  size_t next_ = 0, finished_ = 0;
  int running_ = 0;
};

// ---------------------------------------------------------------------------------------------
class LoopExec : public Exec {
 public:
  using Exec::Exec;

  void start(LuaRef in) override {
    input = std::move(in);
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
    if (verdict == "needs_human_review" || k_ >= step_->max_iterations) {
      exhausted(verdict, reason);
      return;
    }
    iterate(k_ + 1, dup(run_->L(), last_));
  }

  void cancel(const std::string& reason) override {
    if (done) return;
    if (child_ && !child_->done) child_->cancel(reason);
    if (gate_) gate_->cancel(reason);
    done = true;
    outcome = Outcome::Cancelled;
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
    old_.push_back(std::move(child_));
    child_ = make_exec(s_, run_, step_->children[0].get(), this, iteration_path(k));
    child_->scope_.iteration = k;
    child_->start(std::move(in));
  }

  // Asks `done` (or reads the iteration's verdict) and records the answer: the loop's decision
  // row number k (its own path; a function body already uses the iteration's path).
  bool decide(std::string* verdict, std::string* reason) {
    lua_State* L = run_->L();
    ErrorInfo e;
    if (!step_->done.empty()) {
      scope_.iteration = k_;
      if (!call_predicate(step_->done, &e, &last_)) {
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
                                std::to_string(step_->max_iterations) + ")";
    if (!reason.empty()) why += " (" + reason + ")";
    if (!step_->escalate.enabled) {
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
    const Escalation& x = step_->escalate;
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
    output = gate_->accept(a, last_);
    publish_output(output);
    run_->summary.nodes_succeeded++;
    finish(Outcome::Succeeded);
  }

  int k_ = 0;
  LuaRef last_;
  std::unique_ptr<Exec> child_;
  // Earlier iterations: kept until the loop goes, as their finish() may still be queued.
  std::vector<std::unique_ptr<Exec>> old_;
  std::unique_ptr<GateAttempt> gate_;
};

}  // namespace

std::unique_ptr<Exec> make_map_exec(Scheduler* s, Run* run, Step* step, Exec* parent,
                                    const std::string& prefix) {
  return std::make_unique<MapExec>(s, run, step, parent, prefix);
}
std::unique_ptr<Exec> make_loop_exec(Scheduler* s, Run* run, Step* step, Exec* parent,
                                     const std::string& prefix) {
  return std::make_unique<LoopExec>(s, run, step, parent, prefix);
}

}  // namespace orch
