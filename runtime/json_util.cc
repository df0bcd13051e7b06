#include "runtime/json_util.h"

namespace orch {

std::string dump_json(const json& j, int indent) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

json parse_json(const std::string& text, std::string* err) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    if (err) *err = e.what();
    return json(json::value_t::discarded);
  }
}

}  // namespace orch
