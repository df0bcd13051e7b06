// core.record_incidents and core.sha256: what o.ingest (stdlib/orch/ingest.lua) needs from C++.
// Parsing and validation are Lua's; storing goes through the scheduler (NodeServices), which
// writes the incidents in the run's open transaction and tags the run and its events.

#include <string>

#include "base/digest.h"
#include "bindings/async_op.h"
#include "bindings/convert.h"
#include "bindings/lua_state.h"

namespace orch {
namespace {

// core.sha256(text) -> lower-case hex digest
int l_sha256(lua_State* L) {
  size_t n;
  const char* s = luaL_checklstring(L, 1, &n);
  std::string hex = sha256_hex(std::string_view(s, n));
  lua_pushlstring(L, hex.data(), hex.size());
  return 1;
}

// Leaves the records (a list) or an error message on the stack; true on success.
bool record(lua_State* L, Task* t) {
  json list;
  std::string err, records;
  if (!lua_to_json(L, 1, &list, &err)) {
    err = "o.ingest: incidents cannot be stored: " + err;
  } else if (NodeServices* s = LuaEngine::from(L)->services(); !s) {
    err = "incidents are not available here";
  } else if (s->record_incidents(t, dump_json(list), &records, &err)) {
    push_json(L, parse_json(records, nullptr));
    return true;
  }
  lua_pushlstring(L, err.data(), err.size());
  return false;
}

// core.record_incidents(list) -> records | nil, message
int l_record_incidents(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  Task* t = require_task(L, "o.ingest");
  if (record(L, t)) return 1;
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

}  // namespace

void register_ingest(lua_State* L) {
  lua_pushcfunction(L, l_sha256);
  lua_setfield(L, -2, "sha256");
  lua_pushcfunction(L, l_record_incidents);
  lua_setfield(L, -2, "record_incidents");
}

}  // namespace orch
