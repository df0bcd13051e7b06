// o.map: one instance of a step per item.
#include <cmath>

#include "engine/steps/compiler.h"

namespace orch {
namespace {

const Options<Step> kMapOptions = {
    {"max", "number",
     [](Compiler& c, int v, int line, const std::string& what, Step* s) {
       double m = lua_isnumber(c.L_, v) ? lua_tonumber(c.L_, v) : 0;
       if (m < 1 || std::floor(m) != m)
         c.error(line, what + ": max must be a whole number of items at once, >= 1");
       else
         s->map().max_concurrency = static_cast<int>(m);
     }},
};

}  // namespace

void Compiler::compile_map(int v, int line, const std::string& prefix, Step* s) {
  std::string what = read_id(v, line, "map", prefix, s);
  check_nargs(v, 4, line, what + ": o.map takes (id, items, step, options)");
  lua_getfield(L_, v, "items");
  if (lua_type(L_, -1) == LUA_TFUNCTION || lua_istable(L_, -1))
    s->map().items = LuaRef::at(L_, -1);
  else
    error(line, what + ": items must be a list or a function(ctx, input) returning one, got " +
                    describe_value(-1));
  lua_pop(L_, 1);
  lua_getfield(L_, v, "opts");
  int o = lua_gettop(L_);
  lua_getfield(L_, v, "body");
  int b = lua_gettop(L_);
  bool fn_body = lua_type(L_, b) == LUA_TFUNCTION;
  if (lua_istable(L_, o)) {
    // A function body takes a node's options in the same table.
    read_options(o, kMapOptions, line, what, s,
                 fn_body ? option_keys(node_options()) : std::vector<std::string>{});
  } else if (!lua_isnil(L_, o)) {
    error(line, what + ": options must be a table {max=, ...}");
  }
  auto body = body_step(b, fn_body && lua_istable(L_, o) ? o : 0, line, what, s->path + "[]/");
  if (body) s->children.push_back(std::move(body));
  lua_pop(L_, 2);
}

}  // namespace orch
