// o.seq and o.parallel: lists of steps.
#include <cmath>

#include "engine/steps/compiler.h"

namespace orch {
namespace {

const Options<Step> kParallelOptions = {
    {"join", "\"all\", \"any\" or a number of branches",
     [](Compiler& c, int v, int line, const std::string& what, Step* s) {
       int n = static_cast<int>(s->children.size());
       if (lua_type(c.L_, v) == LUA_TSTRING) {
         std::string j = lua_tostring(c.L_, v);
         if (j == "all")
           s->parallel().join = 0;
         else if (j == "any")
           s->parallel().join = -1;
         else
           c.error(line, what + ": join must be \"all\", \"any\" or a number of branches, got '" +
                             j + "'");
       } else if (lua_type(c.L_, v) == LUA_TNUMBER) {
         double j = lua_tonumber(c.L_, v);
         if (j < 1 || std::floor(j) != j || (n > 0 && j > n))
           c.error(line, what + ": join = " + std::string(lua_tostring(c.L_, v)) +
                             " must be between 1 and the number of branches (" + std::to_string(n) +
                             ")");
         else
           s->parallel().join = static_cast<int>(j);  // n == count: n successes (no optionals)
       } else {
         c.error(line, what + ": join must be \"all\", \"any\" or a number");
       }
     }},
    {"max", "number",
     [](Compiler& c, int v, int line, const std::string& what, Step* s) {
       double m = lua_isnumber(c.L_, v) ? lua_tonumber(c.L_, v) : 0;
       if (m < 1 || std::floor(m) != m)
         c.error(line, what + ": max must be a whole number of branches >= 1");
       else
         s->parallel().max_concurrency = static_cast<int>(m);
     }},
};

}  // namespace

void Compiler::compile_seq(int v, int line, const std::string& prefix, Step* s) {
  lua_getfield(L_, v, "id");
  bool has_id = !lua_isnil(L_, -1);
  if (has_id && check_id(lua_gettop(L_), line, "seq", &s->id)) s->path = prefix + s->id;
  lua_pop(L_, 1);
  std::string child_prefix = has_id ? prefix + s->id + "/" : prefix;
  lua_getfield(L_, v, "children");
  if (!lua_istable(L_, -1) || count_array(lua_gettop(L_)) == 0)
    error(line, "o.seq" + (s->id.empty() ? std::string() : " '" + s->id + "'") +
                    ": expects a non-empty list of steps");
  else
    compile_children(lua_gettop(L_), line, child_prefix,
                     "o.seq" + (s->id.empty() ? "" : " '" + s->id + "'"), s, false);
  lua_pop(L_, 1);
}

void Compiler::compile_parallel(int v, int line, const std::string& prefix, Step* s) {
  std::string what = read_id(v, line, "parallel", prefix, s);
  lua_getfield(L_, v, "children");
  int c = lua_gettop(L_);
  if (!lua_istable(L_, c) || count_array(c) == 0) {
    error(line, what + ": expects a non-empty list of branches");
  } else {
    compile_children(c, line, s->path + "/", what, s, false);
    for (size_t i = 0; i < s->children.size(); i++)
      if (s->children[i]->id.empty())
        error(line, what + ": branch " + std::to_string(i + 1) +
                        " needs an id, so that its output can be found; use "
                        "o.seq(\"name\", { ... })");
  }
  lua_pop(L_, 1);
  read_step_options(v, kParallelOptions, line, what, s, "{join=, max=}");
}

}  // namespace orch
