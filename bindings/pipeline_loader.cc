#include "bindings/pipeline_loader.h"

#include <openssl/evp.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "bindings/compile.h"

namespace orch {

std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < n; i++) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

namespace {

// Lua messages look like "path:12: message"; split them so every diagnostic has one shape.
Diagnostic from_lua_message(const std::string& path, const std::string& msg) {
  Diagnostic d{path, 0, msg};
  std::string prefix = path + ":";
  if (msg.rfind(prefix, 0) == 0) {
    size_t i = prefix.size();
    size_t j = i;
    while (j < msg.size() && isdigit(static_cast<unsigned char>(msg[j]))) j++;
    if (j > i && j + 1 < msg.size() && msg[j] == ':') {
      d.line = std::stoi(msg.substr(i, j - i));
      d.message = msg.substr(j + 1);
      if (!d.message.empty() && d.message[0] == ' ') d.message.erase(0, 1);
    }
  }
  return d;
}

}  // namespace

std::unique_ptr<Pipeline> load_pipeline_file(const std::string& path, const LoadOptions& opts,
                                             std::vector<Diagnostic>* diags) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    diags->push_back({path, 0, std::string("cannot read pipeline file: ") + strerror(errno)});
    return nullptr;
  }
  if (S_ISDIR(st.st_mode)) {
    diags->push_back({path, 0,
                      "is a directory, not a pipeline file (to host a directory of "
                      "pipelines, use: orchrun serve DIR)"});
    return nullptr;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    diags->push_back({path, 0, std::string("cannot read pipeline file: ") + strerror(errno)});
    return nullptr;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return load_pipeline_source(path, ss.str(), opts, diags);
}

std::unique_ptr<Pipeline> load_pipeline_source(const std::string& path, const std::string& source,
                                               const LoadOptions& opts,
                                               std::vector<Diagnostic>* diags) {
  auto p = std::make_unique<Pipeline>();
  p->file = path;
  p->source = source;
  p->sha256 = sha256_hex(source);
  std::string err;
  p->engine = LuaEngine::create(opts.sandbox, &err);
  if (!p->engine) {
    diags->push_back({path, 0, err});
    return nullptr;
  }
  lua_State* L = p->engine->L();
  int top = lua_gettop(L);
  std::string tb;
  if (!p->engine->run_pipeline_chunk(path, source, &err, &tb)) {
    diags->push_back(from_lua_message(path, err));
    return nullptr;
  }
  bool ok = compile_pipeline(L, -1, path, p.get(), diags);
  lua_settop(L, top);
  if (!ok) return nullptr;
  return p;
}

}  // namespace orch
