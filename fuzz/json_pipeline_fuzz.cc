// JSON pipeline definitions (engine/json_pipeline.cc) on arbitrary bytes, as `orchrun
// validate x.json`, orchrun serve's hot reload and POST /api/pipelines/NAME/validate load them:
// the definition's checks, its translation into Lua, the sandbox running that chunk and the
// compiler.
//
// Invariants: no crash; the result is a pipeline or at least one diagnostic with a message,
// never both or neither; every diagnostic names the file and a line within the text (or 0);
// a pipeline's steps are all reachable by path.
#include <algorithm>
#include <string>
#include <vector>

#include "engine/pipeline_loader.h"
#include "fuzz/fuzz_util.h"

using namespace orch;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(orch::fuzz::bytes(data, size));
  LoadOptions opts;
  opts.sandbox.load_limit_ms = 300;
  std::vector<Diagnostic> diags;
  std::unique_ptr<Pipeline> p = load_pipeline_source("fuzz.json", source, opts, &diags);
  const int lines = 1 + static_cast<int>(std::count(source.begin(), source.end(), '\n'));
  if (!p) {
    FUZZ_CHECK(!diags.empty(), "no pipeline and no diagnostic");
    for (const Diagnostic& d : diags) {
      FUZZ_CHECK(!d.message.empty() && d.file == "fuzz.json", "diagnostic: " + d.str());
      FUZZ_CHECK(d.line >= 0 && d.line <= lines, "a line outside the text: " + d.str());
    }
    return 0;
  }
  FUZZ_CHECK(diags.empty(), "a pipeline and a diagnostic: " + diags[0].str());
  FUZZ_CHECK(p->root != nullptr, "a pipeline without a root step");
  for (const auto& [path, step] : p->by_path) FUZZ_CHECK(step != nullptr, "step " + path);
  return 0;
}
