// orchrun FILE.lua and orchrun resume: running pipelines on a loop, live, with Ctrl-C.
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

#include "base/duration.h"
#include "base/ids.h"
#include "base/json_util.h"
#include "cli/common.h"
#include "cli/format.h"
#include "cli/live_view.h"
#include "drivers/loop.h"
#include "drivers/procs.h"
#include "drivers/signals.h"
#include "engine/control.h"
#include "engine/orphans.h"
#include "engine/pipeline_loader.h"
#include "engine/scheduler.h"
#include "store/store.h"

namespace orch::cli {
namespace {

// --- run ------------------------------------------------------------------------------------

void print_summary(FILE* human, const RunSummary& summary, const Args& a) {
  Style st = style_for(human);
  std::string counts = std::to_string(summary.nodes_succeeded) + " succeeded";
  if (summary.nodes_reused) counts += " (" + std::to_string(summary.nodes_reused) + " reused)";
  if (summary.nodes_failed) counts += ", " + std::to_string(summary.nodes_failed) + " failed";
  if (summary.nodes_skipped) counts += ", " + std::to_string(summary.nodes_skipped) + " skipped";
  if (summary.nodes_cancelled)
    counts += ", " + std::to_string(summary.nodes_cancelled) + " cancelled";
  if (summary.status == "awaiting_approval" || summary.status == "waiting") {
    fprintf(human, "%s after %s  (%s v%d; run %s)\n",
            st.yellow(summary.status == "waiting" ? "⏸ waiting for a signal" : "⏸ awaiting approval")
                .c_str(),
            format_duration_ms(summary.duration_ms).c_str(), summary.pipeline.c_str(),
            summary.version, summary.run_id.c_str());
    for (const auto& w : summary.waiting_signals) {
      if (w.run_id == summary.run_id)
        fprintf(human, "  step %s waits for the signal %s. To send it:\n", w.node.c_str(),
                w.signal.c_str());
      else
        fprintf(human, "  step %s of child run %s waits for the signal %s. To send it:\n",
                w.node.c_str(), w.run_id.c_str(), w.signal.c_str());
      fprintf(human, "    orchrun signal %s %s --data JSON%s\n", w.run_id.c_str(), w.signal.c_str(),
              db_hint(a).c_str());
      fprintf(human, "    or POST /api/runs/%s/signals/%s with the JSON as the body\n",
              w.run_id.c_str(), w.signal.c_str());
    }
    for (const auto& [run_id, g] : summary.waiting_gates) {
      if (run_id == summary.run_id)
        fprintf(human, "  gate %s is waiting. To decide:\n", g.c_str());
      else
        fprintf(human, "  gate %s of child run %s is waiting. To decide:\n", g.c_str(),
                run_id.c_str());
      fprintf(human, "    orchrun approve %s %s --as NAME [--comment TEXT]%s\n", run_id.c_str(),
              g.c_str(), db_hint(a).c_str());
      fprintf(human, "    orchrun reject  %s %s --as NAME [--comment TEXT]%s\n", run_id.c_str(),
              g.c_str(), db_hint(a).c_str());
    }
    fprintf(human, "  then continue the run: orchrun resume %s%s\n", summary.run_id.c_str(),
            db_hint(a).c_str());
    return;
  }
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
  if (!summary.hooks.empty()) {
    std::string hooks;
    for (const auto& [step, outcome] : summary.hooks)
      hooks += (hooks.empty() ? "" : ", ") + step + " " + outcome;
    fprintf(human, "  hooks: %s (they do not change the run's status)\n", hooks.c_str());
  }
  fprintf(human, "  run %s  trace %s\n  details: orchrun inspect %s%s\n", summary.run_id.c_str(),
          summary.trace_id.c_str(), summary.run_id.c_str(), db_hint(a).c_str());
}

json summary_json(const RunSummary& summary, const Store& store) {
  json j{{"run_id", summary.run_id},
         {"trace_id", summary.trace_id},
         {"pipeline", summary.pipeline},
         {"version", summary.version},
         {"status", summary.status},
         {"duration_ms", summary.duration_ms},
         {"nodes_succeeded", summary.nodes_succeeded},
         {"nodes_reused", summary.nodes_reused},
         {"nodes_failed", summary.nodes_failed},
         {"nodes_skipped", summary.nodes_skipped},
         {"attempts", summary.attempts},
         {"db", store.path()}};
  if (!summary.output_json.empty()) j["output"] = parse_json(summary.output_json, nullptr);
  if (!summary.hooks.empty()) {
    json hooks = json::object();
    for (const auto& [step, outcome] : summary.hooks) hooks[step] = outcome;
    j["hooks"] = hooks;
  }
  if (!summary.error_type.empty())
    j["error"] = {{"type", summary.error_type},
                  {"message", summary.error_message},
                  {"node", summary.error_node}};
  if (!summary.waiting_signals.empty()) {
    json w = json::array();
    for (const auto& s : summary.waiting_signals)
      w.push_back({{"run_id", s.run_id}, {"node", s.node}, {"signal", s.signal}});
    j["waiting_signals"] = w;
  }
  return j;
}

// Where a one-shot finds the pipelines its runs call (o.call): a .lua (or .json) file beside the
// caller (`o.call("x", "notify")` loads notify.lua from the caller's directory), loaded once; and for
// child runs being resumed, the definition they started with, from the store.
class FileSource : public PipelineSource {
 public:
  FileSource(LoadOptions lo, Store* store) : lo_(std::move(lo)), store_(store) {}
  TaskHost* host = nullptr;

  Pipeline* find(const std::string& target, const Pipeline& caller, std::string* err) override {
    std::string dir = caller.file.substr(0, caller.file.rfind('/') + 1);
    std::string file = dir + target;
    auto ends = [&](const char* x) {
      size_t n = strlen(x);
      return file.size() >= n && file.compare(file.size() - n, n, x) == 0;
    };
    // Without a suffix: x.lua, or else x.json (a JSON definition) when only that exists.
    if (!ends(".lua") && !ends(".json"))
      file += access((file + ".lua").c_str(), F_OK) != 0 &&
                      access((file + ".json").c_str(), F_OK) == 0
                  ? ".json"
                  : ".lua";
    auto it = by_file_.find(file);
    if (it != by_file_.end()) return it->second;
    if (access(file.c_str(), R_OK) != 0) {
      *err = "no pipeline '" + target + "': cannot read " + file + " (" + strerror(errno) + ")";
      return nullptr;
    }
    std::vector<Diagnostic> diags;
    auto p = load_pipeline_file(file, lo_, &diags);
    if (!p) {
      *err = "pipeline " + file +
             " does not load: " + (diags.empty() ? std::string("?") : diags[0].str());
      return nullptr;
    }
    return by_file_[file] = keep(std::move(p));
  }

  Pipeline* for_run(const RunRow& run, std::string* err) override {
    std::string k = run.pipeline + "@" + std::to_string(run.version);
    auto it = by_def_.find(k);
    if (it != by_def_.end()) return it->second;
    std::vector<Diagnostic> diags;
    bool missing = false;
    auto p = load_stored_definition(*store_, run.pipeline, run.version, lo_, &diags, &missing);
    if (!p) {
      *err = missing
                 ? diags[0].message
                 : "definition " + k +
                       " no longer loads: " + (diags.empty() ? std::string("?") : diags[0].str());
      return nullptr;
    }
    return by_def_[k] = keep(std::move(p));
  }

  ~FileSource() override {
    for (auto& p : owned_) p->engine->set_host(nullptr);
  }

 private:
  Pipeline* keep(std::unique_ptr<Pipeline> p) {
    p->engine->set_host(host);
    owned_.push_back(std::move(p));
    return owned_.back().get();
  }
  LoadOptions lo_;
  Store* store_;
  std::vector<std::unique_ptr<Pipeline>> owned_;
  std::map<std::string, Pipeline*> by_file_, by_def_;
};

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
  LoadOptions lo;
  std::string serr;
  sandbox_from(a, &lo.sandbox, &serr);  // checked by the command already
  FileSource source(lo, store);         // outlives the scheduler: its runs use these pipelines
  Scheduler sched(&loop, store);
  source.host = &sched;
  sched.pipeline_source = &source;
  for (auto* p : pipelines) p->engine->set_host(&sched);
  std::unique_ptr<LiveView> view;
  if (progress != "none") {
    view = std::make_unique<LiveView>(human, progress == "tty", loop.get());
    sched.add_sink(view.get());
  }
  std::vector<RunSummary> done;
  // Child runs (o.call) are reported through their parent.
  sched.on_run_finished = [&](const RunSummary& s) {
    if (!s.child) done.push_back(s);
  };

  // Ctrl-C: the first cancels the runs cleanly; a second one forces an exit, and so does the
  // watchdog when the first has not ended the process within kOneShotStopGraceMs.
  InterruptHandler intr(
      loop.get(),
      [&sched](int signo) {
        const char* name = signo == SIGINT ? "SIGINT" : "SIGTERM";
        fprintf(stderr, "\norchrun: %s: cancelling (press Ctrl-C again to force)\n", name);
        sched.cancel_all(std::string("interrupted by ") + name);
      },
      true, kOneShotStopGraceMs);

  int started = start(sched);
  if (started > 0) loop.run();
  // Nothing left to do but runs waiting for a person: they stop here, awaiting approval.
  if (sched.fatal_error().empty()) sched.park_waiting();
  // Whatever is still active (a store failure stopped the loop) is cancelled while the view
  // still listens, without its hooks (no loop would run them); then the view goes.
  sched.run_hooks = false;
  sched.cancel_all("shutdown");
  if (view) view->finish();

  if (!sched.fatal_error().empty()) {
    fprintf(stderr, "orchrun: %s\n", sched.fatal_error().c_str());
    exit_code = kExitInternal;
  } else if (started > 0) {
    bool quiet = a.has("--quiet");
    bool all_ok = static_cast<int>(done.size()) == started;
    bool any_waiting = false, any_failed = false;
    for (auto& sm : done) {
      bool parked = sm.status == "awaiting_approval" || sm.status == "waiting";
      any_waiting = any_waiting || parked;
      any_failed = any_failed || (sm.status != "succeeded" && !parked);
    }
    all_ok = all_ok && !any_waiting && !any_failed;
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
    exit_code = all_ok             ? kExitOk
                : intr.count() > 0 ? 128 + intr.signo()
                : any_failed       ? kExitFailed
                : any_waiting      ? kExitAwaitingApproval
                                   : kExitFailed;
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
  json j = parse_json(input, &err, kMaxJsonDepth);
  if (j.is_discarded()) {
    fprintf(stderr, "orchrun: %s is not valid JSON: %s\n", where.c_str(), err.c_str());
    *code = kExitUsage;
    return "";
  }
  if (!j.is_object()) {
    fprintf(stderr,
            "orchrun: %s must be a JSON object (the pipeline input, e.g. "
            "'{\"dry_run\": true}'), got %s\n",
            where.c_str(), j.type_name());
    *code = kExitUsage;
    return "";
  }
  return dump_json(j);
}

}  // namespace

int cmd_run(const Args& a) {
  Style est = style_for(stderr);
  if (a.positional.size() != 1) {
    fprintf(stderr, "orchrun: give exactly one pipeline file to run (got %zu)\n%s",
            a.positional.size(), "usage: orchrun FILE.lua|FILE.json [--input JSON] [--db PATH]\n");
    return kExitUsage;
  }
  int code = 0;
  std::string input = read_input(a, &code);
  if (code) return code;
  LoadOptions lo;
  if (!load_options(a, &lo)) return kExitUsage;
  std::string err;
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
    fprintf(human, "run %s already exists for idempotency key '%s' (status %s)\n", prev->id.c_str(),
            key.c_str(), prev->status.str().c_str());
    if (a.has("--json"))
      printf("%s\n",
             dump_json(json{{"run_id", prev->id}, {"status", prev->status}, {"existing", true}}, 2)
                 .c_str());
    if (prev->status == RunStatus::succeeded) return kExitOk;
    if (prev->status == RunStatus::failed || prev->status == RunStatus::cancelled)
      return kExitFailed;
    if (owner_alive(*prev)) {
      fprintf(human, "  it is running in process %lld; not starting another\n",
              static_cast<long long>(prev->owner_pid));
      return kExitOk;
    }
    fprintf(human, "  its process is gone; resume it with: orchrun resume %s%s\n", prev->id.c_str(),
            db_hint(a).c_str());
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
  LoadOptions lo;
  if (!load_options(a, &lo)) return kExitUsage;
  std::string err;
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
    int64_t now = wall_ms();
    for (auto& r : store->unfinished_runs()) {
      if (owner_alive(r)) continue;
      if (!r.parent_run.empty()) {
        // A child run continues with its parent, unless the parent is gone or finished.
        auto parent = store->find_run(r.parent_run, &err);
        if (parent &&
            (parent->status == RunStatus::running || parent->status == RunStatus::queued ||
             is_parked(parent->status)))
          continue;
      }
      if (is_parked(r.status)) {
        // Only once someone decided (or a gate's timeout passed): otherwise it would just
        // stop at the same gate again.
        bool ready = false;
        std::vector<std::string> gated = {r.id};  // its own gates, and its child runs' (o.call)
        for (auto& c : store->child_runs(r.id))
          if (is_parked(c.status)) gated.push_back(c.id);
        for (auto& id : gated)
          for (auto& ap : store->approvals(id))
            ready = ready || ap.status != ApprovalStatus::waiting ||
                    (ap.timeout_at && ap.timeout_at <= now);
        if (!ready) continue;
      }
      candidates.push_back(r);
    }
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
    if (r->status != RunStatus::running && r->status != RunStatus::queued &&
        !is_parked(r->status)) {
      fprintf(stderr, "orchrun: run %s is %s; only unfinished runs can be resumed%s\n",
              r->id.c_str(), r->status.str().c_str(),
              r->status == RunStatus::failed ? " (a failed run is retried, not resumed)" : "");
      return kExitUsage;
    }
    if (!r->parent_run.empty()) {
      auto parent = store->find_run(r->parent_run, &err);
      if (parent && (parent->status == RunStatus::running || parent->status == RunStatus::queued ||
                     is_parked(parent->status))) {
        fprintf(stderr,
                "orchrun: run %s is a child run (o.call) of run %s, which resumes it: orchrun "
                "resume %s%s\n",
                r->id.c_str(), parent->id.c_str(), parent->id.c_str(), db_hint(a).c_str());
        return kExitUsage;
      }
    }
    if (owner_alive(*r)) {
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
      std::vector<Diagnostic> diags;
      bool missing = false;
      auto p = load_stored_definition(*store, r.pipeline, r.version, lo, &diags, &missing);
      if (!p) {
        if (missing) {
          fprintf(stderr, "orchrun: run %s: definition %s v%d is not in the store\n", r.id.c_str(),
                  r.pipeline.c_str(), r.version);
        } else {
          fprintf(stderr, "orchrun: run %s: its pipeline %s v%d no longer loads:\n", r.id.c_str(),
                  r.pipeline.c_str(), r.version);
          print_diags(diags, est);
        }
        bad++;
        continue;
      }
      defs[k] = std::move(p);
    }
    todo.emplace_back(defs[k].get(), r);
  }
  // Claimed together: one transaction for all of them, each claim its own compare-and-set.
  std::vector<std::pair<std::string, int64_t>> claims;
  for (auto& [p, r] : todo) claims.emplace_back(r.id, r.owner_pid);
  std::vector<bool> taken = store->claim_runs(claims, getpid());
  size_t kept = 0;
  for (size_t i = 0; i < todo.size(); i++) {
    if (!taken[i]) {
      fprintf(stderr, "orchrun: run %s was taken over by another process; skipping it\n",
              todo[i].second.id.c_str());
      continue;
    }
    if (kept != i) todo[kept] = std::move(todo[i]);
    kept++;
  }
  todo.resize(kept);
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

// --- cancel and retry --------------------------------------------------------------------

int cmd_cancel(const Args& a) {
  if (a.positional.size() != 1) {
    fprintf(stderr, "usage: orchrun cancel RUN_ID [--reason TEXT]\n");
    return kExitUsage;
  }
  std::unique_ptr<Store> store;
  std::optional<RunRow> run;
  if (int rc = open_run(a, false, a.positional[0], &store, &run)) return rc;
  if (run->status == RunStatus::succeeded || run->status == RunStatus::failed ||
      run->status == RunStatus::cancelled) {
    fprintf(stderr, "orchrun: run %s is already %s; nothing to cancel\n", run->id.c_str(),
            run->status.str().c_str());
    return kExitUsage;
  }
  const char* user = getenv("USER");
  std::string reason = a.get("--reason", std::string("cancelled by ") + (user ? user : "operator"));
  if (!owner_alive(*run)) {
    // Nobody is running it: take it (so that no server resumes it meanwhile), end the process
    // groups its dead owner left, and record the cancellation directly.
    if (!store->claim_run(run->id, run->owner_pid, getpid())) {
      fprintf(stderr, "orchrun: run %s was taken over by another process meanwhile; try again\n",
              run->id.c_str());
      return kExitFailed;
    }
    std::vector<std::string> ended;
    int groups = end_orphan_groups(*store, run->id, kOrphanGraceMs, &ended);
    if (!store->cancel_orphan_run(*run, reason, wall_ms())) {
      fprintf(stderr, "orchrun: store error: %s\n", store->error().c_str());
      return kExitInternal;
    }
    if (run->owner_pid > 0 && !is_parked(run->status))
      printf("cancelled run %s (%s; its process %lld is gone; %d process group(s) it left ended)\n",
             run->id.c_str(), run->status.str().c_str(), static_cast<long long>(run->owner_pid),
             groups);
    else
      printf("cancelled run %s (%s; no process was running it)\n", run->id.c_str(),
             run->status.str().c_str());
    for (auto& line : ended) printf("  %s\n", line.c_str());
    return kExitOk;
  }
  if (!store->request_cancel(run->id, reason, wall_ms())) {
    fprintf(stderr, "orchrun: run %s finished before it could be cancelled\n", run->id.c_str());
    return kExitUsage;
  }
  // The owner polls for requests every 250 ms; its children get SIGTERM, then SIGKILL.
  for (int i = 0; i < 150; i++) {
    usleep(100000);
    std::string err;
    auto now = store->find_run(run->id, &err);
    if (now && now->status != RunStatus::running && now->status != RunStatus::queued &&
        !is_parked(now->status)) {
      printf("run %s is %s (process %lld)\n", run->id.c_str(), now->status.str().c_str(),
             static_cast<long long>(run->owner_pid));
      return now->status == RunStatus::cancelled ? kExitOk : kExitFailed;
    }
  }
  fprintf(stderr, "orchrun: asked process %lld to cancel run %s; it has not finished yet\n",
          static_cast<long long>(run->owner_pid), run->id.c_str());
  return kExitFailed;
}

int cmd_retry(const Args& a) {
  Style est = style_for(stderr);
  if (a.positional.size() != 1) {
    fprintf(stderr, "usage: orchrun retry RUN_ID\n");
    return kExitUsage;
  }
  LoadOptions lo;
  if (!load_options(a, &lo)) return kExitUsage;
  std::string err;
  std::unique_ptr<Store> store;
  std::optional<RunRow> run;
  if (int rc = open_run(a, false, a.positional[0], &store, &run)) return rc;
  if (run->status != RunStatus::failed && run->status != RunStatus::cancelled) {
    fprintf(stderr, "orchrun: run %s is %s; only a failed or cancelled run can be retried%s\n",
            run->id.c_str(), run->status.str().c_str(),
            run->status == RunStatus::running ? " (an interrupted run is resumed: orchrun resume)"
                                              : "");
    return kExitUsage;
  }
  std::vector<Diagnostic> diags;
  bool missing = false;
  auto p = load_stored_definition(*store, run->pipeline, run->version, lo, &diags, &missing);
  if (!p) {
    if (missing) {
      fprintf(stderr, "orchrun: definition %s v%d of run %s is not in the store\n",
              run->pipeline.c_str(), run->version, run->id.c_str());
      return kExitInternal;
    }
    print_diags(diags, est);
    return kExitUsage;
  }
  if (!store->begin_run_attempt(run->id, getpid(), wall_ms())) {
    fprintf(stderr, "orchrun: run %s changed meanwhile; not retried\n", run->id.c_str());
    return kExitUsage;
  }
  auto fresh = store->find_run(run->id, &err);
  return drive(a, store.get(), {p.get()}, [&](Scheduler& sched) {
    if (sched.resume_run(p.get(), *fresh, &err, true)) return 1;
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return -kExitInternal;
  });
}

// --- approve and reject -------------------------------------------------------------------

int cmd_decide(const Args& a) {
  bool approve = a.command == "approve";
  if (a.positional.size() != 2) {
    fprintf(stderr, "usage: orchrun %s RUN_ID NODE --as NAME [--comment TEXT]\n",
            a.command.c_str());
    return kExitUsage;
  }
  std::string who = a.get("--as");
  if (who.empty()) {
    if (const char* u = getenv("USER")) who = u;
  }
  if (who.empty()) {
    fprintf(stderr, "orchrun: say who decides: --as NAME\n");
    return kExitUsage;
  }
  std::unique_ptr<Store> store;
  std::optional<RunRow> run;
  if (int rc = open_run(a, false, a.positional[0], &store, &run)) return rc;
  const std::string& node = a.positional[1];
  Decision d = decide_gate(*store, *run, node, approve, who, a.get("--comment"), wall_ms());
  if (!d.ok) {
    fprintf(stderr, "orchrun: %s\n", d.message.c_str());
    return d.code == "store" ? kExitInternal : kExitUsage;
  }
  printf("%s gate '%s' of run %s as %s\n", approve ? "approved" : "rejected", node.c_str(),
         run->id.c_str(), who.c_str());
  if (run->status == RunStatus::running && owner_alive(*run))
    printf("the process running it (%lld) continues it\n", static_cast<long long>(run->owner_pid));
  else if (!run->parent_run.empty())
    printf("continue it with its parent run: orchrun resume %s%s\n", run->parent_run.c_str(),
           db_hint(a).c_str());
  else
    printf("continue the run with: orchrun resume %s%s\n", run->id.c_str(), db_hint(a).c_str());
  return kExitOk;
}

int cmd_signal(const Args& a) {
  if (a.positional.size() != 2) {
    fprintf(stderr,
            "usage: orchrun signal RUN_ID NAME [--data JSON | --data @file.json] [--as NAME]\n");
    return kExitUsage;
  }
  std::string who = a.get("--as");
  if (who.empty())
    if (const char* u = getenv("USER")) who = u;
  if (who.empty()) who = "cli";
  // The payload: inline, or @file; any JSON value; null when not given.
  std::string payload = "null";
  if (a.has("--data")) {
    std::string text = a.get("--data"), where = "--data";
    if (!text.empty() && text[0] == '@') {
      std::ifstream in(text.substr(1), std::ios::binary);
      if (!in) {
        fprintf(stderr, "orchrun: --data: cannot read %s: %s\n", text.substr(1).c_str(),
                strerror(errno));
        return kExitUsage;
      }
      where = text.substr(1);
      std::stringstream ss;
      ss << in.rdbuf();
      text = ss.str();
    }
    constexpr size_t kMaxPayload = 1 << 20;
    if (text.size() > kMaxPayload) {
      fprintf(stderr, "orchrun: %s: the payload is %zu bytes; a signal carries at most 1 MiB\n",
              where.c_str(), text.size());
      return kExitUsage;
    }
    std::string err;
    json j = parse_json(text, &err, kMaxJsonDepth);
    if (j.is_discarded()) {
      fprintf(stderr, "orchrun: %s is not valid JSON: %s\n", where.c_str(), err.c_str());
      return kExitUsage;
    }
    payload = dump_json(j);
  }
  std::unique_ptr<Store> store;
  std::optional<RunRow> run;
  if (int rc = open_run(a, false, a.positional[0], &store, &run)) return rc;
  const std::string& name = a.positional[1];
  Decision d = deliver_signal(*store, *run, name, payload, who, wall_ms());
  if (!d.ok) {
    fprintf(stderr, "orchrun: %s\n", d.message.c_str());
    return d.code == "store" ? kExitInternal : kExitUsage;
  }
  if (a.has("--json")) {
    printf("%s\n", dump_json(json{{"run_id", run->id},
                                  {"signal", name},
                                  {"node", d.event.node},
                                  {"by", who}})
                       .c_str());
    return kExitOk;
  }
  printf("delivered signal '%s' to step %s of run %s as %s\n", name.c_str(), d.event.node.c_str(),
         run->id.c_str(), who.c_str());
  if (owner_alive(*run))
    printf("the process running it (%lld) continues it\n", static_cast<long long>(run->owner_pid));
  else if (!run->parent_run.empty())
    printf("continue it with its parent run: orchrun resume %s%s\n", run->parent_run.c_str(),
           db_hint(a).c_str());
  else
    printf("continue the run with: orchrun resume %s%s\n", run->id.c_str(), db_hint(a).c_str());
  return kExitOk;
}

}  // namespace orch::cli
