// The pipeline compiler, shared by the compile files of the step kinds
// (engine/steps/<kind>_compile.cc): reading the table a pipeline file returns, the options
// tables every kind reads its options through, and the diagnostics. Internal to the engine.
#pragma once
#include <algorithm>
#include <lua.hpp>
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "base/json_util.h"
#include "engine/graph.h"

namespace orch {

class Compiler;

// One entry of an options table: the key, what its value is (as the documentation says), and
// the check that reads a value into the target (and reports what is wrong with it). Every kind
// declares its options as such a table and reads them with Compiler::read_options.
template <class T>
struct Option {
  const char* key;
  const char* type;
  void (*read)(Compiler& c, int v, int line, const std::string& what, T* out);
  bool always = false;  // also called when the key is absent (a required option)
};
template <class T>
using Options = std::vector<Option<T>>;

class Compiler {
 public:
  Compiler(lua_State* L, const std::string& file, Pipeline* p, std::vector<Diagnostic>* d)
      : L_(L), file_(file), p_(p), diags_(d) {}
  bool run(int idx);
  int lua_absindex_compat(int idx) { return idx < 0 ? lua_gettop(L_) + idx + 1 : idx; }
  void error(int line, std::string msg) { diags_->push_back({file_, line, std::move(msg)}); }

  // Field helpers operating on the table at `t`.
  std::string str_field(int t, const char* k);
  int line_of(int t, int fallback);
  std::string kind_of(int t);
  std::string describe_value(int idx);

  // Reports string keys of table `t` not in `known` (keys starting with "__" are internal).
  void check_keys(int t, const std::vector<std::string>& known, int line, const std::string& what,
                  bool list_ok = false);
  bool read_duration(int idx, int line, const std::string& what, int64_t* out);
  void read_retry(int idx, int line, const std::string& what, RetryPolicy* r);
  bool check_id(int idx, int line, const std::string& kind, std::string* out);
  // The `id` field of the step table at `v`, checked as check_id does; sets the step's path
  // under `prefix` and returns how messages name the step ("map 'fanout'").
  std::string read_id(int v, int line, const char* kind, const std::string& prefix, Step* s) {
    lua_getfield(L_, v, "id");
    if (check_id(lua_gettop(L_), line, kind, &s->id)) s->path = prefix + s->id;
    lua_pop(L_, 1);
    return std::string(kind) + " '" + s->id + "'";
  }
  // A constructor called with more than `max` arguments (the DSL records how many in __nargs).
  void check_nargs(int v, int max, int line, std::string msg) {
    lua_getfield(L_, v, "__nargs");
    if (lua_tointeger(L_, -1) > max) error(line, std::move(msg));
    lua_pop(L_, 1);
  }
  void compile_pipeline_table(int idx);
  // finally = step, on = { <event> = step, ... } of the pipeline table at idx.
  void compile_hooks(int idx, int line, const std::string& what);
  void check_options(int line, const std::string& what, const json& spec,
                     std::initializer_list<const char*> known);
  void compile_triggers(int t, int line);

  int count_array(int t) { return static_cast<int>(lua_objlen(L_, t)); }
  static int find_line(const std::string& src, const std::string& word);

  // Compiles the array part of table `t` as the children of `parent`.
  void compile_children(int t, int line, const std::string& prefix, const std::string& what,
                        Step* parent, bool is_pipeline);
  std::unique_ptr<Step> compile_step(int v, int parent_line, const std::string& prefix,
                                     const std::string& where);
  // One per kind (engine/steps/<kind>_compile.cc).
  void compile_node(int v, int line, const std::string& prefix, Step* s);
  void compile_seq(int v, int line, const std::string& prefix, Step* s);
  // concurrency_key = "name", concurrency = n (default 1)
  void read_concurrency(int o, int line, const std::string& what, std::string* key, int* limit);

  // escalate = false | true | { message=, approvers=, timeout=, on_timeout= } at `idx`.
  void read_escalation(int idx, int line, const std::string& what, Escalation* e);

  // The options shared by o.approve and escalations.
  // The options a gate takes (o.approve, escalate = {...}), one value each (never nil).
  void read_gate_message(int v, int line, const std::string& what, std::string* message);
  void read_gate_approvers(int v, int line, const std::string& what,
                           std::vector<std::string>* approvers);
  void read_gate_on_timeout(int v, int line, const std::string& what, bool* approve);
  // A timeout value (never nil): a duration greater than zero.
  void read_timeout_value(int v, int line, const std::string& what, int64_t* ms);
  void read_concurrency_key(int v, int line, const std::string& what, std::string* key);
  void read_concurrency_limit(int v, int line, const std::string& what, const std::string& key,
                              int* limit);

  // Reads table `o` through `table`: keys not in it (nor in `also`) are reported, with the
  // closest known key; then each entry's check reads its value, in the table's order (absent
  // values only for entries that are `always` read).
  template <class T>
  void read_options(int o, const Options<T>& table, int line, const std::string& what, T* out,
                    const std::vector<std::string>& also = {}) {
    std::vector<std::string> known = option_keys(table);
    known.insert(known.end(), also.begin(), also.end());
    // Every step takes the options of its place in the graph (read by read_flow_options).
    if constexpr (std::is_same_v<T, Step>)
      for (const char* k : kFlowKeys)
        if (std::find(known.begin(), known.end(), k) == known.end()) known.emplace_back(k);
    check_keys(o, known, line, what);
    read_option_values(o, table, line, what, out);
  }
  // Reads the options table of step table `v` (its `opts` field), if it has one, through
  // `table`; anything else there is an error that shows `shape`, the options the kind takes
  // (may be "").
  template <class T>
  void read_step_options(int v, const Options<T>& table, int line, const std::string& what, T* out,
                         const char* shape) {
    lua_getfield(L_, v, "opts");
    int o = lua_gettop(L_);
    if (lua_istable(L_, o))
      read_options(o, table, line, what, out);
    else if (!lua_isnil(L_, o))
      error(line, what + ": options must be a table" + (*shape ? std::string(" ") + shape : "") +
                      ", got " + describe_value(o));
    lua_pop(L_, 1);
  }
  // The values only (the keys were checked already).
  template <class T>
  void read_option_values(int o, const Options<T>& table, int line, const std::string& what,
                          T* out) {
    for (const auto& opt : table) {
      lua_getfield(L_, o, opt.key);
      if (opt.always || !lua_isnil(L_, -1)) opt.read(*this, lua_gettop(L_), line, what, out);
      lua_pop(L_, 1);
    }
  }
  template <class T>
  static std::vector<std::string> option_keys(const Options<T>& table) {
    std::vector<std::string> keys;
    for (const auto& opt : table) keys.emplace_back(opt.key);
    return keys;
  }
  // The options tables shared by several kinds (engine/steps/node_compile.cc, approve_compile.cc).
  static const Options<Step>& node_options();
  static const Options<Escalation>& escalation_options();
  static const Options<RetryPolicy>& retry_options();

  // A body given as a plain function (o.map, o.loop): a node without an id of its own; its
  // path is the item's or the iteration's. `o` is the options table (or 0).
  std::unique_ptr<Step> function_body(int fn, int o, int line, const std::string& what);

  // The step run by a map (per item) or a loop (per iteration), at `v`: a step or a function.
  std::unique_ptr<Step> body_step(int v, int o, int line, const std::string& what,
                                  const std::string& prefix);
  void compile_map(int v, int line, const std::string& prefix, Step* s);
  void compile_loop(int v, int line, const std::string& prefix, Step* s);
  void compile_call(int v, int line, const std::string& prefix, Step* s);
  void compile_parallel(int v, int line, const std::string& prefix, Step* s);
  void compile_when(int v, int line, const std::string& prefix, Step* s);
  void compile_approve(int v, int line, const std::string& prefix, Step* s);
  void compile_switch(int v, int line, const std::string& prefix, Step* s);
  void compile_wait(int v, int line, const std::string& prefix, Step* s);
  // The options every step takes, whatever its kind: after, trigger, stage. They are read from
  // the step's options table, or for a seq from its list of steps (engine/steps/graph_compile.cc).
  static constexpr const char* kFlowKeys[] = {"after", "trigger", "stage"};
  void read_flow_options(int v, int line, Step* s);
  // Once every step is compiled: parents, the dependencies resolved and checked (unknown ids,
  // steps that may not have run, cycles), the lists that run as graphs.
  void link_graph(Step* root, const std::vector<Step*>& hooks);

  lua_State* L_;
  std::string file_;
  Pipeline* p_;
  std::vector<Diagnostic>* diags_;
  std::unordered_map<std::string, int> ids_;
  RetryPolicy default_retry_;
  int64_t default_timeout_ = 0;
};

}  // namespace orch
