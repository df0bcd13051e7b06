#include "engine/pipeline_loader.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "base/secrets.h"
#include "engine/compile.h"
#include "engine/json_pipeline.h"
#include "store/store.h"

namespace orch {

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
  for (const auto& v : opts.redact) p->engine->redactor().add(v);
  if (const char* t = getenv(kTokenEnv)) p->engine->redactor().add(t);
  // A JSON definition runs as the Lua it translates to; the pipeline's source (stored, hashed,
  // shown) stays the JSON, and what the compiler says of the Lua is said of the JSON.
  const bool is_json = is_json_definition_file(path);
  JsonTranslation jt;
  if (is_json && !translate_json_pipeline(path, source, &jt, diags)) return nullptr;
  auto said = [&](Diagnostic d) { return is_json ? json_diagnostic(jt, std::move(d)) : d; };
  lua_State* L = p->engine->L();
  int top = lua_gettop(L);
  std::string tb;
  if (!p->engine->run_pipeline_chunk(path, is_json ? jt.lua : source, &err, &tb)) {
    diags->push_back(said(from_lua_message(path, err)));
    return nullptr;
  }
  bool ok = false;
  std::vector<Diagnostic> mine;
  try {
    ok = compile_pipeline(L, -1, path, p.get(), &mine);
  } catch (const std::exception& ex) {
    // A bug of the compiler's, not of the file: said as such, never a crash of the server.
    mine.push_back(
        {path, 0, std::string("internal error while compiling (please report): ") + ex.what()});
    ok = false;
  }
  for (auto& d : mine) diags->push_back(said(std::move(d)));
  lua_settop(L, top);
  if (!ok) return nullptr;
  if (is_json) set_json_lines(jt, p.get());
  return p;
}

std::unique_ptr<Pipeline> load_stored_definition(Store& store, const std::string& name, int version,
                                                 const LoadOptions& opts,
                                                 std::vector<Diagnostic>* diags, bool* missing) {
  std::string file;
  auto src = store.definition_source(name, version, &file);
  *missing = !src;
  if (!src) {
    diags->push_back(
        {name, 0, "definition " + name + " v" + std::to_string(version) + " is not in the store"});
    return nullptr;
  }
  // The stored file name tells a JSON definition from a Lua one (its suffix is what the loader
  // goes by); a definition stored without one is told by its first character ('{' cannot start
  // a Lua chunk).
  if (file.empty()) {
    size_t first = src->find_first_not_of(" \t\r\n");
    file = name + (first != std::string::npos && (*src)[first] == '{' ? ".json" : ".lua");
  }
  return load_pipeline_source(file, *src, opts, diags);
}

}  // namespace orch
