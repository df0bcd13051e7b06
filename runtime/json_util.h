// Small helpers around nlohmann::json for the runtime's own records.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace orch {

using json = nlohmann::json;

// Serialises with invalid UTF-8 replaced (U+FFFD) rather than throwing: stored records must
// never fail to be written because a process printed binary garbage.
std::string dump_json(const json& j, int indent = -1);
// Parses text; returns a discarded value (is_discarded()) on error and sets *err. A NUL byte
// anywhere is an error (the parser alone would stop reading there and accept the prefix).
json parse_json(const std::string& text, std::string* err);
constexpr const char* kJsonNulMessage = "a NUL byte (0x00) cannot appear in JSON text";

}  // namespace orch
