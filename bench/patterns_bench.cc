// The bounded pattern functions (bindings/lua_patterns.cc) against LuaJIT's own, side by side
// in one process: the same Lua workload in two states, one with install_bounded_patterns (and a
// check that does what the engine's does: a registry lookup and a clock read), one without.
//   patterns_bench [ROUNDS]      (default 5; prints the median of each, in ms, as JSON)
// Workloads: parsing 20,000 log lines with captures (match), gsub over 1 MB, gmatch over words,
// and plain finds.
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <lua.hpp>
#include <string>
#include <vector>

#include "bindings/lua_patterns.h"

namespace {

void check(lua_State* L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "bench.key");  // as LuaEngine::from does
  lua_pop(L, 1);
  (void)uv_hrtime();
}

const char kWork[] = R"lua(
local lines = {}
for i = 1, 20000 do
  lines[i] = ("2026-12-03T07:%02d:%02d host%d sshd[%d]: Failed password for user%d from 10.0.%d.%d port %d"):format(
    i % 60, i % 60, i % 7, 1000 + i, i % 50, i % 256, (i * 7) % 256, 40000 + i)
end
local text = table.concat(lines, "\n")
return {
  match = function()
    local n = 0
    for i = 1, #lines do
      local ts, host, user, ip = lines[i]:match("^(%S+) (%S+) sshd%[%d+%]: Failed password for (%S+) from ([%d%.]+)")
      if ip then n = n + 1 end
    end
    return n
  end,
  gsub = function() local s, n = text:gsub("user(%d+)", "u<%1>") return n end,
  gmatch = function() local n = 0 for w in text:gmatch("%a+") do n = n + 1 end return n end,
  find = function()
    local n = 0
    for i = 1, #lines do if lines[i]:find("password", 1, true) then n = n + 1 end end
    for i = 1, #lines do if lines[i]:find("host3") then n = n + 1 end end
    return n
  end,
}
)lua";

double time_ms(lua_State* L, const char* name) {
  lua_pushvalue(L, -1);
  lua_getfield(L, -1, name);
  auto t0 = std::chrono::steady_clock::now();
  if (lua_pcall(L, 0, 1, 0) != 0) {
    fprintf(stderr, "%s: %s\n", name, lua_tostring(L, -1));
    exit(1);
  }
  auto t1 = std::chrono::steady_clock::now();
  lua_pop(L, 2);
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

lua_State* make(bool bounded) {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  // As in pipeline states: the JIT is off (the count hook must see every loop).
  luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
  if (bounded) orch::install_bounded_patterns(L, check);
  if (luaL_loadbuffer(L, kWork, sizeof kWork - 1, "=bench") != 0 || lua_pcall(L, 0, 1, 0) != 0) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    exit(1);
  }
  return L;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 5;
  lua_State* ours = make(true);
  lua_State* luajit = make(false);
  printf("{");
  const char* names[] = {"match", "gsub", "gmatch", "find"};
  for (int k = 0; k < 4; k++) {
    std::vector<double> a, b;
    for (int i = 0; i < rounds; i++) {  // interleaved, so that both see the same machine
      a.push_back(time_ms(ours, names[k]));
      b.push_back(time_ms(luajit, names[k]));
    }
    printf("%s\"%s\": {\"bounded_ms\": %.2f, \"luajit_ms\": %.2f, \"ratio\": %.2f}", k ? ", " : "",
           names[k], median(a), median(b), median(a) / median(b));
  }
  printf("}\n");
  lua_close(ours);
  lua_close(luajit);
}
