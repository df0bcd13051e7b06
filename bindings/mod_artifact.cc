// ctx:artifact(path, {kind=}) and ctx:use_artifact(name): the files a node produced in its
// run's workspace, recorded with size and sha256, and which node used which.
//
// The path is resolved (symlinks included) on libuv's thread pool, where the file is also
// hashed; anything that resolves outside the workspace is refused. The record itself is
// written by the scheduler (NodeServices::record_artifact), on the loop thread.
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "base/digest.h"
#include "bindings/async_op.h"
#include "bindings/convert.h"
#include "bindings/lua_state.h"

namespace orch {
namespace {

struct ArtifactJob {
  uv_work_t req{};
  AsyncOp op;  // emptied when the task is cancelled
  std::string workspace, path, kind;
  std::string rel, err;  // results
  std::string sha256;
  int64_t size = 0;
};

bool real(const std::string& p, std::string* out) {
  char buf[PATH_MAX];
  if (!realpath(p.c_str(), buf)) return false;
  *out = buf;
  return true;
}

void do_hash(ArtifactJob* j) {
  std::string ws, file;
  if (!real(j->workspace, &ws)) {
    j->err = "the run's workspace " + j->workspace + " is missing: " + strerror(errno);
    return;
  }
  if (!real(j->path, &file)) {
    j->err = "cannot record artifact " + j->path + ": " + strerror(errno);
    return;
  }
  if (file.compare(0, ws.size() + 1, ws + "/") != 0) {
    j->err = "artifact " + j->path + " resolves to " + file + ", outside the run's workspace " +
             ws + "; refused";
    return;
  }
  struct stat st;
  if (stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    j->err = "artifact " + j->path + " is not a regular file";
    return;
  }
  FILE* f = fopen(file.c_str(), "rb");
  if (!f) {
    j->err = "cannot read artifact " + file + ": " + strerror(errno);
    return;
  }
  init_openssl();
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  char buf[65536];
  size_t n;
  int64_t total = 0;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
    EVP_DigestUpdate(ctx, buf, n);
    total += static_cast<int64_t>(n);
  }
  bool bad = ferror(f) != 0;
  fclose(f);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  if (bad) {
    j->err = "cannot read artifact " + file;
    return;
  }
  j->sha256 = hex_lower(md, len);
  j->size = total;
  j->rel = file.substr(ws.size() + 1);
}

std::string ctx_workspace(lua_State* L) {
  lua_getfield(L, 1, "workspace");
  std::string ws = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
  lua_pop(L, 1);
  return ws;
}

// Pushes the structured error ctx:artifact and ctx:use_artifact raise.
void push_artifact_error(lua_State* L, const std::string& msg) {
  lua_createtable(L, 0, 3);
  lua_pushlstring(L, msg.data(), msg.size());
  lua_setfield(L, -2, "message");
  lua_pushstring(L, "artifact");
  lua_setfield(L, -2, "type");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "retryable");
}

// Stores the hashed file as an artifact of the task's attempt: *record is its JSON.
bool record(const ArtifactJob& j, Task* task, std::string* record, std::string* err) {
  if (!j.err.empty()) {
    *err = j.err;
    return false;
  }
  NodeServices* services = j.op.host()->services();
  if (!services) {
    *err = "artifacts are not available here";
    return false;
  }
  return services->record_artifact(task, j.rel, j.kind, j.size, j.sha256, record, err);
}

void hashed(uv_work_t* r, int) {
  auto* job = static_cast<ArtifactJob*>(r->data);
  if (Task* task = job->op.task()) {
    job->op.complete([&](lua_State* co) {
      std::string rec, err;
      if (!record(*job, task, &rec, &err)) {
        // Resumed with (nil, message); the Lua side raises it as a structured error.
        lua_pushnil(co);
        lua_pushlstring(co, err.data(), err.size());
        return 2;
      }
      push_json(co, parse_json(rec, nullptr));
      return 1;
    });
  }
  delete job;
}

// Checks ctx:artifact's path against the workspace and queues the job that resolves and hashes
// it. Everything with C++ locals happens here, so that the caller raises or yields only once
// they are gone. Null with the error on the stack when refused.
ArtifactJob* start_artifact(lua_State* L, const AsyncOp& op) {
  std::string path = lua_tostring(L, 2);
  std::string ws = ctx_workspace(L);
  if (ws.empty()) {
    push_artifact_error(L, "ctx:artifact: this run has no workspace");
    return nullptr;
  }
  std::string abs = std::filesystem::path(path).is_absolute() ? path : ws + "/" + path;
  // Refused before anything runs when the path itself leaves the workspace ("../x").
  std::string lex = std::filesystem::path(abs).lexically_normal().string();
  if (lex.compare(0, ws.size() + 1, ws + "/") != 0) {
    push_artifact_error(L, "artifact path '" + path + "' is outside the run's workspace " + ws +
                               "; refused (write artifacts under ctx.workspace)");
    return nullptr;
  }
  auto* j = new ArtifactJob();
  j->op = op;
  j->workspace = ws;
  j->path = abs;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "kind");
    if (lua_type(L, -1) == LUA_TSTRING) j->kind = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  j->req.data = j;
  uv_queue_work(
      op.host()->loop(), &j->req, [](uv_work_t* r) { do_hash(static_cast<ArtifactJob*>(r->data)); },
      hashed);
  return j;
}

// ctx:artifact(path [, { kind = "report" }]) -> { name, path, size, sha256, kind, node }
int l_artifact(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkstring(L, 2);
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "kind");
    if (lua_type(L, -1) != LUA_TSTRING && !lua_isnil(L, -1))
      return luaL_error(L, "ctx:artifact: kind must be a string");
    lua_pop(L, 1);
  } else if (!lua_isnoneornil(L, 3)) {
    return luaL_error(L, "ctx:artifact: options must be a table {kind=}");
  }
  AsyncOp op = AsyncOp::begin(L, "ctx:artifact");
  ArtifactJob* j = start_artifact(L, op);
  if (!j) return lua_error(L);
  // The pool job cannot be stopped midway; a cancelled task just stops listening.
  return op.yield_detached(L, &j->op);
}

// Pushes the record of the upstream artifact named at index 2 and records that `t` used it;
// false with the error on the stack when refused.
bool use_artifact(lua_State* L, Task* t) {
  std::string name = lua_tostring(L, 2);
  std::string record, err;
  NodeServices* services = LuaEngine::from(L)->services();
  if (!services) err = "artifacts are not available here";
  if (!services || !services->use_artifact(t, name, &record, &err)) {
    push_artifact_error(L, err);
    return false;
  }
  push_json(L, parse_json(record, nullptr));
  return true;
}

// ctx:use_artifact(name) -> the record of an upstream artifact; records that this node used it.
int l_use_artifact(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkstring(L, 2);
  Task* t = require_task(L, "ctx:use_artifact");
  if (!use_artifact(L, t)) return lua_error(L);
  return 1;
}

}  // namespace

void register_artifacts(lua_State* L) {
  lua_pushcfunction(L, l_artifact);
  lua_setfield(L, -2, "artifact");
  lua_pushcfunction(L, l_use_artifact);
  lua_setfield(L, -2, "use_artifact");
}

}  // namespace orch
