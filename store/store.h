// The SQLite store: definitions, runs, node attempts and events.
//
// Writes never block on a commit one by one: the first write opens a transaction and the
// scheduler calls commit() once per loop turn (group commit; at least every 5 ms of work), and
// always before anything outside the process depends on what was written: before a process is
// spawned or a request sent, before a client is told a run is accepted. Write methods do not throw;
// the first failure is kept (failed()/error()) and the scheduler stops the run loudly rather than
// run on unrecorded. A full disk is the exception where the store holds its writes (see
// set_hold_when_full()).
#pragma once
#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "store/events.h"

namespace orch {

struct StoreOptions {
  bool synchronous_full = false;  // fsync on every commit (power-loss safe) instead of NORMAL
  bool read_only = false;
};

struct RunRow {
  std::string id, trace_id, pipeline;
  int version = 0;
  std::string status, source, environment, input, output;
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
};

// An event of a stored run (trace, pipeline, version from its row), at `ts`.
Event run_event(const RunRow& run, const char* kind, int64_t ts, std::string data = "{}");

struct NodeRunRow {
  std::string run_id, node_id;
  int attempt = 0;
  std::string kind, status;
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
  std::string status, message, approvers, on_timeout;
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
  std::string status, pipeline, source;
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

// A cached prepared statement.
class Stmt {
 public:
  Stmt() = default;
  Stmt(sqlite3* db, const char* sql, std::string* err);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  sqlite3_stmt* get() { return st_; }
  explicit operator bool() const { return st_ != nullptr; }

 private:
  sqlite3_stmt* st_ = nullptr;
};

// A statement from the store's cache, reset (and its bindings cleared) when it goes out of
// scope, so that no read transaction stays open behind a half-read result.
class CachedStmt {
 public:
  explicit CachedStmt(sqlite3_stmt* st) : st_(st) {}
  ~CachedStmt() {
    if (st_) {
      sqlite3_reset(st_);
      sqlite3_clear_bindings(st_);
    }
  }
  CachedStmt(CachedStmt&& o) noexcept : st_(o.st_) { o.st_ = nullptr; }
  CachedStmt(const CachedStmt&) = delete;
  CachedStmt& operator=(const CachedStmt&) = delete;
  CachedStmt& operator=(CachedStmt&&) = delete;
  sqlite3_stmt* get() { return st_; }
  explicit operator bool() const { return st_ != nullptr; }

 private:
  sqlite3_stmt* st_;
};

class Store {
 public:
  // Opens (creating if needed) and migrates the database. On failure returns nullptr and sets
  // *err to a message that names the path and the problem.
  static std::unique_ptr<Store> open(const std::string& path, const StoreOptions& opts,
                                     std::string* err);
  ~Store();

  const std::string& path() const { return path_; }
  int schema_version() const { return schema_version_; }
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }

  // Group commit: writes join the open transaction; commit() ends it.
  void commit();
  bool in_transaction() const { return in_tx_; }
  uint64_t commits() const { return commits_; }

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
  void set_hold_when_full(bool on);
  bool full() const { return full_; }
  // Commits the writes held back by a full disk (with what was written since). True once they
  // are committed (or when nothing was held).
  bool retry_full();
  // Commits that failed on a full disk; unix ms since the store is full (0: it is not); writes
  // held in memory.
  uint64_t full_errors() const { return full_errors_; }
  int64_t full_since() const { return full_since_; }
  size_t held_writes() const { return held_.size(); }
  // The store failed because the disk is full (without hold_when_full, or past what it holds).
  bool failed_disk_full() const { return failed_disk_full_; }

  // Definitions: the same (name, sha256) keeps its version; new source gets max+1.
  std::optional<DefinitionRow> upsert_definition(const std::string& name, const std::string& sha256,
                                                 const std::string& source, const std::string& path,
                                                 int64_t now);

  // With an idempotency key already used for this pipeline, sets *duplicate (if given) and
  // writes nothing; that is not a store failure.
  void insert_run(const RunRow& r, bool* duplicate = nullptr);
  void set_run_status(const std::string& run_id, const std::string& status, int64_t ts);
  void finish_run(const std::string& run_id, const std::string& status, const std::string& output,
                  const std::string& error_type, const std::string& error_message,
                  const std::string& error_node, bool retryable, int64_t finished_at);

  void insert_node_attempt(const std::string& run_id, const std::string& node_id, int attempt,
                           const std::string& kind, int64_t started_at, int run_attempt = 1);
  void finish_node_attempt(const NodeRunRow& r);
  // A node that never ran (skipped by skip_if or by an untaken branch is not recorded; a
  // skip_if skip is): one row with status 'skipped'.
  void insert_node_final(const NodeRunRow& r);

  // Returns the event's row id (0 on failure).
  int64_t insert_event(const Event& e);
  // Called after each successful commit (e.g. to publish the events it made durable).
  std::function<void()> on_commit;

  // --- Resume and idempotency ---
  // The source of a stored definition. nullopt when there is none.
  std::optional<std::string> definition_source(const std::string& name, int version,
                                               std::string* path);
  // Takes ownership of an unfinished run: succeeds only if its owner is still `expected`
  // (compare-and-set, committed at once), so two processes cannot both resume it.
  bool claim_run(const std::string& run_id, int64_t expected_owner, int64_t new_owner);
  // The same for many runs (id, expected owner) in one transaction: each claim is its own
  // compare-and-set, committed together. Returns which ones were taken, in order.
  std::vector<bool> claim_runs(const std::vector<std::pair<std::string, int64_t>>& runs,
                               int64_t new_owner);
  // Attempts left 'running' by a process that stopped are marked failed/interrupted.
  int mark_interrupted(const std::string& run_id, int64_t now);
  // Runs not finished: queued, running (awaiting_approval waits for a person).
  std::vector<RunRow> unfinished_runs();
  std::optional<RunRow> find_by_idempotency_key(const std::string& pipeline,
                                                const std::string& key);

  // --- Run control ---
  // Asks the process that owns the run to cancel it (it polls for requests).
  bool request_cancel(const std::string& run_id, const std::string& reason, int64_t now);
  // Runs owned by `pid` with a pending cancel request: (run id, reason).
  std::vector<std::pair<std::string, std::string>> cancel_requests(int64_t pid);
  // Cancels a run whose process is gone (or that waits for a person): its in-flight attempts
  // and the run are recorded as cancelled, with a run.cancelled event. Committed at once.
  bool cancel_orphan_run(const RunRow& run, const std::string& reason, int64_t now);
  // Starts the next attempt of a finished run (orchrun retry): attempts+1, status running,
  // error cleared, owner set. Only from 'failed' or 'cancelled'.
  bool begin_run_attempt(const std::string& run_id, int64_t owner, int64_t now);

  // --- Approvals ---
  void insert_approval(const ApprovalRow& a);
  // The gate of a node in the latest run attempt that has one.
  std::optional<ApprovalRow> approval(const std::string& run_id, const std::string& node_id);
  std::vector<ApprovalRow> approvals(const std::string& run_id);
  // Records a decision on a waiting gate. False (and nothing written) if it is not waiting.
  // Only the gate of `run_attempt`, and only while that is the run's current attempt and the
  // run is not over: a decision made for an attempt that ended (cancel, retry) never lands.
  bool decide_approval(const std::string& run_id, const std::string& node_id, int run_attempt,
                       const std::string& status, const std::string& by, const std::string& comment,
                       int64_t now);

  // --- Process groups of o.exec ---
  // Recorded when the group starts; marked ended when its leader has been reaped (or, for a
  // dead owner's groups, when they have been ended). Both in the open transaction.
  void insert_process(const ProcessRow& p);
  void end_process(const std::string& run_id, int64_t pgid, const std::string& identity,
                   const std::string& how, int64_t now);
  // The groups of a run not marked ended.
  std::vector<ProcessRow> open_processes(const std::string& run_id);

  // --- Artifacts ---
  int64_t insert_artifact(const ArtifactRow& a);  // returns its id (0 on failure)
  void insert_artifact_use(int64_t artifact_id, const std::string& run_id,
                           const std::string& node_id, int attempt, int64_t now);
  std::vector<ArtifactRow> artifacts(const std::string& run_id);

  // --- Concurrency keys (see Step::concurrency_key) ---
  // Queues (run, node) for `key` and takes a slot at once if one is free and nobody queued
  // earlier is waiting; slots and places of processes that are gone are taken back first when
  // none is free. Committed at once: the other processes must see it. Returns whether the slot
  // is held; 0-based place in the queue otherwise (*position).
  bool acquire_slot(const std::string& key, int limit, const std::string& run_id,
                    const std::string& node_id, int64_t owner_pid, int64_t now, int* position);
  void release_slot(const std::string& run_id, const std::string& node_id);

  // --- Incidents (o.ingest) ---
  // Records alerts seen by a node of a run, deduplicated by fingerprint: a new fingerprint is
  // a new incident (count 1); firing again counts it (count+1, last_seen, back to firing);
  // resolved closes it (resolved_at). A run counts an incident once: recording it again from
  // the same run (a retry, a resume) changes nothing and returns it as it is. Returns the rows
  // after the change, in order; empty with failed() set on a store error.
  std::vector<IncidentRow> record_incidents(const std::vector<IncidentIn>& in,
                                            const std::string& run_id, const std::string& node_id,
                                            int attempt, int64_t now);
  // Sets the run's incident unless it has one already.
  void set_run_incident(const std::string& run_id, int64_t incident_id,
                        const std::string& fingerprint);
  std::optional<IncidentRow> incident(const std::string& fingerprint);

  // --- Child runs (o.call) ---
  std::optional<RunRow> child_run(const std::string& parent_run, const std::string& parent_node);
  std::vector<RunRow> child_runs(const std::string& parent_run);

  // --- orchrun serve ---
  // The run an earlier delivery with this id started, if any.
  std::optional<std::string> find_delivery(const std::string& pipeline,
                                           const std::string& delivery_id);
  // Records a delivery for the run `run_id` (not started yet) unless one with this id is
  // recorded already, in one statement: of two servers on one store that receive the same
  // delivery, one records it and the other counts a duplicate (both may have looked it up in
  // vain before). Returns the run recorded for the delivery: run_id when this call recorded
  // it. nullopt with *err on a store error; a constraint conflict is not one (it answers with
  // the run recorded, and never fails the store).
  std::optional<std::string> claim_delivery(const std::string& pipeline,
                                            const std::string& delivery_id,
                                            const std::string& run_id, int64_t now,
                                            std::string* err);
  // Takes back a claim whose run did not start.
  void release_delivery(const std::string& pipeline, const std::string& delivery_id,
                        const std::string& run_id);
  void count_duplicate_delivery(const std::string& pipeline, const std::string& delivery_id,
                                int64_t now);
  void insert_load(const LoadRow& l);
  // The loads of a pipeline (by name) or of a file (by path), newest first.
  std::vector<LoadRow> loads(const std::string& name, const std::string& path, int limit);
  // Every stored version of a pipeline, newest first (source not read).
  std::vector<DefinitionRow> definitions(const std::string& name);
  int64_t schedule_last_fire(const std::string& pipeline, const std::string& schedule);
  void set_schedule_fire(const std::string& pipeline, const std::string& schedule, int64_t at);
  // Events with id > after_id, oldest first, optionally of one run and/or one pipeline.
  std::vector<Event> events_after(int64_t after_id, const std::string& run_id,
                                  const std::string& pipeline, int limit);
  int64_t last_event_id();
  // Runs per status.
  std::vector<std::pair<std::string, int64_t>> count_runs_by_status();

  // Reads (used by the CLI and tests).
  std::vector<RunRow> list_runs(const RunFilter& f);
  // Finds a run by full id or by a unique prefix. nullopt + *err when none or ambiguous.
  std::optional<RunRow> find_run(const std::string& id_or_prefix, std::string* err);
  std::vector<NodeRunRow> node_runs(const std::string& run_id);
  std::vector<Event> events(const std::string& run_id);

  sqlite3* db() { return db_; }

 private:
  Store() = default;
  bool migrate(std::string* err);
  bool try_acquire_slot(const std::string& key, int limit, const std::string& run_id,
                        const std::string& node_id, int64_t owner_pid, int64_t now, int* position);
  // Removes the slots and queue places held by processes that are gone.
  int reap_slots(const std::string& key);
  bool begin();
  // Node attempts started in the open transaction and not finished yet: written at the commit
  // (or before a statement that reads or changes node_runs), so that an attempt that starts and
  // ends within one transaction costs one row insert instead of an insert and an update.
  struct PendingAttempt {
    std::string run_id, node_id, kind;
    int attempt = 0;
    int64_t started_at = 0, seq = 0;
    int run_attempt = 1;
  };
  void write_attempt(const PendingAttempt& a);
  void flush_attempts();
  void bind_node_end(sqlite3_stmt* st, const NodeRunRow& r);
  sqlite3_stmt* prepare(const char* key, const char* sql);
  // --- Writes held for a full disk (set_hold_when_full) ---
  struct BoundValue {
    int index = 0;
    int type = SQLITE_NULL;  // SQLITE_NULL, SQLITE_INTEGER or SQLITE_TEXT
    int64_t i = 0;
    std::string s;
  };
  // A write of the open transaction as it was made. `st` is a cached statement (they live as
  // long as the store).
  struct Held {
    sqlite3_stmt* st = nullptr;
    std::vector<BoundValue> values;
    int changes = 0;       // rows changed; -1 for a statement with RETURNING (one row)
    int64_t rowid = 0;     // the row it inserted, 0: none
    std::string returned;  // RETURNING: the first column
  };
  // The bind helpers of sql_util.h, keeping the values of the write statement being bound.
  void bind_text(sqlite3_stmt* st, int i, const std::string& s, bool null_if_empty = true);
  void bind_int(sqlite3_stmt* st, int i, int64_t v, bool null_if_zero = false);
  void bind_null(sqlite3_stmt* st, int i);
  // A statement from prepare()/cached() that writes: its values are kept from now on.
  void arm_capture(sqlite3_stmt* st);
  // sqlite3_step for every write statement: with hold_when_full, a write that succeeded in the
  // open transaction is kept (held_) until the commit.
  int step_write(sqlite3_stmt* st);
  // Applies the held writes again in the transaction begin() just opened. False (store failed,
  // transaction rolled back) when one of them fails or changes something else.
  bool apply_held();
  bool disk_full(int rc) const;
  // Prepared once per distinct SQL text (reads and the rarer writes; list_runs builds a few
  // variants). On failure the result is empty and *err says why.
  CachedStmt cached(const std::string& sql, std::string* err);
  void fail(const std::string& what);
  // The schema's CHECK(status IN (...)), in C++ (this connection skips the CHECKs): false, and
  // the store failed with a message naming `what` and `subject`, when `value` is not one of
  // `allowed`. The message is only built then: this is on every write's path.
  bool allowed(const char* what, const std::string& subject, const char* column,
               const std::string& value, std::span<const char* const> allowed);

  sqlite3* db_ = nullptr;
  std::string path_;
  std::string error_;
  int schema_version_ = 0;
  bool in_tx_ = false;
  uint64_t commits_ = 0;
  uint64_t node_seq_ = 0;
  std::unordered_map<const char*, std::unique_ptr<Stmt>> stmts_;
  std::unordered_map<std::string, std::unique_ptr<Stmt>> by_sql_;
  std::unordered_map<std::string, DefinitionRow> definitions_seen_;
  std::unordered_map<std::string, PendingAttempt>
      pending_attempts_;  // run\0node\0attempt  // name '\0' sha256
  bool hold_when_full_ = false;
  bool full_ = false;
  bool failed_disk_full_ = false;
  // A write of the transaction was not kept (a statement stepped without step_write, or
  // bound without the helpers): it cannot be applied again, and a full disk is a failure.
  bool held_incomplete_ = false;
  std::vector<Held> held_;
  int held_changes_ = 0;     // the rows the held writes changed (RETURNING: 1)
  int tx_changes_base_ = 0;  // sqlite3_total_changes() when the transaction began
  sqlite3_stmt* capture_st_ = nullptr;
  std::vector<BoundValue> capture_;
  uint64_t full_errors_ = 0;
  int64_t full_since_ = 0;
};

// The migrations, in order; migration i takes the schema from version i to i+1.
const std::vector<const char*>& store_migrations();
// 'ORCH' in PRAGMA application_id marks a database as orchrun's.
constexpr int kApplicationId = 0x4f524348;

}  // namespace orch
