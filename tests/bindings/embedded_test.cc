// The stdlib embedded in the binary: its build-time bytecode loads with the LuaJIT linked here
// (it is what every start uses) and keeps file:line for tracebacks.
#include "bindings/embedded.h"

#include <catch2/catch.hpp>
#include <lua.hpp>
#include <string>

using namespace orch;

TEST_CASE("each stdlib module's bytecode loads and keeps its file and lines", "[embedded]") {
  REQUIRE_FALSE(embedded_modules().empty());
  for (const auto& m : embedded_modules()) {
    INFO(m.name);
    REQUIRE_FALSE(m.bytecode.empty());
    CHECK(m.bytecode[0] == LUA_SIGNATURE[0]);  // bytecode, not source
    lua_State* L = luaL_newstate();
    REQUIRE(luaL_loadbuffer(L, m.bytecode.data(), m.bytecode.size(), m.path) == 0);
    lua_Debug ar;
    lua_getinfo(L, ">S", &ar);
    CHECK(std::string(ar.source) == std::string("@") + m.path);
    CHECK(ar.linedefined == 0);  // the main chunk; its functions keep their own lines
    lua_close(L);
  }
}

namespace {

// Lines with code in the main chunk of a loaded (not run) chunk at the top of the stack; pops it.
int active_lines(lua_State* L) {
  lua_Debug ar;
  if (lua_getinfo(L, ">L", &ar) == 0 || !lua_istable(L, -1)) return 0;
  int lines = 0;
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {
    lines++;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return lines;
}

}  // namespace

TEST_CASE("the stdlib's bytecode keeps its line information", "[embedded]") {
  // Tracebacks through stdlib code name stdlib/orch/FILE.lua:LINE only if the bytecode kept
  // its debug info.
  for (const auto& m : embedded_modules()) {
    INFO(m.name);
    lua_State* L = luaL_newstate();
    luaL_openlibs(L);
    REQUIRE(luaL_loadbuffer(L, m.bytecode.data(), m.bytecode.size(), m.path) == 0);
    CHECK(active_lines(L) > 0);
    // The control: the same chunk dumped stripped has none.
    lua_getglobal(L, "string");
    lua_getfield(L, -1, "dump");
    REQUIRE(luaL_loadbuffer(L, m.source.data(), m.source.size(), m.path) == 0);
    lua_pushboolean(L, 1);
    REQUIRE(lua_pcall(L, 2, 1, 0) == 0);
    size_t n = 0;
    const char* stripped = lua_tolstring(L, -1, &n);
    REQUIRE(luaL_loadbuffer(L, stripped, n, m.path) == 0);
    CHECK(active_lines(L) == 0);
    lua_close(L);
  }
}
