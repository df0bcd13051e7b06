// Where o.secret finds values: the environment (ORCHRUN_SECRET_<NAME>) first, then the
// operator's secrets file (--secrets FILE or $ORCHRUN_SECRETS_FILE).
//
// The file holds NAME=value lines; blank lines and lines starting with '#' are ignored; the
// value is everything after the first '=' up to the end of the line, taken as is (no quotes,
// no escapes; a trailing '\r' is dropped). It is refused unless only its owner may read it
// (mode 0600 or 0400): a secret that every local user can read is not a secret.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace orch {

constexpr const char* kSecretEnvPrefix = "ORCHRUN_SECRET_";
// The API token of orchrun serve (and of logs --follow).
constexpr const char* kTokenEnv = "ORCHRUN_TOKEN";

// Whether an environment entry ("NAME=value" or "NAME") holds a credential of orchrun's own
// (ORCHRUN_SECRET_*, ORCHRUN_TOKEN) that a node's child process must not inherit: a node that
// prints its environment would store it where the API returns it.
bool withheld_from_children(std::string_view entry);

// Reads and checks a secrets file. On failure returns false and *err names the file and what
// is wrong (its mode, the line that cannot be parsed, ...).
bool load_secrets_file(const std::string& path, std::map<std::string, std::string>* out,
                       std::string* err);

// A secret name is what may follow ORCHRUN_SECRET_ in an environment variable name.
bool valid_secret_name(const std::string& name);

class SecretSource {
 public:
  explicit SecretSource(std::string file) : file_(std::move(file)) {}
  // The value of `name`, or nullopt with *err saying where it looked (or why the file was
  // refused). The file is read once, on first need.
  std::optional<std::string> get(const std::string& name, std::string* err);
  const std::string& file() const { return file_; }

 private:
  std::string file_;
  bool loaded_ = false;
  std::string load_error_;
  std::map<std::string, std::string> values_;
};

}  // namespace orch
