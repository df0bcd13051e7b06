#include "base/secrets.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace orch {

bool withheld_from_children(std::string_view entry) {
  const std::string_view name = entry.substr(0, entry.find('='));
  return name.substr(0, strlen(kSecretEnvPrefix)) == kSecretEnvPrefix || name == kTokenEnv;
}

bool valid_secret_name(const std::string& name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  for (char c : name)
    if (!(c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
      return false;
  return true;
}

bool load_secrets_file(const std::string& path, std::map<std::string, std::string>* out,
                       std::string* err) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = "cannot open secrets file " + path + ": " + strerror(errno);
    return false;
  }
  // The mode is checked on the open descriptor: what is read is what was checked.
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    *err = "secrets file " + path + " is not a regular file";
    close(fd);
    return false;
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    *err = "secrets file " + path + " has mode " + mode +
           "; it must be readable by its owner only (0600 or 0400): chmod 600 " + path;
    close(fd);
    return false;
  }
  std::string text;
  char buf[8192];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *err = "cannot read secrets file " + path + ": " + strerror(errno);
      close(fd);
      return false;
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  std::istringstream in(text);
  std::string l;
  for (int line = 1; std::getline(in, l); line++) {
    if (!l.empty() && l.back() == '\r') l.pop_back();
    size_t first = l.find_first_not_of(" \t");
    if (first == std::string::npos || l[first] == '#') continue;
    size_t eq = l.find('=');
    std::string name = eq == std::string::npos ? "" : l.substr(first, eq - first);
    while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.pop_back();
    if (!valid_secret_name(name)) {
      // The line's text is not quoted in the message: it may be a value on the wrong line.
      *err = "secrets file " + path + ":" + std::to_string(line) +
             ": expected NAME=value with NAME made of letters, digits and '_'";
      return false;
    }
    (*out)[name] = l.substr(eq + 1);
  }
  return true;
}

std::optional<std::string> SecretSource::get(const std::string& name, std::string* err) {
  std::string env_name = kSecretEnvPrefix + name;
  if (const char* v = getenv(env_name.c_str())) return std::string(v);
  if (file_.empty()) {
    *err = "secret '" + name + "' is not set (looked in: env " + env_name +
           "; no secrets file: pass --secrets FILE or set ORCHRUN_SECRETS_FILE)";
    return std::nullopt;
  }
  if (!loaded_) {
    loaded_ = true;
    if (!load_secrets_file(file_, &values_, &load_error_)) values_.clear();
  }
  if (!load_error_.empty()) {
    *err = "secret '" + name + "': " + load_error_;
    return std::nullopt;
  }
  auto it = values_.find(name);
  if (it != values_.end()) return it->second;
  *err = "secret '" + name + "' is not set (looked in: env " + env_name + ", file " + file_ + ")";
  return std::nullopt;
}

}  // namespace orch
