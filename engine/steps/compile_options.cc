// Option readers shared by several kinds, and the check of unknown keys (did you mean).
#include <algorithm>
#include <cmath>

#include "base/duration.h"
#include "engine/compile.h"
#include "engine/steps/compiler.h"

namespace orch {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

}  // namespace

// Reports string keys of table `t` not in `known` (keys starting with "__" are internal).
void Compiler::check_keys(int t, const std::vector<std::string>& known, int line,
                          const std::string& what, bool list_ok) {
  lua_pushnil(L_);
  while (lua_next(L_, t)) {
    lua_pop(L_, 1);
    if (lua_type(L_, -1) == LUA_TSTRING) {
      std::string k = lua_tostring(L_, -1);
      if (k.rfind("__", 0) == 0) continue;
      if (std::find(known.begin(), known.end(), k) == known.end()) {
        std::string hint = did_you_mean(k, known);
        error(line, what + ": unknown option '" + k + "'" +
                        (hint.empty() ? "" : " (did you mean '" + hint + "'?)") +
                        " (known: " + join(known) + ")");
      }
    } else if (lua_type(L_, -1) != LUA_TNUMBER) {
      error(line, what + ": option keys must be strings");
    } else if (!list_ok) {
      error(line, what + ": options are name = value pairs, but a list entry was given (known: " +
                      join(known) + ")");
    }
  }
}

bool Compiler::read_duration(int idx, int line, const std::string& what, int64_t* out) {
  std::string err;
  std::optional<int64_t> ms;
  if (lua_type(L_, idx) == LUA_TNUMBER)
    ms = seconds_to_ms(lua_tonumber(L_, idx), &err);
  else if (lua_type(L_, idx) == LUA_TSTRING)
    ms = parse_duration_ms(lua_tostring(L_, idx), &err);
  else
    err = std::string("expected a duration like \"30s\" or a number of seconds, got ") +
          luaL_typename(L_, idx);
  if (!ms) {
    error(line, what + ": " + err);
    return false;
  }
  *out = *ms;
  return true;
}

void Compiler::read_retry(int idx, int line, const std::string& what, RetryPolicy* r) {
  if (lua_type(L_, idx) == LUA_TNUMBER) {
    double n = lua_tonumber(L_, idx);
    if (n < 1 || std::floor(n) != n || n > 1000)
      error(line, what + ": retry must be a whole number of attempts between 1 and 1000");
    else
      r->max_attempts = static_cast<int>(n);
    return;
  }
  if (!lua_istable(L_, idx)) {
    error(line, what +
                    ": retry must be a number of attempts or a table {max=, backoff=, "
                    "base=, cap=, jitter=}, got " +
                    std::string(luaL_typename(L_, idx)));
    return;
  }
  check_keys(idx, option_keys(retry_options()), line, what + " retry");
  read_option_values(idx, retry_options(), line, what, r);
  if (r->cap_ms < r->base_ms) r->cap_ms = r->base_ms;
}

// retry = { max=, backoff=, base=, cap=, jitter= }
const Options<RetryPolicy>& Compiler::retry_options() {
  static const Options<RetryPolicy> table = {
      {"max", "number",
       [](Compiler& c, int v, int line, const std::string& what, RetryPolicy* r) {
         double n = lua_isnumber(c.L_, v) ? lua_tonumber(c.L_, v) : -1;
         if (n < 1 || std::floor(n) != n || n > 1000)
           c.error(line,
                   what + ": retry.max must be a whole number of attempts between 1 and 1000");
         else
           r->max_attempts = static_cast<int>(n);
       }},
      {"backoff", "\"exponential\" or \"fixed\"",
       [](Compiler& c, int v, int line, const std::string& what, RetryPolicy* r) {
         std::string b = lua_type(c.L_, v) == LUA_TSTRING ? lua_tostring(c.L_, v) : "";
         if (b == "exponential")
           r->exponential = true;
         else if (b == "fixed")
           r->exponential = false;
         else
           c.error(line, what + ": retry.backoff must be \"exponential\" or \"fixed\"");
       }},
      {"base", "duration",
       [](Compiler& c, int v, int line, const std::string& what, RetryPolicy* r) {
         c.read_duration(v, line, what + " retry.base", &r->base_ms);
       }},
      {"cap", "duration",
       [](Compiler& c, int v, int line, const std::string& what, RetryPolicy* r) {
         c.read_duration(v, line, what + " retry.cap", &r->cap_ms);
       }},
      {"jitter", "boolean",
       [](Compiler& c, int v, int line, const std::string& what, RetryPolicy* r) {
         if (lua_type(c.L_, v) != LUA_TBOOLEAN)
           c.error(line, what + ": retry.jitter must be true or false");
         else
           r->jitter = lua_toboolean(c.L_, v);
       }},
  };
  return table;
}

void Compiler::read_timeout_value(int v, int line, const std::string& what, int64_t* ms) {
  if (read_duration(v, line, what + " timeout", ms) && *ms == 0)
    error(line, what + ": timeout must be greater than zero");
}

// concurrency_key = "name", concurrency = n (default 1)
void Compiler::read_concurrency(int o, int line, const std::string& what, std::string* key,
                                int* limit) {
  lua_getfield(L_, o, "concurrency_key");
  if (!lua_isnil(L_, -1)) read_concurrency_key(lua_gettop(L_), line, what, key);
  lua_pop(L_, 1);
  lua_getfield(L_, o, "concurrency");
  if (!lua_isnil(L_, -1)) read_concurrency_limit(lua_gettop(L_), line, what, *key, limit);
  lua_pop(L_, 1);
}

void Compiler::read_concurrency_key(int v, int line, const std::string& what, std::string* key) {
  if (lua_type(L_, v) == LUA_TSTRING && lua_objlen(L_, v) > 0)
    *key = lua_tostring(L_, v);
  else
    error(line, what + ": concurrency_key must be a non-empty string, e.g. \"deploy\"");
}

void Compiler::read_concurrency_limit(int v, int line, const std::string& what,
                                      const std::string& key, int* limit) {
  double n = lua_isnumber(L_, v) ? lua_tonumber(L_, v) : 0;
  if (n < 1 || std::floor(n) != n || n > 100000)
    error(line, what + ": concurrency must be a whole number >= 1 (how many may hold '" + key +
                    "' at once)");
  else if (key.empty())
    error(line, what + ": concurrency is given without a concurrency_key");
  else
    *limit = static_cast<int>(n);
}

}  // namespace orch
