// A Lua state for one pipeline: LuaJIT with the embedded stdlib, a sandboxed environment for
// pipeline code, and the link between coroutines (tasks, bindings/task.h) and the scheduler
// that drives them (the TaskHost).
#pragma once
#include <uv.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <lua.hpp>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "base/redact.h"
#include "base/secrets.h"
#include "bindings/lua_ref.h"
#include "bindings/node_services.h"
#include "bindings/task.h"

namespace orch {

struct SandboxOptions {
  // Libraries a pipeline may use only when the operator allows them (--allow io,os,ffi,debug).
  bool allow_io = false;
  bool allow_os = false;
  bool allow_ffi = false;
  bool allow_debug = false;
  // How long running a pipeline file (building its graph) may take.
  uint64_t load_limit_ms = 10000;
  // The JIT compiler is off by default: compiled traces skip the count hook, and the hook is
  // what stops a node body that loops without yielding once its timeout has passed.
  bool jit = false;
  // Where o.secret looks after the environment (--secrets FILE / $ORCHRUN_SECRETS_FILE).
  std::string secrets_file;
  // Set (by another thread) to stop a pipeline file's load early: a load off the loop whose
  // server is stopping. Owned by whoever started the load; null: never.
  const std::atomic<bool>* abort = nullptr;
};

class LuaEngine {
 public:
  static std::unique_ptr<LuaEngine> create(const SandboxOptions& opts, std::string* err);
  ~LuaEngine();
  LuaEngine(const LuaEngine&) = delete;
  LuaEngine& operator=(const LuaEngine&) = delete;

  lua_State* L() const { return L_; }
  static LuaEngine* from(lua_State* L);

  // Compiles `source` as a pipeline chunk (text only, never bytecode) in the sandbox and runs
  // it. On success the chunk's first result is left on the stack; on failure *err is the Lua
  // message ("file.lua:3: ...") with a traceback when the error happened while running.
  bool run_pipeline_chunk(const std::string& chunkname, const std::string& source, std::string* err,
                          std::string* traceback);
  // Pushes the `orch` module table.
  void push_orch(lua_State* L);
  // Pushes the logger object given to node bodies as ctx.log.
  void push_logger(lua_State* L);

  // The scheduler running this pipeline's tasks; null while none does (e.g. at load time).
  void set_host(TaskHost* host) { host_ = host; }
  TaskHost* host() const { return host_; }
  NodeServices* services() const { return host_ ? host_->services() : nullptr; }

  // Tasks: a coroutine runs as a task while registered; bindings find their task here.
  void bind_task(Task* t) { tasks_[t->co] = t; }
  void unbind_task(Task* t) { tasks_.erase(t->co); }
  Task* task_of(lua_State* co) const {
    auto it = tasks_.find(co);
    return it == tasks_.end() ? nullptr : it->second;
  }
  // The task being resumed right now (the count hook checks its deadline; o.log names it).
  Task* current = nullptr;
  // While a pipeline file's chunk runs: when loading must have finished.
  uint64_t load_deadline_ns = 0;
  // While a condition (when/switch selector, skip_if) runs.
  uint64_t predicate_deadline_ns = 0;

  const SandboxOptions& options() const { return opts_; }

  // The secrets this pipeline's code has read (o.secret), redacted from what is stored or
  // shown. Per pipeline state rather than per run: a value read by one run can be kept in an
  // upvalue and used by the next, and o.secret may be called at load time (triggers).
  Redactor& redactor() { return redactor_; }
  SecretSource& secrets() { return secrets_; }

 private:
  LuaEngine() = default;
  bool init(std::string* err);

  lua_State* L_ = nullptr;
  SandboxOptions opts_;
  TaskHost* host_ = nullptr;
  LuaRef sandbox_env_;
  LuaRef orch_;
  LuaRef logger_;
  std::unordered_map<lua_State*, Task*> tasks_;
  Redactor redactor_;
  SecretSource secrets_{""};
};

// Registered as package.preload["orch.core"].
int luaopen_orch_core(lua_State* L);
// Adds core.exec to the table on top of the stack.
void register_exec(lua_State* L);
// Adds core.read_file, core.write_file and core.append_file (o.fs).
void register_fs(lua_State* L);
// Adds core.artifact and core.use_artifact (ctx:artifact, ctx:use_artifact).
void register_artifacts(lua_State* L);
// Adds core.http_request.
void register_http(lua_State* L);
// Adds core.secret and core.has_secret.
void register_secret(lua_State* L);
// Adds core.smtp_send (o.notify.email).
void register_smtp(lua_State* L);
// Adds core.system (o.context.system).
void register_context(lua_State* L);
// Adds core.sha256 and core.record_incidents (o.ingest).
void register_ingest(lua_State* L);
// Builds the sandbox environment table and pushes it.
void push_sandbox_env(lua_State* L, const SandboxOptions& opts);

// Pushes "file:line: " of the innermost caller outside the embedded stdlib and the sandbox's
// wrappers ("" if none), so that a binding's error names the pipeline author's line.
void push_user_where(lua_State* L);
// A duration argument: seconds as a number or "250ms"/"5s"/"2m". Raises on bad input.
int64_t check_duration(lua_State* L, int idx, const char* fname);
// The same without raising: nullopt with *msg ("fname: what is wrong") on bad input.
std::optional<int64_t> to_duration(lua_State* L, int idx, const char* fname, std::string* msg);
// tostring() for any value, replacing the value at idx with its string.
const char* luaL_tolstring_compat(lua_State* L, int idx, size_t* len);

}  // namespace orch
