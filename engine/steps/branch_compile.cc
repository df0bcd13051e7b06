// o.when and o.switch: a decision and its branches.
#include <algorithm>

#include "engine/steps/compiler.h"

namespace orch {

void Compiler::compile_when(int v, int line, const std::string& prefix, Step* s) {
  std::string what = read_id(v, line, "when", prefix, s);
  check_nargs(v, 4, line, what + ": o.when takes (id, condition, then_step [, else_step])");
  lua_getfield(L_, v, "cond");
  if (lua_type(L_, -1) != LUA_TFUNCTION && lua_type(L_, -1) != LUA_TBOOLEAN)
    error(line, what + ": the condition must be a function(ctx, input), got " + describe_value(-1));
  else
    s->when().cond = LuaRef::at(L_, -1);
  lua_pop(L_, 1);
  for (const char* branch : {"then", "else"}) {
    lua_getfield(L_, v, branch);
    if (lua_isnil(L_, -1) && std::string(branch) == "else") {
      s->children.push_back(nullptr);
    } else if (lua_isnil(L_, -1)) {
      error(line, what + ": needs a step to run when the condition holds");
      s->children.push_back(nullptr);
    } else {
      s->children.push_back(
          compile_step(lua_gettop(L_), line, s->path + "/", what + " " + branch + " branch"));
    }
    lua_pop(L_, 1);
  }
}

void Compiler::compile_switch(int v, int line, const std::string& prefix, Step* s) {
  std::string what = read_id(v, line, "switch", prefix, s);
  lua_getfield(L_, v, "selector");
  if (lua_type(L_, -1) != LUA_TFUNCTION)
    error(line, what +
                    ": the selector must be a function(ctx, input) returning a case name, "
                    "got " +
                    describe_value(-1));
  else
    s->switch_().selector = LuaRef::at(L_, -1);
  lua_pop(L_, 1);
  lua_getfield(L_, v, "cases");
  int c = lua_gettop(L_);
  if (!lua_istable(L_, c)) {
    error(line, what + ": cases must be a table { name = step, ..., default = step }");
    lua_pop(L_, 1);
    return;
  }
  std::vector<std::string> keys;
  lua_pushnil(L_);
  while (lua_next(L_, c)) {
    lua_pop(L_, 1);
    if (lua_type(L_, -1) == LUA_TSTRING)
      keys.emplace_back(lua_tostring(L_, -1));
    else if (lua_type(L_, -1) == LUA_TNUMBER)
      keys.push_back(std::to_string(lua_tointeger(L_, -1)));
  }
  std::sort(keys.begin(), keys.end(), [](const std::string& a, const std::string& b) {
    if ((a == "default") != (b == "default")) return b == "default";
    return a < b;
  });
  if (keys.empty()) error(line, what + ": needs at least one case");
  for (const auto& k : keys) {
    lua_getfield(L_, c, k.c_str());
    if (lua_isnil(L_, -1)) {  // numeric key
      lua_pop(L_, 1);
      lua_pushnumber(L_, std::stod(k));
      lua_gettable(L_, c);
    }
    auto child = compile_step(lua_gettop(L_), line, s->path + "/", what + " case '" + k + "'");
    lua_pop(L_, 1);
    if (child) {
      s->children.push_back(std::move(child));
      s->switch_().case_keys.push_back(k);
    }
  }
  lua_pop(L_, 1);
}

}  // namespace orch
