// The SQLite backend of the store (store/store.h): one class over the core (db.h), its
// methods in one file per table: runs.cc, node_attempts.cc, events.cc, approvals.cc,
// artifacts.cc, slots.cc, incidents.cc, serve_tables.cc (webhook deliveries, pipeline loads
// and definitions, schedule fires), processes.cc and queries.cc (listing and filtering).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "store/sqlite/db.h"
#include "store/store.h"

namespace orch {

class SqliteStore final : public Store {
 public:
  static std::unique_ptr<SqliteStore> open(const std::string& path, const StoreOptions& opts,
                                           std::string* err);
  ~SqliteStore() override;

  const std::string& path() const override;
  int schema_version() const override;
  int latest_schema_version() const override;
  std::string check_integrity(bool full) override;
  bool failed() const override;
  const std::string& error() const override;
  void commit() override;
  bool in_transaction() const override;
  uint64_t commits() const override;
  void set_hold_when_full(bool on) override;
  bool full() const override;
  bool retry_full() override;
  uint64_t full_errors() const override;
  int64_t full_since() const override;
  size_t held_writes() const override;
  bool failed_disk_full() const override;
  std::optional<DefinitionRow> upsert_definition(const std::string& name, const std::string& sha256,
                                                 const std::string& source, const std::string& path,
                                                 int64_t now) override;
  void insert_run(const RunRow& r, bool* duplicate = nullptr) override;
  void set_run_status(const std::string& run_id, const RunStatusValue& status, int64_t ts) override;
  void set_run_stage(const std::string& run_id, const std::string& stage) override;
  void finish_run(const std::string& run_id, const RunStatusValue& status,
                  const std::string& output, const std::string& error_type,
                  const std::string& error_message, const std::string& error_node, bool retryable,
                  int64_t finished_at) override;
  void insert_node_attempt(const std::string& run_id, const std::string& node_id, int attempt,
                           const std::string& kind, int64_t started_at,
                           int run_attempt = 1) override;
  void finish_node_attempt(const NodeRunRow& r) override;
  void insert_node_final(const NodeRunRow& r) override;
  int64_t insert_event(const Event& e) override;
  std::optional<std::string> definition_source(const std::string& name, int version,
                                               std::string* path) override;
  std::vector<bool> claim_runs(const std::vector<std::pair<std::string, int64_t>>& runs,
                               int64_t new_owner) override;
  int mark_interrupted(const std::string& run_id, int64_t now) override;
  std::vector<RunRow> unfinished_runs() override;
  std::optional<RunRow> find_by_idempotency_key(const std::string& pipeline,
                                                const std::string& key) override;
  bool request_cancel(const std::string& run_id, const std::string& reason, int64_t now) override;
  std::vector<std::pair<std::string, std::string>> cancel_requests(int64_t pid) override;
  bool cancel_orphan_run(const RunRow& run, const std::string& reason, int64_t now) override;
  bool begin_run_attempt(const std::string& run_id, int64_t owner, int64_t now) override;
  void insert_approval(const ApprovalRow& a) override;
  std::optional<ApprovalRow> approval(const std::string& run_id,
                                      const std::string& node_id) override;
  std::vector<ApprovalRow> approvals(const std::string& run_id) override;
  bool decide_approval(const std::string& run_id, const std::string& node_id, int run_attempt,
                       const ApprovalStatusValue& status, const std::string& by,
                       const std::string& comment, int64_t now) override;
  void insert_process(const ProcessRow& p) override;
  void end_process(const std::string& run_id, int64_t pgid, const std::string& identity,
                   const std::string& how, int64_t now) override;
  std::vector<ProcessRow> open_processes(const std::string& run_id) override;
  int64_t insert_artifact(const ArtifactRow& a) override;
  void insert_artifact_use(int64_t artifact_id, const std::string& run_id,
                           const std::string& node_id, int attempt, int64_t now) override;
  std::vector<ArtifactRow> artifacts(const std::string& run_id) override;
  bool acquire_slot(const std::string& key, int limit, const std::string& run_id,
                    const std::string& node_id, int64_t owner_pid, int64_t now,
                    int* position) override;
  void release_slot(const std::string& run_id, const std::string& node_id) override;
  std::vector<IncidentRow> record_incidents(const std::vector<IncidentIn>& in,
                                            const std::string& run_id, const std::string& node_id,
                                            int attempt, int64_t now) override;
  void set_run_incident(const std::string& run_id, int64_t incident_id,
                        const std::string& fingerprint) override;
  std::optional<IncidentRow> incident(const std::string& fingerprint) override;
  std::optional<RunRow> child_run(const std::string& parent_run,
                                  const std::string& parent_node) override;
  std::vector<RunRow> child_runs(const std::string& parent_run) override;
  std::optional<std::string> find_delivery(const std::string& pipeline,
                                           const std::string& delivery_id) override;
  std::optional<std::string> claim_delivery(const std::string& pipeline,
                                            const std::string& delivery_id,
                                            const std::string& run_id, int64_t now,
                                            std::string* err) override;
  void release_delivery(const std::string& pipeline, const std::string& delivery_id,
                        const std::string& run_id) override;
  void count_duplicate_delivery(const std::string& pipeline, const std::string& delivery_id,
                                int64_t now) override;
  void insert_load(const LoadRow& l) override;
  std::vector<LoadRow> loads(const std::string& name, const std::string& path, int limit) override;
  std::vector<DefinitionRow> definitions(const std::string& name) override;
  int64_t schedule_last_fire(const std::string& pipeline, const std::string& schedule) override;
  void set_schedule_fire(const std::string& pipeline, const std::string& schedule,
                         int64_t at) override;
  std::vector<Event> events_after(int64_t after_id, const std::string& run_id,
                                  const std::string& pipeline, int limit) override;
  int64_t last_event_id() override;
  std::vector<std::pair<std::string, int64_t>> count_runs_by_status() override;
  std::vector<RunRow> list_runs(const RunFilter& f) override;
  std::optional<RunRow> find_run(const std::string& id_or_prefix, std::string* err) override;
  std::vector<NodeRunRow> node_runs(const std::string& run_id) override;

  // The core, for what only SQLite has (the checkpointer, tests that count statements).
  Db& db() { return db_; }

 private:
  SqliteStore() = default;
  void fail(const std::string& what) { db_.fail(what); }
  bool begin() { return db_.begin(); }
  bool try_acquire_slot(const std::string& key, int limit, const std::string& run_id,
                        const std::string& node_id, int64_t owner_pid, int64_t now, int* position);
  // Removes the slots and queue places held by processes that are gone.
  int reap_slots(const std::string& key);
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

  Db db_;
  uint64_t node_seq_ = 0;
  std::unordered_map<std::string, DefinitionRow> definitions_seen_;   // name '\0' sha256
  std::unordered_map<std::string, PendingAttempt> pending_attempts_;  // run\0node\0attempt
};

}  // namespace orch
