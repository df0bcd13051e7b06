#include "engine/run_json.h"

#include <unistd.h>

#include <algorithm>

#include "base/ids.h"
#include "drivers/procs.h"

namespace orch {

bool run_orphaned(const RunRow& r) {
  if (r.status != RunStatus::running && r.status != RunStatus::queued) return false;
  if (r.owner_pid == getpid()) return false;  // this process runs it
  return !owner_alive(r.owner_pid, r.owner_start);
}

json run_json(const RunRow& r) {
  json j{{"id", r.id},
         {"trace_id", r.trace_id},
         {"pipeline", r.pipeline},
         {"version", r.version},
         {"status", r.status},
         {"source", r.source},
         {"created_at", iso8601_ms(r.created_at)},
         {"attempts", r.attempts}};
  if (run_orphaned(r)) {
    j["orphaned"] = true;
    j["owner_pid"] = r.owner_pid;
  }
  if (r.finished_at) {
    j["finished_at"] = iso8601_ms(r.finished_at);
    j["duration_ms"] = r.finished_at - r.started_at;
  }
  if (r.started_at) j["started_at"] = iso8601_ms(r.started_at);
  if (!r.parent_run.empty()) {
    j["parent_run"] = r.parent_run;
    j["parent_node"] = r.parent_node;
  }
  if (!r.idempotency_key.empty()) j["idempotency_key"] = r.idempotency_key;
  if (!r.stage.empty()) j["stage"] = r.stage;
  if (r.incident_id) {
    j["incident_id"] = r.incident_id;
    j["fingerprint"] = r.fingerprint;
  }
  if (!r.input.empty()) j["input"] = parse_json(r.input, nullptr);
  if (!r.output.empty()) j["output"] = parse_json(r.output, nullptr);
  if (!r.error_type.empty())
    j["error"] = {{"type", r.error_type},
                  {"message", r.error_message},
                  {"node", r.error_node},
                  {"retryable", r.retryable}};
  return j;
}

json event_json(const Event& e) {
  json x{{"id", e.id},          {"ts", iso8601_ms(e.ts)}, {"kind", e.kind},
         {"run_id", e.run_id},  {"trace_id", e.trace_id}, {"pipeline", e.pipeline},
         {"version", e.version}};
  if (!e.node.empty()) {
    x["node"] = e.node;
    x["attempt"] = e.attempt;
  }
  if (e.incident_id) {
    x["incident_id"] = e.incident_id;
    x["fingerprint"] = e.fingerprint;
  }
  if (!e.stage.empty()) x["stage"] = e.stage;
  if (!e.data.empty()) x["data"] = parse_json(e.data, nullptr);
  return x;
}

// The critical path, read from the timings: the attempt that finished last, then the attempt
// that finished last before it started, and so on back to the start. Whatever is on it is what
// the run waited for; making anything else faster would not make the run shorter.
std::vector<const NodeRunRow*> critical_path(const std::vector<NodeRunRow>& nodes) {
  std::vector<const NodeRunRow*> cand;
  for (auto& n : nodes)
    if (n.status != NodeStatus::skipped && n.kind != "decision" && n.finished_at > 0)
      cand.push_back(&n);
  std::vector<const NodeRunRow*> path;
  const NodeRunRow* cur = nullptr;
  for (auto* n : cand)
    if (!cur || n->finished_at > cur->finished_at) cur = n;
  while (cur) {
    path.push_back(cur);
    const NodeRunRow* prev = nullptr;
    // Rows of the same millisecond are ordered by when they were written (seq order).
    for (auto* n : cand)
      if (n < cur && n->finished_at <= cur->started_at &&
          (!prev || n->finished_at >= prev->finished_at))
        prev = n;
    cur = prev;
  }
  std::reverse(path.begin(), path.end());
  return path;
}

ApprovalRow gate_as_of(ApprovalRow a, int64_t now, bool* pending) {
  const bool due = a.status == ApprovalStatus::waiting && a.timeout_at > 0 && a.timeout_at <= now;
  if (pending) *pending = due;
  if (due) {
    a.status = ApprovalStatus::timed_out;
    a.decided_by = "timeout";
    a.decided_at = a.timeout_at;
  }
  return a;
}

json run_detail_json(Store& store, const RunRow& run) {
  json j = run_json(run);
  auto nodes = store.node_runs(run.id);
  auto events = store.events(run.id);
  json ns = json::array();
  for (auto& n : nodes) {
    json e{{"node", n.node_id},
           {"attempt", n.attempt},
           {"kind", n.kind},
           {"status", n.status},
           {"started_at", iso8601_ms(n.started_at)},
           {"duration_ms", n.duration_ms}};
    if (!n.output.empty()) e["output"] = parse_json(n.output, nullptr);
    if (!n.error_type.empty())
      e["error"] = {{"type", n.error_type},
                    {"message", n.error_message},
                    {"retryable", n.retryable},
                    {"traceback", n.traceback}};
    if (!n.verdict.empty()) e["verdict"] = {{"verdict", n.verdict}, {"reason", n.verdict_reason}};
    if (n.run_attempt > 1) e["run_attempt"] = n.run_attempt;
    ns.push_back(e);
  }
  j["nodes"] = ns;
  json cp = json::array();
  for (auto* n : critical_path(nodes))
    cp.push_back({{"node", n->node_id}, {"attempt", n->attempt}, {"duration_ms", n->duration_ms}});
  j["critical_path"] = cp;
  json arts = json::array();
  for (auto& ar : store.artifacts(run.id)) {
    json x{{"name", ar.path},      {"node", ar.node_id},  {"attempt", ar.attempt},
           {"size", ar.size},      {"sha256", ar.sha256}, {"created_at", iso8601_ms(ar.created_at)},
           {"used_by", ar.used_by}};
    if (!ar.kind.empty()) x["kind"] = ar.kind;
    if (!run.workspace.empty()) x["path"] = run.workspace + "/" + ar.path;
    arts.push_back(x);
  }
  j["artifacts"] = arts;
  json kids = json::array();
  for (auto& c : store.child_runs(run.id))
    kids.push_back({{"run_id", c.id},
                    {"pipeline", c.pipeline},
                    {"node", c.parent_node},
                    {"status", c.status}});
  j["child_runs"] = kids;
  json evs = json::array();
  for (auto& e : events) {
    json x = event_json(e);
    x.erase("run_id");
    x.erase("pipeline");
    x.erase("version");
    evs.push_back(x);
  }
  j["events"] = evs;
  json aps = json::array();
  const int64_t now = wall_ms();
  for (auto& stored : store.approvals(run.id)) {
    bool pending = false;
    const ApprovalRow ap = gate_as_of(stored, now, &pending);
    json x{{"node", ap.node_id},
           {"kind", ap.kind},
           {"run_attempt", ap.run_attempt},
           {"status", ap.status},
           {"message", ap.message},
           {"requested_at", iso8601_ms(ap.requested_at)}};
    if (!ap.approvers.empty()) x["approvers"] = parse_json(ap.approvers, nullptr);
    if (ap.timeout_at) x["timeout_at"] = iso8601_ms(ap.timeout_at);
    if (ap.kind == "signal") x["signal"] = ap.message;
    if (ap.decided_at) {
      x["decided_by"] = ap.decided_by;
      x["decided_at"] = iso8601_ms(ap.decided_at);
      // A signal's comment is its payload, kept as the JSON it came as.
      if (ap.kind == "signal" && ap.status == ApprovalStatus::approved) {
        json payload = parse_json(ap.comment, nullptr);
        x["payload"] = payload.is_discarded() ? json(ap.comment) : payload;
      } else {
        x["comment"] = ap.comment;
      }
    }
    // Decided by its timeout, not yet applied by a process running the run.
    if (pending) x["pending"] = true;
    aps.push_back(x);
  }
  j["approvals"] = aps;
  return j;
}

}  // namespace orch
