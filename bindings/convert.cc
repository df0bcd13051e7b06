#include "bindings/convert.h"

#include <cmath>
#include <cstdint>
#include <vector>

namespace orch {
namespace {

const char kArrayMtKey[] = "orch.array_mt";
// 2^53: every integer up to it is exact in a double (a Lua number).
constexpr int64_t kMaxExactInteger = int64_t{1} << 53;

bool is_array_mt(lua_State* L, int idx) {
  if (!lua_getmetatable(L, idx)) return false;
  lua_getfield(L, LUA_REGISTRYINDEX, kArrayMtKey);
  bool eq = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return eq;
}

std::string key_to_path(lua_State* L, int idx) {
  if (lua_type(L, idx) == LUA_TNUMBER) return "[" + std::to_string(lua_tointeger(L, idx)) + "]";
  size_t n;
  const char* s = lua_tolstring(L, idx, &n);  // only called on strings/numbers
  return "." + std::string(s, n);
}

struct Encoder {
  lua_State* L;
  std::string* err;
  bool check_utf8;
  std::vector<const void*> seen;

  bool fail(const std::string& path, const std::string& why) {
    *err =
        (path.empty() ? std::string("value") : "value at " + path.substr(path[0] == '.' ? 1 : 0)) +
        ": " + why;
    return false;
  }

  // `depth`: how many tables enclose the value (0 for the argument itself).
  bool encode(int idx, json* out, const std::string& path, int depth) {
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    switch (lua_type(L, idx)) {
      case LUA_TNIL:
        *out = nullptr;
        return true;
      case LUA_TBOOLEAN:
        *out = lua_toboolean(L, idx) != 0;
        return true;
      case LUA_TNUMBER: {
        double d = lua_tonumber(L, idx);
        if (!std::isfinite(d)) return fail(path, "number is not finite (NaN or inf)");
        if (std::floor(d) == d && std::fabs(d) <= 9007199254740992.0)
          *out = static_cast<int64_t>(d);
        else
          *out = d;
        return true;
      }
      case LUA_TSTRING: {
        size_t n;
        const char* s = lua_tolstring(L, idx, &n);
        if (check_utf8) {
          size_t bad = invalid_utf8_at(std::string_view(s, n));
          if (bad != std::string_view::npos)
            return fail(path, "invalid UTF-8 in string (byte " + std::to_string(bad + 1) + ")");
        }
        *out = std::string(s, n);
        return true;
      }
      case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == nullptr) {
          *out = nullptr;
          return true;
        }
        return fail(path, "cannot convert a userdata to JSON");
      case LUA_TTABLE:
        return encode_table(idx, out, path, depth);
      default:
        return fail(path, std::string("cannot convert a ") + luaL_typename(L, idx) + " to JSON");
    }
  }

  bool encode_table(int idx, json* out, const std::string& path, int depth) {
    // The same bound as parsing: what a node returns can be read back, dumped and copied.
    if (depth + 1 > kMaxJsonDepth)
      return fail(path, "nested too deeply (more than " + std::to_string(kMaxJsonDepth) +
                            " levels of tables)");
    const void* p = lua_topointer(L, idx);
    for (const void* s : seen)
      if (s == p) return fail(path, "table contains a cycle");
    seen.push_back(p);
    // Array when every key is an integer 1..n (n = count of keys).
    size_t count = 0;
    bool array = true;
    double maxk = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      lua_pop(L, 1);
      count++;
      if (lua_type(L, -1) == LUA_TNUMBER) {
        double k = lua_tonumber(L, -1);
        if (k >= 1 && std::floor(k) == k) {
          if (k > maxk) maxk = k;
          continue;
        }
      }
      array = false;
    }
    if (array && static_cast<size_t>(maxk) != count) array = false;
    if (count == 0) array = is_array_mt(L, idx);
    if (array) {
      *out = json::array();
      for (size_t i = 1; i <= count; i++) {
        lua_rawgeti(L, idx, static_cast<int>(i));
        json v;
        bool ok = encode(-1, &v, path + "[" + std::to_string(i) + "]", depth + 1);
        lua_pop(L, 1);
        if (!ok) return false;
        out->push_back(std::move(v));
      }
    } else {
      *out = json::object();
      lua_pushnil(L);
      while (lua_next(L, idx)) {
        int kt = lua_type(L, -2);
        if (kt != LUA_TSTRING && kt != LUA_TNUMBER) {
          lua_pop(L, 2);
          return fail(path, std::string("table key of type ") + lua_typename(L, kt) +
                                " cannot be a JSON object key");
        }
        // Copy the key before tostring-ing it: lua_tolstring on a number key would confuse
        // lua_next.
        lua_pushvalue(L, -2);
        size_t kn;
        const char* ks = lua_tolstring(L, -1, &kn);
        std::string key(ks, kn);
        std::string sub = path + key_to_path(L, -3);
        lua_pop(L, 1);
        if (check_utf8 && invalid_utf8_at(key) != std::string_view::npos) {
          lua_pop(L, 2);
          return fail(path, "invalid UTF-8 in an object key");
        }
        json v;
        if (!encode(-1, &v, sub, depth + 1)) {
          lua_pop(L, 2);
          return false;
        }
        (*out)[key] = std::move(v);
        lua_pop(L, 1);
      }
    }
    seen.pop_back();
    return true;
  }
};

}  // namespace

void convert_init(lua_State* L) {
  lua_newtable(L);
  lua_pushstring(L, "array");
  lua_setfield(L, -2, "__name");
  lua_setfield(L, LUA_REGISTRYINDEX, kArrayMtKey);
}

void push_array_mt(lua_State* L) {
  lua_getfield(L, LUA_REGISTRYINDEX, kArrayMtKey);
}

size_t invalid_utf8_at(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (size_t k = 1; k < len; k++) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and values past U+10FFFF are not UTF-8.
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

bool lua_to_json(lua_State* L, int idx, json* out, std::string* err, bool check_utf8) {
  luaL_checkstack(L, 2 * kMaxJsonDepth + 20, "converting to JSON");
  Encoder e{L, err, check_utf8, {}};
  return e.encode(idx, out, "", 0);
}

namespace {

// `depth`: how many containers enclose j. Each open level holds a table (and an object's key)
// on the Lua stack: push_json reserves room for the deepest one at the start.
void push_value(lua_State* L, const json& j, int depth) {
  if (depth >= kMaxRecordJsonDepth && (j.is_array() || j.is_object())) {
    lua_pushlightuserdata(L, nullptr);
    return;
  }
  switch (j.type()) {
    case json::value_t::null:
    case json::value_t::discarded:
      lua_pushlightuserdata(L, nullptr);
      break;
    case json::value_t::boolean:
      lua_pushboolean(L, j.get<bool>());
      break;
    case json::value_t::number_integer: {
      int64_t v = j.get<int64_t>();
      if (v > kMaxExactInteger || v < -kMaxExactInteger) {
        std::string digits = std::to_string(v);
        lua_pushlstring(L, digits.data(), digits.size());
      } else {
        lua_pushnumber(L, static_cast<lua_Number>(v));
      }
      break;
    }
    case json::value_t::number_unsigned: {
      uint64_t v = j.get<uint64_t>();
      if (v > static_cast<uint64_t>(kMaxExactInteger)) {
        std::string digits = std::to_string(v);
        lua_pushlstring(L, digits.data(), digits.size());
      } else {
        lua_pushnumber(L, static_cast<lua_Number>(v));
      }
      break;
    }
    case json::value_t::number_float:
      lua_pushnumber(L, j.get<double>());
      break;
    case json::value_t::string: {
      const auto& s = j.get_ref<const std::string&>();
      lua_pushlstring(L, s.data(), s.size());
      break;
    }
    case json::value_t::binary:
      lua_pushnil(L);
      break;
    case json::value_t::array: {
      lua_createtable(L, static_cast<int>(j.size()), 0);
      int i = 1;
      for (const auto& v : j) {
        push_value(L, v, depth + 1);
        lua_rawseti(L, -2, i++);
      }
      push_array_mt(L);
      lua_setmetatable(L, -2);
      break;
    }
    case json::value_t::object: {
      lua_createtable(L, 0, static_cast<int>(j.size()));
      for (const auto& [k, v] : j.items()) {
        lua_pushlstring(L, k.data(), k.size());
        push_value(L, v, depth + 1);
        lua_rawset(L, -3);
      }
      break;
    }
  }
}

}  // namespace

void push_json(lua_State* L, const json& j) {
  luaL_checkstack(L, 2 * kMaxRecordJsonDepth + 10, "converting from JSON");
  push_value(L, j, 0);
}

}  // namespace orch
