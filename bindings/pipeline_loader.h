// Loading a pipeline file: read it, run it in a fresh sandboxed Lua state (which only builds a
// graph; nothing runs), compile and validate the graph.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "runtime/graph.h"

namespace orch {

struct LoadOptions {
  SandboxOptions sandbox;
};

// Returns the pipeline, or nullptr with every problem in *diags (file:line: message).
std::unique_ptr<Pipeline> load_pipeline_file(const std::string& path, const LoadOptions& opts,
                                             std::vector<Diagnostic>* diags);
std::unique_ptr<Pipeline> load_pipeline_source(const std::string& path, const std::string& source,
                                               const LoadOptions& opts,
                                               std::vector<Diagnostic>* diags);

std::string sha256_hex(const std::string& data);

}  // namespace orch
