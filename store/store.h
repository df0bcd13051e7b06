// The store: definitions, runs, node attempts, events and the rest, as an interface that the
// engine, the server and the CLI use whatever the backend. SQLite is the one backend today
// (store/sqlite/: sqlite_store.h and a file per table over the core, db.h); open_store() below
// makes one.
//
// Writes never block on a commit one by one: the first write opens a transaction and the
// scheduler calls commit() once per loop turn (group commit; at least every 5 ms of work), and
// always before anything outside the process depends on what was written: before a process is
// spawned or a request sent, before a client is told a run is accepted. Write methods do not throw;
// the first failure is kept (failed()/error()) and the scheduler stops the run loudly rather than
// run on unrecorded. A full disk is the exception where the store holds its writes (see
// set_hold_when_full()).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "store/events.h"
#include "store/rows.h"
#include "store/sqlite/schema.h"
#include "store/status.h"

namespace orch {

struct StoreOptions {
  bool synchronous_full = false;  // fsync on every commit (power-loss safe) instead of NORMAL
  bool read_only = false;
};

// An event of a stored run (trace, pipeline, version from its row), at `ts`.
Event run_event(const RunRow& run, const char* kind, int64_t ts, std::string data = "{}");

class Store {
 public:
  // The same as open_store() below.
  static std::unique_ptr<Store> open(const std::string& path, const StoreOptions& opts,
                                     std::string* err);
  virtual ~Store() = default;

  virtual const std::string& path() const = 0;
  virtual int schema_version() const = 0;
  // The newest schema this orchrun knows: what a writable open migrates the store to.
  virtual int latest_schema_version() const = 0;
  // The store's own consistency check (SQLite: PRAGMA quick_check, or integrity_check when
  // `full`): "" when it passes, else the first problems it reports.
  virtual std::string check_integrity(bool full) = 0;
  virtual bool failed() const = 0;
  virtual const std::string& error() const = 0;

  // Group commit: writes join the open transaction; commit() ends it.
  virtual void commit() = 0;
  virtual bool in_transaction() const = 0;
  virtual uint64_t commits() const = 0;

  // --- A full disk ---
  // With hold_when_full (orchrun serve), a commit that fails because the disk is full
  // (SQLITE_FULL, or a write that failed with ENOSPC/EDQUOT) is not a store failure. SQLite
  // rolls such a transaction back; the store keeps its writes as they were made (each write
  // statement with its values) and applies them again, in order, at the start of the next
  // transaction, checking that each changes what it changed the first time (the rows, the
  // inserted row ids). Until a commit succeeds the store is full(). Without it (one-shot
  // commands), a full disk is a store failure whose message says so. Held writes that no longer
  // apply (another process changed those rows meanwhile) are a store failure too.
  // Also turns off cache spilling, so that nothing is written to the disk before the commit.
  virtual void set_hold_when_full(bool on) = 0;
  virtual bool full() const = 0;
  // Commits the writes held back by a full disk (with what was written since). True once they
  // are committed (or when nothing was held).
  virtual bool retry_full() = 0;
  // Commits that failed on a full disk; unix ms since the store is full (0: it is not); writes
  // held in memory.
  virtual uint64_t full_errors() const = 0;
  virtual int64_t full_since() const = 0;
  virtual size_t held_writes() const = 0;
  // The store failed because the disk is full (without hold_when_full, or past what it holds).
  virtual bool failed_disk_full() const = 0;

  // Definitions: the same (name, sha256) keeps its version; new source gets max+1.
  virtual std::optional<DefinitionRow> upsert_definition(const std::string& name,
                                                         const std::string& sha256,
                                                         const std::string& source,
                                                         const std::string& path, int64_t now) = 0;

  // With an idempotency key already used for this pipeline, sets *duplicate (if given) and
  // writes nothing; that is not a store failure.
  virtual void insert_run(const RunRow& r, bool* duplicate = nullptr) = 0;
  virtual void set_run_status(const std::string& run_id, const RunStatusValue& status,
                              int64_t ts) = 0;
  // The stage the run has moved into (a step with `stage = "..."` started).
  virtual void set_run_stage(const std::string& run_id, const std::string& stage) = 0;
  virtual void finish_run(const std::string& run_id, const RunStatusValue& status,
                          const std::string& output, const std::string& error_type,
                          const std::string& error_message, const std::string& error_node,
                          bool retryable, int64_t finished_at) = 0;

  virtual void insert_node_attempt(const std::string& run_id, const std::string& node_id,
                                   int attempt, const std::string& kind, int64_t started_at,
                                   int run_attempt = 1) = 0;
  virtual void finish_node_attempt(const NodeRunRow& r) = 0;
  // A node that never ran (skipped by skip_if or by an untaken branch is not recorded; a
  // skip_if skip is): one row with status 'skipped'.
  virtual void insert_node_final(const NodeRunRow& r) = 0;

  // Returns the event's row id (0 on failure).
  virtual int64_t insert_event(const Event& e) = 0;
  // Called after each successful commit (e.g. to publish the events it made durable).
  std::function<void()> on_commit;

  // --- Resume and idempotency ---
  // The source of a stored definition. nullopt when there is none.
  virtual std::optional<std::string> definition_source(const std::string& name, int version,
                                                       std::string* path) = 0;
  // Takes ownership of an unfinished run: succeeds only if its owner is still `expected`
  // (compare-and-set, committed at once), so two processes cannot both resume it.
  bool claim_run(const std::string& run_id, int64_t expected_owner, int64_t new_owner) {
    std::vector<bool> ok = claim_runs({{run_id, expected_owner}}, new_owner);
    return !ok.empty() && ok[0];
  }
  // The same for many runs (id, expected owner) in one transaction: each claim is its own
  // compare-and-set, committed together. Returns which ones were taken, in order.
  virtual std::vector<bool> claim_runs(const std::vector<std::pair<std::string, int64_t>>& runs,
                                       int64_t new_owner) = 0;
  // Attempts left 'running' by a process that stopped are marked failed/interrupted.
  virtual int mark_interrupted(const std::string& run_id, int64_t now) = 0;
  // Runs not finished: queued, running (awaiting_approval waits for a person).
  virtual std::vector<RunRow> unfinished_runs() = 0;
  virtual std::optional<RunRow> find_by_idempotency_key(const std::string& pipeline,
                                                        const std::string& key) = 0;

  // --- Run control ---
  // Asks the process that owns the run to cancel it (it polls for requests).
  virtual bool request_cancel(const std::string& run_id, const std::string& reason,
                              int64_t now) = 0;
  // Runs owned by `pid` with a pending cancel request: (run id, reason).
  virtual std::vector<std::pair<std::string, std::string>> cancel_requests(int64_t pid) = 0;
  // Cancels a run whose process is gone (or that waits for a person): its in-flight attempts
  // and the run are recorded as cancelled, with a run.cancelled event. Committed at once.
  virtual bool cancel_orphan_run(const RunRow& run, const std::string& reason, int64_t now) = 0;
  // Starts the next attempt of a finished run (orchrun retry): attempts+1, status running,
  // error cleared, owner set. Only from 'failed' or 'cancelled'.
  virtual bool begin_run_attempt(const std::string& run_id, int64_t owner, int64_t now) = 0;

  // --- Approvals ---
  virtual void insert_approval(const ApprovalRow& a) = 0;
  // The gate of a node in the latest run attempt that has one.
  virtual std::optional<ApprovalRow> approval(const std::string& run_id,
                                              const std::string& node_id) = 0;
  virtual std::vector<ApprovalRow> approvals(const std::string& run_id) = 0;
  // Records a decision on a waiting gate. False (and nothing written) if it is not waiting.
  // Only the gate of `run_attempt`, and only while that is the run's current attempt and the
  // run is not over: a decision made for an attempt that ended (cancel, retry) never lands.
  virtual bool decide_approval(const std::string& run_id, const std::string& node_id,
                               int run_attempt, const ApprovalStatusValue& status,
                               const std::string& by, const std::string& comment, int64_t now) = 0;

  // --- Process groups of o.exec ---
  // Recorded when the group starts; marked ended when its leader has been reaped (or, for a
  // dead owner's groups, when they have been ended). Both in the open transaction.
  virtual void insert_process(const ProcessRow& p) = 0;
  virtual void end_process(const std::string& run_id, int64_t pgid, const std::string& identity,
                           const std::string& how, int64_t now) = 0;
  // The groups of a run not marked ended.
  virtual std::vector<ProcessRow> open_processes(const std::string& run_id) = 0;

  // --- Artifacts ---
  virtual int64_t insert_artifact(const ArtifactRow& a) = 0;  // returns its id (0 on failure)
  virtual void insert_artifact_use(int64_t artifact_id, const std::string& run_id,
                                   const std::string& node_id, int attempt, int64_t now) = 0;
  virtual std::vector<ArtifactRow> artifacts(const std::string& run_id) = 0;

  // --- Concurrency keys (see Step::concurrency_key) ---
  // Queues (run, node) for `key` and takes a slot at once if one is free and nobody queued
  // earlier is waiting; slots and places of processes that are gone are taken back first when
  // none is free. Committed at once: the other processes must see it. Returns whether the slot
  // is held; 0-based place in the queue otherwise (*position).
  virtual bool acquire_slot(const std::string& key, int limit, const std::string& run_id,
                            const std::string& node_id, int64_t owner_pid, int64_t now,
                            int* position) = 0;
  virtual void release_slot(const std::string& run_id, const std::string& node_id) = 0;

  // --- Incidents (o.ingest) ---
  // Records alerts seen by a node of a run, deduplicated by fingerprint: a new fingerprint is
  // a new incident (count 1); firing again counts it (count+1, last_seen, back to firing);
  // resolved closes it (resolved_at). A run counts an incident once: recording it again from
  // the same run (a retry, a resume) changes nothing and returns it as it is. Returns the rows
  // after the change, in order; empty with failed() set on a store error.
  virtual std::vector<IncidentRow> record_incidents(const std::vector<IncidentIn>& in,
                                                    const std::string& run_id,
                                                    const std::string& node_id, int attempt,
                                                    int64_t now) = 0;
  // Sets the run's incident unless it has one already.
  virtual void set_run_incident(const std::string& run_id, int64_t incident_id,
                                const std::string& fingerprint) = 0;
  virtual std::optional<IncidentRow> incident(const std::string& fingerprint) = 0;

  // --- Child runs (o.call) ---
  virtual std::optional<RunRow> child_run(const std::string& parent_run,
                                          const std::string& parent_node) = 0;
  virtual std::vector<RunRow> child_runs(const std::string& parent_run) = 0;

  // --- orchrun serve ---
  // The run an earlier delivery with this id started, if any.
  virtual std::optional<std::string> find_delivery(const std::string& pipeline,
                                                   const std::string& delivery_id) = 0;
  // Records a delivery for the run `run_id` (not started yet) unless one with this id is
  // recorded already, in one statement: of two servers on one store that receive the same
  // delivery, one records it and the other counts a duplicate (both may have looked it up in
  // vain before). Returns the run recorded for the delivery: run_id when this call recorded
  // it. nullopt with *err on a store error; a constraint conflict is not one (it answers with
  // the run recorded, and never fails the store).
  virtual std::optional<std::string> claim_delivery(const std::string& pipeline,
                                                    const std::string& delivery_id,
                                                    const std::string& run_id, int64_t now,
                                                    std::string* err) = 0;
  // Takes back a claim whose run did not start.
  virtual void release_delivery(const std::string& pipeline, const std::string& delivery_id,
                                const std::string& run_id) = 0;
  virtual void count_duplicate_delivery(const std::string& pipeline, const std::string& delivery_id,
                                        int64_t now) = 0;
  virtual void insert_load(const LoadRow& l) = 0;
  // The loads of a pipeline (by name) or of a file (by path), newest first.
  virtual std::vector<LoadRow> loads(const std::string& name, const std::string& path,
                                     int limit) = 0;
  // Every stored version of a pipeline, newest first (source not read).
  virtual std::vector<DefinitionRow> definitions(const std::string& name) = 0;
  virtual int64_t schedule_last_fire(const std::string& pipeline, const std::string& schedule) = 0;
  virtual void set_schedule_fire(const std::string& pipeline, const std::string& schedule,
                                 int64_t at) = 0;
  // Events with id > after_id, oldest first, optionally of one run and/or one pipeline.
  virtual std::vector<Event> events_after(int64_t after_id, const std::string& run_id,
                                          const std::string& pipeline, int limit) = 0;
  virtual int64_t last_event_id() = 0;
  // Runs per status.
  virtual std::vector<std::pair<std::string, int64_t>> count_runs_by_status() = 0;

  // Reads (used by the CLI and tests).
  virtual std::vector<RunRow> list_runs(const RunFilter& f) = 0;
  // Finds a run by full id or by a unique prefix. nullopt + *err when none or ambiguous.
  virtual std::optional<RunRow> find_run(const std::string& id_or_prefix, std::string* err) = 0;
  virtual std::vector<NodeRunRow> node_runs(const std::string& run_id) = 0;
  std::vector<Event> events(const std::string& run_id) { return events_after(0, run_id, "", -1); }
};

// Opens (creating if needed) and migrates the database at `path` (SQLite, the one backend
// today). On failure returns nullptr and sets *err to a message that names the path and the
// problem; a file that is not orchrun's is refused, never changed.
std::unique_ptr<Store> open_store(const std::string& path, const StoreOptions& opts,
                                  std::string* err);

}  // namespace orch
