// orch.core: the C functions the Lua stdlib builds on (sleep, log, json, durations, hmac).

#include <cstring>
#include <string>
#include <vector>

#include "base/digest.h"
#include "base/duration.h"
#include "base/ids.h"
#include "bindings/async_op.h"
#include "bindings/convert.h"
#include "bindings/lua_state.h"
#include "drivers/timer.h"

namespace orch {

std::optional<int64_t> to_duration(lua_State* L, int idx, const char* fname, std::string* msg) {
  std::string err;
  std::optional<int64_t> ms;
  if (lua_type(L, idx) == LUA_TNUMBER)
    ms = seconds_to_ms(lua_tonumber(L, idx), &err);
  else if (lua_type(L, idx) == LUA_TSTRING)
    ms = parse_duration_ms(lua_tostring(L, idx), &err);
  else
    err = std::string("expected a duration (seconds or a string like \"5s\"), got ") +
          luaL_typename(L, idx);
  if (!ms) *msg = std::string(fname) + ": " + err;
  return ms;
}

int64_t check_duration(lua_State* L, int idx, const char* fname) {
  char msg[512];
  {
    std::string err;
    if (std::optional<int64_t> ms = to_duration(L, idx, fname, &err)) return *ms;
    snprintf(msg, sizeof msg, "%s", err.c_str());
  }
  // C++ locals are gone before raising.
  luaL_error(L, "%s", msg);
  return 0;
}

namespace {

int l_sleep(lua_State* L) {
  int64_t ms = check_duration(L, 1, "o.sleep");
  AsyncOp op = AsyncOp::begin(L, "o.sleep");
  auto* timer = new Timer(op.host()->loop());
  timer->start(static_cast<uint64_t>(ms), [op, timer] {
    op.complete([](lua_State*) { return 0; });
    delete timer;
  });
  return op.yield(L, [timer] { delete timer; });
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
  // Redacted here already: a log at load time goes straight to the terminal.
  std::string text(msg, n);
  if (e) {
    e->redactor().apply(&text);
    e->redactor().apply(&fields);
  }
  if (NodeServices* services = e ? e->services() : nullptr) {
    services->log(e->current, level, text, fields);
  } else {
    fprintf(stderr, "[%s] %s %s\n", level, text.c_str(), fields.c_str());
  }
  return 0;
}

// Reads o.json.encode's options into *indent (-1: compact). Returns "" or what is wrong.
std::string encode_options(lua_State* L, int idx, int* indent) {
  if (lua_isnoneornil(L, idx)) return "";
  if (!lua_istable(L, idx))
    return std::string("options must be a table, got ") + luaL_typename(L, idx);
  std::string bad;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    std::string key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    if (key == "pretty") {
      if (lua_toboolean(L, -1) && *indent < 0) *indent = 2;
    } else if (key == "indent") {
      if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) < 0 || lua_tonumber(L, -1) > 16)
        bad = "option 'indent' must be a number of spaces from 0 to 16";
      else
        *indent = static_cast<int>(lua_tointeger(L, -1));
    } else if (key == "sort_keys") {
      // Objects are kept sorted by key (byte order): the output is always deterministic.
      if (!lua_toboolean(L, -1))
        bad = "sort_keys = false is not supported (keys are always written in sorted order)";
    } else {
      bad = "unknown option '" + key + "' (known: pretty, indent, sort_keys)";
    }
    lua_pop(L, 1);
    if (!bad.empty()) {
      lua_pop(L, 1);
      return bad;
    }
  }
  return "";
}

// o.json.encode(value [, {pretty = true, indent = n, sort_keys = true}]) -> text. Raises on a
// value that has no JSON form (naming its path): the value is the program's own data.
int l_json_encode(lua_State* L) {
  luaL_checkany(L, 1);
  int top = lua_gettop(L);
  bool ok;
  {
    int indent = -1;
    std::string err = encode_options(L, 2, &indent);
    json j;
    ok = err.empty() && lua_to_json(L, 1, &j, &err, /*check_utf8=*/true);
    lua_settop(L, top);
    std::string s = ok ? dump_json(j, indent) : "o.json.encode: " + err;
    lua_pushlstring(L, s.data(), s.size());
  }
  if (!ok) return lua_error(L);
  return 1;
}

// "line:col" of byte offset `pos` (0-based) in text; columns count bytes from 1.
std::string line_col(std::string_view text, size_t pos) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < pos && i < text.size(); i++) {
    if (text[i] == '\n') {
      line++;
      col = 1;
    } else {
      col++;
    }
  }
  return std::to_string(line) + ":" + std::to_string(col);
}

// o.json.decode(text) -> value | nil, "line:col: message". Text comes from outside (a command's
// output, a file, a response): a malformed one is an operational failure, not a bug.
int l_json_decode(lua_State* L) {
  size_t n;
  const char* s = luaL_checklstring(L, 1, &n);
  std::string_view text(s, n);
  std::string err;
  json value;
  {
    // Nesting is bounded while parsing (push_json and a later encode recurse once per level);
    // integers beyond 64 bits stay exact, as strings of their digits (see push_json).
    JsonError e;
    if (parse_json_text(text, &value, &e, kMaxJsonDepth, /*big_integers_as_strings=*/true)) {
      push_json(L, value);
      return 1;
    }
    err = line_col(text, e.offset) + ": " + e.why;
  }
  lua_pushnil(L);
  lua_pushlstring(L, err.data(), err.size());
  return 2;
}

// core.hmac_sha256(key, data) -> lower-case hex. Signs webhook bodies (o.notify.webhook) and
// checks signed deliveries; both strings are raw bytes.
int l_hmac_sha256(lua_State* L) {
  size_t klen, dlen;
  const char* key = luaL_checklstring(L, 1, &klen);
  const char* data = luaL_checklstring(L, 2, &dlen);
  bool ok;
  {
    std::string hex = hmac_sha256_hex(std::string_view(key, klen), std::string_view(data, dlen));
    ok = !hex.empty();
    if (ok) lua_pushlstring(L, hex.data(), hex.size());
  }
  // C++ locals are gone before raising.
  if (!ok) return luaL_error(L, "hmac_sha256: OpenSSL HMAC failed");
  return 1;
}

// core.new_id() -> a fresh ULID (time-ordered, random): Message-IDs and other unique names.
int l_new_id(lua_State* L) {
  std::string id = new_ulid(wall_ms());
  lua_pushlstring(L, id.data(), id.size());
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
                                 {"hmac_sha256", l_hmac_sha256},
                                 {"new_id", l_new_id},
                                 {nullptr, nullptr}};
  lua_newtable(L);
  luaL_register(L, nullptr, fns);
  register_exec(L);
  register_fs(L);
  register_artifacts(L);
  register_http(L);
  register_secret(L);
  register_context(L);
  register_smtp(L);
  register_ingest(L);
  lua_pushlightuserdata(L, nullptr);
  lua_setfield(L, -2, "null");
  push_array_mt(L);
  lua_setfield(L, -2, "array_mt");
  lua_pushstring(L, ORCHRUN_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}

}  // namespace orch
