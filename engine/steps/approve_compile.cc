// o.approve, and the gate options escalations share with it.
#include "engine/steps/compiler.h"

namespace orch {
namespace {

// The gate options of a target that has message, approvers, timeout_ms and approve_on_timeout
// (ApproveSpec, Escalation), reached through `get`.
template <class T, auto get>
Options<T> gate_options() {
  return {
      {"message", "string",
       [](Compiler& c, int v, int line, const std::string& what, T* t) {
         c.read_gate_message(v, line, what, &get(t)->message);
       }},
      {"approvers", "list of names",
       [](Compiler& c, int v, int line, const std::string& what, T* t) {
         c.read_gate_approvers(v, line, what, &get(t)->approvers);
       }},
      {"timeout", "duration",
       [](Compiler& c, int v, int line, const std::string& what, T* t) {
         c.read_timeout_value(v, line, what, &get(t)->timeout_ms);
       }},
      {"on_timeout", "\"reject\" or \"approve\"",
       [](Compiler& c, int v, int line, const std::string& what, T* t) {
         c.read_gate_on_timeout(v, line, what, &get(t)->approve_on_timeout);
       }},
  };
}

ApproveSpec* approve_of(Step* s) {
  return &s->approve();
}
Escalation* itself(Escalation* e) {
  return e;
}

const Options<Step> kApproveOptions = [] {
  Options<Step> t = gate_options<Step, approve_of>();
  t.push_back(
      {"description", "string", [](Compiler& c, int v, int line, const std::string& what, Step* s) {
         if (lua_type(c.L_, v) == LUA_TSTRING) s->description = lua_tostring(c.L_, v);
       }});
  return t;
}();

}  // namespace

const Options<Escalation>& Compiler::escalation_options() {
  static const Options<Escalation> table = gate_options<Escalation, itself>();
  return table;
}

void Compiler::compile_approve(int v, int line, const std::string& prefix, Step* s) {
  std::string what = read_id(v, line, "approve", prefix, s);
  read_step_options(v, kApproveOptions, line, what, s,
                    "{message=, approvers=, timeout=, on_timeout=}");
}

void Compiler::read_gate_message(int v, int line, const std::string& what, std::string* message) {
  if (lua_type(L_, v) == LUA_TSTRING)
    *message = lua_tostring(L_, v);
  else
    error(line, what + ": message must be a string");
}

void Compiler::read_gate_approvers(int v, int line, const std::string& what,
                                   std::vector<std::string>* approvers) {
  if (!lua_istable(L_, v)) {
    error(line, what + ": approvers must be a list of names, e.g. { \"alice\", \"bob\" }");
    return;
  }
  int n = static_cast<int>(lua_objlen(L_, v));
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L_, v, i);
    if (lua_type(L_, -1) == LUA_TSTRING)
      approvers->emplace_back(lua_tostring(L_, -1));
    else
      error(line, what + ": approvers must be a list of names");
    lua_pop(L_, 1);
  }
  if (n == 0) error(line, what + ": approvers is empty; leave it out to let anyone approve");
}

void Compiler::read_gate_on_timeout(int v, int line, const std::string& what, bool* approve) {
  if (lua_type(L_, v) != LUA_TSTRING) {
    error(line, what + ": on_timeout must be \"reject\" or \"approve\"");
    return;
  }
  std::string t = lua_tostring(L_, v);
  if (t == "approve")
    *approve = true;
  else if (t != "reject")
    error(line, what + ": on_timeout must be \"reject\" or \"approve\", got '" + t + "'");
}

// escalate = false | true | { message=, approvers=, timeout=, on_timeout= } at `idx`.
void Compiler::read_escalation(int idx, int line, const std::string& what, Escalation* e) {
  if (lua_isnil(L_, idx)) return;
  if (lua_type(L_, idx) == LUA_TBOOLEAN) {
    e->enabled = lua_toboolean(L_, idx);
    return;
  }
  if (!lua_istable(L_, idx)) {
    error(line, what +
                    ": escalate must be true, false or a table {message=, approvers=, "
                    "timeout=, on_timeout=}, got " +
                    describe_value(idx));
    return;
  }
  read_options(idx, escalation_options(), line, what + " escalate", e);
}

}  // namespace orch
