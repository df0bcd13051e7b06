// orch.core: the C functions the Lua stdlib builds on (sleep, log, json, durations).
#include <cstring>
#include <string>

#include "bindings/convert.h"
#include "bindings/lua_state.h"
#include "runtime/drivers/timer.h"
#include "runtime/duration.h"
#include "runtime/ids.h"

namespace orch {

// Reads a duration argument (seconds as a number, or "250ms"/"5s"/...). Raises on bad input.
int64_t check_duration(lua_State* L, int idx, const char* fname) {
  char msg[512];
  {
    std::string err;
    std::optional<int64_t> ms;
    if (lua_type(L, idx) == LUA_TNUMBER)
      ms = seconds_to_ms(lua_tonumber(L, idx), &err);
    else if (lua_type(L, idx) == LUA_TSTRING)
      ms = parse_duration_ms(lua_tostring(L, idx), &err);
    else
      err = std::string("expected a duration (seconds or a string like \"5s\"), got ") +
            luaL_typename(L, idx);
    if (ms) return *ms;
    snprintf(msg, sizeof msg, "%s: %s", fname, err.c_str());
  }
  // C++ locals are gone before raising.
  luaL_error(L, "%s", msg);
  return 0;
}

namespace {

int l_sleep(lua_State* L) {
  int64_t ms = check_duration(L, 1, "o.sleep");
  Task* t = require_task(L, "o.sleep");
  TaskHost* host = LuaEngine::from(L)->host();
  auto* timer = new Timer(host->loop());
  t->waiting = true;
  t->cancel_hook = [timer] { delete timer; };
  timer->start(static_cast<uint64_t>(ms), [t, host, timer] {
    t->waiting = false;
    t->cancel_hook = nullptr;
    host->resume(t, 0);
    delete timer;
  });
  return lua_yield(L, 0);
}

int l_log(lua_State* L) {
  LuaEngine* e = LuaEngine::from(L);
  const char* level = luaL_checkstring(L, 1);
  size_t n;
  const char* msg = luaL_tolstring_compat(L, 2, &n);
  std::string fields;
  if (lua_istable(L, 3)) {
    json j;
    std::string err;
    if (lua_to_json(L, 3, &j, &err))
      fields = dump_json(j);
    else
      fields = dump_json(json{{"_error", err}});
  }
  if (e && e->host()) {
    e->host()->log(e->current, level, std::string_view(msg, n), fields);
  } else {
    fprintf(stderr, "[%s] %.*s %s\n", level, static_cast<int>(n), msg, fields.c_str());
  }
  return 0;
}

int l_json_encode(lua_State* L) {
  luaL_checkany(L, 1);
  bool pretty = false;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "pretty");
    pretty = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  int top = lua_gettop(L);
  bool ok;
  {
    json j;
    std::string err;
    ok = lua_to_json(L, 1, &j, &err);
    lua_settop(L, top);
    std::string s = ok ? dump_json(j, pretty ? 2 : -1) : "o.json.encode: " + err;
    lua_pushlstring(L, s.data(), s.size());
  }
  if (!ok) return lua_error(L);
  return 1;
}

int l_json_decode(lua_State* L) {
  size_t n;
  const char* s = luaL_checklstring(L, 1, &n);
  std::string err;
  json j = parse_json(std::string(s, n), &err);
  if (j.is_discarded()) {
    lua_pushnil(L);
    std::string m = "invalid JSON: " + err;
    lua_pushlstring(L, m.data(), m.size());
    return 2;
  }
  push_json(L, j);
  return 1;
}

int l_duration_ms(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(check_duration(L, 1, "o.duration_ms")));
  return 1;
}

int l_now_ms(lua_State* L) {
  lua_pushnumber(L, static_cast<lua_Number>(wall_ms()));
  return 1;
}

}  // namespace

const char* luaL_tolstring_compat(lua_State* L, int idx, size_t* len) {
  if (luaL_callmeta(L, idx, "__tostring")) {
    lua_replace(L, idx);
  } else if (!lua_isstring(L, idx)) {
    switch (lua_type(L, idx)) {
      case LUA_TNIL:
        lua_pushliteral(L, "nil");
        break;
      case LUA_TBOOLEAN:
        lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
        break;
      default:
        lua_pushfstring(L, "%s: %p", luaL_typename(L, idx), lua_topointer(L, idx));
        break;
    }
    lua_replace(L, idx);
  }
  return lua_tolstring(L, idx, len);
}

int luaopen_orch_core(lua_State* L) {
  static const luaL_Reg fns[] = {{"sleep", l_sleep},
                                 {"log", l_log},
                                 {"json_encode", l_json_encode},
                                 {"json_decode", l_json_decode},
                                 {"duration_ms", l_duration_ms},
                                 {"now_ms", l_now_ms},
                                 {nullptr, nullptr}};
  lua_newtable(L);
  luaL_register(L, nullptr, fns);
  register_exec(L);
  register_fs(L);
  register_artifacts(L);
  register_http(L);
  lua_pushlightuserdata(L, nullptr);
  lua_setfield(L, -2, "null");
  push_array_mt(L);
  lua_setfield(L, -2, "array_mt");
  lua_pushstring(L, ORCHRUN_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}

}  // namespace orch
