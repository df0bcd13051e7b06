#include "runtime/json_util.h"

namespace orch {

std::string dump_json(const json& j, int indent) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

json parse_json(const std::string& text, std::string* err) {
  // nlohmann's lexer takes a NUL byte for the end of the input and ignores what follows it
  // ("[1]\0junk" parses as [1]). JSON text never holds a raw NUL (a string spells it \u0000).
  if (size_t nul = text.find('\0'); nul != std::string::npos) {
    if (err) *err = "parse error at byte " + std::to_string(nul + 1) + ": " + kJsonNulMessage;
    return json(json::value_t::discarded);
  }
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    if (err) *err = e.what();
    return json(json::value_t::discarded);
  }
}

}  // namespace orch
