// Differential: the bounded string.find/match/gmatch/gsub (bindings/lua_patterns.cc) against
// LuaJIT's own on the same pattern and subject. Any difference in results or error messages is
// a finding. Input: pattern, a NUL byte, subject (no NUL: the whole input is both).
// A pattern that backtracks past the step budget is stopped in ours; LuaJIT's is then not run
// (it would take as long as the budget allows, and longer).
#include <cstdint>
#include <cstring>
#include <lua.hpp>
#include <string>

#include "bindings/lua_patterns.h"
#include "fuzz/fuzz_util.h"

namespace {

int g_checks = 0;
void budget(lua_State* L) {
  if (++g_checks > 64) luaL_error(L, "fuzz: step budget spent");  // 64 * 16384 steps
}

const char kCases[] = R"lua(
local function show(...)
  local t = {}
  for i = 1, select("#", ...) do t[i] = tostring((select(i, ...))) end
  return table.concat(t, ",")
end
local function gm(s, p)
  local out, n = {}, 0
  for a, b in s:gmatch(p) do
    n = n + 1
    out[n] = show(a, b)
    if n > 100 then break end
  end
  return table.concat(out, "|")
end
return function(s, p)
  local r = {}
  local function try(f, ...)
    local ok, v = pcall(f, ...)
    r[#r + 1] = (ok and "" or "error: ") .. tostring(v)
  end
  try(function() return show(s:find(p)) end)
  try(function() return show(s:find(p, 2)) end)
  try(function() return show(s:find(p, -3)) end)
  try(function() return show(s:match(p)) end)
  try(gm, s, p)
  try(function() return show(s:gsub(p, "<%0>")) end)
  try(function() return show(s:gsub(p, "%1", 3)) end)
  try(function() return show(s:gsub(p, { a = "A" })) end)
  try(function() return show(s:gsub(p, function(x) return x == "b" and "B" or nil end)) end)
  return table.concat(r, "\n")
end
)lua";

struct State {
  lua_State* L;
  int fn;
};

State make(bool bounded) {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  if (bounded) orch::install_bounded_patterns(L, budget);
  if (luaL_loadbuffer(L, kCases, sizeof kCases - 1, "=patterns_fuzz") != 0 ||
      lua_pcall(L, 0, 1, 0) != 0)
    orch::fuzz::fail(std::string("loading the cases: ") + lua_tostring(L, -1));
  return {L, luaL_ref(L, LUA_REGISTRYINDEX)};
}

std::string run(const State& st, const std::string& s, const std::string& p) {
  lua_rawgeti(st.L, LUA_REGISTRYINDEX, st.fn);
  lua_pushlstring(st.L, s.data(), s.size());
  lua_pushlstring(st.L, p.data(), p.size());
  std::string out;
  if (lua_pcall(st.L, 2, 1, 0) != 0)
    out = std::string("raised: ") + lua_tostring(st.L, -1);
  else
    out = lua_tostring(st.L, -1);
  lua_pop(st.L, 1);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static State ours = make(true), ref = make(false);
  std::string in(reinterpret_cast<const char*>(data), size);
  size_t nul = in.find('\0');
  std::string p = nul == std::string::npos ? in : in.substr(0, nul);
  std::string s = nul == std::string::npos ? in : in.substr(nul + 1);
  g_checks = 0;
  std::string got = run(ours, s, p);
  if (got.find("fuzz: step budget spent") != std::string::npos) return 0;
  std::string want = run(ref, s, p);
  if (got != want)
    orch::fuzz::fail("bounded patterns differ from LuaJIT's\npattern: " + p + "\nsubject: " + s +
                     "\nours:\n" + got + "\nLuaJIT:\n" + want);
  return 0;
}
