// core.secret: a secret value for pipeline code, remembered by the engine's redactor so that
// it is replaced by "***" wherever orchrun stores or prints it (base/redact.h).
#include <string>

#include "bindings/lua_state.h"

namespace orch {
namespace {

// core.secret(name) -> value | nil, message, "missing" | "refused" | "invalid"
int l_secret(lua_State* L) {
  size_t n;
  const char* s = luaL_checklstring(L, 1, &n);
  std::string name(s, n);
  std::string err;
  const char* kind = "invalid";
  std::optional<std::string> v;
  LuaEngine* e = LuaEngine::from(L);
  if (!valid_secret_name(name)) {
    err = "o.secret: invalid secret name '" + name +
          "' (letters, digits and '_', not starting with a digit)";
  } else {
    v = e->secrets().get(name, &err);
    kind = err.find("is not set") != std::string::npos ? "missing" : "refused";
  }
  if (!v) {
    lua_pushnil(L);
    lua_pushlstring(L, err.data(), err.size());
    lua_pushstring(L, kind);
    return 3;
  }
  e->redactor().add(*v);
  lua_pushlstring(L, v->data(), v->size());
  return 1;
}

// core.has_secret(text) -> true when text holds a value read with o.secret (what would be
// redacted): callers then describe the text without it (a webhook URL with a token inside).
int l_has_secret(lua_State* L) {
  size_t n;
  const char* s = luaL_checklstring(L, 1, &n);
  LuaEngine* e = LuaEngine::from(L);
  bool found = false;
  {
    std::string text(s, n);
    found = e && e->redactor().applied(text) != text;
  }
  lua_pushboolean(L, found);
  return 1;
}

}  // namespace

void register_secret(lua_State* L) {
  lua_pushcfunction(L, l_secret);
  lua_setfield(L, -2, "secret");
  lua_pushcfunction(L, l_has_secret);
  lua_setfield(L, -2, "has_secret");
}

}  // namespace orch
