// Redaction of secret values: the set of values a pipeline obtained through o.secret, and the
// replacement of each by "***" in text that leaves for the store or the terminal.
//
// Values shorter than kMinSecretLength are not registered (the secret still works): replacing
// every "ab" or "1" in every stored record would mangle outputs, ids and JSON beyond use and
// would tell an observer the value anyway. Each value is also registered in the forms it takes
// inside stored JSON (escaped once, and twice for JSON inside a JSON string), so a secret with
// a quote, a backslash or a control character is caught too.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace orch {

constexpr size_t kMinSecretLength = 4;
constexpr std::string_view kRedacted = "***";

class Redactor {
 public:
  // Registers a value (and its JSON-escaped forms). Returns false when it is too short.
  bool add(std::string_view value);
  // Replaces every registered value in *text by "***". Cheap when nothing is registered.
  void apply(std::string* text) const;
  std::string applied(std::string text) const {
    apply(&text);
    return text;
  }
  bool empty() const { return needles_.empty(); }

 private:
  std::vector<std::string> needles_;  // longest first, so a value containing another goes whole
};

}  // namespace orch
