#include "bindings/lua_state.h"

#include <luajit.h>

#include <cstring>

#include "bindings/convert.h"
#include "bindings/embedded.h"
#include "bindings/lua_patterns.h"
#include "drivers/signals.h"

namespace orch {
namespace {

const char kEngineKey[] = "orch.engine";

// Stops node bodies that run past their deadline without yielding. LuaJIT keeps one hook per
// global state, so this sees every coroutine; it acts only while a task with a deadline runs.
// "file:line: " of the Lua code the hook interrupted (luaL_error's own position is the hook).
// `level`: 0 in the hook (the interrupted function), 1 in a C function (its Lua caller).
void push_hook_where(lua_State* L, int level) {
  lua_Debug ar;
  if (lua_getstack(L, level, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
    lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
  else
    lua_pushliteral(L, "");
}

// Raises when the Lua code running now must stop; `level` as for push_hook_where. The
// sandbox's pcall/xpcall/coroutine.resume recognise these texts and pass the error on, so a
// node cannot swallow its own timeout (see sandbox.cc).
void stop_if_due(lua_State* L, int level) {
  LuaEngine* e = LuaEngine::from(L);
  if (!e) return;
  // Ctrl-C: stop whatever Lua code holds the loop; the loop then cancels the runs.
  if (interrupt_requested()) {
    push_hook_where(L, level);
    lua_pushfstring(L, "interrupted by %s", interrupt_name());
    lua_concat(L, 2);
    lua_error(L);
  }
  if (e->current) {
    if (e->current->deadline_ns == 0) return;
    if (uv_hrtime() >= e->current->deadline_ns) {
      e->current->timed_out = true;
      push_hook_where(L, level);
      lua_pushliteral(L, "timeout: node ran past its deadline without yielding");
      lua_concat(L, 2);
      lua_error(L);
    }
    return;
  }
  // A load on a worker thread (the API's validate) that its owner gave up on.
  if (e->load_deadline_ns != 0 && e->options().abort &&
      e->options().abort->load(std::memory_order_relaxed)) {
    push_hook_where(L, level);
    lua_pushliteral(L, "loading took longer than the server allows: it is stopping");
    lua_concat(L, 2);
    lua_error(L);
  }
  // Loading a pipeline file only builds a graph; a file that keeps computing is a mistake.
  if (e->load_deadline_ns != 0 && uv_hrtime() >= e->load_deadline_ns) {
    push_hook_where(L, level);
    lua_pushfstring(L,
                    "loading took longer than %d ms (an endless loop at the top level of the "
                    "file?)",
                    static_cast<int>(e->options().load_limit_ms));
    lua_concat(L, 2);
    lua_error(L);
  }
  // Conditions (when, switch, skip_if) run synchronously on the loop: they are bounded too.
  if (e->predicate_deadline_ns != 0 && uv_hrtime() >= e->predicate_deadline_ns) {
    push_hook_where(L, level);
    lua_pushliteral(L,
                    "timeout: condition ran past its deadline (conditions must be quick "
                    "and must not wait)");
    lua_concat(L, 2);
    lua_error(L);
  }
}

void deadline_hook(lua_State* L, lua_Debug*) {
  stop_if_due(L, 0);
}

// The bounded string.find/match/gmatch/gsub call this every few thousand steps.
void pattern_check(lua_State* L) {
  stop_if_due(L, 1);
}

int traceback_handler(lua_State* L) {
  const char* msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

}  // namespace

LuaEngine* LuaEngine::from(lua_State* L) {
  lua_getfield(L, LUA_REGISTRYINDEX, kEngineKey);
  auto* e = static_cast<LuaEngine*>(lua_touserdata(L, -1));
  lua_pop(L, 1);
  return e;
}

std::unique_ptr<LuaEngine> LuaEngine::create(const SandboxOptions& opts, std::string* err) {
  std::unique_ptr<LuaEngine> e(new LuaEngine());
  e->opts_ = opts;
  e->secrets_ = SecretSource(opts.secrets_file);
  if (!e->init(err)) return nullptr;
  return e;
}

bool LuaEngine::init(std::string* err) {
  L_ = luaL_newstate();
  if (!L_) {
    *err = "cannot create a Lua state (out of memory)";
    return false;
  }
  luaL_openlibs(L_);
  // Before anything (the stdlib, the sandbox) copies them: see lua_patterns.h.
  install_bounded_patterns(L_, pattern_check);
  if (!opts_.jit) luaJIT_setmode(L_, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
  lua_pushlightuserdata(L_, this);
  lua_setfield(L_, LUA_REGISTRYINDEX, kEngineKey);
  convert_init(L_);
  // string.dump hands out bytecode, which bypasses the loader's text-only rule.
  lua_getglobal(L_, "string");
  lua_pushnil(L_);
  lua_setfield(L_, -2, "dump");
  lua_pop(L_, 1);
  // The string metatable is shared by every string; through getmetatable("") pipeline code
  // could reach (and replace) the real string library that the runtime itself uses.
  lua_pushliteral(L_, "");
  if (lua_getmetatable(L_, -1)) {
    lua_pushboolean(L_, 0);
    lua_setfield(L_, -2, "__metatable");
    lua_pop(L_, 1);
  }
  lua_pop(L_, 1);

  // Embedded modules go to package.preload; the core module is C.
  lua_getglobal(L_, "package");
  lua_getfield(L_, -1, "preload");
  lua_pushcfunction(L_, luaopen_orch_core);
  lua_setfield(L_, -2, "orch.core");
  for (const auto& m : embedded_modules()) {
    std::string chunk = std::string("@") + m.path;
    // The bytecode built with this LuaJIT; the source if it does not load (another LuaJIT).
    if (!m.bytecode.empty() &&
        luaL_loadbuffer(L_, m.bytecode.data(), m.bytecode.size(), chunk.c_str()) == 0) {
      lua_setfield(L_, -2, m.name);
      continue;
    }
    if (!m.bytecode.empty()) lua_pop(L_, 1);
    if (luaL_loadbuffer(L_, m.source.data(), m.source.size(), chunk.c_str()) != 0) {
      *err = std::string("embedded module ") + m.name + ": " + lua_tostring(L_, -1);
      return false;
    }
    lua_setfield(L_, -2, m.name);
  }
  lua_pop(L_, 2);
  // Only the embedded modules and LuaJIT's own libraries can be required: no file searchers.
  lua_getglobal(L_, "package");
  lua_pushstring(L_, "");
  lua_setfield(L_, -2, "path");
  lua_pushstring(L_, "");
  lua_setfield(L_, -2, "cpath");
  lua_pop(L_, 1);

  lua_pushcfunction(L_, traceback_handler);
  lua_getglobal(L_, "require");
  lua_pushstring(L_, "orch");
  if (lua_pcall(L_, 1, 1, -3) != 0) {
    *err = std::string("loading the orch stdlib: ") + lua_tostring(L_, -1);
    return false;
  }
  lua_getfield(L_, -1, "logger");
  logger_ = LuaRef::pop(L_);
  orch_ = LuaRef::pop(L_);
  lua_pop(L_, 1);

  push_sandbox_env(L_, opts_);
  sandbox_env_ = LuaRef::pop(L_);
  lua_sethook(L_, deadline_hook, LUA_MASKCOUNT, 1000);
  return true;
}

LuaEngine::~LuaEngine() {
  // References first: they need the state.
  sandbox_env_.reset();
  orch_.reset();
  logger_.reset();
  if (L_) lua_close(L_);
}

void LuaEngine::push_orch(lua_State* L) {
  orch_.push(L);
}
void LuaEngine::push_logger(lua_State* L) {
  logger_.push(L);
}

bool LuaEngine::run_pipeline_chunk(const std::string& chunkname, const std::string& source,
                                   std::string* err, std::string* traceback) {
  int base = lua_gettop(L_);
  if (!source.empty() && source[0] == LUA_SIGNATURE[0]) {
    *err = "precompiled bytecode is not accepted; give the Lua source";
    return false;
  }
  if (luaL_loadbuffer(L_, source.data(), source.size(), ("@" + chunkname).c_str()) != 0) {
    *err = lua_tostring(L_, -1);
    lua_settop(L_, base);
    return false;
  }
  sandbox_env_.push(L_);
  lua_setfenv(L_, -2);
  lua_pushcfunction(L_, traceback_handler);
  lua_insert(L_, -2);
  load_deadline_ns = uv_hrtime() + opts_.load_limit_ms * 1000000ull;
  int rc = lua_pcall(L_, 0, 1, base + 1);
  load_deadline_ns = 0;
  if (rc != 0) {
    std::string full = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "error";
    auto nl = full.find("\nstack traceback:");
    *err = full.substr(0, nl);
    if (traceback && nl != std::string::npos) *traceback = full.substr(nl + 1);
    // A secret read at load time must not reach the terminal through a load error either.
    redactor_.apply(err);
    if (traceback) redactor_.apply(traceback);
    lua_settop(L_, base);
    return false;
  }
  lua_remove(L_, base + 1);  // the handler
  return true;
}

// "file:line: " of the innermost frame outside the embedded stdlib (o.exec is a Lua wrapper)
// and the sandbox, so that an error names the pipeline author's line.
void push_user_where(lua_State* L) {
  lua_Debug ar;
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "Sl", &ar);
    // The sandbox's pcall wrapper is not the author's code either.
    if (ar.currentline > 0 && strncmp(ar.source, "@stdlib/", 8) != 0 &&
        strcmp(ar.source, "=[orch sandbox]") != 0) {
      lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
      return;
    }
  }
  lua_pushliteral(L, "");
}

}  // namespace orch
