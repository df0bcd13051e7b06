// Schema history. Never edit a migration that has shipped; add a new one.
#include "store/sqlite/schema.h"

namespace orch {

const std::vector<const char*>& store_migrations() {
  static const std::vector<const char*> m = {
      // 1: definitions, runs, node attempts, events.
      R"sql(
CREATE TABLE definitions(
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  version INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  source TEXT NOT NULL,
  path TEXT,
  loaded_at INTEGER NOT NULL,
  active INTEGER NOT NULL DEFAULT 1,
  UNIQUE(name, version),
  UNIQUE(name, sha256));
CREATE TABLE runs(
  id TEXT PRIMARY KEY,
  trace_id TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  version INTEGER NOT NULL,
  status TEXT NOT NULL CHECK(status IN ('queued','running','awaiting_approval','waiting','succeeded',
                                         'failed','cancelled')),
  source TEXT NOT NULL,
  environment TEXT,
  input TEXT,
  output TEXT,
  error_type TEXT,
  error_message TEXT,
  error_node TEXT,
  retryable INTEGER,
  attempts INTEGER NOT NULL DEFAULT 1,
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER,
  parent_run TEXT,
  idempotency_key TEXT,
  owner_pid INTEGER);
CREATE INDEX runs_created ON runs(created_at DESC, id DESC);
CREATE INDEX runs_status ON runs(status, created_at DESC);
CREATE INDEX runs_pipeline ON runs(pipeline, created_at DESC);
CREATE UNIQUE INDEX runs_idempotency ON runs(pipeline, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE TABLE node_runs(
  run_id TEXT NOT NULL,
  node_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  kind TEXT NOT NULL DEFAULT 'body',
  status TEXT NOT NULL CHECK(status IN ('pending','running','succeeded','failed','skipped',
                                         'cancelled')),
  started_at INTEGER NOT NULL,
  finished_at INTEGER,
  duration_ms INTEGER,
  output TEXT,
  error_type TEXT,
  error_message TEXT,
  traceback TEXT,
  retryable INTEGER,
  PRIMARY KEY(run_id, node_id, attempt)) WITHOUT ROWID;
CREATE TABLE events(
  id INTEGER PRIMARY KEY,
  run_id TEXT NOT NULL,
  trace_id TEXT NOT NULL,
  ts INTEGER NOT NULL,
  kind TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  version INTEGER,
  node_id TEXT,
  attempt INTEGER,
  data TEXT);
CREATE INDEX events_run ON events(run_id, id);
)sql",
      // 2: run control: cancel requests across processes, run attempts (retry), approvals.
      R"sql(
ALTER TABLE runs ADD COLUMN cancel_requested_at INTEGER;
ALTER TABLE runs ADD COLUMN cancel_reason TEXT;
CREATE INDEX runs_cancel_requests ON runs(owner_pid) WHERE cancel_requested_at IS NOT NULL;
ALTER TABLE node_runs ADD COLUMN run_attempt INTEGER NOT NULL DEFAULT 1;
CREATE TABLE approvals(
  run_id TEXT NOT NULL,
  node_id TEXT NOT NULL,
  status TEXT NOT NULL CHECK(status IN ('waiting','approved','rejected','timed_out')),
  message TEXT,
  approvers TEXT,
  requested_at INTEGER NOT NULL,
  timeout_at INTEGER,
  on_timeout TEXT,
  decided_by TEXT,
  decided_at INTEGER,
  comment TEXT,
  PRIMARY KEY(run_id, node_id)) WITHOUT ROWID;
)sql",
      // 3: verdicts, escalations per run attempt, child runs, artifacts, concurrency keys.
      R"sql(
ALTER TABLE node_runs ADD COLUMN verdict TEXT;
ALTER TABLE node_runs ADD COLUMN verdict_reason TEXT;
ALTER TABLE runs ADD COLUMN parent_node TEXT;
ALTER TABLE runs ADD COLUMN workspace TEXT;
CREATE INDEX runs_parent ON runs(parent_run, parent_node) WHERE parent_run IS NOT NULL;
CREATE TABLE approvals_v3(
  run_id TEXT NOT NULL,
  node_id TEXT NOT NULL,
  run_attempt INTEGER NOT NULL DEFAULT 1,
  kind TEXT NOT NULL DEFAULT 'gate',
  status TEXT NOT NULL CHECK(status IN ('waiting','approved','rejected','timed_out')),
  message TEXT,
  approvers TEXT,
  requested_at INTEGER NOT NULL,
  timeout_at INTEGER,
  on_timeout TEXT,
  decided_by TEXT,
  decided_at INTEGER,
  comment TEXT,
  PRIMARY KEY(run_id, node_id, run_attempt)) WITHOUT ROWID;
INSERT INTO approvals_v3(run_id, node_id, run_attempt, status, message, approvers, requested_at,
                         timeout_at, on_timeout, decided_by, decided_at, comment)
  SELECT run_id, node_id, 1, status, message, approvers, requested_at, timeout_at, on_timeout,
         decided_by, decided_at, comment FROM approvals;
DROP TABLE approvals;
ALTER TABLE approvals_v3 RENAME TO approvals;
CREATE TABLE artifacts(
  id INTEGER PRIMARY KEY,
  run_id TEXT NOT NULL,
  node_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  path TEXT NOT NULL,
  kind TEXT,
  size INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  created_at INTEGER NOT NULL);
CREATE INDEX artifacts_run ON artifacts(run_id, id);
CREATE TABLE artifact_uses(
  artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
  run_id TEXT NOT NULL,
  node_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  used_at INTEGER NOT NULL,
  PRIMARY KEY(artifact_id, node_id, attempt)) WITHOUT ROWID;
CREATE TABLE concurrency_slots(
  id INTEGER PRIMARY KEY,
  key TEXT NOT NULL,
  run_id TEXT NOT NULL,
  node_id TEXT NOT NULL,
  owner_pid INTEGER NOT NULL,
  owner_start INTEGER,
  enqueued_at INTEGER NOT NULL,
  acquired_at INTEGER,
  UNIQUE(run_id, node_id));
CREATE INDEX concurrency_by_key ON concurrency_slots(key, id);
)sql",
      // 4: incidents (alerts deduplicated by fingerprint), the runs that saw each one, and the
      // incident a run (and each of its later events) is about.
      R"sql(
CREATE TABLE incidents(
  id INTEGER PRIMARY KEY,
  fingerprint TEXT NOT NULL UNIQUE,
  title TEXT NOT NULL,
  severity TEXT NOT NULL,
  status TEXT NOT NULL CHECK(status IN ('firing','resolved')),
  source TEXT NOT NULL,
  labels TEXT NOT NULL,
  annotations TEXT NOT NULL,
  starts_at TEXT,
  ends_at TEXT,
  first_seen INTEGER NOT NULL,
  last_seen INTEGER NOT NULL,
  count INTEGER NOT NULL DEFAULT 1,
  resolved_at INTEGER,
  last_run_id TEXT);
CREATE INDEX incidents_last_seen ON incidents(last_seen DESC);
CREATE INDEX incidents_open ON incidents(status, last_seen DESC);
CREATE TABLE incident_runs(
  incident_id INTEGER NOT NULL REFERENCES incidents(id),
  run_id TEXT NOT NULL,
  node_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  status TEXT NOT NULL,
  created INTEGER NOT NULL,
  recorded_at INTEGER NOT NULL,
  PRIMARY KEY(incident_id, run_id)) WITHOUT ROWID;
CREATE INDEX incident_runs_run ON incident_runs(run_id);
ALTER TABLE runs ADD COLUMN incident_id INTEGER;
ALTER TABLE runs ADD COLUMN fingerprint TEXT;
CREATE INDEX runs_incident ON runs(incident_id) WHERE incident_id IS NOT NULL;
ALTER TABLE events ADD COLUMN incident_id INTEGER;
ALTER TABLE events ADD COLUMN fingerprint TEXT;
)sql",
      // 5: orchrun serve: webhook deliveries (a delivery id starts one run), every load of a
      // pipeline file (the API shows the last error), the last fire time of each schedule
      // (missed-run policy across restarts), and listing runs by source.
      R"sql(
CREATE TABLE webhook_deliveries(
  pipeline TEXT NOT NULL,
  delivery_id TEXT NOT NULL,
  run_id TEXT NOT NULL,
  received_at INTEGER NOT NULL,
  duplicates INTEGER NOT NULL DEFAULT 0,
  last_duplicate_at INTEGER,
  PRIMARY KEY(pipeline, delivery_id)) WITHOUT ROWID;
CREATE TABLE pipeline_loads(
  id INTEGER PRIMARY KEY,
  name TEXT,
  path TEXT NOT NULL,
  at INTEGER NOT NULL,
  outcome TEXT NOT NULL CHECK(outcome IN ('loaded','unchanged','invalid','removed')),
  version INTEGER,
  sha256 TEXT,
  error TEXT);
CREATE INDEX pipeline_loads_path ON pipeline_loads(path, id);
CREATE INDEX pipeline_loads_name ON pipeline_loads(name, id);
CREATE TABLE schedule_fires(
  pipeline TEXT NOT NULL,
  schedule TEXT NOT NULL,
  last_fire_at INTEGER NOT NULL,
  PRIMARY KEY(pipeline, schedule)) WITHOUT ROWID;
CREATE INDEX runs_source ON runs(source, created_at DESC);
)sql",
      // 6: who is alive. The identity ("BOOT_ID:START", drivers/procs.h) of each run's owner,
      // so that a pid reused by another process is not taken for the owner; and the process
      // groups a run's o.exec calls started, so that those a dead owner left are ended before
      // the run goes on elsewhere.
      R"sql(
ALTER TABLE runs ADD COLUMN owner_start TEXT;
CREATE TABLE run_processes(
  run_id TEXT NOT NULL,
  node_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  run_attempt INTEGER NOT NULL,
  pgid INTEGER NOT NULL,
  identity TEXT NOT NULL,
  command TEXT NOT NULL,
  owner_pid INTEGER NOT NULL,
  started_at INTEGER NOT NULL,
  ended_at INTEGER,
  ended_how TEXT,
  PRIMARY KEY(run_id, pgid, identity)) WITHOUT ROWID;
CREATE INDEX run_processes_open ON run_processes(run_id) WHERE ended_at IS NULL;
)sql",
      // 7: a gate can be closed without a decision: 'cancelled' when its run ends (cancel)
      // while it waits, so that no decision can land on an attempt that is over.
      R"sql(
CREATE TABLE approvals_v7(
  run_id TEXT NOT NULL,
  node_id TEXT NOT NULL,
  run_attempt INTEGER NOT NULL DEFAULT 1,
  kind TEXT NOT NULL DEFAULT 'gate',
  status TEXT NOT NULL CHECK(status IN ('waiting','approved','rejected','timed_out','cancelled')),
  message TEXT,
  approvers TEXT,
  requested_at INTEGER NOT NULL,
  timeout_at INTEGER,
  on_timeout TEXT,
  decided_by TEXT,
  decided_at INTEGER,
  comment TEXT,
  PRIMARY KEY(run_id, node_id, run_attempt)) WITHOUT ROWID;
INSERT INTO approvals_v7 SELECT run_id, node_id, run_attempt, kind, status, message, approvers,
  requested_at, timeout_at, on_timeout, decided_by, decided_at, comment FROM approvals;
DROP TABLE approvals;
ALTER TABLE approvals_v7 RENAME TO approvals;
UPDATE approvals SET status='cancelled', decided_by='cancel', decided_at=coalesce(
  (SELECT finished_at FROM runs WHERE runs.id=approvals.run_id), requested_at)
  WHERE status='waiting' AND EXISTS (SELECT 1 FROM runs WHERE runs.id=approvals.run_id AND
    (runs.status IN ('succeeded','failed','cancelled') OR runs.attempts > approvals.run_attempt));
)sql",
      // 8: stages. The stage a run is in (a step with `stage = "..."` moved it there), and the
      // stage each event happened in.
      R"sql(
ALTER TABLE runs ADD COLUMN stage TEXT;
ALTER TABLE events ADD COLUMN stage TEXT;
CREATE INDEX runs_stage ON runs(stage, created_at DESC) WHERE stage IS NOT NULL;
)sql",
      // 9: a run parked until a signal from outside arrives (o.wait) is 'waiting'. SQLite
      // cannot change a CHECK in place: the table is rebuilt with every column and index.
      R"sql(
CREATE TABLE runs_v9(
  id TEXT PRIMARY KEY,
  trace_id TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  version INTEGER NOT NULL,
  status TEXT NOT NULL CHECK(status IN ('queued','running','awaiting_approval','waiting',
                                         'succeeded','failed','cancelled')),
  source TEXT NOT NULL,
  environment TEXT,
  input TEXT,
  output TEXT,
  error_type TEXT,
  error_message TEXT,
  error_node TEXT,
  retryable INTEGER,
  attempts INTEGER NOT NULL DEFAULT 1,
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER,
  parent_run TEXT,
  idempotency_key TEXT,
  owner_pid INTEGER,
  cancel_requested_at INTEGER,
  cancel_reason TEXT,
  parent_node TEXT,
  workspace TEXT,
  incident_id INTEGER,
  fingerprint TEXT,
  owner_start TEXT,
  stage TEXT);
INSERT INTO runs_v9 SELECT id, trace_id, pipeline, version, status, source, environment, input,
  output, error_type, error_message, error_node, retryable, attempts, created_at, started_at,
  finished_at, parent_run, idempotency_key, owner_pid, cancel_requested_at, cancel_reason,
  parent_node, workspace, incident_id, fingerprint, owner_start, stage FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v9 RENAME TO runs;
CREATE INDEX runs_created ON runs(created_at DESC, id DESC);
CREATE INDEX runs_status ON runs(status, created_at DESC);
CREATE INDEX runs_pipeline ON runs(pipeline, created_at DESC);
CREATE UNIQUE INDEX runs_idempotency ON runs(pipeline, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_cancel_requests ON runs(owner_pid) WHERE cancel_requested_at IS NOT NULL;
CREATE INDEX runs_parent ON runs(parent_run, parent_node) WHERE parent_run IS NOT NULL;
CREATE INDEX runs_incident ON runs(incident_id) WHERE incident_id IS NOT NULL;
CREATE INDEX runs_source ON runs(source, created_at DESC);
CREATE INDEX runs_stage ON runs(stage, created_at DESC) WHERE stage IS NOT NULL;
)sql",
  };
  return m;
}

}  // namespace orch
