// What a step being executed (an Exec, engine/steps/exec.h) needs from the scheduler: the
// store, the loop, deferred work, events, tasks, approval gates, concurrency slots and child
// runs. The scheduler implements it; the steps see only this, so engine/steps/ does not
// include engine/scheduler.h.
#pragma once
#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "bindings/lua_state.h"
#include "engine/graph.h"
#include "engine/steps/exec_ref.h"
#include "store/store.h"

namespace orch {

struct RunOptions {
  std::string input_json = "{}";  // must be valid JSON (the CLI checks it)
  std::string source = "cli";
  std::string environment;
  std::string idempotency_key;          // unique per pipeline when set
  std::string parent_run, parent_node;  // child runs (o.call)
  std::string trace_id;                 // a W3C trace id (32 hex) from the caller; empty: a new one
  std::string run_id;  // made by the caller (a webhook delivery claims it first); empty: a new one
};

struct RunSummary {
  std::string run_id, trace_id, pipeline, status;
  int version = 0;
  int64_t duration_ms = 0;
  std::string error_type, error_message, error_node;
  std::string output_json;
  bool child = false;  // a child run (o.call): reported through its parent
  int nodes_succeeded = 0, nodes_failed = 0, nodes_skipped = 0, nodes_cancelled = 0;
  int attempts = 0;      // node attempts, all nodes
  int nodes_reused = 0;  // resumed runs: nodes whose stored success was reused
  // awaiting_approval: the gates waiting, as (run id, node): a gate of a child run (o.call)
  // is decided on the child.
  std::vector<std::pair<std::string, std::string>> waiting_gates;
  // waiting (or awaiting_approval with signals too): the waits for a signal, likewise.
  struct SignalWait {
    std::string run_id, node, signal;
  };
  std::vector<SignalWait> waiting_signals;
  // The pipeline's hooks that ran, as (step, outcome): they do not change the status.
  std::vector<std::pair<std::string, std::string>> hooks;
};

class Run;
class Exec;

// An approval gate waiting for a decision (engine/steps/approve_exec.cc).
class Gate {
 public:
  virtual ~Gate() = default;
  virtual void poll() = 0;  // reads the store; applies a decision made meanwhile
  virtual Run* gate_run() const = 0;
  virtual const std::string& gate_node() const = 0;
  // Waits for a signal from outside (o.wait), not for a person's decision.
  virtual bool is_signal() const { return false; }
  // The signal's name, when is_signal().
  virtual std::string signal_name() const { return ""; }
  // The run whose gate it is, when not gate_run() (a parent waiting on its child's gate).
  virtual std::string decided_on() const { return ""; }
};

// A step waiting for a slot of a concurrency key (engine/steps/node_exec.cc).
class SlotWaiter {
 public:
  virtual ~SlotWaiter() = default;
  virtual const std::string& slot_key() const = 0;
  virtual void try_slot() = 0;
};

// Child runs (o.call): where the scheduler finds the pipelines it did not start with. Set by
// the CLI (one-shot: files beside the caller) or the server (its registry).
class PipelineSource {
 public:
  virtual ~PipelineSource() = default;
  // The pipeline `target` names, called from `caller`. nullptr with *err when none.
  virtual Pipeline* find(const std::string& target, const Pipeline& caller, std::string* err) = 0;
  // The definition a stored run started with.
  virtual Pipeline* for_run(const RunRow& run, std::string* err) = 0;
};

class StepHost {
 public:
  virtual ~StepHost() = default;

  virtual Store* store() = 0;
  virtual uv_loop_t* loop() = 0;
  // Runs fn from the pump, later (see Scheduler::defer).
  virtual void defer(std::function<void()> fn) = 0;
  // Tells the step's parent, from the pump, that it finished (Exec::notify_parent): the
  // commonest deferred work, queued without a closure.
  virtual void defer_child_done(ExecRef child) = 0;
  // Stores an event and tells the sinks; notify only tells them.
  virtual void emit(Run* run, const char* kind, const std::string& node, int attempt,
                    std::string data) = 0;
  virtual void notify(Run* run, const char* kind, const std::string& node, int attempt,
                      std::string data) = 0;
  // The run's root step has finished.
  virtual void run_finished(Run* run) = 0;
  // Set once a graceful shutdown has begun: no node attempt starts.
  virtual bool draining() const = 0;
  virtual double random_unit() = 0;

  // Coroutines of node bodies.
  virtual Task* new_task(Run* run, void* owner, const std::string& node) = 0;
  virtual void drop_task(Task* t) = 0;
  virtual void run_task(Task* t, int nargs) = 0;

  // Approval gates and concurrency slots waiting here.
  virtual void add_gate(Gate* g) = 0;
  virtual void remove_gate(Gate* g) = 0;
  virtual void gate_opened(Run* run) = 0;
  virtual void gate_closed(Run* run) = 0;
  virtual void add_slot_waiter(SlotWaiter* w) = 0;
  virtual void remove_slot_waiter(SlotWaiter* w) = 0;
  virtual void slot_released(const std::string& key) = 0;

  // Child runs (o.call). `done` runs from the pump once the child has finished or is parked.
  using ChildDone = std::function<void(const RunSummary&)>;
  virtual PipelineSource* pipelines() = 0;
  virtual std::string start_child_run(Pipeline* p, const RunOptions& opts,
                                      const std::string& parent_run, const std::string& parent_node,
                                      ChildDone done, std::string* err) = 0;
  virtual bool resume_child_run(Pipeline* p, const RunRow& row, ChildDone done,
                                std::string* err) = 0;
  virtual void forget_child(const std::string& run_id) = 0;
  virtual bool is_active(const std::string& run_id) const = 0;
  virtual void cancel_run(const std::string& run_id, const std::string& reason) = 0;

  // Exec objects alive now, and the most at once (a loop must not keep its old iterations).
  size_t live_execs() const { return live_execs_; }
  size_t peak_live_execs() const { return peak_live_execs_; }
  void exec_created() {
    if (++live_execs_ > peak_live_execs_) peak_live_execs_ = live_execs_;
  }
  void exec_destroyed() { live_execs_--; }

 private:
  size_t live_execs_ = 0, peak_live_execs_ = 0;
};

}  // namespace orch
