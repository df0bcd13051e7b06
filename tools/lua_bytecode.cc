// Build-time tool: compiles one stdlib Lua file to LuaJIT bytecode (with its debug info, so
// that tracebacks keep file and line), for cmake/embed_stdlib.cmake.
//   orch_lua_bytecode INPUT.lua CHUNKNAME OUTPUT.bc
#include <cstdio>
#include <fstream>
#include <lua.hpp>
#include <sstream>
#include <string>

static int writer(lua_State*, const void* p, size_t n, void* out) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(p), n);
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s INPUT.lua CHUNKNAME OUTPUT.bc\n", argv[0]);
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  if (!in) {
    fprintf(stderr, "%s: cannot read\n", argv[1]);
    return 1;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string src = ss.str();
  lua_State* L = luaL_newstate();
  std::string name = std::string("@") + argv[2];
  if (luaL_loadbuffer(L, src.data(), src.size(), name.c_str()) != 0) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return 1;
  }
  std::string bc;
  if (lua_dump(L, writer, &bc) != 0 || bc.empty()) {
    fprintf(stderr, "%s: lua_dump failed\n", argv[1]);
    return 1;
  }
  lua_close(L);
  std::ofstream out(argv[3], std::ios::binary | std::ios::trunc);
  out.write(bc.data(), static_cast<std::streamsize>(bc.size()));
  return out ? 0 : 1;
}
