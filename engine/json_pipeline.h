// Pipelines written as JSON definitions ({"version": "1.0", "nodes": [...]}): the checks of a
// definition, and its translation into the Lua source of the same pipeline (require "orch",
// one o.node or o.when per JSON node, their bodies from stdlib/orch/jsondef.lua), which the
// loader runs and compiles like any pipeline file. Errors name the JSON path of what is wrong
// (`nodes[2].config.provider: unknown provider "foo" ...`) at its line and column in the file.
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/graph.h"

namespace orch {

// A file is a JSON definition when its name ends in .json.
bool is_json_definition_file(const std::string& path);

struct JsonTranslation {
  std::string lua;  // the generated chunk
  // For each line of `lua` (index = line - 1): the JSON path it was made from ("nodes[2]",
  // "triggers[0]"; "" for the pipeline itself), so that a diagnostic of the compiler on the
  // generated chunk can name the JSON instead.
  std::vector<std::string> line_paths;
  // Where each value of the JSON text starts (line, column), by path.
  std::unordered_map<std::string, std::pair<int, int>> positions;
  // Node id -> its JSON path ("nodes[2]").
  std::unordered_map<std::string, std::string> node_paths;
};

// Checks the definition in `text` (the contents of `path`) and translates it. False with every
// problem found in *diags (file:line:column: path: message).
bool translate_json_pipeline(const std::string& path, const std::string& text,
                             JsonTranslation* out, std::vector<Diagnostic>* diags);

// A diagnostic about the generated chunk (file:line of the Lua), said of the JSON: the path of
// the node (or trigger) on that line before the message, and its position in the file.
Diagnostic json_diagnostic(const JsonTranslation& t, Diagnostic d);

// After a successful compile: the steps' lines (and the triggers') are their nodes' lines in the
// JSON file, as `orchrun graph` and the API show them.
void set_json_lines(const JsonTranslation& t, Pipeline* p);

}  // namespace orch
