// A compiled pipeline: a tree of steps with stable ids, validated, holding references to the
// Lua functions it runs. Built by engine/compile.cc with each kind's
// engine/steps/<kind>_compile.cc; executed by the scheduler through engine/steps/<kind>_exec.cc.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "bindings/lua_ref.h"

namespace orch {

class LuaEngine;  // bindings/lua_state.h

// The order matters: make_exec indexes its factories by it, and it is StepSpec's.
enum class StepKind { Node, Seq, Parallel, When, Switch, Approve, Map, Loop, Call, Wait };
const char* step_kind_name(StepKind k);

struct RetryPolicy {
  int max_attempts = 1;     // total attempts, including the first
  bool exponential = true;  // else fixed
  int64_t base_ms = 500;
  int64_t cap_ms = 30000;
  bool jitter = true;  // "full jitter": a uniform delay in [0, computed]
  // The delay before attempt `next_attempt` (2 for the first retry). `unit` in [0,1) is the
  // random draw, passed in so tests can pin it.
  int64_t delay_ms(int next_attempt, double unit) const;
};

// Where a node (or a loop) goes when it cannot settle by itself: a verdict of
// needs_human_review, or retryable verdicts until the retry cap. `enabled = false` makes such a
// node fail instead (error type "verdict").
struct Escalation {
  bool enabled = true;
  std::string message;
  std::vector<std::string> approvers;  // empty: anyone
  int64_t timeout_ms = 0;              // 0: wait for a person as long as it takes
  bool approve_on_timeout = false;
};

struct Trigger {
  std::string type;  // webhook | schedule | manual
  std::string spec;  // its options as JSON, for serve and for display
  int line = 0;
};

// What each kind of step holds besides the common fields of Step. The variant's order is
// StepKind's.
struct NodeSpec {
  LuaRef fn;
  LuaRef fallback;
  LuaRef skip_if;
  RetryPolicy retry;
  int64_t timeout_ms = 0;  // per attempt; 0 = none
  bool optional = false;
  Escalation escalate;
  // Across runs (and processes sharing the store): at most concurrency_limit attempts of nodes
  // with this key run at once; the others wait in arrival order.
  std::string concurrency_key;
  int concurrency_limit = 1;
};
struct SeqSpec {};
struct ParallelSpec {
  int join = 0;             // 0 means all; -1 any; n > 0 means n branches
  int max_concurrency = 0;  // 0 = unlimited
};
// children: [then, else]; an absent else is null.
struct WhenSpec {
  LuaRef cond;
};
// children: one per case, in case_keys order.
struct SwitchSpec {
  LuaRef selector;
  std::vector<std::string> case_keys;
};
struct ApproveSpec {
  std::string message;
  std::vector<std::string> approvers;  // empty: anyone
  int64_t timeout_ms = 0;
  bool approve_on_timeout = false;  // on_timeout = "approve" (default "reject")
};
// `items` is a function(ctx, input) returning the list, or the list itself; the only child is
// the step run for each item (with the item as its input).
struct MapSpec {
  LuaRef items;
  int max_concurrency = 0;  // 0 = unlimited
};
// At most max_iterations runs of the only child; `done` is a function(ctx, output) deciding
// after each (absent: the child's verdict decides).
struct LoopSpec {
  int max_iterations = 0;
  LuaRef done;
  Escalation escalate;
};
// The pipeline to run as a child run, and its input (function(ctx, input), a table, or absent
// for this step's own input).
struct CallSpec {
  std::string target;
  LuaRef input;
  int64_t timeout_ms = 0;
};
// o.wait: the run is parked until the signal `signal` is delivered to it (the API's
// POST /api/runs/ID/signals/NAME, orchrun signal); its payload is the step's output.
struct WaitSpec {
  std::string signal;
  int64_t timeout_ms = 0;             // 0: as long as it takes
  bool continue_on_timeout = false;   // on_timeout = "continue" (default "fail")
};
using StepSpec = std::variant<NodeSpec, SeqSpec, ParallelSpec, WhenSpec, SwitchSpec, ApproveSpec,
                              MapSpec, LoopSpec, CallSpec, WaitSpec>;

// When a step with `after` runs, given how its dependencies settled (Airflow's names):
// success: all succeeded (or skipped themselves); failure: all failed; always: once all
// settled; one_failed / one_success: as soon as one failed / succeeded. A step whose rule
// cannot be met is recorded as skipped (upstream_failed or upstream_succeeded).
enum class TriggerRule { Success, Failure, Always, OneFailed, OneSuccess };
const char* trigger_rule_name(TriggerRule r);
bool parse_trigger_rule(const std::string& s, TriggerRule* out);

struct Step {
  std::string id;    // as written; empty for an anonymous seq
  std::string path;  // stable id: parent ids joined with '/' ("gather/metrics")
  int line = 0;
  std::string description;
  Step* parent = nullptr;  // null for the root (and for the pipeline's hooks)
  // Dependencies (`after = {...}`): the steps this one waits for, and its rule. A list (seq,
  // parallel) with a child that has `after` runs as a graph: a child without `after` follows
  // the child written before it in a seq (nothing in a parallel); `after = {}` starts at once.
  bool has_after = false;
  std::vector<std::string> after;  // ids, as written
  std::vector<Step*> deps;         // resolved by the compiler
  TriggerRule trigger = TriggerRule::Success;
  int trigger_line = 0;      // where `trigger` was written (0: not written)
  bool depended_on = false;  // some step's `after` names this one
  bool graph_list = false;   // a seq/parallel whose children run as a graph
  std::string stage;         // the stage the run moves into when this step starts
  // A hook: a step whose rule is failure, always or one_failed. Its outcome is recorded and
  // shown; it does not decide the status of the list (or run) it is in.
  bool is_hook() const {
    return has_after && (trigger == TriggerRule::Failure || trigger == TriggerRule::Always ||
                         trigger == TriggerRule::OneFailed);
  }
  // Seq/Parallel: the steps; the others: see their spec.
  std::vector<std::unique_ptr<Step>> children;
  StepSpec spec;

  StepKind kind() const { return static_cast<StepKind>(spec.index()); }
  // The kind's spec; asking for another kind's throws std::bad_variant_access.
  NodeSpec& node() { return std::get<NodeSpec>(spec); }
  const NodeSpec& node() const { return std::get<NodeSpec>(spec); }
  ParallelSpec& parallel() { return std::get<ParallelSpec>(spec); }
  const ParallelSpec& parallel() const { return std::get<ParallelSpec>(spec); }
  WhenSpec& when() { return std::get<WhenSpec>(spec); }
  const WhenSpec& when() const { return std::get<WhenSpec>(spec); }
  SwitchSpec& switch_() { return std::get<SwitchSpec>(spec); }
  const SwitchSpec& switch_() const { return std::get<SwitchSpec>(spec); }
  ApproveSpec& approve() { return std::get<ApproveSpec>(spec); }
  const ApproveSpec& approve() const { return std::get<ApproveSpec>(spec); }
  MapSpec& map() { return std::get<MapSpec>(spec); }
  const MapSpec& map() const { return std::get<MapSpec>(spec); }
  LoopSpec& loop() { return std::get<LoopSpec>(spec); }
  const LoopSpec& loop() const { return std::get<LoopSpec>(spec); }
  CallSpec& call() { return std::get<CallSpec>(spec); }
  const CallSpec& call() const { return std::get<CallSpec>(spec); }
  WaitSpec& wait() { return std::get<WaitSpec>(spec); }
  const WaitSpec& wait() const { return std::get<WaitSpec>(spec); }
  // The timeout of a node attempt, an approval or a call; 0 for the other kinds.
  int64_t timeout_ms() const;
};

// The events a pipeline's hooks run on (`on = { ... }`), and `finally`.
inline constexpr const char* kHookEvents[] = {"awaiting_approval", "failed", "succeeded",
                                              "cancelled"};
struct PipelineHook {
  std::string event;  // one of kHookEvents, or "finally"
  std::unique_ptr<Step> step;
};

struct Pipeline {
  // Declared first so that it is destroyed last: every LuaRef below needs the state.
  std::unique_ptr<LuaEngine> engine;
  std::string name, description, file, source, sha256;
  std::vector<std::string> tags;
  std::string concurrency_key;  // for the whole run; see NodeSpec::concurrency_key
  int concurrency_limit = 1;
  std::vector<Trigger> triggers;
  std::unique_ptr<Step> root;  // a Seq
  // Run when the run enters a state (on = {...}), in that order, and then `finally`.
  std::vector<PipelineHook> hooks;
  const Step* hook(const std::string& event) const {
    for (const auto& h : hooks)
      if (h.event == event) return h.step.get();
    return nullptr;
  }
  std::unordered_map<std::string, Step*> by_path;
  int node_count = 0;  // leaf nodes

  Pipeline();
  ~Pipeline();  // releases the refs while the state is alive, then the state
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;
};

// file:line: message (file:line:column: for a JSON definition, whose errors point into the text)
struct Diagnostic {
  std::string file;
  int line = 0;
  std::string message;
  int column = 0;  // 0: not known
  std::string str() const {
    if (line <= 0) return file + ": " + message;
    return file + ":" + std::to_string(line) +
           (column > 0 ? ":" + std::to_string(column) : std::string()) + ": " + message;
  }
};

}  // namespace orch
