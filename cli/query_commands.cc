// orchrun runs and orchrun inspect: reading the store.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
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
#include "drivers/signals.h"
#include "engine/pipeline_loader.h"
#include "engine/run_json.h"
#include "engine/scheduler.h"
#include "store/store.h"

namespace orch::cli {
namespace {

// --- runs ---------------------------------------------------------------------------------

}  // namespace

int cmd_runs(const Args& a) {
  std::string err;
  auto store = open_store(a, true, &err);
  if (!store) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitInternal;
  }
  RunFilter f;
  f.status = a.get("--status");
  if (!f.status.empty() && !parse_run_status(f.status)) {
    std::string names;
    for (const char* n : status_names(RunStatus{})) names += (names.empty() ? "" : ", ") + std::string(n);
    fprintf(stderr, "orchrun: --status must be one of %s\n", names.c_str());
    return kExitUsage;
  }
  f.pipeline = a.get("--pipeline");
  f.stage = a.get("--stage");
  if (a.has("--since")) {
    // The same forms as the API's ?since=: RFC 3339, unix ms, or a duration ago.
    if (!parse_time_ms(a.get("--since"), wall_ms(), &f.since_ms, &err)) {
      fprintf(stderr, "orchrun: --since: %s\n", err.c_str());
      return kExitUsage;
    }
  }
  if (a.has("--limit")) {
    std::string l = a.get("--limit");
    char* end = nullptr;
    long v = strtol(l.c_str(), &end, 10);
    f.limit =
        (end && *end == '\0' && !l.empty() && v > 0 && v <= 1000000) ? static_cast<int>(v) : 0;
    if (f.limit <= 0) {
      fprintf(stderr, "orchrun: --limit must be a whole number between 1 and 1000000, got '%s'\n",
              l.c_str());
      return kExitUsage;
    }
  }
  auto runs = store->list_runs(f);
  const int64_t now = wall_ms();
  if (a.has("--json")) {
    json arr = json::array();
    for (auto& r : runs) {
      json j = run_json(r);
      if (is_parked(r.status)) {
        json due = json::array();
        for (auto& ap : store->approvals(r.id)) {
          bool pending = false;
          gate_as_of(ap, now, &pending);
          if (pending) due.push_back(ap.node_id);
        }
        if (!due.empty()) j["gates_timed_out"] = due;
      }
      arr.push_back(j);
    }
    printf("%s\n", dump_json(arr, 2).c_str());
    return kExitOk;
  }
  Style st = style_for(stdout);
  if (runs.empty()) {
    printf(
        "no runs%s in %s\n",
        (f.status.empty() && f.pipeline.empty() && f.stage.empty() && !f.since_ms) ? "" : " match",
        store->path().c_str());
    return kExitOk;
  }
  const bool stages =
      std::any_of(runs.begin(), runs.end(), [](const RunRow& r) { return !r.stage.empty(); });
  std::vector<std::vector<std::string>> rows = {
      {"RUN", "PIPELINE", "STATUS", "STARTED", "DURATION", "ERROR"}};
  if (stages) rows[0].insert(rows[0].begin() + 3, "STAGE");
  for (auto& r : runs) {
    std::string dur = r.finished_at ? format_duration_ms(r.finished_at - r.started_at) : "-";
    std::string errs = r.error_type.empty() ? ""
                                            : (r.error_node.empty() ? "" : r.error_node + ": ") +
                                                  first_line(r.error_message, 60);
    if (is_parked(r.status) && errs.empty()) {
      // A gate whose timeout has passed is decided, even before a process applies it.
      for (auto& ap : store->approvals(r.id)) {
        bool pending = false;
        const ApprovalRow g = gate_as_of(ap, now, &pending);
        if (pending)
          errs = g.node_id + (g.kind == "signal" ? ": wait for " + g.message : ": gate") +
                 " timed out at " + local_time(g.timeout_at) + " (" +
                 (g.on_timeout == "approve"    ? "approves"
                  : g.on_timeout == "continue" ? "continues"
                  : g.on_timeout == "fail"     ? "fails"
                                               : "rejects") +
                 ") on resume";
      }
    }
    std::string status = to_string(r.status);
    if (run_orphaned(r)) {
      status = "orphaned";
      if (errs.empty())
        errs = "its process " + std::to_string(r.owner_pid) + " is gone: orchrun resume " + r.id;
    }
    rows.push_back({r.id, r.pipeline + " v" + std::to_string(r.version),
                    std::string(status_symbol(status)) + " " + st.status(status),
                    local_time(r.created_at), dur, errs});
    if (stages) rows.back().insert(rows.back().begin() + 3, r.stage.empty() ? "-" : r.stage);
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
  std::unique_ptr<Store> store;
  std::optional<RunRow> run;
  if (int rc = open_run(a, true, a.positional[0], &store, &run)) return rc;
  auto nodes = store->node_runs(run->id);
  auto events = store->events(run->id);
  if (a.has("--json")) {
    json j = run_detail_json(*store, *run);
    printf("%s\n", dump_json(j, 2).c_str());
    return kExitOk;
  }
  Style st = style_for(stdout);
  int64_t t0 = run->started_at ? run->started_at : run->created_at;
  int64_t t1 = run->finished_at ? run->finished_at : wall_ms();
  printf("%s %s  %s v%d\n", st.bold("run").c_str(), run->id.c_str(), run->pipeline.c_str(),
         run->version);
  const bool orphaned = run_orphaned(*run);
  if (orphaned)
    printf(
        "  status    %s %s (%s in the store; its process %lld is gone: orchrun resume %s "
        "continues it, a server takes it over)\n",
        status_symbol("orphaned"), st.status("orphaned").c_str(), run->status.str().c_str(),
        static_cast<long long>(run->owner_pid), run->id.c_str());
  else
    printf("  status    %s %s\n", status_symbol(run->status.str()),
           st.status(run->status.str()).c_str());
  printf("  trace     %s\n", run->trace_id.c_str());
  printf("  started   %s   duration %s%s\n", local_time(t0).c_str(),
         format_duration_ms(t1 - t0).c_str(),
         run->finished_at ? ""
         : orphaned       ? " (until its process died)"
                          : " (still running)");
  printf("  source    %s   input %s\n", run->source.c_str(), first_line(run->input, 100).c_str());
  if (!run->parent_run.empty())
    printf("  parent    run %s (node %s)\n", run->parent_run.c_str(), run->parent_node.c_str());
  if (run->attempts > 1) printf("  attempts  %d (orchrun retry)\n", run->attempts);
  if (!run->workspace.empty()) printf("  workspace %s\n", run->workspace.c_str());
  if (!run->error_type.empty())
    printf("  error     %s [%s] %s\n",
           st.red(run->error_node.empty() ? "" : run->error_node + ":").c_str(),
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
    std::string status =
        std::string(status_symbol(n.status.str())) + " " + st.status(n.status.str());
    std::string e;
    if (!n.error_type.empty() && n.status != NodeStatus::skipped)
      e = "[" + n.error_type +
          (n.status == NodeStatus::failed ? (n.retryable ? ", retryable" : ", not retryable")
                                          : "") +
          "] " + first_line(n.error_message, 80);
    else if (n.status == NodeStatus::skipped)
      e = n.error_message;
    if (!n.verdict.empty() && n.verdict != "pass")
      e = "verdict " + n.verdict + (n.verdict_reason.empty() ? "" : " (" + n.verdict_reason + ")");
    else if (n.verdict == "pass")
      e = "verdict pass";
    std::string att = std::to_string(n.attempt) + (n.kind == "body" ? "" : " " + n.kind);
    rows.push_back(
        {n.node_id, att, status, "+" + format_duration_ms(start),
         n.status == NodeStatus::skipped ? "-" : format_duration_ms(dur),
         n.status == NodeStatus::skipped ? std::string(kBar, ' ') : st.cyan("|" + bar + "|"), e});
  }
  print_table(stdout, rows, st);
  // Tracebacks of failed attempts, and logs.
  bool printed = false;
  for (auto& n : nodes) {
    if (n.status != NodeStatus::failed || n.traceback.empty()) continue;
    if (!printed) printf("\n%s\n", st.bold("failures").c_str());
    printed = true;
    printf("  %s attempt %d: %s\n", n.node_id.c_str(), n.attempt, n.error_message.c_str());
    std::stringstream ss(n.traceback);
    std::string line;
    while (std::getline(ss, line)) printf("    %s\n", st.dim(line).c_str());
  }
  auto aps = store->approvals(run->id);
  if (!aps.empty()) {
    bool signals = std::any_of(aps.begin(), aps.end(),
                               [](const ApprovalRow& a) { return a.kind == "signal"; });
    bool gates = std::any_of(aps.begin(), aps.end(),
                             [](const ApprovalRow& a) { return a.kind != "signal"; });
    printf("\n%s\n", st.bold(gates && signals ? "approvals and signals"
                              : signals        ? "signals"
                                               : "approvals")
                          .c_str());
    const int64_t now = wall_ms();
    for (auto& stored : aps) {
      bool pending = false;
      const ApprovalRow ap = gate_as_of(stored, now, &pending);
      if (ap.kind == "signal") {
        std::string what =
            ap.status == ApprovalStatus::approved
                ? "received from " + ap.decided_by + " at " + local_time(ap.decided_at) + " (" +
                      std::to_string(ap.comment.size()) + " bytes of payload)"
            : ap.status == ApprovalStatus::waiting
                ? "waiting since " + local_time(ap.requested_at) +
                      (ap.timeout_at ? " until " + local_time(ap.timeout_at) : "")
            : ap.status == ApprovalStatus::timed_out
                ? "timed out at " + local_time(ap.timeout_at ? ap.timeout_at : ap.decided_at) +
                      " (on_timeout = " + ap.on_timeout + ")"
                : to_string(ap.status) + " at " + local_time(ap.decided_at);
        if (pending) what += "; applied when the run resumes: orchrun resume " + run->id;
        printf("  %-24s signal %s: %s\n", ap.node_id.c_str(), ap.message.c_str(), what.c_str());
        continue;
      }
      std::string who = ap.decided_at ? to_string(ap.status) + " by " + ap.decided_by + " at " +
                                            local_time(ap.decided_at) +
                                            (ap.comment.empty() ? "" : " — " + ap.comment)
                                      : "waiting since " + local_time(ap.requested_at) +
                                            (ap.approvers.empty() ? "" : " for " + ap.approvers);
      if (pending)
        who += " (on_timeout = " + ap.on_timeout + "; applied when the run resumes: orchrun " +
               "resume " + run->id + ", or a server that takes it over)";
      printf("  %-24s %s%s\n", ap.node_id.c_str(), ap.kind == "escalation" ? "escalation: " : "",
             who.c_str());
      if (!ap.message.empty()) printf("  %-24s %s\n", "", st.dim(ap.message).c_str());
    }
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
  auto arts = store->artifacts(run->id);
  if (!arts.empty()) {
    printf("\n%s\n", st.bold("artifacts").c_str());
    for (auto& ar : arts) {
      std::string used;
      for (auto& u : ar.used_by) used += (used.empty() ? "" : ", ") + u;
      printf("  %-24s %s  %s  sha256 %s  by %s#%d%s\n", ar.path.c_str(),
             ar.kind.empty() ? "-" : ar.kind.c_str(), format_bytes(ar.size).c_str(),
             ar.sha256.substr(0, 12).c_str(), ar.node_id.c_str(), ar.attempt,
             used.empty() ? "" : ("; used by " + used).c_str());
    }
  }
  auto kids = store->child_runs(run->id);
  if (!kids.empty()) {
    printf("\n%s\n", st.bold("child runs").c_str());
    for (auto& c : kids)
      printf("  %-24s %s %s v%d  %s %s\n", c.parent_node.c_str(), c.id.c_str(), c.pipeline.c_str(),
             c.version, status_symbol(c.status.str()), st.status(c.status.str()).c_str());
  }
  auto cp = critical_path(nodes);
  if (cp.size() > 1) {
    printf("\n%s\n  ", st.bold("critical path").c_str());
    int64_t total = 0;
    for (size_t i = 0; i < cp.size(); i++) {
      total += cp[i]->duration_ms;
      printf("%s%s (%s)", i ? " → " : "", cp[i]->node_id.c_str(),
             format_duration_ms(cp[i]->duration_ms).c_str());
    }
    printf(
        "\n  %s in nodes on the path; the rest of the run's time went to scheduling and waiting\n",
        format_duration_ms(total).c_str());
  }
  // Slowest nodes: where the time went.
  std::vector<const NodeRunRow*> slow;
  for (auto& n : nodes)
    if (n.status != NodeStatus::skipped && n.kind != "decision") slow.push_back(&n);
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

}  // namespace orch::cli
