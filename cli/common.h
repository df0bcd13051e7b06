// What the CLI commands share: exit codes, parsed arguments, the store and sandbox options
// they take, and diagnostics printing.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bindings/lua_state.h"
#include "cli/format.h"
#include "engine/control.h"
#include "engine/graph.h"
#include "engine/pipeline_loader.h"
#include "store/store.h"

namespace orch::cli {

constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2, kExitInternal = 3,
              kExitAwaitingApproval = 4;
// After a first SIGINT/SIGTERM a one-shot (run, resume, retry) cancels its runs; if it has not
// exited this long after the signal (Lua stuck in C code, a child that ignores SIGTERM past its
// grace), it kills its child process groups and exits anyway.
constexpr int64_t kOneShotStopGraceMs = 10000;

struct Args {
  std::string command;  // run | resume | validate | runs | inspect | graph
  std::vector<std::string> positional;
  std::map<std::string, std::string> opts;
  std::vector<std::string> errors;
  bool has(const std::string& k) const { return opts.count(k) > 0; }
  std::string get(const std::string& k, const std::string& def = "") const {
    auto it = opts.find(k);
    return it == opts.end() ? def : it->second;
  }
};

Args parse_args(int argc, char** argv);
std::string default_db_path();
bool sandbox_from(const Args& a, SandboxOptions* sb, std::string* err);
// The options pipelines load with (--allow, or ORCHRUN_ALLOW); false after printing what is
// wrong with them.
bool load_options(const Args& a, LoadOptions* lo);
std::unique_ptr<Store> open_store(const Args& a, bool read_only, std::string* err);
// Opens the store and finds the run `id` names (a unique prefix is enough). On failure prints
// why and returns the exit code (kExitInternal: the store; kExitUsage: no such run); else 0.
int open_run(const Args& a, bool read_only, const std::string& id, std::unique_ptr<Store>* store,
             std::optional<RunRow>* run);
// " --db PATH" for hints, quoted for the shell when needed.
std::string db_hint(const Args& a);
void print_diags(const std::vector<Diagnostic>& diags, const Style& st);

int cmd_run(const Args& a);
int cmd_resume(const Args& a);
int cmd_cancel(const Args& a);
int cmd_retry(const Args& a);
int cmd_decide(const Args& a);  // approve | reject
int cmd_signal(const Args& a);
int cmd_validate(const Args& a);
int cmd_graph(const Args& a);
int cmd_runs(const Args& a);
int cmd_inspect(const Args& a);
int cmd_serve(const Args& a);
int cmd_logs(const Args& a);
int cmd_doctor(const Args& a);

}  // namespace orch::cli
