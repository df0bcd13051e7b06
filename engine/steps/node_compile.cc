// o.node: the body, its options, and node bodies given as functions (o.map, o.loop).
#include "engine/steps/compiler.h"

namespace orch {

void Compiler::compile_node(int v, int line, const std::string& prefix, Step* s) {
  std::string what = read_id(v, line, "node", prefix, s);
  check_nargs(v, 3, line, what + ": o.node takes (id, function, options); extra arguments given");
  lua_getfield(L_, v, "fn");
  if (lua_type(L_, -1) != LUA_TFUNCTION)
    error(line, what + ": the body must be a function(ctx, input), got " + describe_value(-1));
  else
    s->node().fn = LuaRef::at(L_, -1);
  lua_pop(L_, 1);
  p_->node_count++;
  s->node().retry = default_retry_;
  s->node().timeout_ms = default_timeout_;
  read_step_options(v, node_options(), line, what, s, "");
}

// The options of a node body (o.node, or a function given to o.map / o.loop).
const Options<Step>& Compiler::node_options() {
  static const Options<Step> table = {
      {"retry", "attempts or {max=, backoff=, base=, cap=, jitter=}",
       [](Compiler& c, int v, int line, const std::string& what, Step* s) {
         s->node().retry = RetryPolicy{};
         c.read_retry(v, line, what, &s->node().retry);
       }},
      {"timeout", "duration",
       [](Compiler& c, int v, int line, const std::string& what, Step* s) {
         c.read_timeout_value(v, line, what, &s->node().timeout_ms);
       }},
      {"optional", "boolean",
       [](Compiler& c, int v, int line, const std::string& what, Step* s) {
         if (lua_type(c.L_, v) != LUA_TBOOLEAN)
           c.error(line, what + ": optional must be true or false, got " + c.describe_value(v));
         else
           s->node().optional = lua_toboolean(c.L_, v);
       }},
      {"fallback", "function(ctx, input, err)",
       [](Compiler& c, int v, int line, const std::string& what, Step* s) {
         if (lua_type(c.L_, v) != LUA_TFUNCTION)
           c.error(line, what + ": fallback must be a function(ctx, input, err), got " +
                             c.describe_value(v));
         else
           s->node().fallback = LuaRef::at(c.L_, v);
       }},
      {"skip_if", "function(ctx, input) or boolean",
       [](Compiler& c, int v, int line, const std::string& what, Step* s) {
         if (lua_type(c.L_, v) != LUA_TFUNCTION && lua_type(c.L_, v) != LUA_TBOOLEAN)
           c.error(line, what + ": skip_if must be a function(ctx, input) or a boolean, got " +
                             c.describe_value(v));
         else
           s->node().skip_if = LuaRef::at(c.L_, v);
       }},
      {"escalate", "boolean or {message=, approvers=, timeout=, on_timeout=}",
       [](Compiler& c, int v, int line, const std::string& what, Step* s) {
         c.read_escalation(v, line, what, &s->node().escalate);
       }},
      {"concurrency_key", "string",
       [](Compiler& c, int v, int line, const std::string& what, Step* s) {
         c.read_concurrency_key(v, line, what, &s->node().concurrency_key);
       }},
      {"concurrency", "number",
       [](Compiler& c, int v, int line, const std::string& what, Step* s) {
         c.read_concurrency_limit(v, line, what, s->node().concurrency_key,
                                  &s->node().concurrency_limit);
       }},
      {"description", "string",
       [](Compiler& c, int v, int line, const std::string& what, Step* s) {
         if (lua_type(c.L_, v) == LUA_TSTRING) s->description = lua_tostring(c.L_, v);
       }},
  };
  return table;
}

// A body given as a plain function (o.map, o.loop): a node without an id of its own; its
// path is the item's or the iteration's. `o` is the options table (or 0).
std::unique_ptr<Step> Compiler::function_body(int fn, int o, int line, const std::string& what) {
  auto n = std::make_unique<Step>();
  n->spec = NodeSpec{};
  n->line = line;
  n->node().fn = LuaRef::at(L_, fn);
  n->node().retry = default_retry_;
  n->node().timeout_ms = default_timeout_;
  p_->node_count++;
  if (o) read_option_values(o, node_options(), line, what, n.get());
  return n;
}

// The step run by a map (per item) or a loop (per iteration), at `v`: a step or a function.
std::unique_ptr<Step> Compiler::body_step(int v, int o, int line, const std::string& what,
                                          const std::string& prefix) {
  if (lua_type(L_, v) == LUA_TFUNCTION) return function_body(v, o, line, what);
  if (lua_isnil(L_, v)) {
    error(line, what + ": needs a step (or a function(ctx, input)) to run");
    return nullptr;
  }
  return compile_step(v, line, prefix, what + " body");
}

}  // namespace orch
