// o.loop: its step again until done.
#include <cmath>

#include "engine/steps/compiler.h"

namespace orch {
namespace {

const Options<Step> kLoopOptions = {
    {"max", "number",
     [](Compiler& c, int v, int line, const std::string& what, Step* s) {
       double m = lua_isnumber(c.L_, v) ? lua_tonumber(c.L_, v) : 0;
       if (m < 1 || std::floor(m) != m || m > 10000)
         c.error(line, what + ": max (the most iterations) is required: a whole number from 1 to " +
                           "10000");
       else
         s->loop().max_iterations = static_cast<int>(m);
     },
     /*always=*/true},
    {"done", "function(ctx, output)",
     [](Compiler& c, int v, int line, const std::string& what, Step* s) {
       if (lua_type(c.L_, v) == LUA_TFUNCTION)
         s->loop().done = LuaRef::at(c.L_, v);
       else
         c.error(line,
                 what + ": done must be a function(ctx, output) returning true when finished");
     }},
    {"escalate", "boolean or {message=, approvers=, timeout=, on_timeout=}",
     [](Compiler& c, int v, int line, const std::string& what, Step* s) {
       c.read_escalation(v, line, what, &s->loop().escalate);
     }},
    {"description", "string",
     [](Compiler& c, int v, int line, const std::string& what, Step* s) {
       if (lua_type(c.L_, v) == LUA_TSTRING) s->description = lua_tostring(c.L_, v);
     }},
};

}  // namespace

void Compiler::compile_loop(int v, int line, const std::string& prefix, Step* s) {
  std::string what = read_id(v, line, "loop", prefix, s);
  lua_getfield(L_, v, "opts");
  int o = lua_gettop(L_);
  lua_getfield(L_, v, "body");
  int b = lua_gettop(L_);
  if (!lua_istable(L_, o)) {
    error(line, what + ": options must be a table {max = n, done = function(ctx, output)}, got " +
                    describe_value(o));
  } else {
    read_options(o, kLoopOptions, line, what, s);
  }
  auto body = body_step(b, 0, line, what, s->path + "#/");
  if (body) s->children.push_back(std::move(body));
  lua_pop(L_, 2);
}

}  // namespace orch
