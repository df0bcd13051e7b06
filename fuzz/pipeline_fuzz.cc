// The pipeline loader and compiler (engine/pipeline_loader.cc, compile.cc) on arbitrary Lua
// sources, as `orchrun validate` and POST /api/pipelines/NAME/validate load them: a fresh
// sandboxed state runs the chunk (bounded by the engine's load limit), then the returned
// table is compiled into a graph.
//
// Invariants: no crash; the result is a pipeline or at least one diagnostic with a message,
// never both or neither; a pipeline's steps are all reachable by path.
#include <string>
#include <vector>

#include "bindings/lua_state.h"
#include "engine/pipeline_loader.h"
#include "fuzz/fuzz_util.h"

using namespace orch;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(orch::fuzz::bytes(data, size));
  LoadOptions opts;
  // The loader's own bound (a wall-clock deadline checked by the count hook). Kept short so
  // that endless loops cost little; they are refused the same way at 10 s.
  opts.sandbox.load_limit_ms = 300;
  std::vector<Diagnostic> diags;
  std::unique_ptr<Pipeline> p = load_pipeline_source("fuzz.lua", source, opts, &diags);
  if (!p) {
    FUZZ_CHECK(!diags.empty(), "no pipeline and no diagnostic");
    for (const Diagnostic& d : diags)
      FUZZ_CHECK(!d.message.empty() && d.file == "fuzz.lua", "diagnostic: " + d.str());
    return 0;
  }
  FUZZ_CHECK(diags.empty(), "a pipeline and a diagnostic: " + diags[0].str());
  FUZZ_CHECK(p->root != nullptr, "a pipeline without a root step");
  for (const auto& [path, step] : p->by_path) FUZZ_CHECK(step != nullptr, "step " + path);
  return 0;
}
