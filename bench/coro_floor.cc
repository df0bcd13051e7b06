// The floor for 100,000 waiting branches: bare LuaJIT coroutines parked on libuv timers, with no
// scheduler, no store and no events. Each coroutine runs a Lua function that calls park(ms), a C
// function that starts a uv_timer and yields; the timer's callback resumes the coroutine, which
// then returns a small table (as a node returns its output) and finishes.
//   coro_floor [N] [MS]      (default 100000 coroutines, 100 ms)
// Prints wall time (from luaL_newstate to the last coroutine finished) and this process's peak
// RSS as JSON. bench/run.sh measures it with bench/measure instead (the same way as orchrun) and
// computes bytes per coroutine as (peak RSS(N) - peak RSS(1)) / N.
#include <sys/resource.h>
#include <uv.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

extern "C" {
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
}

namespace {

struct Parked {
  uv_timer_t timer;
  lua_State* co;
  int ref;  // anchors the coroutine in the registry while it waits
};

long finished = 0;
long failed = 0;

void resume(lua_State* co, int ref, int nargs) {
  int rc = lua_resume(co, nargs);
  if (rc == LUA_YIELD) return;  // parked again (its park() holds the reference)
  if (rc == 0) {
    finished++;
  } else {
    failed++;
    fprintf(stderr, "coroutine failed: %s\n", lua_tostring(co, -1));
  }
  luaL_unref(co, LUA_REGISTRYINDEX, ref);
}

// park(ms): starts a timer and yields; the timer's callback resumes the coroutine.
int park(lua_State* co) {
  auto ms = static_cast<uint64_t>(luaL_checknumber(co, 1));
  auto* p = new Parked;
  p->co = co;
  lua_pushthread(co);
  p->ref = luaL_ref(co, LUA_REGISTRYINDEX);
  uv_timer_init(uv_default_loop(), &p->timer);
  p->timer.data = p;
  uv_timer_start(
      &p->timer,
      [](uv_timer_t* t) {
        auto* p = static_cast<Parked*>(t->data);
        lua_State* co = p->co;
        int ref = p->ref;
        uv_close(reinterpret_cast<uv_handle_t*>(t),
                 [](uv_handle_t* h) { delete static_cast<Parked*>(h->data); });
        resume(co, ref, 0);
      },
      ms, 0);
  return lua_yield(co, 0);
}

const char* kBody = R"(
local park, ms = ...
return function(i)
  park(ms)
  return { i = i }
end
)";

}  // namespace

int main(int argc, char** argv) {
  long n = argc > 1 ? atol(argv[1]) : 100000;
  double ms = argc > 2 ? atof(argv[2]) : 100;
  auto t0 = std::chrono::steady_clock::now();
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  if (luaL_loadstring(L, kBody) != 0) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_pushcfunction(L, park);
  lua_pushnumber(L, ms);
  lua_call(L, 2, 1);  // the body function, left on L's stack
  for (long i = 1; i <= n; i++) {
    lua_State* co = lua_newthread(L);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);  // pops the thread; anchors it until park()
    lua_pushvalue(L, -1);
    lua_xmove(L, co, 1);
    lua_pushnumber(co, static_cast<double>(i));
    // The first resume runs up to park(), which takes its own reference while it waits.
    int rc = lua_resume(co, 1);
    if (rc == 0) {
      finished++;
    } else if (rc != LUA_YIELD) {
      failed++;
      fprintf(stderr, "coroutine failed: %s\n", lua_tostring(co, -1));
    }
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
  }
  uv_run(uv_default_loop(), UV_RUN_DEFAULT);
  double wall =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  lua_close(L);
  uv_loop_close(uv_default_loop());
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  printf(
      "{\"coroutines\":%ld,\"finished\":%ld,\"failed\":%ld,\"wall_ms\":%.1f,\"peak_rss_kb\":%ld}\n",
      n, finished, failed, wall, ru.ru_maxrss);
  return finished == n && failed == 0 ? 0 : 1;
}
