// o.call: another pipeline as a child run.
#include <regex>

#include "engine/steps/compiler.h"

namespace orch {
namespace {

const Options<Step> kCallOptions = {
    {"timeout", "duration",
     [](Compiler& c, int v, int line, const std::string& what, Step* s) {
       c.read_timeout_value(v, line, what, &s->call().timeout_ms);
     }},
    {"description", "string",
     [](Compiler& c, int v, int line, const std::string& what, Step* s) {
       if (lua_type(c.L_, v) == LUA_TSTRING) s->description = lua_tostring(c.L_, v);
     }},
};

}  // namespace

void Compiler::compile_call(int v, int line, const std::string& prefix, Step* s) {
  std::string what = read_id(v, line, "call", prefix, s);
  check_nargs(v, 4, line, what + ": o.call takes (id, pipeline, input, options)");
  s->call().target = str_field(v, "target");
  static const std::regex kTarget("^[A-Za-z0-9_.][A-Za-z0-9_./-]*$");
  if (s->call().target.empty() || !std::regex_match(s->call().target, kTarget) ||
      s->call().target.find("..") != std::string::npos)
    error(line, what +
                    ": the pipeline to call must be a pipeline name or a .lua path beside this "
                    "file (no '..'), e.g. o.call(\"notify\", \"notify-oncall\", input)");
  lua_getfield(L_, v, "input");
  if (lua_type(L_, -1) == LUA_TFUNCTION || lua_istable(L_, -1))
    s->call().input = LuaRef::at(L_, -1);
  else if (!lua_isnil(L_, -1))
    error(line,
          what + ": input must be a table or a function(ctx, input), got " + describe_value(-1));
  lua_pop(L_, 1);
  read_step_options(v, kCallOptions, line, what, s, "{timeout=}");
}

}  // namespace orch
