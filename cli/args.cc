#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "cli/common.h"

namespace orch::cli {

Args parse_args(int argc, char** argv) {
  static const std::map<std::string, bool> kTakesValue = {
      {"--input", true},      {"--db", true},
      {"--json", false},      {"--allow", true},
      {"--status", true},     {"--pipeline", true},
      {"--stage", true},      {"--since", true},
      {"--limit", true},      {"--format", true},
      {"--progress", true},   {"--sync", true},
      {"--help", false},      {"--version", false},
      {"--quiet", false},     {"--idempotency-key", true},
      {"--all", false},       {"--reason", true},
      {"--as", true},         {"--comment", true},
      {"--secrets", true},    {"--listen", true},
      {"--token-file", true}, {"--max-body", true},
      {"--grace", true},      {"--follow", false},
      {"--server", true},     {"--data", true},
      {"--full", false}};
  Args a;
  std::vector<std::string> words(argv + 1, argv + argc);
  for (size_t i = 0; i < words.size(); i++) {
    std::string w = words[i];
    if (w.rfind("--", 0) == 0) {
      std::string val;
      auto eq = w.find('=');
      if (eq != std::string::npos) {
        val = w.substr(eq + 1);
        w = w.substr(0, eq);
      }
      auto it = kTakesValue.find(w);
      if (it == kTakesValue.end()) {
        a.errors.push_back("unknown option " + w);
        continue;
      }
      if (it->second && eq == std::string::npos) {
        if (i + 1 >= words.size()) {
          a.errors.push_back(w + " needs a value");
          continue;
        }
        val = words[++i];
      }
      a.opts[w] = val;
    } else if (w == "-h") {
      a.opts["--help"] = "";
    } else {
      a.positional.push_back(w);
    }
  }
  static const std::vector<std::string> kCommands = {
      "run",    "validate", "runs",   "inspect", "graph", "resume", "cancel",
      "retry",  "approve",  "reject", "signal",  "serve", "logs", "doctor"};
  if (!a.positional.empty()) {
    for (const auto& c : kCommands)
      if (a.positional[0] == c) a.command = c;
    if (!a.command.empty()) {
      a.positional.erase(a.positional.begin());
    } else {
      a.command = "run";  // orchrun FILE.lua
      // A word that is no command and no file is a mistyped (or future) command: saying
      // "cannot read pipeline file doctor" would send the user looking for a file.
      const std::string& w = a.positional[0];
      struct stat st {};
      if (w.find('/') == std::string::npos && w.find('.') == std::string::npos &&
          stat(w.c_str(), &st) != 0) {
        std::string list;
        for (const auto& c : kCommands) list += (list.empty() ? "" : ", ") + c;
        a.errors.push_back("unknown command '" + w + "' (commands: " + list +
                           "; or the path of a pipeline file)");
      }
    }
  }
  // An option that the command does not take is a mistake worth saying, not ignoring.
  static const std::map<std::string, std::vector<std::string>> kAllowed = {
      {"run",
       {"--input", "--db", "--json", "--allow", "--progress", "--sync", "--quiet",
        "--idempotency-key", "--secrets"}},
      {"resume",
       {"--all", "--db", "--json", "--allow", "--progress", "--sync", "--quiet", "--secrets"}},
      {"retry", {"--db", "--json", "--allow", "--progress", "--sync", "--quiet", "--secrets"}},
      {"cancel", {"--db", "--reason"}},
      {"approve", {"--db", "--as", "--comment"}},
      {"reject", {"--db", "--as", "--comment"}},
      {"signal", {"--db", "--as", "--data", "--json"}},
      {"validate", {"--json", "--allow", "--secrets"}},
      {"graph", {"--format", "--allow", "--secrets"}},
      {"runs", {"--db", "--json", "--status", "--pipeline", "--stage", "--since", "--limit"}},
      {"inspect", {"--db", "--json"}},
      {"serve",
       {"--listen", "--db", "--token-file", "--max-body", "--grace", "--allow", "--secrets",
        "--sync"}},
      {"logs", {"--db", "--follow", "--server", "--json"}},
      {"doctor",
       {"--db", "--listen", "--token-file", "--secrets", "--allow", "--json", "--full"}}};
  auto allowed = kAllowed.find(a.command);
  if (allowed != kAllowed.end()) {
    for (const auto& [k, v] : a.opts) {
      if (k == "--help" || k == "--version") continue;
      const auto& ok = allowed->second;
      if (std::find(ok.begin(), ok.end(), k) == ok.end())
        a.errors.push_back("orchrun " + a.command + " does not take " + k);
    }
  }
  return a;
}

std::string default_db_path() {
  if (const char* e = getenv("ORCHRUN_DB"); e && *e) return e;
  if (const char* x = getenv("XDG_STATE_HOME"); x && *x)
    return std::string(x) + "/orchrun/orchrun.db";
  if (const char* h = getenv("HOME"); h && *h)
    return std::string(h) + "/.local/state/orchrun/orchrun.db";
  return ".orchrun/orchrun.db";
}

bool load_options(const Args& a, LoadOptions* lo) {
  std::string err;
  if (sandbox_from(a, &lo->sandbox, &err)) return true;
  fprintf(stderr, "orchrun: %s\n", err.c_str());
  return false;
}

bool sandbox_from(const Args& a, SandboxOptions* sb, std::string* err) {
  std::string allow = a.get("--allow");
  if (allow.empty()) {
    if (const char* e = getenv("ORCHRUN_ALLOW")) allow = e;
  }
  std::stringstream ss(allow);
  std::string lib;
  while (std::getline(ss, lib, ',')) {
    if (lib.empty()) continue;
    if (lib == "io")
      sb->allow_io = true;
    else if (lib == "os")
      sb->allow_os = true;
    else if (lib == "ffi")
      sb->allow_ffi = true;
    else if (lib == "debug")
      sb->allow_debug = true;
    else {
      *err = "--allow: unknown library '" + lib + "' (choose from io, os, ffi, debug)";
      return false;
    }
  }
  // The secrets file is checked now (readable, owner-only mode): a bad one stops before any
  // run starts rather than in the middle of one.
  std::string from = "--secrets";
  if (a.has("--secrets")) {
    sb->secrets_file = a.get("--secrets");
    if (sb->secrets_file.empty()) {
      *err = "--secrets needs a file name";
      return false;
    }
  } else if (const char* e = getenv("ORCHRUN_SECRETS_FILE"); e && *e) {
    sb->secrets_file = e;
    from = "ORCHRUN_SECRETS_FILE";
  }
  if (!sb->secrets_file.empty()) {
    std::map<std::string, std::string> values;
    std::string why;
    if (!load_secrets_file(sb->secrets_file, &values, &why)) {
      *err = from + ": " + why;
      return false;
    }
  }
  return true;
}

std::unique_ptr<Store> open_store(const Args& a, bool read_only, std::string* err) {
  StoreOptions so;
  so.read_only = read_only;
  std::string sync = a.get("--sync");
  if (!sync.empty() && sync != "full" && sync != "normal") {
    *err = "--sync must be 'full' or 'normal'";
    return nullptr;
  }
  so.synchronous_full = sync == "full";
  std::string path = a.get("--db", default_db_path());
  if (read_only && access(path.c_str(), F_OK) != 0) {
    *err = "no database at " + path + " (nothing has run yet, or pass --db PATH)";
    return nullptr;
  }
  return Store::open(path, so, err);
}

int open_run(const Args& a, bool read_only, const std::string& id, std::unique_ptr<Store>* store,
             std::optional<RunRow>* run) {
  std::string err;
  *store = open_store(a, read_only, &err);
  if (!*store) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitInternal;
  }
  *run = (*store)->find_run(id, &err);
  if (!*run) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitUsage;
  }
  return 0;
}

std::string db_hint(const Args& a) {
  if (!a.has("--db")) return "";
  std::string p = a.get("--db");
  if (p.find_first_of(" \t'\"$`\\") == std::string::npos) return " --db " + p;
  std::string q = "'";
  for (char c : p) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return " --db " + q + "'";
}

void print_diags(const std::vector<Diagnostic>& diags, const Style& st) {
  for (const auto& d : diags) fprintf(stderr, "%s %s\n", st.red("error:").c_str(), d.str().c_str());
}

}  // namespace orch::cli
