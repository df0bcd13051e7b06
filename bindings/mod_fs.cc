// core.read_file / core.write_file / core.append_file: file I/O for node bodies without
// blocking the loop. The work runs on libuv's thread pool; the coroutine yields until it is
// done. Writes are atomic (a temporary file renamed over the target), so a reader never sees
// half a report; an append is one O_APPEND write.

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "bindings/async_op.h"
#include "bindings/lua_state.h"

namespace orch {
namespace {

struct FsJob {
  uv_work_t req{};
  AsyncOp op;  // emptied when the task is cancelled
  bool write = false;
  bool append = false;  // with write: one O_APPEND write instead of replacing the file
  bool mkdirs = false;
  int mode = 0644;
  std::string path, data;
  std::string err, code;  // set by the worker on failure
  size_t max_bytes = 64u << 20;
};

void set_errno(FsJob* j, const std::string& what) {
  j->code = strerrorname_np(errno) ? strerrorname_np(errno) : "EIO";
  j->err = what + " " + j->path + ": " + strerror(errno);
}

void do_read(FsJob* j) {
  int fd = open(j->path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return set_errno(j, "cannot open");
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      set_errno(j, "cannot read");
      break;
    }
    if (n == 0) break;
    j->data.append(buf, static_cast<size_t>(n));
    if (j->data.size() > j->max_bytes) {
      j->err =
          "file " + j->path + " is larger than max_bytes (" + std::to_string(j->max_bytes) + ")";
      j->code = "EFBIG";
      break;
    }
  }
  close(fd);
}

bool make_parents(FsJob* j) {
  std::filesystem::path target(j->path);
  if (j->mkdirs && target.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(target.parent_path(), ec);
    if (ec) {
      j->err = "cannot create directory " + target.parent_path().string() + ": " + ec.message();
      j->code = "EIO";
      return false;
    }
  }
  return true;
}

// One write(2) on an O_APPEND descriptor: concurrent appenders (other nodes, other processes)
// never interleave inside a record on a local file system.
void do_append(FsJob* j) {
  if (!make_parents(j)) return;
  int fd = open(j->path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, j->mode);
  if (fd < 0) return set_errno(j, "cannot open");
  size_t off = 0;
  while (off < j->data.size()) {
    ssize_t n = ::write(fd, j->data.data() + off, j->data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      set_errno(j, "cannot append to");
      break;
    }
    off += static_cast<size_t>(n);
  }
  close(fd);
}

void do_write(FsJob* j) {
  if (!make_parents(j)) return;
  // A unique temporary file beside the target: concurrent writes to one path each land whole.
  std::string tmp = j->path + ".tmp.XXXXXX";
  int fd = mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) return set_errno(j, "cannot create a temporary file for");
  fchmod(fd, static_cast<mode_t>(j->mode));
  size_t off = 0;
  while (off < j->data.size()) {
    ssize_t n = ::write(fd, j->data.data() + off, j->data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      set_errno(j, "cannot write");
      close(fd);
      unlink(tmp.c_str());
      return;
    }
    off += static_cast<size_t>(n);
  }
  bool ok = fsync(fd) == 0;
  ok = close(fd) == 0 && ok;
  if (!ok || rename(tmp.c_str(), j->path.c_str()) != 0) {
    set_errno(j, "cannot write");
    unlink(tmp.c_str());
  }
}

// Takes ownership of j.
int start_job(lua_State* L, const AsyncOp& op, FsJob* j) {
  j->op = op;
  if (j->write) op.host()->before_effect();  // a file changes: the attempt is on record first
  j->req.data = j;
  uv_queue_work(
      op.host()->loop(), &j->req,
      [](uv_work_t* r) {
        auto* job = static_cast<FsJob*>(r->data);
        if (job->append)
          do_append(job);
        else if (job->write)
          do_write(job);
        else
          do_read(job);
      },
      [](uv_work_t* r, int) {
        auto* job = static_cast<FsJob*>(r->data);
        job->op.complete([job](lua_State* co) {
          if (!job->err.empty()) return push_failure(co, job->err, job->code);
          if (job->write)
            lua_pushnumber(co, static_cast<lua_Number>(job->data.size()));
          else
            lua_pushlstring(co, job->data.data(), job->data.size());
          return 1;
        });
        delete job;
      });
  // A thread-pool job cannot be stopped midway; a cancelled task just stops listening.
  return op.yield_detached(L, &j->op);
}

int l_read_file(lua_State* L) {
  const char* path = luaL_checkstring(L, 1);
  AsyncOp op = AsyncOp::begin(L, "o.fs.read");
  auto* j = new FsJob();
  j->path = path;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "max_bytes");
    if (lua_isnumber(L, -1)) j->max_bytes = static_cast<size_t>(lua_tonumber(L, -1));
    lua_pop(L, 1);
  }
  return start_job(L, op, j);
}

int write_or_append(lua_State* L, bool append) {
  const char* path = luaL_checkstring(L, 1);
  size_t n;
  const char* data = luaL_checklstring(L, 2, &n);
  AsyncOp op = AsyncOp::begin(L, append ? "o.fs.append" : "o.fs.write");
  auto* j = new FsJob();
  j->write = true;
  j->append = append;
  j->path = path;
  j->data.assign(data, n);
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "mkdirs");
    j->mkdirs = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 3, "mode");
    if (lua_isnumber(L, -1)) j->mode = static_cast<int>(lua_tointeger(L, -1));
    lua_pop(L, 1);
  }
  return start_job(L, op, j);
}

int l_write_file(lua_State* L) {
  return write_or_append(L, false);
}

int l_append_file(lua_State* L) {
  return write_or_append(L, true);
}

}  // namespace

void register_fs(lua_State* L) {
  lua_pushcfunction(L, l_read_file);
  lua_setfield(L, -2, "read_file");
  lua_pushcfunction(L, l_write_file);
  lua_setfield(L, -2, "write_file");
  lua_pushcfunction(L, l_append_file);
  lua_setfield(L, -2, "append_file");
}

}  // namespace orch
