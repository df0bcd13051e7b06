// Helpers shared by the fuzz targets: a scratch directory, a Lua engine whose calls are
// bounded by an instruction count (deterministic, unlike a wall-clock deadline), and a way to
// stop with a message libFuzzer reports as a crash.
#pragma once
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <lua.hpp>
#include <memory>
#include <string>
#include <string_view>

namespace orch {
class LuaEngine;
}

namespace orch::fuzz {

inline std::string_view bytes(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Prints "fuzz invariant broken: <msg>" and aborts: libFuzzer saves the input as a crash.
[[noreturn]] void fail(const std::string& msg);
#define FUZZ_CHECK(cond, msg)                                                                \
  do {                                                                                       \
    if (!(cond))                                                                             \
      ::orch::fuzz::fail(std::string(#cond " at " __FILE__ ":") + std::to_string(__LINE__) + \
                         ": " + std::string(msg));                                           \
  } while (0)

// A directory of this process, removed at exit.
const std::string& scratch_dir();
// Replaces `path` with `data`, created with `mode`.
void write_file(const std::string& path, std::string_view data, mode_t mode);

// One LuaEngine for the whole run (pipeline sandbox, embedded stdlib), created on first use.
LuaEngine& shared_engine();

// Calls the function below `nargs` arguments on top of L's stack like lua_pcall, with a budget
// of `max_kilo_instructions` thousand VM instructions: past it the call raises "timeout: fuzz
// instruction budget". Returns lua_pcall's code; the error (or the results) are left on the
// stack as lua_pcall leaves them.
int pcall_bounded(lua_State* L, int nargs, int nresults, int max_kilo_instructions);

}  // namespace orch::fuzz
