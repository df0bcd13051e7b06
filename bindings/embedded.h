// The stdlib's Lua sources, compiled into the binary (see cmake/embed_stdlib.cmake).
#pragma once
#include <string_view>
#include <vector>

namespace orch {

struct EmbeddedModule {
  const char* name;  // "orch", "orch.json"
  const char* path;  // "stdlib/orch/init.lua", used as the chunk name in tracebacks
  std::string_view source;
};

const std::vector<EmbeddedModule>& embedded_modules();

}  // namespace orch
