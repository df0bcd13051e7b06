#include "runtime/cli/commands.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bindings/pipeline_loader.h"
#include "runtime/cli/format.h"
#include "runtime/cli/live_view.h"
#include "runtime/duration.h"
#include "runtime/ids.h"
#include "runtime/json_util.h"
#include "runtime/loop.h"
#include "runtime/scheduler.h"
#include "runtime/signals.h"
#include "runtime/store/store.h"

namespace orch::cli {
namespace {

constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2, kExitInternal = 3,
              kExitInterrupted = 130;

const char kUsage[] = R"(orchrun — workflow runtime for operations pipelines

Usage:
  orchrun FILE.lua [--input JSON | --input @file.json] [--db PATH] [--json]
                                     run a pipeline once and exit (0 succeeded, 1 failed)
  orchrun FILE.lua --idempotency-key KEY
                                     start at most one run per pipeline and key
  orchrun resume RUN_ID | --all      continue runs whose process stopped (crash, kill -9):
                                     stored successes are reused, the rest runs again
  orchrun validate FILE...           load and check pipelines without running them
  orchrun graph FILE [--format mermaid|dot]
                                     print the pipeline's graph
  orchrun runs [--status S] [--pipeline P] [--since 24h] [--limit N] [--json]
                                     list recent runs
  orchrun inspect RUN_ID [--json]    timeline of a run: nodes, attempts, durations, errors
  orchrun --version | --help

Options:
  --db PATH        the SQLite database (default: $ORCHRUN_DB, else
                   $XDG_STATE_HOME/orchrun/orchrun.db, else ~/.local/state/orchrun/orchrun.db)
  --input JSON     the pipeline input, inline or @file.json (default: {})
  --json           machine-readable output on stdout
  --allow LIBS     let pipelines use io, os, ffi or debug (comma-separated); off by default
  --sync full      fsync every commit (survives power loss, not only a crash of orchrun)
  --progress MODE  tty | plain | none (default: tty on a terminal, plain otherwise)
  --quiet          no live view, and no summary unless the run fails (then on stderr)

Exit codes: 0 succeeded, 1 run failed, 2 usage error, invalid pipeline or unknown run,
            3 store or internal error, 130/143 interrupted by SIGINT/SIGTERM.
)";

struct Args {
  std::string command;                 // run | validate | runs | inspect | graph
  std::vector<std::string> positional;
  std::map<std::string, std::string> opts;
  std::vector<std::string> errors;
  bool has(const std::string& k) const { return opts.count(k) > 0; }
  std::string get(const std::string& k, const std::string& def = "") const {
    auto it = opts.find(k);
    return it == opts.end() ? def : it->second;
  }
};

Args parse_args(int argc, char** argv) {
  static const std::map<std::string, bool> kTakesValue = {
      {"--input", true},  {"--db", true},     {"--json", false},   {"--allow", true},
      {"--status", true}, {"--pipeline", true}, {"--since", true}, {"--limit", true},
      {"--format", true}, {"--progress", true}, {"--sync", true},  {"--help", false},
      {"--version", false}, {"--quiet", false}, {"--idempotency-key", true}, {"--all", false}};
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
  static const std::vector<std::string> kCommands = {"run", "validate", "runs", "inspect", "graph",
                                                     "resume"};
  if (!a.positional.empty()) {
    for (const auto& c : kCommands)
      if (a.positional[0] == c) a.command = c;
    if (!a.command.empty())
      a.positional.erase(a.positional.begin());
    else
      a.command = "run";  // orchrun FILE.lua
  }
  // An option that the command does not take is a mistake worth saying, not ignoring.
  static const std::map<std::string, std::vector<std::string>> kAllowed = {
      {"run", {"--input", "--db", "--json", "--allow", "--progress", "--sync", "--quiet",
               "--idempotency-key"}},
      {"resume", {"--all", "--db", "--json", "--allow", "--progress", "--sync", "--quiet"}},
      {"validate", {"--json", "--allow"}},
      {"graph", {"--format", "--allow"}},
      {"runs", {"--db", "--json", "--status", "--pipeline", "--since", "--limit"}},
      {"inspect", {"--db", "--json"}}};
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
  if (const char* x = getenv("XDG_STATE_HOME"); x && *x) return std::string(x) + "/orchrun/orchrun.db";
  if (const char* h = getenv("HOME"); h && *h) return std::string(h) + "/.local/state/orchrun/orchrun.db";
  return ".orchrun/orchrun.db";
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
    if (lib == "io") sb->allow_io = true;
    else if (lib == "os") sb->allow_os = true;
    else if (lib == "ffi") sb->allow_ffi = true;
    else if (lib == "debug") sb->allow_debug = true;
    else {
      *err = "--allow: unknown library '" + lib + "' (choose from io, os, ffi, debug)";
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

// " --db PATH" for hints, quoted for the shell when needed.
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

// --- run ------------------------------------------------------------------------------------

// Is `pid` a live orchrun process (so that its runs must not be taken over)?
bool owner_alive(int64_t pid) {
  if (pid <= 0 || pid == getpid()) return false;
  if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
  char buf[4096];
  std::string link = "/proc/" + std::to_string(pid) + "/exe";
  ssize_t n = readlink(link.c_str(), buf, sizeof buf - 1);
  if (n <= 0) return errno == EACCES;  // a zombie has no exe: it is gone
  std::string exe(buf, static_cast<size_t>(n));
  std::string base = exe.substr(exe.rfind('/') + 1);
  return base.rfind("orchrun", 0) == 0;
}

void print_summary(FILE* human, const RunSummary& summary, const Args& a) {
  Style st = style_for(human);
  std::string counts = std::to_string(summary.nodes_succeeded) + " succeeded";
  if (summary.nodes_reused) counts += " (" + std::to_string(summary.nodes_reused) + " reused)";
  if (summary.nodes_failed) counts += ", " + std::to_string(summary.nodes_failed) + " failed";
  if (summary.nodes_skipped) counts += ", " + std::to_string(summary.nodes_skipped) + " skipped";
  if (summary.nodes_cancelled)
    counts += ", " + std::to_string(summary.nodes_cancelled) + " cancelled";
  std::string head = summary.status == "succeeded" ? st.green("✓ succeeded")
                     : summary.status == "failed"  ? st.red("✗ failed")
                                                   : st.yellow("⊘ " + summary.status);
  fprintf(human, "%s in %s  (%s v%d; nodes: %s; attempts: %d)\n", head.c_str(),
          format_duration_ms(summary.duration_ms).c_str(), summary.pipeline.c_str(),
          summary.version, counts.c_str(), summary.attempts);
  if (!summary.error_type.empty())
    fprintf(human, "  %s %s\n",
            st.red(summary.error_node.empty() ? "error:" : "error in " + summary.error_node + ":")
                .c_str(),
            first_line(summary.error_message, 400).c_str());
  fprintf(human, "  run %s  trace %s\n  details: orchrun inspect %s%s\n", summary.run_id.c_str(),
          summary.trace_id.c_str(), summary.run_id.c_str(), db_hint(a).c_str());
}

json summary_json(const RunSummary& summary, const Store& store) {
  json j{{"run_id", summary.run_id},         {"trace_id", summary.trace_id},
         {"pipeline", summary.pipeline},     {"version", summary.version},
         {"status", summary.status},         {"duration_ms", summary.duration_ms},
         {"nodes_succeeded", summary.nodes_succeeded},
         {"nodes_reused", summary.nodes_reused},
         {"nodes_failed", summary.nodes_failed},
         {"nodes_skipped", summary.nodes_skipped},
         {"attempts", summary.attempts},     {"db", store.path()}};
  if (!summary.output_json.empty()) j["output"] = parse_json(summary.output_json, nullptr);
  if (!summary.error_type.empty())
    j["error"] = {{"type", summary.error_type},
                  {"message", summary.error_message},
                  {"node", summary.error_node}};
  return j;
}

// Runs the loop until every run that `start` started has finished: live view, Ctrl-C
// handling, summaries. Returns the process exit code.
int drive(const Args& a, Store* store, const std::vector<Pipeline*>& pipelines,
          const std::function<int(Scheduler&)>& start) {
  bool json_out = a.has("--json");
  FILE* human = json_out ? stderr : stdout;
  std::string progress = a.get("--progress", isatty(fileno(human)) ? "tty" : "plain");
  if (a.has("--quiet")) progress = "none";
  if (progress != "tty" && progress != "plain" && progress != "none") {
    fprintf(stderr, "orchrun: --progress must be tty, plain or none\n");
    return kExitUsage;
  }
  int exit_code = kExitInternal;
  Loop loop;
  Scheduler sched(&loop, store);
  for (auto* p : pipelines) p->engine->set_host(&sched);
  std::unique_ptr<LiveView> view;
  if (progress != "none") {
    view = std::make_unique<LiveView>(human, progress == "tty", loop.get());
    sched.add_sink(view.get());
  }
  std::vector<RunSummary> done;
  sched.on_run_finished = [&](const RunSummary& s) { done.push_back(s); };

  // Ctrl-C: the first cancels the runs cleanly; a second one forces an exit.
  InterruptHandler intr(loop.get(), [&sched](int signo) {
    const char* name = signo == SIGINT ? "SIGINT" : "SIGTERM";
    fprintf(stderr, "\norchrun: %s: cancelling (press Ctrl-C again to force)\n", name);
    sched.cancel_all(std::string("interrupted by ") + name);
  });

  int started = start(sched);
  if (started > 0) loop.run();
  // Whatever is still active (a store failure stopped the loop) is cancelled while the view
  // still listens; then the view goes.
  sched.cancel_all("shutdown");
  if (view) view->finish();

  if (!sched.fatal_error().empty()) {
    fprintf(stderr, "orchrun: %s\n", sched.fatal_error().c_str());
    exit_code = kExitInternal;
  } else if (started > 0) {
    bool quiet = a.has("--quiet");
    bool all_ok = static_cast<int>(done.size()) == started;
    for (auto& sm : done) all_ok = all_ok && sm.status == "succeeded";
    for (auto& sm : done) {
      if (json_out) continue;
      if (quiet && sm.status == "succeeded") continue;
      print_summary(quiet ? stderr : human, sm, a);
    }
    if (json_out) {
      if (done.size() == 1 && a.command == "run") {
        printf("%s\n", dump_json(summary_json(done[0], *store), 2).c_str());
      } else {
        json arr = json::array();
        for (auto& sm : done) arr.push_back(summary_json(sm, *store));
        printf("%s\n", dump_json(arr, 2).c_str());
      }
    }
    // Interrupted: 128 + the signal, as shells report it (130 for SIGINT, 143 for SIGTERM).
    exit_code = all_ok ? kExitOk : intr.count() > 0 ? 128 + intr.signo() : kExitFailed;
  } else {
    exit_code = started < 0 ? -started : kExitOk;
  }
  view.reset();
  for (auto* p : pipelines) p->engine->set_host(nullptr);
  return exit_code;
}

std::string read_input(const Args& a, int* code) {
  std::string input = "{}";
  if (!a.has("--input")) return input;
  input = a.get("--input");
  std::string where = "--input";
  if (!input.empty() && input[0] == '@') {
    std::ifstream in(input.substr(1), std::ios::binary);
    if (!in) {
      fprintf(stderr, "orchrun: --input: cannot read %s: %s\n", input.substr(1).c_str(),
              strerror(errno));
      *code = kExitUsage;
      return "";
    }
    where = input.substr(1);
    std::stringstream ss;
    ss << in.rdbuf();
    input = ss.str();
  }
  std::string err;
  json j = parse_json(input, &err);
  if (j.is_discarded()) {
    fprintf(stderr, "orchrun: %s is not valid JSON: %s\n", where.c_str(), err.c_str());
    *code = kExitUsage;
    return "";
  }
  if (!j.is_object()) {
    fprintf(stderr, "orchrun: %s must be a JSON object (the pipeline input, e.g. "
                    "'{\"dry_run\": true}'), got %s\n", where.c_str(), j.type_name());
    *code = kExitUsage;
    return "";
  }
  return dump_json(j);
}

int cmd_run(const Args& a) {
  Style est = style_for(stderr);
  if (a.positional.size() != 1) {
    fprintf(stderr, "orchrun: give exactly one pipeline file to run (got %zu)\n%s",
            a.positional.size(), "usage: orchrun FILE.lua [--input JSON] [--db PATH]\n");
    return kExitUsage;
  }
  int code = 0;
  std::string input = read_input(a, &code);
  if (code) return code;
  LoadOptions lo;
  std::string err;
  if (!sandbox_from(a, &lo.sandbox, &err)) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitUsage;
  }
  std::vector<Diagnostic> diags;
  auto pipeline = load_pipeline_file(a.positional[0], lo, &diags);
  if (!pipeline) {
    print_diags(diags, est);
    return kExitUsage;
  }
  auto store = open_store(a, false, &err);
  if (!store) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitInternal;
  }
  std::string key = a.get("--idempotency-key");
  if (a.has("--idempotency-key") && key.empty()) {
    fprintf(stderr, "orchrun: --idempotency-key needs a non-empty value\n");
    return kExitUsage;
  }
  RunOptions ro;
  ro.input_json = input;
  ro.source = "cli";
  ro.idempotency_key = key;
  if (const char* env = getenv("ORCHRUN_ENV")) ro.environment = env;

  // The same pipeline and key: the existing run is the answer, not a new one.
  auto existing = [&]() -> int {
    auto prev = store->find_by_idempotency_key(pipeline->name, key);
    if (!prev) return -1;
    FILE* human = a.has("--json") ? stderr : stdout;
    fprintf(human, "run %s already exists for idempotency key '%s' (status %s)\n",
            prev->id.c_str(), key.c_str(), prev->status.c_str());
    if (a.has("--json")) printf("%s\n", dump_json(json{{"run_id", prev->id}, {"status", prev->status}, {"existing", true}}, 2).c_str());
    if (prev->status == "succeeded") return kExitOk;
    if (prev->status == "failed" || prev->status == "cancelled") return kExitFailed;
    if (owner_alive(prev->owner_pid)) {
      fprintf(human, "  it is running in process %lld; not starting another\n",
              static_cast<long long>(prev->owner_pid));
      return kExitOk;
    }
    fprintf(human, "  its process is gone; resume it with: orchrun resume %s%s\n",
            prev->id.c_str(), db_hint(a).c_str());
    return kExitOk;
  };
  if (!key.empty()) {
    int rc = existing();
    if (rc >= 0) return rc;
  }
  bool lost_race = false;
  int rc = drive(a, store.get(), {pipeline.get()}, [&](Scheduler& sched) {
    std::string run_id = sched.start_run(pipeline.get(), ro, &err);
    if (!run_id.empty()) return 1;
    if (err == "duplicate idempotency key") {
      lost_race = true;
      return 0;
    }
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return -kExitInternal;
  });
  if (lost_race) return existing();
  return rc;
}

// --- resume ---------------------------------------------------------------------------------

int cmd_resume(const Args& a) {
  Style est = style_for(stderr);
  bool all = a.has("--all");
  if (all == !a.positional.empty() || a.positional.size() > 1) {
    fprintf(stderr, "usage: orchrun resume RUN_ID | orchrun resume --all\n");
    return kExitUsage;
  }
  std::string err;
  LoadOptions lo;
  if (!sandbox_from(a, &lo.sandbox, &err)) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitUsage;
  }
  std::string path = a.get("--db", default_db_path());
  if (access(path.c_str(), F_OK) != 0) {
    fprintf(stderr, "orchrun: no database at %s (nothing to resume)\n", path.c_str());
    return kExitUsage;
  }
  auto store = open_store(a, false, &err);
  if (!store) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitInternal;
  }
  std::vector<RunRow> candidates;
  if (all) {
    for (auto& r : store->unfinished_runs())
      if (!owner_alive(r.owner_pid)) candidates.push_back(r);
    if (candidates.empty()) {
      printf("nothing to resume in %s\n", store->path().c_str());
      return kExitOk;
    }
  } else {
    auto r = store->find_run(a.positional[0], &err);
    if (!r) {
      fprintf(stderr, "orchrun: %s\n", err.c_str());
      return kExitUsage;
    }
    if (r->status != "running" && r->status != "queued") {
      fprintf(stderr, "orchrun: run %s is %s; only unfinished runs can be resumed%s\n",
              r->id.c_str(), r->status.c_str(),
              r->status == "failed" ? " (a failed run is retried, not resumed)" : "");
      return kExitUsage;
    }
    if (owner_alive(r->owner_pid)) {
      fprintf(stderr, "orchrun: run %s is being run by process %lld; not taking it over\n",
              r->id.c_str(), static_cast<long long>(r->owner_pid));
      return kExitUsage;
    }
    candidates.push_back(*r);
  }

  // One pipeline per stored definition, loaded from the source the runs started with.
  std::map<std::string, std::unique_ptr<Pipeline>> defs;
  std::vector<std::pair<Pipeline*, RunRow>> todo;
  int bad = 0;
  for (auto& r : candidates) {
    std::string k = r.pipeline + "@" + std::to_string(r.version);
    if (!defs.count(k)) {
      std::string file;
      auto src = store->definition_source(r.pipeline, r.version, &file);
      if (!src) {
        fprintf(stderr, "orchrun: run %s: definition %s v%d is not in the store\n",
                r.id.c_str(), r.pipeline.c_str(), r.version);
        bad++;
        continue;
      }
      std::vector<Diagnostic> diags;
      auto p = load_pipeline_source(file.empty() ? r.pipeline + ".lua" : file, *src, lo, &diags);
      if (!p) {
        fprintf(stderr, "orchrun: run %s: its pipeline %s v%d no longer loads:\n",
                r.id.c_str(), r.pipeline.c_str(), r.version);
        print_diags(diags, est);
        bad++;
        continue;
      }
      defs[k] = std::move(p);
    }
    if (!store->claim_run(r.id, r.owner_pid, getpid())) {
      fprintf(stderr, "orchrun: run %s was taken over by another process; skipping it\n",
              r.id.c_str());
      continue;
    }
    todo.emplace_back(defs[k].get(), r);
  }
  std::vector<Pipeline*> ps;
  for (auto& [k, p] : defs) ps.push_back(p.get());
  int rc = drive(a, store.get(), ps, [&](Scheduler& sched) {
    int n = 0;
    for (auto& [p, r] : todo) {
      if (sched.resume_run(p, r, &err))
        n++;
      else
        fprintf(stderr, "orchrun: run %s: %s\n", r.id.c_str(), err.c_str());
    }
    return n;
  });
  if (rc == kExitOk && bad) return kExitFailed;
  return rc;
}

// --- validate -----------------------------------------------------------------------------

int cmd_validate(const Args& a) {
  Style est = style_for(stderr);
  Style ost = style_for(stdout);
  if (a.positional.empty()) {
    fprintf(stderr, "usage: orchrun validate FILE...\n");
    return kExitUsage;
  }
  LoadOptions lo;
  std::string err;
  if (!sandbox_from(a, &lo.sandbox, &err)) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitUsage;
  }
  bool json_out = a.has("--json");
  json report = json::array();
  int bad = 0;
  for (const auto& f : a.positional) {
    std::vector<Diagnostic> diags;
    auto p = load_pipeline_file(f, lo, &diags);
    if (json_out) {
      json e{{"file", f}, {"valid", p != nullptr}};
      if (p) {
        e["pipeline"] = p->name;
        e["nodes"] = p->node_count;
        e["sha256"] = p->sha256;
      }
      json errs = json::array();
      for (auto& d : diags) errs.push_back({{"file", d.file}, {"line", d.line}, {"message", d.message}});
      e["errors"] = errs;
      report.push_back(e);
    } else if (p) {
      printf("%s %s: pipeline '%s', %d node%s\n", ost.green("✓").c_str(), f.c_str(),
             p->name.c_str(), p->node_count, p->node_count == 1 ? "" : "s");
    } else {
      print_diags(diags, est);
    }
    if (!p) bad++;
  }
  if (json_out) printf("%s\n", dump_json(report, 2).c_str());
  else if (bad) fprintf(stderr, "%d of %zu file%s invalid\n", bad, a.positional.size(),
                        a.positional.size() == 1 ? "" : "s");
  return bad ? kExitUsage : kExitOk;
}

// --- graph --------------------------------------------------------------------------------

void graph_mermaid(const Step* s, std::string* out, std::vector<std::string>* entry,
                   std::vector<std::string>* exit, int* anon) {
  auto nid = [](const std::string& path) {
    std::string r = "n_";
    for (char c : path) r += isalnum(static_cast<unsigned char>(c)) ? c : '_';
    return r;
  };
  switch (s->kind) {
    case StepKind::Node: {
      std::string id = nid(s->path);
      *out += "  " + id + "[\"" + s->id + "\"]\n";
      *entry = {id};
      *exit = {id};
      return;
    }
    case StepKind::Seq: {
      std::vector<std::string> prev;
      bool first = true;
      for (auto& c : s->children) {
        std::vector<std::string> en, ex;
        graph_mermaid(c.get(), out, &en, &ex, anon);
        if (first) *entry = en;
        for (auto& p : prev)
          for (auto& e : en) *out += "  " + p + " --> " + e + "\n";
        prev = ex;
        first = false;
      }
      *exit = prev;
      return;
    }
    case StepKind::Parallel: {
      std::string fork = nid(s->path) + "_fork", join = nid(s->path) + "_join";
      std::string how = s->join == 0 ? "all" : s->join < 0 ? "any" : std::to_string(s->join);
      *out += "  " + fork + "{{\"" + s->id + "\"}}\n";
      *out += "  " + join + "((\"join " + how + "\"))\n";
      for (auto& c : s->children) {
        std::vector<std::string> en, ex;
        graph_mermaid(c.get(), out, &en, &ex, anon);
        for (auto& e : en) *out += "  " + fork + " --> " + e + "\n";
        for (auto& e : ex) *out += "  " + e + " --> " + join + "\n";
      }
      *entry = {fork};
      *exit = {join};
      return;
    }
    case StepKind::When:
    case StepKind::Switch: {
      std::string dec = nid(s->path) + "_decide";
      *out += "  " + dec + "{\"" + s->id + "?\"}\n";
      *entry = {dec};
      exit->clear();
      bool has_else = true;
      for (size_t i = 0; i < s->children.size(); i++) {
        std::string label = s->kind == StepKind::When ? (i == 0 ? "then" : "else") : s->case_keys[i];
        if (!s->children[i]) {
          has_else = false;
          continue;
        }
        std::vector<std::string> en, ex;
        graph_mermaid(s->children[i].get(), out, &en, &ex, anon);
        for (auto& e : en) *out += "  " + dec + " -- " + label + " --> " + e + "\n";
        exit->insert(exit->end(), ex.begin(), ex.end());
      }
      if (!has_else) exit->push_back(dec);
      return;
    }
  }
}

int cmd_graph(const Args& a) {
  if (a.positional.size() != 1) {
    fprintf(stderr, "usage: orchrun graph FILE [--format mermaid|dot]\n");
    return kExitUsage;
  }
  std::string fmt = a.get("--format", "mermaid");
  if (fmt != "mermaid" && fmt != "dot") {
    fprintf(stderr, "orchrun: --format must be mermaid or dot\n");
    return kExitUsage;
  }
  LoadOptions lo;
  std::string err;
  if (!sandbox_from(a, &lo.sandbox, &err)) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitUsage;
  }
  std::vector<Diagnostic> diags;
  auto p = load_pipeline_file(a.positional[0], lo, &diags);
  if (!p) {
    print_diags(diags, style_for(stderr));
    return kExitUsage;
  }
  std::string body;
  std::vector<std::string> en, ex;
  int anon = 0;
  graph_mermaid(p->root.get(), &body, &en, &ex, &anon);
  if (fmt == "mermaid") {
    printf("flowchart TD\n  start([\"%s\"])\n%s", p->name.c_str(), body.c_str());
    for (auto& e : en) printf("  start --> %s\n", e.c_str());
  } else {
    // The Mermaid edges translate directly to DOT.
    printf("digraph \"%s\" {\n  rankdir=TB;\n", p->name.c_str());
    std::stringstream ss(body);
    std::string line;
    while (std::getline(ss, line)) {
      auto arrow = line.find(" --> ");
      auto lab = line.find(" -- ");
      if (arrow != std::string::npos && lab != std::string::npos && lab < arrow) {
        std::string from = line.substr(2, lab - 2);
        std::string label = line.substr(lab + 4, arrow - lab - 4);
        printf("  %s -> %s [label=\"%s\"];\n", from.c_str(), line.substr(arrow + 5).c_str(),
               label.c_str());
      } else if (arrow != std::string::npos) {
        printf("  %s -> %s;\n", line.substr(2, arrow - 2).c_str(), line.substr(arrow + 5).c_str());
      } else {
        auto q1 = line.find('"'), q2 = line.rfind('"');
        auto sp = line.find_first_of("[{(", 2);
        if (q1 != std::string::npos && q2 > q1 && sp != std::string::npos)
          printf("  %s [label=\"%s\"];\n", line.substr(2, sp - 2).c_str(),
                 line.substr(q1 + 1, q2 - q1 - 1).c_str());
      }
    }
    printf("}\n");
  }
  return kExitOk;
}

// --- runs ---------------------------------------------------------------------------------

json run_json(const RunRow& r) {
  json j{{"id", r.id},
         {"trace_id", r.trace_id},
         {"pipeline", r.pipeline},
         {"version", r.version},
         {"status", r.status},
         {"source", r.source},
         {"created_at", iso8601_ms(r.created_at)},
         {"attempts", r.attempts}};
  if (r.finished_at) {
    j["finished_at"] = iso8601_ms(r.finished_at);
    j["duration_ms"] = r.finished_at - r.started_at;
  }
  if (!r.input.empty()) j["input"] = parse_json(r.input, nullptr);
  if (!r.output.empty()) j["output"] = parse_json(r.output, nullptr);
  if (!r.error_type.empty())
    j["error"] = {{"type", r.error_type}, {"message", r.error_message}, {"node", r.error_node},
                  {"retryable", r.retryable}};
  return j;
}

int cmd_runs(const Args& a) {
  std::string err;
  auto store = open_store(a, true, &err);
  if (!store) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitInternal;
  }
  RunFilter f;
  f.status = a.get("--status");
  static const std::vector<std::string> kStatuses = {"queued", "running", "awaiting_approval",
                                                     "succeeded", "failed", "cancelled"};
  if (!f.status.empty() && std::find(kStatuses.begin(), kStatuses.end(), f.status) == kStatuses.end()) {
    fprintf(stderr, "orchrun: --status must be one of queued, running, awaiting_approval, "
                    "succeeded, failed, cancelled\n");
    return kExitUsage;
  }
  f.pipeline = a.get("--pipeline");
  if (a.has("--since")) {
    auto ms = parse_duration_ms(a.get("--since"), &err);
    if (!ms) {
      fprintf(stderr, "orchrun: --since: %s\n", err.c_str());
      return kExitUsage;
    }
    f.since_ms = wall_ms() - *ms;
  }
  if (a.has("--limit")) {
    std::string l = a.get("--limit");
    char* end = nullptr;
    long v = strtol(l.c_str(), &end, 10);
    f.limit = (end && *end == '\0' && !l.empty() && v > 0 && v <= 1000000) ? static_cast<int>(v) : 0;
    if (f.limit <= 0) {
      fprintf(stderr, "orchrun: --limit must be a whole number between 1 and 1000000, got '%s'\n",
              l.c_str());
      return kExitUsage;
    }
  }
  auto runs = store->list_runs(f);
  if (a.has("--json")) {
    json arr = json::array();
    for (auto& r : runs) arr.push_back(run_json(r));
    printf("%s\n", dump_json(arr, 2).c_str());
    return kExitOk;
  }
  Style st = style_for(stdout);
  if (runs.empty()) {
    printf("no runs%s in %s\n", (f.status.empty() && f.pipeline.empty() && !f.since_ms) ? "" : " match",
           store->path().c_str());
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"RUN", "PIPELINE", "STATUS", "STARTED", "DURATION", "ERROR"}};
  for (auto& r : runs) {
    std::string dur = r.finished_at ? format_duration_ms(r.finished_at - r.started_at) : "-";
    std::string errs = r.error_type.empty() ? "" : (r.error_node.empty() ? "" : r.error_node + ": ") +
                                                       first_line(r.error_message, 60);
    rows.push_back({r.id, r.pipeline + " v" + std::to_string(r.version),
                    std::string(status_symbol(r.status)) + " " + st.status(r.status),
                    local_time(r.created_at), dur, errs});
  }
  print_table(stdout, rows, st);
  return kExitOk;
}

// --- inspect ------------------------------------------------------------------------------

int cmd_inspect(const Args& a) {
  if (a.positional.size() != 1) {
    fprintf(stderr, "usage: orchrun inspect RUN_ID [--json]\n");
    return kExitUsage;
  }
  if (a.positional[0].size() < 4) {
    fprintf(stderr, "orchrun: give the run id or at least its first 4 characters\n");
    return kExitUsage;
  }
  std::string err;
  auto store = open_store(a, true, &err);
  if (!store) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitInternal;
  }
  auto run = store->find_run(a.positional[0], &err);
  if (!run) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitUsage;
  }
  auto nodes = store->node_runs(run->id);
  auto events = store->events(run->id);
  if (a.has("--json")) {
    json j = run_json(*run);
    json ns = json::array();
    for (auto& n : nodes) {
      json e{{"node", n.node_id},        {"attempt", n.attempt},
             {"kind", n.kind},           {"status", n.status},
             {"started_at", iso8601_ms(n.started_at)},
             {"duration_ms", n.duration_ms}};
      if (!n.output.empty()) e["output"] = parse_json(n.output, nullptr);
      if (!n.error_type.empty())
        e["error"] = {{"type", n.error_type}, {"message", n.error_message},
                      {"retryable", n.retryable}, {"traceback", n.traceback}};
      ns.push_back(e);
    }
    j["nodes"] = ns;
    json evs = json::array();
    for (auto& e : events) {
      json x{{"ts", iso8601_ms(e.ts)}, {"kind", e.kind}, {"trace_id", e.trace_id}};
      if (!e.node.empty()) {
        x["node"] = e.node;
        x["attempt"] = e.attempt;
      }
      if (!e.data.empty()) x["data"] = parse_json(e.data, nullptr);
      evs.push_back(x);
    }
    j["events"] = evs;
    printf("%s\n", dump_json(j, 2).c_str());
    return kExitOk;
  }
  Style st = style_for(stdout);
  int64_t t0 = run->started_at ? run->started_at : run->created_at;
  int64_t t1 = run->finished_at ? run->finished_at : wall_ms();
  printf("%s %s  %s v%d\n", st.bold("run").c_str(), run->id.c_str(), run->pipeline.c_str(),
         run->version);
  printf("  status    %s %s\n", status_symbol(run->status), st.status(run->status).c_str());
  printf("  trace     %s\n", run->trace_id.c_str());
  printf("  started   %s   duration %s%s\n", local_time(t0).c_str(),
         format_duration_ms(t1 - t0).c_str(), run->finished_at ? "" : " (still running)");
  printf("  source    %s   input %s\n", run->source.c_str(), first_line(run->input, 100).c_str());
  if (!run->error_type.empty())
    printf("  error     %s [%s] %s\n", st.red(run->error_node.empty() ? "" : run->error_node + ":").c_str(),
           run->error_type.c_str(), first_line(run->error_message, 300).c_str());
  printf("\n");
  // Timeline: one row per attempt with a bar placed on the run's time axis.
  const int kBar = 30;
  int64_t span = std::max<int64_t>(1, t1 - t0);
  std::vector<std::vector<std::string>> rows = {
      {"NODE", "ATTEMPT", "STATUS", "START", "DURATION", "TIMELINE", "ERROR"}};
  for (auto& n : nodes) {
    int64_t start = n.started_at - t0;
    int64_t dur = n.finished_at ? n.finished_at - n.started_at : t1 - n.started_at;
    int a0 = static_cast<int>(std::clamp<int64_t>(start * kBar / span, 0, kBar - 1));
    int len = static_cast<int>(std::max<int64_t>(1, dur * kBar / span));
    len = std::min(len, kBar - a0);
    std::string bar = std::string(a0, ' ');
    for (int i = 0; i < len; i++) bar += "█";
    bar += std::string(kBar - a0 - len, ' ');
    std::string status = std::string(status_symbol(n.status)) + " " + st.status(n.status);
    std::string e;
    if (!n.error_type.empty() && n.status != "skipped")
      e = "[" + n.error_type + (n.status == "failed" ? (n.retryable ? ", retryable" : ", not retryable") : "") +
          "] " + first_line(n.error_message, 80);
    else if (n.status == "skipped")
      e = n.error_message;
    std::string att = std::to_string(n.attempt) + (n.kind == "body" ? "" : " " + n.kind);
    rows.push_back({n.node_id, att, status, "+" + format_duration_ms(start),
                    n.status == "skipped" ? "-" : format_duration_ms(dur),
                    n.status == "skipped" ? std::string(kBar, ' ') : st.cyan("|" + bar + "|"), e});
  }
  print_table(stdout, rows, st);
  // Tracebacks of failed attempts, and logs.
  bool printed = false;
  for (auto& n : nodes) {
    if (n.status != "failed" || n.traceback.empty()) continue;
    if (!printed) printf("\n%s\n", st.bold("failures").c_str());
    printed = true;
    printf("  %s attempt %d: %s\n", n.node_id.c_str(), n.attempt, n.error_message.c_str());
    std::stringstream ss(n.traceback);
    std::string line;
    while (std::getline(ss, line)) printf("    %s\n", st.dim(line).c_str());
  }
  bool logs = false;
  for (auto& e : events) {
    if (e.kind != "log") continue;
    if (!logs) printf("\n%s\n", st.bold("logs").c_str());
    logs = true;
    json d = parse_json(e.data, nullptr);
    printf("  +%-8s %-5s %s: %s\n", format_duration_ms(e.ts - t0).c_str(),
           d.value("level", "info").c_str(), e.node.c_str(), d.value("message", "").c_str());
  }
  // Slowest nodes: where the time went.
  std::vector<const NodeRunRow*> slow;
  for (auto& n : nodes)
    if (n.status != "skipped" && n.kind != "decision") slow.push_back(&n);
  std::sort(slow.begin(), slow.end(),
            [](auto* x, auto* y) { return x->duration_ms > y->duration_ms; });
  if (slow.size() > 1) {
    printf("\n%s\n", st.bold("slowest").c_str());
    for (size_t i = 0; i < std::min<size_t>(3, slow.size()); i++)
      printf("  %-24s %s (attempt %d)\n", slow[i]->node_id.c_str(),
             format_duration_ms(slow[i]->duration_ms).c_str(), slow[i]->attempt);
  }
  return kExitOk;
}

}  // namespace

int dispatch(int argc, char** argv);

int main(int argc, char** argv) {
  // A child that closes its stdin early must not kill us with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  try {
    return dispatch(argc, argv);
  } catch (const std::exception& e) {
    // Internals report errors as values; this is the last line for what slipped through
    // (e.g. a JSON type error on a hand-edited store).
    fprintf(stderr, "orchrun: internal error: %s\n", e.what());
    return kExitInternal;
  }
}

int dispatch(int argc, char** argv) {
  Args a = parse_args(argc, argv);
  if (a.has("--version")) {
    printf("orchrun %s\n", ORCHRUN_VERSION);
    return kExitOk;
  }
  if (a.has("--help") || (a.command.empty() && a.errors.empty())) {
    fputs(kUsage, a.command.empty() && !a.has("--help") ? stderr : stdout);
    return a.has("--help") ? kExitOk : kExitUsage;
  }
  // An empty --db would make SQLite use a private temporary database: the run would "succeed"
  // and leave no record anywhere.
  if (a.has("--db") && a.get("--db").empty()) a.errors.push_back("--db needs a non-empty path");
  if (!a.errors.empty()) {
    for (auto& e : a.errors) fprintf(stderr, "orchrun: %s\n", e.c_str());
    fprintf(stderr, "run 'orchrun --help' for usage\n");
    return kExitUsage;
  }
  if (a.command == "run") return cmd_run(a);
  if (a.command == "resume") return cmd_resume(a);
  if (a.command == "validate") return cmd_validate(a);
  if (a.command == "graph") return cmd_graph(a);
  if (a.command == "runs") return cmd_runs(a);
  if (a.command == "inspect") return cmd_inspect(a);
  return kExitUsage;
}

}  // namespace orch::cli
