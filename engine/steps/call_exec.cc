// o.call: another pipeline run as a child run of this one (runs.parent_run/parent_node), on the
// same loop and store. The step waits for the child: the child's output is its output, the
// child's failure its failure. A resumed parent finds its child in the store: a finished child
// is reused, an unfinished one is resumed here (it is never resumed on its own: `orchrun
// resume --all` leaves child runs to their parent). A child that stops at an approval gate
// parks its parent too; approving the child's gate and resuming the parent continues both.
#include <unistd.h>

#include "engine/steps/exec.h"

namespace orch {
namespace {

class CallExec : public Exec, public Gate {
 public:
  using Exec::Exec;
  ~CallExec() override {
    stop_waiting();
    if (!child_id_.empty()) s_->forget_child(child_id_);
  }

  void begin() override {
    int last = 0;
    if (const auto* h = run_->history_of(path_))
      for (const auto& r : *h) {
        last = std::max(last, r.attempt);
        if (r.status == NodeStatus::succeeded) {  // the child finished and its output was taken
          reuse_success(r);
          return;
        }
      }
    attempt_ = last + 1;
    started_ms_ = wall_ms();
    PipelineSource* src = s_->pipelines();
    if (!src) {
      open_row();
      fail({"call_failed", "o.call is not available here (no pipeline source)", path_, "", false,
            ""});
      return;
    }
    // A child from before the resume, of this attempt of the run.
    auto prev = s_->store()->child_run(run_->id, path_);
    if (prev && prev->created_at >= run_started_at()) {
      child_id_ = prev->id;
      open_row();
      if (prev->status == RunStatus::succeeded || prev->status == RunStatus::failed ||
          prev->status == RunStatus::cancelled) {
        settle(prev->status.str(), prev->output, prev->error_type, prev->error_message);
        return;
      }
      std::string err;
      Pipeline* p = src->for_run(*prev, &err);
      if (!p || !s_->store()->claim_run(prev->id, prev->owner_pid, getpid()) ||
          !s_->resume_child_run(
              p, *prev,
              [this, alive = ref()](const RunSummary& sm) {
                if (deref(alive)) child_finished(sm);
              },
              &err)) {
        fail({"call_failed",
              "cannot resume child run " + prev->id + ": " +
                  (err.empty() ? "another process holds it" : err),
              path_, "", false, ""});
      }
      return;
    }
    std::string err;
    Pipeline* p = src->find(step_->call().target, *run_->p, &err);
    open_row();
    if (!p) {
      fail({"call_failed", "o.call '" + step_->id + "': " + err, path_, "", false, ""});
      return;
    }
    RunOptions ro;
    ro.source = "call";
    ErrorInfo e;
    LuaRef arg;
    if (!step_->call().input.empty()) {
      if (!call_predicate(step_->call().input, &e)) {
        fail(e);
        return;
      }
      arg = LuaRef::pop(run_->L());
    } else {
      arg = dup(run_->L(), input);
    }
    lua_State* L = run_->L();
    arg.push(L);
    json j;
    std::string cerr;
    bool ok = lua_istable(L, -1) && lua_to_json(L, lua_gettop(L), &j, &cerr) &&
              (j.is_object() || (j.is_array() && j.empty()));
    lua_pop(L, 1);
    if (!ok) {
      fail({"call_failed",
            "o.call '" + step_->id + "': the child's input must be a table of named values" +
                (cerr.empty() ? "" : ": " + cerr),
            path_, "", false, ""});
      return;
    }
    if (j.is_array()) j = json::object();
    ro.input_json = dump_json(j);
    child_id_ = s_->start_child_run(
        p, ro, run_->id, path_,
        [this, alive = ref()](const RunSummary& sm) {
          if (deref(alive)) child_finished(sm);
        },
        &err);
    if (child_id_.empty()) {
      fail({"call_failed", "cannot start child run: " + err, path_, "", false, ""});
      return;
    }
    s_->emit(run_, "node.called", path_, attempt_,
             dump_json(json{{"child_run", child_id_}, {"pipeline", p->name}}));
  }

  void cancel(const std::string& reason) override {
    if (done) return;
    stop_waiting();
    if (!child_id_.empty() && s_->is_active(child_id_)) {
      s_->forget_child(child_id_);
      s_->cancel_run(child_id_, reason);
    }
    if (row_open_) finish_row("cancelled", "", {"cancelled", reason, path_, "", false, ""});
    s_->emit(run_, "node.cancelled", path_, attempt_, dump_json(json{{"reason", reason}}));
    run_->summary.nodes_cancelled++;
    mark_cancelled();
  }

  // Gate: the parent waits while its child waits for a person. The decision is the child's;
  // both continue with `orchrun resume` of the parent.
  void poll() override {}
  Run* gate_run() const override { return run_; }
  const std::string& gate_node() const override { return gate_label_; }
  std::string decided_on() const override { return gate_run_; }
  bool is_signal() const override { return signal_; }
  std::string signal_name() const override { return signal_name_; }

 private:
  int64_t run_started_at() const { return run_->started_ms; }

  void open_row() {
    s_->store()->insert_node_attempt(run_->id, path_, attempt_, "call", started_ms_,
                                     run_->run_attempt);
    s_->emit(run_, "node.started", path_, attempt_,
             dump_json(json{{"kind", "call"}, {"target", step_->call().target}}));
    run_->summary.attempts++;
    row_open_ = true;
  }

  void child_finished(const RunSummary& sm) {
    if (done) return;
    if (sm.status == "awaiting_approval" || sm.status == "waiting") {
      // Parked with its gates: the parent waits too (park_waiting parks it next), for a person
      // or for a signal as its child does.
      signal_ = sm.status == "waiting";
      gate_run_ = child_id_;
      gate_label_ = path_;
      if (signal_ && !sm.waiting_signals.empty()) {
        gate_run_ = sm.waiting_signals[0].run_id;
        gate_label_ = sm.waiting_signals[0].node;
        signal_name_ = sm.waiting_signals[0].signal;
      } else if (!signal_ && !sm.waiting_gates.empty()) {
        gate_run_ = sm.waiting_gates[0].first;
        gate_label_ = sm.waiting_gates[0].second;
      }
      waiting_ = true;
      run_->waiting_gates++;
      if (signal_) run_->waiting_signals++;
      s_->add_gate(this);
      return;
    }
    settle(sm.status, sm.output_json, sm.error_type, sm.error_message);
  }

  void settle(const std::string& status, const std::string& out_json, const std::string& etype,
              const std::string& emsg) {
    if (status == "succeeded") {
      json j = parse_json(out_json.empty() ? "{}" : out_json, nullptr);
      if (j.is_discarded()) j = json::object();
      json row = j;
      finish_row("succeeded", dump_json(row), {});
      s_->emit(run_, "node.succeeded", path_, attempt_,
               dump_json(json{{"child_run", child_id_}, {"duration_ms", wall_ms() - started_ms_}}));
      succeed(j);
      return;
    }
    fail({status == "cancelled" ? "cancelled" : "child_failed",
          "child run " + child_id_ + " " + status + (etype.empty() ? "" : " (" + etype + ")") +
              (emsg.empty() ? "" : ": " + emsg),
          path_, "", false, ""});
  }

  void finish_row(const std::string& status, const std::string& out, const ErrorInfo& e) {
    NodeRunRow r;
    r.run_id = run_->id;
    r.node_id = path_;
    r.attempt = attempt_;
    r.status = status;
    r.finished_at = wall_ms();
    r.duration_ms = r.finished_at - started_ms_;
    r.output = out;
    r.error_type = e.type;
    r.error_message = e.message;
    r.retryable = e.retryable;
    run_->redact(&r.output);
    run_->redact(&r.error_message);
    s_->store()->finish_node_attempt(r);
    row_open_ = false;
  }

  void fail(ErrorInfo e) {
    e.node = path_;
    if (row_open_) finish_row("failed", "", e);
    json d{{"error_type", e.type}, {"message", e.message}, {"retryable", false}};
    if (!child_id_.empty()) d["child_run"] = child_id_;
    s_->emit(run_, "node.failed", path_, attempt_, dump_json(d));
    err = e;
    run_->summary.nodes_failed++;
    finish(Outcome::Failed);
  }

  void stop_waiting() {
    if (!waiting_) return;
    waiting_ = false;
    run_->waiting_gates--;
    if (signal_) run_->waiting_signals--;
    s_->remove_gate(this);
  }

  std::string child_id_, gate_run_, gate_label_, signal_name_;
  int attempt_ = 0;
  int64_t started_ms_ = 0;
  bool row_open_ = false, waiting_ = false, signal_ = false;
};

}  // namespace

std::unique_ptr<Exec> make_call_exec(StepHost* s, Run* run, Step* step, Exec* parent,
                                     const std::string& prefix) {
  return std::make_unique<CallExec>(s, run, step, parent, prefix);
}

}  // namespace orch
