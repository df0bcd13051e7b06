// Loading a pipeline file: read it, run it in a fresh sandboxed Lua state (which only builds a
// graph; nothing runs), compile and validate the graph.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "base/digest.h"
#include "bindings/lua_state.h"
#include "engine/graph.h"

namespace orch {

struct LoadOptions {
  SandboxOptions sandbox;
  // Values redacted from everything the pipeline's runs store or print, like o.secret values:
  // serve's API token (from --token-file). $ORCHRUN_TOKEN is always added.
  std::vector<std::string> redact;
};

// Returns the pipeline, or nullptr with every problem in *diags (file:line: message).
std::unique_ptr<Pipeline> load_pipeline_file(const std::string& path, const LoadOptions& opts,
                                             std::vector<Diagnostic>* diags);
std::unique_ptr<Pipeline> load_pipeline_source(const std::string& path, const std::string& source,
                                               const LoadOptions& opts,
                                               std::vector<Diagnostic>* diags);

class Store;
// The definition version a stored run started with, loaded from its stored source (fresh
// state). nullptr with *diags; *missing is set when the store has no such definition.
std::unique_ptr<Pipeline> load_stored_definition(Store& store, const std::string& name, int version,
                                                 const LoadOptions& opts,
                                                 std::vector<Diagnostic>* diags, bool* missing);

}  // namespace orch
