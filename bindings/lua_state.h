// A Lua state for one pipeline: LuaJIT with the embedded stdlib, a sandboxed environment for
// pipeline code, and the link between coroutines (tasks) and the scheduler that drives them.
#pragma once
#include <uv.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <lua.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "base/redact.h"
#include "base/secrets.h"
#include "bindings/lua_ref.h"

namespace orch {

class ProcessTable;
class HttpClient;

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

// One coroutine running a node body (or a fallback, a condition ...).
struct Task {
  uint64_t id = 0;
  lua_State* co = nullptr;
  LuaRef thread;                      // anchors the coroutine while the task lives
  std::function<void()> cancel_hook;  // set while the task waits on a driver
  bool waiting = false;               // yielded from an orchrun async call
  uint64_t deadline_ns = 0;           // uv_hrtime() after which the count hook raises
  bool timed_out = false;
  std::string node;  // node path, for messages
  class LuaEngine* engine = nullptr;
  void* owner = nullptr;  // the scheduler's TaskOwner
};

// What bindings need from the scheduler.
class TaskHost {
 public:
  virtual ~TaskHost() = default;
  virtual uv_loop_t* loop() = 0;
  virtual ProcessTable* processes() = 0;
  // The loop's HTTP client (o.http.request); null where the host offers none.
  virtual HttpClient* http() { return nullptr; }
  // A binding is about to act outside the process (spawn a process, send a request): what was
  // recorded so far (the attempt that acts, and everything before it) is committed first, so
  // that the trace of a run never misses a step whose effect happened.
  virtual void before_effect() {}
  // o.exec started process group `pid` for `task` (`command`: its argv[0]): the host records
  // it, so that a successor can end it if this process dies first.
  virtual void process_started(Task* task, int pid, const std::string& command) {}
  // The driver has pushed `nargs` results onto task->co: resume it on the next pump.
  virtual void resume(Task* task, int nargs) = 0;
  // ctx.log / o.log / print. `task` is null outside node bodies (e.g. at load time).
  virtual void log(Task* task, std::string_view level, std::string_view message,
                   const std::string& fields_json) = 0;
  // ctx:artifact: records a file of the task's run workspace (`rel`: its path in there); sets
  // *record to the artifact as JSON. ctx:use_artifact: finds an upstream artifact by name and
  // records the use. Both return false with *err when refused.
  virtual bool record_artifact(Task* task, const std::string& rel, const std::string& kind,
                               int64_t size, const std::string& sha256, std::string* record,
                               std::string* err) {
    *err = "artifacts are not available here";
    return false;
  }
  virtual bool use_artifact(Task* task, const std::string& name, std::string* record,
                            std::string* err) {
    *err = "artifacts are not available here";
    return false;
  }
  // o.ingest: records normalized alerts (a JSON list) as incidents of the task's run,
  // deduplicated by fingerprint; sets *records to the stored rows as a JSON list.
  virtual bool record_incidents(Task* task, const std::string& incidents_json, std::string* records,
                                std::string* err) {
    *err = "incidents are not available here";
    return false;
  }
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

  void set_host(TaskHost* host) { host_ = host; }
  TaskHost* host() const { return host_; }

  // Tasks: a coroutine runs as a task while registered; async bindings find their task here.
  void bind_task(Task* t) { tasks_[t->co] = t; }
  void unbind_task(Task* t) { tasks_.erase(t->co); }
  Task* task_of(lua_State* co) const {
    auto it = tasks_.find(co);
    return it == tasks_.end() ? nullptr : it->second;
  }
  // The task being resumed right now (the count hook checks its deadline).
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
// Adds core.read_file and core.write_file.
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

// Pushes "file:line: " of the innermost caller outside the embedded stdlib ("" if none), so
// that a binding's error names the pipeline author's line.
void push_user_where(lua_State* L);
// Raises a Lua error unless called from a task's coroutine; returns the task.
Task* require_task(lua_State* L, const char* fname);
// A duration argument: seconds as a number or "250ms"/"5s"/"2m". Raises on bad input.
int64_t check_duration(lua_State* L, int idx, const char* fname);
// tostring() for any value, replacing the value at idx with its string.
const char* luaL_tolstring_compat(lua_State* L, int idx, size_t* len);

}  // namespace orch
