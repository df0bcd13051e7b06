// Compiles the table a pipeline file returns into a validated Pipeline graph.
#pragma once
#include <lua.hpp>
#include <vector>

#include "engine/graph.h"

namespace orch {

// Compiles the pipeline table at stack index `idx` of out->engine's state into *out.
// Every problem found is appended to *diags (all of them, not only the first); returns true
// when there were none.
bool compile_pipeline(lua_State* L, int idx, const std::string& file, Pipeline* out,
                      std::vector<Diagnostic>* diags);

// Closest candidate within a small edit distance (grows with the word), or "".
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace orch
