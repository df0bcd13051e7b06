#include "base/redact.h"

#include <algorithm>

#include "base/json_util.h"

namespace orch {
namespace {

// The text between the quotes that dump_json writes for `s` (invalid UTF-8 replaced, as the
// store's own writer does).
std::string json_inner(const std::string& s) {
  std::string q = dump_json(json(s));
  return q.substr(1, q.size() - 2);
}

}  // namespace

bool Redactor::add(std::string_view value) {
  if (value.size() < kMinSecretLength) return false;
  std::string raw(value);
  std::string once = json_inner(raw);
  std::string twice = json_inner(once);
  for (std::string* form : {&raw, &once, &twice}) {
    if (std::find(needles_.begin(), needles_.end(), *form) == needles_.end())
      needles_.push_back(std::move(*form));
  }
  std::stable_sort(needles_.begin(), needles_.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return true;
}

void Redactor::apply(std::string* text) const {
  for (const auto& needle : needles_) {
    size_t pos = text->find(needle);
    while (pos != std::string::npos) {
      text->replace(pos, needle.size(), kRedacted);
      pos = text->find(needle, pos + kRedacted.size());
    }
  }
}

}  // namespace orch
