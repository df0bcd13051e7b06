// The bounded string.find/match/gmatch/gsub (lua_patterns.cc) against LuaJIT's own: the same
// results and the same errors on fixed cases and on 20,000 random patterns and subjects; and the
// bound itself: a backtracking pattern stops at the check.
#include <catch2/catch.hpp>
#include <lua.hpp>
#include <random>
#include <string>

#include "bindings/lua_patterns.h"

using namespace orch;

namespace {

// Runs `snippet` (a function body of (s, p) returning one string) in a state; the result, or
// "error: <message>".
std::string run(lua_State* L, const std::string& fn, const std::string& s, const std::string& p) {
  lua_settop(L, 0);
  lua_getglobal(L, "CASES");
  lua_getfield(L, -1, fn.c_str());
  lua_pushlstring(L, s.data(), s.size());
  lua_pushlstring(L, p.data(), p.size());
  if (lua_pcall(L, 2, 1, 0) != 0) return std::string("error: ") + lua_tostring(L, -1);
  size_t n;
  const char* r = lua_tolstring(L, -1, &n);
  return r ? std::string(r, n) : "(nil)";
}

// Each function turns every result into one string, so that results compare as text.
const char kCases[] = R"lua(
local function show(...)
  local t = {}
  for i = 1, select("#", ...) do t[i] = tostring((select(i, ...))) end
  return table.concat(t, ",")
end
CASES = {
  find = function(s, p) return show(s:find(p)) end,
  find3 = function(s, p) return show(s:find(p, 3)) .. ";" .. show(s:find(p, -2)) end,
  plain = function(s, p) return show(s:find(p, 1, true)) .. ";" .. show(string.find(s, p, 2, 1)) end,
  match = function(s, p) return show(s:match(p)) .. ";" .. show(s:match(p, 2)) end,
  gmatch = function(s, p)
    local out, n = {}, 0
    for a, b in s:gmatch(p) do
      n = n + 1
      out[#out + 1] = show(a, b)
      if n > 50 then break end
    end
    return table.concat(out, "|")
  end,
  gsub = function(s, p)
    return show(s:gsub(p, "<%0>")) .. ";" .. show(s:gsub(p, "x", 2)) .. ";" ..
           show(s:gsub(p, { a = "A", ab = false })) .. ";" ..
           show(s:gsub(p, function(c) if c == "b" then return nil end return "[" .. tostring(c) .. "]" end))
  end,
}
)lua";

lua_State* state(bool bounded) {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  if (bounded) install_bounded_patterns(L, nullptr);
  REQUIRE(luaL_dostring(L, kCases) == 0);
  return L;
}

int g_checks = 0;
void counting_check(lua_State* L) {
  if (++g_checks >= 3) luaL_error(L, "stopped by the check");
}

}  // namespace

TEST_CASE("bounded patterns give LuaJIT's results and errors", "[patterns]") {
  lua_State* ref = state(false);
  lua_State* ours = state(true);
  const char* fns[] = {"find", "find3", "plain", "match", "gmatch", "gsub"};
  using namespace std::string_literals;
  struct Case {
    std::string s, p;
  };
  const Case fixed[] = {
      {"hello world", "o w"},
      {"hello world", "(o)(r)"},
      {"hello", "l+"},
      {"hello", "^h(.-)o$"},
      {"  trim  ", "^%s*(.-)%s*$"},
      {"key = value", "(%w+)%s*=%s*(%w+)"},
      {"THE (quick) fox", "%((%a+)%)"},
      {"f(a(b)c)d", "%b()"},
      {"THE (quick) fox", "%f[%a]%a+"},
      {"abcabc", "(a)(b)%2"},
      {"abab", "(ab)%1"},
      {"x=1, y=2", "()=()"},
      {"", ""},
      {"abc", ""},
      {"abc", "x*"},
      {"a.b", "."},
      {"a.b", "%."},
      {"a$b", "$b"},
      {"a]b", "[]]"},
      {"a-b", "[a-]"},
      {"A1_b", "[%w_]+"},
      {"\x01\x7f\x80 \t", "[%c]"},
      {"tab\there", "%s"},
      {"0xFF", "%x+"},
      {"a,b;c", "%p"},
      {"aaa", "a-b"},
      {"aaa", "a?a?a?a"},
      {"abc", "%"},
      {"abc", "[a"},
      {"abc", "(()"},
      {"abc", "%1"},
      {"abc", "(a"},
      {"abc", "a)"},
      {"abc", "%b"},
      {"abc", "%f"},
      {"abc", "%fa"},
      {"abc", "%g+"},
      {"abc", "%z"},
      {"a\0b"s, "%z"},
      {"a\0b"s, "[%Z]+"},
      {"abc", "^"},
      {"abc", "$"},
      {"hello", "(h)(e)(l)(l)(o)"},
      {"one two  three", "%S+"},
      {"x", "[^%a]"},
  };
  for (const auto& c : fixed)
    for (const char* fn : fns) {
      const std::string &s = c.s, &p = c.p;
      INFO(fn << " s=" << s << " p=" << p);
      CHECK(run(ours, fn, s, p) == run(ref, fn, s, p));
    }

  // Random patterns from the pieces patterns are made of, on subjects from a small alphabet.
  std::mt19937 rng(20261203);
  const char* pieces[] = {"a",      "b", ".", "%a", "%d", "%s", "%w", "%A", "[ab]", "[^a]",
                          "[a-c]",  "*", "+", "-",  "?",  "(",  ")",  "()", "%1",   "%b()",
                          "%f[%w]", "^", "$", "%",  "[",  "]",  "%.", "1",  " ",    "x"};
  const char alphabet[] = "aab1 ().x";
  int compared = 0;
  for (int i = 0; i < 20000; i++) {
    std::string p, s;
    int np = 1 + static_cast<int>(rng() % 6);
    for (int k = 0; k < np; k++) p += pieces[rng() % (sizeof pieces / sizeof *pieces)];
    int ns = static_cast<int>(rng() % 12);
    for (int k = 0; k < ns; k++) s += alphabet[rng() % (sizeof alphabet - 1)];
    const char* fn = fns[rng() % 6];
    std::string want = run(ref, fn, s, p), got = run(ours, fn, s, p);
    if (got != want) {
      INFO(fn << " s='" << s << "' p='" << p << "'");
      CHECK(got == want);
    }
    compared++;
  }
  CHECK(compared == 20000);
  lua_close(ref);
  lua_close(ours);
}

TEST_CASE("a backtracking pattern is stopped by the check, in every function", "[patterns]") {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  install_bounded_patterns(L, counting_check);
  const char* calls[] = {
      "local s = string.rep('a', 3000) return s:find('.-.-.-.-.-.-b')",
      "local s = string.rep('a', 3000) return s:match('(.-)(.-)(.-)(.-)(.-)b')",
      "local s = string.rep('a', 3000) for x in s:gmatch('.-.-.-.-.-b') do end",
      "local s = string.rep('a', 3000) return s:gsub('.-.-.-.-.-b', '')",
      "local s = string.rep('a', 3000) return s:find('a*a*a*a*a*b')",
      // long but linear: a plain search over 200 MB passes the check once per call
      "local s = string.rep('a', 2^20) for i = 1, 300 do s:find('b', 1, true) end",
  };
  for (const char* code : calls) {
    g_checks = 0;
    INFO(code);
    int rc = luaL_dostring(L, code);
    REQUIRE(rc != 0);
    CHECK(std::string(lua_tostring(L, -1)).find("stopped by the check") != std::string::npos);
    lua_settop(L, 0);
  }
  // A quick match never reaches the check.
  g_checks = 0;
  REQUIRE(luaL_dostring(L, "return ('key=value'):match('(%w+)=(%w+)')") == 0);
  CHECK(g_checks == 0);
  lua_close(L);
}
