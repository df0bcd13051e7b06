// The scheduler: the only code that moves a run from node to node.
//
// One libuv loop. Every state change goes to the store inside an open transaction; work that
// follows from it (the next node, a parent step noticing a child finished, a coroutine whose
// driver answered) is queued and run by the pump, which commits first. So writes made in one
// loop turn are committed together, and a node's success is durable before anything that
// depends on it starts.
#pragma once
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/json_util.h"
#include "bindings/lua_state.h"
#include "drivers/loop.h"
#include "drivers/process.h"
#include "engine/graph.h"
#include "engine/steps/step_host.h"
#include "store/events.h"
#include "store/store.h"

namespace orch {

struct ErrorInfo;  // engine/steps/exec.h

// How long the process groups a dead owner left get between SIGTERM and SIGKILL when their run
// resumes (o.exec's default kill grace).
inline constexpr int64_t kOrphanGraceMs = 2000;

class Scheduler : public TaskHost, public NodeServices, public StepHost {
 public:
  Scheduler(Loop* loop, Store* store);
  ~Scheduler() override;
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void add_sink(EventSink* sink) { sinks_.push_back(sink); }
  // Called once a run has finished and its final state is committed.
  std::function<void(const RunSummary&)> on_run_finished;

  // Stores the definition (new version if the source changed) and starts a run of it.
  // Returns the run id, or "" with *err.
  std::string start_run(Pipeline* p, const RunOptions& opts, std::string* err);
  // Continues an unfinished run of `p` (the definition the run started with) that this process
  // has claimed: stored successes and decisions are reused, attempts left running by the
  // process that stopped are recorded as interrupted, and what did not finish runs again.
  // Returns false with *err when the run cannot be resumed.
  // With `retry`, the run was failed or cancelled and begins its next attempt (the store's
  // runs.attempts, already incremented): failed nodes run again with a fresh retry budget.
  bool resume_run(Pipeline* p, const RunRow& row, std::string* err, bool retry = false);
  // Cancels a run: pending operations stop, child processes are signalled, the run and its
  // unfinished nodes are recorded as cancelled.
  void cancel_run(const std::string& run_id, const std::string& reason) override;
  void cancel_all(const std::string& reason);
  // When the loop has nothing left to do but runs wait at approval gates: records those runs
  // as awaiting_approval (reported through on_run_finished with that status) and lets them go.
  // They continue with `orchrun resume` once someone has decided.
  void park_waiting();
  size_t active_runs() const { return runs_.size(); }

  // --- Server mode (orchrun serve) ---
  // Runs wait at approval gates in this process instead of being parked: the run is
  // awaiting_approval while a gate waits, and continues as soon as someone decides.
  bool hold_gates = false;
  // The pipeline's hooks run (on = {...}, finally). Turned off once no loop will run them
  // (the one-shot's end, the destructor): a run cancelled then ends without them.
  bool run_hooks = true;
  // Reads the store now for decisions on the gates waiting here (an API call just made one).
  void poll_gates();
  // Graceful shutdown, step 1: no node attempt starts from now on; those in flight go on.
  void drain() { draining_ = true; }
  bool draining() const override { return draining_; }
  // Coroutines in flight (node bodies that started and have not finished).
  size_t tasks_in_flight() const { return tasks_.size(); }
  // Graceful shutdown, step 2: lets go of every active run without recording an end: their
  // child processes are killed, and the store keeps them as they are (running, owned by this
  // process), so that the next start resumes them as after a crash, reusing what succeeded.
  void detach_all();
  // Does a run active here (or one finishing this turn) use `p`?
  bool uses_pipeline(const Pipeline* p) const;
  // Every run active here, ids.
  std::vector<std::string> active_run_ids() const;
  // Set when the store failed; the scheduler has then stopped every run.
  const std::string& fatal_error() const { return fatal_; }
  // A full disk, when the store holds its writes (Store::set_hold_when_full, orchrun serve;
  // without it a full disk is a store failure): nothing runs, the runs wait in memory, and the
  // commit is tried again every kFullRetryMs until it succeeds; then everything goes on.
  static constexpr uint64_t kFullRetryMs = 1000;
  // Called when the scheduler starts waiting for a full disk (true) and when it goes on (false).
  std::function<void(bool full)> on_store_full;

  // TaskHost
  uv_loop_t* loop() override { return loop_->get(); }
  ProcessTable* processes() override { return &processes_; }
  HttpClient* http() override;  // created on first use
  Task* find_task(uint64_t id) override;
  void resume(Task* task, int nargs) override;
  void before_effect() override;
  void process_started(Task* task, int pid, const std::string& command) override;
  NodeServices* services() override { return this; }
  // NodeServices
  void log(Task* task, std::string_view level, std::string_view message,
           const std::string& fields_json) override;
  bool record_artifact(Task* task, const std::string& rel, const std::string& kind, int64_t size,
                       const std::string& sha256, std::string* record, std::string* err) override;
  bool use_artifact(Task* task, const std::string& name, std::string* record,
                    std::string* err) override;
  bool record_incidents(Task* task, const std::string& incidents_json, std::string* records,
                        std::string* err) override;
  // Each run's workspace is WORKSPACE_ROOT/RUN_ID (default: "workspaces" beside the database).
  std::string workspace_root;

  // Used by the Exec classes.
  Store* store() override { return store_; }
  // Runs fn from the pump, in a later wave of the same loop turn or the next one. Deferred work
  // does not wait for a commit: the pump commits once per loop turn (group commit), when it has
  // run for a time slice, and before any effect outside the process (before_effect()).
  void defer(std::function<void()> fn) override;
  void defer_child_done(ExecRef child) override;
  // Runs fn from the pump once everything written so far is committed (e.g. answering 202 for a
  // run: the answer promises that the run is durable).
  void after_commit(std::function<void()> fn);
  void emit(Run* run, const char* kind, const std::string& node, int attempt,
            std::string data) override;
  // Tells the sinks without storing (e.g. a stored success reused on resume).
  void notify(Run* run, const char* kind, const std::string& node, int attempt,
              std::string data) override;
  Task* new_task(Run* run, void* owner, const std::string& node) override;
  void drop_task(Task* t) override;
  // Resumes t now (only from the pump). Calls the owner back when the coroutine has finished.
  void run_task(Task* t, int nargs) override;
  double random_unit() override;
  void run_finished(Run* run) override;
  void add_gate(Gate* g) override { gates_.push_back(g); }
  void remove_gate(Gate* g) override;
  // A gate of `run` started or stopped waiting (hold_gates: the run's status follows).
  void gate_opened(Run* run) override;
  void gate_closed(Run* run) override;
  // What a run with gates waiting is parked as: awaiting_approval while one waits for a person,
  // else waiting (signals only).
  static RunStatus parked_status(const Run* r);
  // Serve (hold_gates): records the run's status as its gates make it, when it changes.
  void set_parked(Run* r);
  void add_slot_waiter(SlotWaiter* w) override { slot_waiters_.push_back(w); }
  void remove_slot_waiter(SlotWaiter* w) override;
  // A slot of `key` was released here: the local waiters look again (in arrival order).
  void slot_released(const std::string& key) override;

  // Child runs (o.call). The callback runs (from the pump) once the child has finished or is
  // parked awaiting approval, with its summary.
  PipelineSource* pipeline_source = nullptr;
  PipelineSource* pipelines() override { return pipeline_source; }
  std::string start_child_run(Pipeline* p, const RunOptions& opts, const std::string& parent_run,
                              const std::string& parent_node, ChildDone done,
                              std::string* err) override;
  bool resume_child_run(Pipeline* p, const RunRow& row, ChildDone done, std::string* err) override;
  void forget_child(const std::string& run_id) override { child_waiters_.erase(run_id); }
  bool is_active(const std::string& run_id) const override { return runs_.count(run_id) > 0; }
  // The trace id and definition version of a run active here. False if it is not.
  bool run_info(const std::string& run_id, std::string* trace_id, int* version) const;

 private:
  void pump();
  // Commits the open transaction; the after_commit callbacks then join the queue.
  void commit_point();
  void fail_fatal();
  void wait_for_store();
  void store_writable();
  Run* make_run(Pipeline* p, const std::string& id, const std::string& trace_id, int version,
                const json& input, int64_t started_ms);
  // Starts the root of `r` once it holds its pipeline's concurrency slot (if it has a key).
  void begin_root(Run* r);
  void finished_hooks(Run* r, const RunSummary& sum);
  // The pipeline's hooks (on = {...}, finally). end_hooks starts those for the status the run
  // ends with; true while they run (run_finished is called again once they have settled).
  bool end_hooks(Run* r, const std::string& status);
  void run_end_hook(Run* r, std::vector<Step*> todo, size_t i);
  // Sets ctx.run for the hooks: the run's status, its error, the gate waiting.
  void set_ctx_run(Run* r, const std::string& status, const ErrorInfo* e, const std::string& gate);

  Loop* loop_;
  Store* store_;
  ProcessTable processes_;
  // The process groups recorded in the store (pid -> run id, identity) until they are gone.
  std::unordered_map<int, std::pair<std::string, std::string>> recorded_procs_;
  std::unique_ptr<HttpClient> http_;
  std::vector<EventSink*> sinks_;
  std::unordered_map<std::string, std::unique_ptr<Run>> runs_;
  std::vector<std::unique_ptr<Run>> finished_runs_;  // freed at the end of the pump
  // Deferred work: a closure, or (without one) a finished step whose parent is to be told.
  struct Deferred {
    Deferred(std::function<void()> f) : fn(std::move(f)) {}  // NOLINT: implicit on purpose
    explicit Deferred(ExecRef c) : child(std::move(c)) {}
    std::function<void()> fn;
    ExecRef child;
    void operator()();
  };
  std::vector<Deferred> queue_;
  std::vector<std::function<void()>> after_commit_;
  std::unordered_map<uint64_t, Task*> tasks_;
  std::vector<Gate*> gates_;
  std::vector<SlotWaiter*> slot_waiters_;
  std::unordered_map<std::string, ChildDone> child_waiters_;
  uint64_t next_task_id_ = 1;
  uv_check_t* check_;
  uv_idle_t* idle_;
  std::mt19937_64 rng_;
  // Polls the store for cancel requests made by other processes (orchrun cancel).
  std::unique_ptr<class Timer> control_timer_;
  std::unique_ptr<class Timer> full_timer_;  // retries the commit while the disk is full
  void poll_control();
  std::string fatal_;
  bool pumping_ = false;
  bool draining_ = false;
};

}  // namespace orch
