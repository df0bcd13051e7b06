// The execution tree of a run: one Exec per step being executed (any kind: node, seq,
// parallel, when, switch, approve, map, loop, call), owned by its parent; the Run holds the
// root and the run-wide Lua state. Internal to the engine: the scheduler (engine/scheduler.cc)
// and the step kinds (engine/steps/<kind>_exec.cc), which reach the scheduler only through
// StepHost (engine/steps/step_host.h).
#pragma once
#include <functional>
#include <lua.hpp>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/ids.h"
#include "base/json_util.h"
#include "bindings/convert.h"
#include "engine/graph.h"
#include "engine/steps/exec_ref.h"
#include "engine/steps/step_host.h"

namespace orch {

enum class Outcome { Succeeded, Failed, Skipped, Cancelled };
inline const char* outcome_name(Outcome o) {
  switch (o) {
    case Outcome::Succeeded:
      return "succeeded";
    case Outcome::Failed:
      return "failed";
    case Outcome::Skipped:
      return "skipped";
    case Outcome::Cancelled:
      return "cancelled";
  }
  return "?";
}

struct ErrorInfo {
  std::string type, message, node, traceback;
  bool retryable = false;
  std::string details;  // JSON or empty
};

// What the scheduler calls when a task's coroutine has finished (returned or raised).
class TaskOwner {
 public:
  virtual ~TaskOwner() = default;
  virtual void task_finished(Task* t, int status) = 0;
  virtual void task_log(std::string_view level, std::string_view message,
                        const std::string& fields_json) = 0;
  virtual bool task_artifact(ArtifactRow a, std::string* record, std::string* err) {
    *err = "artifacts can only be recorded by a node body";
    return false;
  }
  virtual bool task_use_artifact(const std::string& name, std::string* record, std::string* err) {
    *err = "artifacts can only be used by a node body";
    return false;
  }
  virtual bool task_incidents(const std::string& incidents_json, std::string* records,
                              std::string* err) {
    *err = "incidents can only be recorded by a node body";
    return false;
  }
  // o.exec started a process group: where it belongs (run, node path, attempt). False where
  // the task is not a node's attempt.
  virtual bool task_where(Run** run, std::string* node, int* attempt) { return false; }
};

// An artifact as ctx.artifacts and ctx:artifact show it.
json artifact_json(const ArtifactRow& a, const std::string& workspace);
// A new registry reference to the same Lua value.
LuaRef dup(lua_State* L, const LuaRef& r);
// Message handler for lua_pcall: adds a traceback to string errors, keeps tables as they are.
int traceback_msgh(lua_State* L);
// Turns the error value on top of `co` into an ErrorInfo (does not pop it).
ErrorInfo error_from(lua_State* L, lua_State* co, bool timed_out);

// ---------------------------------------------------------------------------------------------
// Run: the state of one run while it executes.
class HookRunner;

class Run {
 public:
  std::string id, trace_id;
  Pipeline* p = nullptr;
  int version = 0;
  LuaRef input;      // the pipeline input
  LuaRef outputs;    // id -> output, given to nodes as ctx.outputs
  LuaRef artifacts;  // name -> record, of the nodes that succeeded (ctx.artifacts)
  LuaRef ctx_mt;     // { __index = run-level ctx }
  std::unique_ptr<Exec> root;
  int64_t started_ms = 0;
  bool finished = false;
  std::string cancel_reason;
  RunSummary summary;
  int run_attempt = 1;               // 1, then 2, 3... for each `orchrun retry`
  int waiting_gates = 0;             // gates waiting: for a person, or for a signal
  int waiting_signals = 0;           // of which waits for a signal (o.wait)
  // Serve: the status the run's waiting gates gave it (running when none waits).
  RunStatus parked_as = RunStatus::running;
  std::unique_ptr<SlotWaiter> slot;  // the pipeline's concurrency slot, when it has a key
  bool holds_slot = false;
  std::string workspace;  // the run's directory for artifacts (created on first use)
  std::string parent_run;
  // The first incident the run ingested (o.ingest): carried by every later event.
  int64_t incident_id = 0;
  std::string fingerprint;
  std::string stage;  // the stage the run is in (`stage = "..."`), carried by its events
  // How the steps that others depend on (`after`) settled, by instance path; and the graph
  // lists waiting for steps outside them (told when one settles).
  struct Settled {
    Outcome outcome = Outcome::Succeeded;
    bool optional_failure = false;  // failed, but optional
    bool upstream_failed = false;   // skipped because what it depended on failed
  };
  std::unordered_map<std::string, Settled> settled;
  std::vector<ExecRef> graph_waiters;
  // The pipeline's hooks (on = {...}, finally) being run, and what has been decided: the
  // status the run ends with is set when its steps have settled, before the hooks run.
  std::unique_ptr<HookRunner> hooks;
  std::string end_status;  // empty until the steps have settled
  bool hooks_done = false;
  std::vector<std::string> gates_announced;  // gates the awaiting_approval hook ran for
  // Resumed runs: what the store already says about each node (attempt rows, in order).
  std::unordered_map<std::string, std::vector<NodeRunRow>> history;
  const std::vector<NodeRunRow>* history_of(const std::string& path) const {
    auto it = history.find(path);
    return it == history.end() ? nullptr : &it->second;
  }
  lua_State* L() const { return p->engine->L(); }
  // Replaces the secrets the pipeline has read by "***" (base/redact.h): applied to what
  // goes to the store or a sink.
  void redact(std::string* text) const { p->engine->redactor().apply(text); }
  // The exec tree goes first: its steps still look at the run while they are destroyed.
  ~Run();
};

// ---------------------------------------------------------------------------------------------
// Exec: a step being executed. Finishing is reported to the parent through the pump, so that
// whatever the step wrote is committed before the parent moves on.
class Exec {
 public:
  // `prefix` is the instance path of the enclosing steps: the ids of the named steps above,
  // with the item of a map (`fetch[3]`) or the iteration of a loop (`fix#2`) where there is one.
  Exec(StepHost* s, Run* run, Step* step, Exec* parent, const std::string& prefix)
      : s_(s), run_(run), step_(step), parent_(parent), prefix_(prefix) {
    path_ = step->id.empty() ? prefix : prefix.empty() ? step->id : prefix + "/" + step->id;
    if (parent) scope_ = parent->scope_;
    s_->exec_created();
  }
  virtual ~Exec() {
    self_.clear();
    s_->exec_destroyed();
  }
  Exec(const Exec&) = delete;
  Exec& operator=(const Exec&) = delete;
  // Runs the step on `in` (kept as `input` for the kind's begin()).
  void start(LuaRef in) {
    input = std::move(in);
    if (!step_->stage.empty() && step_->stage != run_->stage) enter_stage();
    begin();
  }
  // Stops the step and everything under it, synchronously, recording what was cancelled. The
  // parent is not notified: whoever cancels knows.
  virtual void cancel(const std::string& reason) = 0;
  virtual void child_done(Exec* child) {}
  // A step that a child of this one depends on, outside this step, has settled.
  virtual void deps_changed() {}
  // What the kind does when it starts (`input` is set).
  virtual void begin() = 0;

  bool done = false;
  Outcome outcome = Outcome::Succeeded;
  LuaRef output;                  // empty when the step produced none
  bool optional_failure = false;  // failed, but marked optional: the run goes on
  ErrorInfo err;
  LuaRef input;
  Step* step() const { return step_; }
  Exec* parent() const { return parent_; }
  // Where this step runs: its stable id in this run (the node_id of its rows and events).
  const std::string& path() const { return path_; }

  // What the enclosing map and loop tell the nodes under them (ctx.index, ctx.iteration).
  struct Scope {
    int index = 0;      // 1-based item of the nearest map; 0 outside any
    int iteration = 0;  // 1-based iteration of the nearest loop; 0 outside any
  };
  Scope scope_;

 protected:
  void finish(Outcome o) {
    done = true;
    outcome = o;
    if (step_->depended_on) settled(o, false);
    Run* run = run_;
    StepHost* s = s_;
    if (parent_)
      s->defer_child_done(ref());  // see notify_parent
    else
      s->defer([s, run] { s->run_finished(run); });
  }

 public:
  // From the pump, after a step finished: its parent moves on (if both are still there; a
  // parent owns its children, so a child that exists has its parent).
  static void notify_parent(const ExecRef& child) {
    Exec* c = child.get();
    if (c && c->parent_ && !c->parent_->done) c->parent_->child_done(c);
  }

 protected:
  // The run moves into this step's stage: recorded on the run, and told (run.stage).
  void enter_stage() {
    std::string from = run_->stage;
    run_->stage = step_->stage;
    s_->store()->set_run_stage(run_->id, run_->stage);
    s_->emit(run_, "run.stage", path_, 0,
             dump_json(json{{"stage", run_->stage}, {"from", from}, {"node", path_}}));
  }
  // Settles the step as cancelled (by its cancel(): no one is told).
  void mark_cancelled() {
    done = true;
    outcome = Outcome::Cancelled;
    if (step_->depended_on) settled(outcome, false);
  }
  // Records how a step others depend on settled (at `path`, this step's by default) and tells
  // the graph lists waiting for such steps.
  void settled(Outcome o, bool upstream_failed, const std::string& path = "");
  // A weak token for this step: callbacks for later hold it instead of the pointer, so that a
  // step that is gone (an earlier loop iteration, a cancelled branch) is not called back.
  using Ref = ExecRef;
  Ref ref() const { return self_; }
  static Exec* deref(const Ref& r) { return r.get(); }
  // fn, to be run later only if this step still exists then.
  std::function<void()> guarded(std::function<void()> fn) const {
    return [alive = ref(), fn = std::move(fn)] {
      if (deref(alive)) fn();
    };
  }
  // Sets table[c's id] = c's output (a parallel's output: its branches' outputs by id).
  void set_output_of(const LuaRef& table, Exec* c) {
    if (c->output.empty() || c->step()->id.empty()) return;
    lua_State* L = run_->L();
    table.push(L);
    lua_pushlstring(L, c->step()->id.data(), c->step()->id.size());
    c->output.push(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  // What a step passes on: its output, or its input when it has none (skipped, optional).
  LuaRef passthrough(Exec* c) { return dup(run_->L(), c->output.empty() ? c->input : c->output); }

  // The ctx given to conditions and selectors (attempt 0) and to node bodies.
  void push_ctx(lua_State* L, const std::string& path, int attempt) {
    lua_createtable(L, 0, 4);
    lua_pushlstring(L, path.data(), path.size());
    lua_setfield(L, -2, "node");
    if (scope_.index > 0) {
      lua_pushinteger(L, scope_.index);
      lua_setfield(L, -2, "index");
    }
    if (scope_.iteration > 0) {
      lua_pushinteger(L, scope_.iteration);
      lua_setfield(L, -2, "iteration");
    }
    lua_pushlstring(L, step_->id.data(), step_->id.size());
    lua_setfield(L, -2, "id");
    lua_pushinteger(L, attempt);
    lua_setfield(L, -2, "attempt");
    std::string key = run_->id + ":" + path;
    lua_pushlstring(L, key.data(), key.size());
    lua_setfield(L, -2, "idempotency_key");
    run_->ctx_mt.push(L);
    lua_setmetatable(L, -2);
  }

  // A stored output (JSON text of a node_runs row) as a Lua value; {} when empty or unreadable.
  LuaRef stored_output(const std::string& text) {
    lua_State* L = run_->L();
    json j = parse_json(text.empty() ? "{}" : text, nullptr);
    push_json(L, j.is_discarded() ? json::object() : j);
    return LuaRef::pop(L);
  }
  // Settles a node-like step (node, gate, loop, call) as succeeded: `out` is its output, seen
  // by later steps as ctx.outputs[id]; counted in the run's summary.
  void succeed(LuaRef out) {
    output = std::move(out);
    publish_output(output);
    run_->summary.nodes_succeeded++;
    finish(Outcome::Succeeded);
  }
  void succeed(const json& out) {
    push_json(run_->L(), out);
    succeed(LuaRef::pop(run_->L()));
  }
  // Settles the step with the success it has on record (a resumed run): no work is redone.
  void reuse_success(const NodeRunRow& r) {
    run_->summary.nodes_reused++;
    s_->notify(run_, "node.reused", path_, r.attempt, "{}");
    succeed(stored_output(r.output));
  }

  // Adds the record (JSON) of an artifact to ctx.artifacts under its name.
  void publish_artifact(const json& rec) {
    lua_State* L = run_->L();
    run_->artifacts.push(L);
    std::string name = rec.value("name", "");
    lua_pushlstring(L, name.data(), name.size());
    push_json(L, rec);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }

  // Calls a condition/selector function (or reads a constant) synchronously. On success pushes
  // the result and returns true; otherwise fills *e.
  // `arg` replaces the step's input as the second argument (a loop's `done` gets the output).
  bool call_predicate(const LuaRef& fn, ErrorInfo* e, const LuaRef* arg = nullptr) {
    lua_State* L = run_->L();
    fn.push(L);
    if (!lua_isfunction(L, -1)) return true;  // a constant (boolean, table)
    int base = lua_gettop(L);
    lua_pushcfunction(L, traceback_msgh);
    lua_insert(L, base);
    push_ctx(L, path_, 0);
    (arg ? *arg : input).push(L);
    // A condition is bounded by its step's timeout, or 10 s.
    LuaEngine* eng = run_->p->engine.get();
    uint64_t limit_ms =
        step_->timeout_ms() > 0 ? static_cast<uint64_t>(step_->timeout_ms()) : 10000;
    eng->predicate_deadline_ns = uv_hrtime() + limit_ms * 1000000;
    int rc = lua_pcall(L, 2, 1, base);
    eng->predicate_deadline_ns = 0;
    if (rc != 0) {
      std::string m = lua_isstring(L, -1) ? lua_tostring(L, -1) : "error in condition";
      auto nl = m.find("\nstack traceback:");
      e->type = "error";
      e->message = m.substr(0, nl);
      if (nl != std::string::npos) e->traceback = m.substr(nl + 1);
      e->retryable = false;
      e->node = step_->path;
      lua_settop(L, base - 1);
      return false;
    }
    lua_remove(L, base);
    return true;
  }

  // A decision (when/switch) is recorded like a node so that it is visible and replayable.
  // `attempt` > 0 numbers the row (a loop's decisions: one per iteration); otherwise it
  // follows the rows on record before the resume.
  void record_decision(const std::string& status, const std::string& output, const ErrorInfo* e,
                       const std::string& at = "", const std::string& event_data = "",
                       int attempt = 0) {
    const std::string& path = at.empty() ? path_ : at;
    int64_t now = wall_ms();
    if (attempt <= 0) {
      attempt = 1;
      if (const auto* h = run_->history_of(path))
        for (const auto& x : *h) attempt = std::max(attempt, x.attempt + 1);
    }
    NodeRunRow r;
    r.run_id = run_->id;
    r.node_id = path;
    r.attempt = attempt;
    r.kind = "decision";
    r.run_attempt = run_->run_attempt;
    r.status = status;
    r.started_at = r.finished_at = now;
    r.output = output;
    if (e) {
      r.error_type = e->type;
      r.error_message = e->message;
    }
    run_->redact(&r.output);
    run_->redact(&r.error_message);
    s_->store()->insert_node_final(r);
    json d = parse_json(!event_data.empty() ? event_data
                        : output.empty()    ? std::string("{}")
                                            : output,
                        nullptr);
    if (e) d = json{{"error_type", e->type}, {"message", e->message}, {"retryable", false}};
    s_->emit(run_, status == "succeeded" ? "node.succeeded" : "node.failed", path, attempt,
             dump_json(d));
  }
  // The stored decision at `path` (a succeeded decision row), or a discarded json.
  json stored_decision(const std::string& path) const {
    if (const auto* h = run_->history_of(path))
      for (auto it = h->rbegin(); it != h->rend(); ++it)
        if (it->kind == "decision" && it->status == NodeStatus::succeeded)
          return parse_json(it->output, nullptr);
    return json(json::value_t::discarded);
  }

  // Records the nodes of a subtree that will not run (an untaken branch, a join already
  // settled). `prefix` is the instance path the subtree would have had.
  void record_skipped_subtree(Step* st, const std::string& prefix, const std::string& reason);
  // Sets ctx.outputs[id] (steps without an id, e.g. map items, publish nothing there).
  void publish_output(const LuaRef& out) {
    if (step_->id.empty() || out.empty()) return;
    lua_State* L = run_->L();
    run_->outputs.push(L);
    lua_pushlstring(L, step_->id.data(), step_->id.size());
    out.push(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }

  StepHost* s_;
  Run* run_;
  Step* step_;
  Exec* parent_;
  std::string prefix_, path_;

 private:
  ExecRef self_ = ExecRef::make(this);
};

// Runs the pipeline's hooks of a run (engine/steps/hooks_exec.cc): each hook is a step whose
// parent this is, so that it is recorded, retried and resumed like any step; when it has
// settled, `done` is called (from the pump) with it. A hook's outcome changes nothing else.
class HookRunner : public Exec {
 public:
  HookRunner(StepHost* s, Run* run);
  void run(Step* hook, const std::string& prefix, LuaRef in, std::function<void(Exec*)> done);
  bool running() const;
  void begin() override {}
  void child_done(Exec* c) override;
  void cancel(const std::string& reason) override;

 private:
  struct Running {
    std::unique_ptr<Exec> exec;
    std::function<void(Exec*)> done;
  };
  std::vector<Running> hooks_;
};

inline Run::~Run() {
  root.reset();
  hooks.reset();
  slot.reset();
}

// `prefix`: see Exec::Exec. Children of a step get its path() as their prefix.
std::unique_ptr<Exec> make_exec(StepHost* s, Run* run, Step* step, Exec* parent,
                                const std::string& prefix);
// Factories of the concrete kinds (engine/steps/<kind>_exec.cc), all of this one type.
using ExecFactoryFn = std::unique_ptr<Exec>(StepHost* s, Run* run, Step* step, Exec* parent,
                                            const std::string& prefix);
using ExecFactory = ExecFactoryFn*;
ExecFactoryFn make_node_exec, make_seq_exec, make_parallel_exec, make_branch_exec,
    make_approve_exec, make_map_exec, make_loop_exec, make_call_exec, make_wait_exec,
    make_graph_list_exec;  // a seq or parallel with `after` inside (engine/steps/graph_exec.cc)

}  // namespace orch
