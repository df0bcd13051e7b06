#include "fuzz/fuzz_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "bindings/lua_state.h"

namespace orch::fuzz {

void fail(const std::string& msg) {
  fprintf(stderr, "fuzz invariant broken: %s\n", msg.c_str());
  fflush(stderr);
  abort();
}

const std::string& scratch_dir() {
  static const std::string dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "orchrun-fuzz-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) fail("mkdtemp " + tmpl);
    static std::string removed_at_exit = tmpl;
    atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(removed_at_exit, ec);
    });
    return tmpl;
  }();
  return dir;
}

void write_file(const std::string& path, std::string_view data, mode_t mode) {
  unlink(path.c_str());
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) fail("cannot create " + path);
  // open() applies the umask; the mode is what the target needs to see.
  if (fchmod(fd, mode) != 0) fail("cannot chmod " + path);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n <= 0) fail("cannot write " + path);
    done += static_cast<size_t>(n);
  }
  close(fd);
}

LuaEngine& shared_engine() {
  static std::unique_ptr<LuaEngine> engine = [] {
    std::string err;
    auto e = LuaEngine::create(SandboxOptions{}, &err);
    if (!e) fail("LuaEngine::create: " + err);
    return e;
  }();
  return *engine;
}

namespace {

int g_budget = 0;

void budget_hook(lua_State* L, lua_Debug*) {
  if (--g_budget >= 0) return;
  // Raised again on every later count until the call ends: a pcall in a loop cannot swallow it.
  lua_pushliteral(L, "timeout: fuzz instruction budget");
  lua_error(L);
}

}  // namespace

int pcall_bounded(lua_State* L, int nargs, int nresults, int max_kilo_instructions) {
  lua_Hook saved = lua_gethook(L);
  int mask = lua_gethookmask(L), count = lua_gethookcount(L);
  g_budget = max_kilo_instructions;
  lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1000);
  int rc = lua_pcall(L, nargs, nresults, 0);
  lua_sethook(L, saved, mask, count);
  return rc;
}

}  // namespace orch::fuzz
