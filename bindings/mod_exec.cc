// core.exec: run a child process from a node body. The coroutine yields until the process has
// exited and its output is read. Arguments are checked before anything starts (misuse raises);
// a process that cannot be started returns nil, message, code.
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "bindings/async_op.h"
#include "bindings/lua_state.h"
#include "drivers/process.h"

extern char** environ;

namespace orch {
namespace {

// Fills spec from the Lua argument; returns false with *err on misuse.
bool read_spec(lua_State* L, ProcessSpec* spec, std::string* err) {
  if (lua_type(L, 1) == LUA_TSTRING) {
    spec->argv = {"/bin/sh", "-c", lua_tostring(L, 1)};
    return true;
  }
  if (!lua_istable(L, 1)) {
    *err = std::string(
               "o.exec expects a command: a table {\"prog\", \"arg\", ...} or a shell "
               "string, got ") +
           luaL_typename(L, 1);
    return false;
  }
  int n = static_cast<int>(lua_objlen(L, 1));
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
      *err = "o.exec: argument " + std::to_string(i) + " must be a string, got " +
             luaL_typename(L, -1);
      lua_pop(L, 1);
      return false;
    }
    spec->argv.emplace_back(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  // Known keys only: a typo (e.g. "timout") must not be silently ignored.
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TNUMBER) continue;
    if (lua_type(L, -1) != LUA_TSTRING) {
      *err = "o.exec: option keys must be strings";
      lua_pop(L, 1);
      return false;
    }
    std::string k = lua_tostring(L, -1);
    static const char* kKnown[] = {"sh",      "cwd",        "env",   "env_clear",  "stdin",
                                   "timeout", "kill_grace", "check", "max_output", nullptr};
    bool ok = false;
    for (const char** p = kKnown; *p; ++p) ok = ok || k == *p;
    if (!ok) {
      *err = "o.exec: unknown option '" + k +
             "' (known: sh, cwd, env, env_clear, stdin, timeout, kill_grace, check, max_output)";
      lua_pop(L, 1);
      return false;
    }
  }
  lua_getfield(L, 1, "sh");
  if (!lua_isnil(L, -1)) {
    if (!lua_isstring(L, -1) || n > 0) {
      *err = "o.exec: 'sh' must be a string and cannot be combined with argv";
      lua_pop(L, 1);
      return false;
    }
    spec->argv = {"/bin/sh", "-c", lua_tostring(L, -1)};
  }
  lua_pop(L, 1);
  if (spec->argv.empty()) {
    *err = "o.exec: no command given (argv is empty and no 'sh')";
    return false;
  }
  lua_getfield(L, 1, "cwd");
  if (lua_isstring(L, -1))
    spec->cwd = lua_tostring(L, -1);
  else if (!lua_isnil(L, -1))
    *err = "o.exec: 'cwd' must be a string";
  lua_pop(L, 1);
  lua_getfield(L, 1, "stdin");
  if (lua_isstring(L, -1)) {
    size_t len;
    const char* s = lua_tolstring(L, -1, &len);
    spec->stdin_data.assign(s, len);
    spec->has_stdin = true;
  } else if (!lua_isnil(L, -1)) {
    *err = "o.exec: 'stdin' must be a string";
  }
  lua_pop(L, 1);
  lua_getfield(L, 1, "max_output");
  if (lua_isnumber(L, -1) && lua_tonumber(L, -1) >= 2)
    spec->max_capture = lua_tointeger(L, -1);
  else if (!lua_isnil(L, -1))
    *err = "o.exec: 'max_output' must be a number of bytes >= 2";
  lua_pop(L, 1);
  if (!err->empty()) return false;

  lua_getfield(L, 1, "env_clear");
  bool clear = lua_toboolean(L, -1);
  lua_pop(L, 1);
  // Secrets reach a child only when passed explicitly (env = { TOKEN = o.secret "X" }), which
  // also registers them for redaction: ORCHRUN_SECRET_* variables and ORCHRUN_TOKEN are not
  // inherited.
  bool secret_env = false;
  for (char** e = environ; e && *e && !secret_env; ++e) secret_env = withheld_from_children(*e);
  lua_getfield(L, 1, "env");
  if (!lua_isnil(L, -1) || clear || secret_env) {
    if (!lua_isnil(L, -1) && !lua_istable(L, -1)) {
      *err = "o.exec: 'env' must be a table of NAME = value";
      lua_pop(L, 1);
      return false;
    }
    spec->set_env = true;
    std::vector<std::pair<std::string, std::string>> extra;
    if (lua_istable(L, -1)) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1)) {
          *err = "o.exec: 'env' entries must be NAME = string";
          lua_pop(L, 3);
          return false;
        }
        extra.emplace_back(lua_tostring(L, -2), lua_tostring(L, -1));
        lua_pop(L, 1);
      }
    }
    if (!clear) {
      for (char** e = environ; e && *e; ++e) {
        std::string kv = *e;
        std::string name = kv.substr(0, kv.find('='));
        if (withheld_from_children(kv)) continue;
        bool overridden = false;
        for (auto& [k, v] : extra) overridden = overridden || k == name;
        if (!overridden) spec->env.push_back(kv);
      }
    }
    for (auto& [k, v] : extra) spec->env.push_back(k + "=" + v);
  }
  lua_pop(L, 1);
  return true;
}

void push_result(lua_State* co, ProcessResult& r) {
  lua_createtable(co, 0, 12);
  lua_pushnumber(co, static_cast<lua_Number>(r.exit_code));
  lua_setfield(co, -2, "code");
  lua_pushinteger(co, r.term_signal);
  lua_setfield(co, -2, "signal");
  std::string out = r.out.text(), err = r.err.text();
  lua_pushlstring(co, out.data(), out.size());
  lua_setfield(co, -2, "stdout");
  lua_pushlstring(co, err.data(), err.size());
  lua_setfield(co, -2, "stderr");
  lua_pushnumber(co, static_cast<lua_Number>(r.out.total()));
  lua_setfield(co, -2, "stdout_bytes");
  lua_pushnumber(co, static_cast<lua_Number>(r.err.total()));
  lua_setfield(co, -2, "stderr_bytes");
  lua_pushboolean(co, r.out.truncated() || r.err.truncated());
  lua_setfield(co, -2, "truncated");
  lua_pushnumber(co, static_cast<lua_Number>(r.duration_ms));
  lua_setfield(co, -2, "duration_ms");
  lua_pushboolean(co, r.timed_out);
  lua_setfield(co, -2, "timed_out");
  lua_pushinteger(co, r.pid);
  lua_setfield(co, -2, "pid");
  lua_pushboolean(co, r.exit_code == 0 && r.term_signal == 0 && !r.timed_out);
  lua_setfield(co, -2, "ok");
}

// The duration option `key` of the table at index 1 into *ms, if it is set; false with *err on
// a bad value.
bool duration_option(lua_State* L, const char* key, int64_t* ms, std::string* err) {
  lua_getfield(L, 1, key);
  std::optional<int64_t> v;
  if (!lua_isnil(L, -1)) v = to_duration(L, -1, ("o.exec " + std::string(key)).c_str(), err);
  bool ok = lua_isnil(L, -1) || v;
  if (v) *ms = *v;
  lua_pop(L, 1);
  return ok;
}

// Everything with C++ locals happens here, so that the caller raises or yields only once they
// are gone. Leaves the message (Failed: nil, message, code) on the stack when it does not start.
Start start_exec(lua_State* L, const AsyncOp& op, Process** p, int64_t* grace) {
  TaskHost* host = op.host();
  std::string err, code;
  ProcessSpec spec;
  if (!read_spec(L, &spec, &err)) {
    lua_pushlstring(L, err.data(), err.size());
    return Start::Misuse;
  }
  if (lua_istable(L, 1) && (!duration_option(L, "timeout", &spec.timeout_ms, &err) ||
                            !duration_option(L, "kill_grace", &spec.kill_grace_ms, &err))) {
    luaL_where(L, 1);  // as luaL_error would
    lua_pushlstring(L, err.data(), err.size());
    lua_concat(L, 2);
    return Start::Misuse;
  }
  *grace = spec.kill_grace_ms;
  host->before_effect();
  *p = Process::spawn(
      host->loop(), host->processes(), spec,
      [op](ProcessResult& r) {
        op.complete([&r](lua_State* co) {
          push_result(co, r);
          return 1;
        });
      },
      &err, &code);
  if (!*p) {
    push_failure(L, "cannot start '" + spec.argv[0] + "': " + err, code);
    return Start::Failed;
  }
  host->process_started(LuaEngine::from(L)->task_of(L), (*p)->pid(), spec.argv[0]);
  return Start::Started;
}

int l_exec(lua_State* L) {
  AsyncOp op = AsyncOp::begin(L, "o.exec");
  Process* p = nullptr;
  int64_t grace = 0;
  Start started = start_exec(L, op, &p, &grace);
  if (started == Start::Misuse) return lua_error(L);
  if (started == Start::Failed) return 3;
  return op.yield(L, [p, grace] { p->detach(grace); });
}

}  // namespace

void register_exec(lua_State* L) {
  lua_pushcfunction(L, l_exec);
  lua_setfield(L, -2, "exec");
}

}  // namespace orch
