// The rows the store reads and writes, as C++ sees them (whatever the backend).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "store/status.h"

namespace orch {

struct RunRow {
  std::string id, trace_id, pipeline;
  int version = 0;
  RunStatusValue status;
  std::string source, environment, input, output;
  std::string error_type, error_message, error_node;
  bool retryable = false;
  int attempts = 1;
  int64_t created_at = 0, started_at = 0, finished_at = 0;
  std::string parent_run, parent_node, workspace, idempotency_key;
  int64_t owner_pid = 0;
  std::string owner_start;  // the owner's identity (drivers/procs.h); "" in older rows
  int64_t cancel_requested_at = 0;
  std::string cancel_reason;
  int64_t incident_id = 0;  // the first incident the run ingested (o.ingest)
  std::string fingerprint;
  std::string stage;  // the stage the run is in (`stage = "..."` on a step); "" for none
};

struct NodeRunRow {
  std::string run_id, node_id;
  int attempt = 0;
  std::string kind;
  NodeStatusValue status;
  int64_t started_at = 0, finished_at = 0, duration_ms = 0;
  std::string output, error_type, error_message, traceback;
  bool retryable = false;
  int run_attempt = 1;  // which attempt of the whole run (orchrun retry starts the next)
  std::string verdict, verdict_reason;  // pass | retryable | needs_human_review, reason code
};

struct ApprovalRow {
  std::string run_id, node_id;
  int run_attempt = 1;
  std::string kind = "gate";  // gate (o.approve) | escalation (a verdict or a loop's cap)
  ApprovalStatusValue status;
  std::string message, approvers, on_timeout;
  int64_t requested_at = 0, timeout_at = 0, decided_at = 0;
  std::string decided_by, comment;
};

// A process group an o.exec call started (its leader's pid is the group id).
struct ProcessRow {
  std::string run_id, node_id;
  int attempt = 0, run_attempt = 1;
  int64_t pgid = 0;
  std::string identity, command;  // the leader's identity (drivers/procs.h); argv[0]
  int64_t owner_pid = 0;
  int64_t started_at = 0, ended_at = 0;
  std::string ended_how;  // exited | killed | gone
};

struct ArtifactRow {
  int64_t id = 0;
  std::string run_id, node_id;
  int attempt = 0;
  std::string path, kind, sha256;  // path: relative to the run's workspace
  int64_t size = 0, created_at = 0;
  std::vector<std::string> used_by;  // "node#attempt", filled by artifacts()
};

// An alert as o.ingest normalized it, to be recorded (deduplicated by fingerprint).
struct IncidentIn {
  std::string fingerprint, title, severity, status, source;  // status: firing | resolved
  std::string labels, annotations;                           // JSON objects
  std::string starts_at, ends_at;                            // ISO 8601 or ""
};

struct IncidentRow {
  int64_t id = 0;
  std::string fingerprint, title, severity, status, source, labels, annotations;
  std::string starts_at, ends_at;
  int64_t first_seen = 0, last_seen = 0, count = 0, resolved_at = 0;  // unix ms
  std::string last_run_id;
  bool is_new = false;  // record_incidents: this run created it
};

struct RunFilter {
  std::string status, pipeline, source, stage;
  int64_t since_ms = 0;  // created_at >= since
  int64_t until_ms = 0;  // created_at < until (0: no bound)
  // Keyset pagination: only runs older than (before_created_at, before_id) in the listing
  // order (newest first). Stable while new runs arrive: they sort before the page.
  int64_t before_created_at = 0;
  std::string before_id;
  int limit = 50;  // <= 0: no limit
};

// One load of a pipeline file by orchrun serve (the first, and each change).
struct LoadRow {
  int64_t id = 0;
  std::string name;  // empty when the file did not load far enough to name its pipeline
  std::string path;
  int64_t at = 0;
  std::string outcome;  // loaded | unchanged | invalid | removed
  int version = 0;
  std::string sha256, error;
};

struct DefinitionRow {
  int64_t id = 0;
  std::string name, sha256, path;
  int version = 0;
  int64_t loaded_at = 0;
};

}  // namespace orch
