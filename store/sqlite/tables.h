// What the table files of the SQLite store share (internal to store/sqlite/).
#pragma once
#include "store/rows.h"
#include "store/sqlite/db.h"

namespace orch {

// The columns read_run() expects, in order: a literal, so that a statement's SQL is one too.
#define ORCH_RUN_COLS                                                                         \
  "id, trace_id, pipeline, version, status, source, environment, input, output, error_type, " \
  "error_message, error_node, retryable, attempts, created_at, started_at, finished_at, "     \
  "parent_run, idempotency_key, owner_pid, cancel_requested_at, cancel_reason, parent_node, " \
  "workspace, incident_id, fingerprint, owner_start, stage"
RunRow read_run(const Stmt& st);

// The statuses a run may be in while it is not over.
#define ORCH_RUN_UNFINISHED "('queued','running','awaiting_approval','waiting')"

}  // namespace orch
