// The stdlib's Lua sources and their LuaJIT bytecode, compiled into the binary (see
// cmake/embed_stdlib.cmake).
#pragma once
#include <string_view>
#include <vector>

namespace orch {

struct EmbeddedModule {
  const char* name;  // "orch", "orch.json"
  const char* path;  // "stdlib/orch/init.lua", used as the chunk name in tracebacks
  std::string_view source;
  std::string_view bytecode;  // the source compiled by LuaJIT at build time (debug info kept)
};

const std::vector<EmbeddedModule>& embedded_modules();

}  // namespace orch
