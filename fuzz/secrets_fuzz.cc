// The operator's secrets file (base/secrets.cc: NAME=value lines, mode 0600), read from a
// real file as --secrets FILE is, then looked up through SecretSource as o.secret does.
//
// (orchrun has no users file; the --token-file is read whole with trailing whitespace cut,
// nothing to parse.)
//
// Invariants: no crash; a refused file names the file and the line; every name read is a
// valid secret name, every value is one line, and SecretSource returns exactly what
// load_secrets_file read.
#include <map>
#include <string>

#include "fuzz/fuzz_util.h"
#include "base/secrets.h"

using namespace orch;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = orch::fuzz::scratch_dir() + "/secrets";
  orch::fuzz::write_file(path, orch::fuzz::bytes(data, size), 0600);
  std::map<std::string, std::string> values;
  std::string err;
  if (!load_secrets_file(path, &values, &err)) {
    FUZZ_CHECK(err.rfind("secrets file " + path + ":", 0) == 0, "error: " + err);
    return 0;
  }
  SecretSource source(path);
  for (const auto& [name, value] : values) {
    FUZZ_CHECK(valid_secret_name(name), "name '" + name + "'");
    FUZZ_CHECK(value.find('\n') == std::string::npos, "a value with a newline: " + name);
    // The environment comes first: only names it does not set are compared.
    if (getenv((kSecretEnvPrefix + name).c_str())) continue;
    std::string why;
    auto got = source.get(name, &why);
    FUZZ_CHECK(got && *got == value, "SecretSource::get(" + name + "): " + why);
  }
  return 0;
}
