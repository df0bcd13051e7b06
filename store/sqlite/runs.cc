#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "drivers/procs.h"
#include "store/sqlite/sqlite_store.h"
#include "store/sqlite/tables.h"

namespace orch {

RunRow read_run(const Stmt& st) {
  RunRow r;
  st.read_all(r.id, r.trace_id, r.pipeline, r.version, r.status, r.source, r.environment, r.input,
              r.output, r.error_type, r.error_message, r.error_node, r.retryable, r.attempts,
              r.created_at, r.started_at, r.finished_at, r.parent_run, r.idempotency_key,
              r.owner_pid, r.cancel_requested_at, r.cancel_reason, r.parent_node, r.workspace,
              r.incident_id, r.fingerprint, r.owner_start, r.stage);
  return r;
}

void SqliteStore::insert_run(const RunRow& r, bool* duplicate) {
  static const char* kSql =
      "INSERT INTO runs(id, trace_id, pipeline, version, status, source, environment, input, "
      "attempts, created_at, started_at, parent_run, idempotency_key, owner_pid, parent_node, "
      "workspace, owner_start) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)";
  if (!db_.allowed("insert run", r.id, "status", r.status.view(), status_names(RunStatus{})) ||
      !begin())
    return;
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_all(r.id, r.trace_id, r.pipeline, r.version, r.status.view(), r.source, r.environment,
              r.input, r.attempts, r.created_at, or_null(r.started_at), r.parent_run,
              r.idempotency_key, or_null(r.owner_pid), r.parent_node, r.workspace,
              r.owner_pid == getpid() ? self_identity() : r.owner_start);
  int rc = st.step_write();
  if (rc == SQLITE_CONSTRAINT_UNIQUE && duplicate && !r.idempotency_key.empty()) {
    *duplicate = true;
    return;
  }
  if (rc != SQLITE_DONE) fail("insert run " + r.id);
}

void SqliteStore::set_run_status(const std::string& run_id, const RunStatusValue& status,
                                 int64_t ts) {
  static const char* kSql =
      "UPDATE runs SET status=?2, started_at=coalesce(started_at, ?3) WHERE id=?1";
  if (!db_.allowed("set status of run", run_id, "status", status.view(),
                   status_names(RunStatus{})) ||
      !begin())
    return;
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_all(run_id, status.view(), ts);
  if (st.step_write() != SQLITE_DONE) fail("update run " + run_id);
}

void SqliteStore::set_run_stage(const std::string& run_id, const std::string& stage) {
  static const char* kSql = "UPDATE runs SET stage=?2 WHERE id=?1";
  if (!begin()) return;
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_all(run_id, stage);
  if (st.step_write() != SQLITE_DONE) fail("set the stage of run " + run_id);
}

void SqliteStore::finish_run(const std::string& run_id, const RunStatusValue& status,
                             const std::string& output, const std::string& error_type,
                             const std::string& error_message, const std::string& error_node,
                             bool retryable, int64_t finished_at) {
  static const char* kSql =
      "UPDATE runs SET status=?2, output=?3, error_type=?4, error_message=?5, error_node=?6, "
      "retryable=?7, finished_at=?8 WHERE id=?1";
  if (!db_.allowed("finish run", run_id, "status", status.view(), status_names(RunStatus{})) ||
      !begin())
    return;
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_all(run_id, status.view(), output, error_type, error_message, error_node,
              null_if(error_type.empty(), retryable ? 1 : 0), finished_at);
  if (st.step_write() != SQLITE_DONE) {
    fail("finish run " + run_id);
    return;
  }
  // A run that ends leaves no gate open: nothing can be decided for it any more.
  static const char* kClose =
      "UPDATE approvals SET status='cancelled', decided_by='run ended', decided_at=?2, "
      "comment=?3 WHERE run_id=?1 AND status='waiting'";
  Stmt cl = db_.prepare(kClose);
  if (!cl) return;
  cl.bind_all(run_id, finished_at, "the run was " + status.str());
  if (cl.step_write() != SQLITE_DONE) fail("close gates of " + run_id);
}

std::vector<bool> SqliteStore::claim_runs(const std::vector<std::pair<std::string, int64_t>>& runs,
                                          int64_t new_owner) {
  std::vector<bool> out(runs.size(), false);
  commit();  // the claims must not ride along with other writes
  if (!begin()) return out;
  static const char* kSql =
      "UPDATE runs SET owner_pid=?3, owner_start=?4 WHERE id=?1 AND coalesce(owner_pid,0)=?2 "
      "AND status IN " ORCH_RUN_UNFINISHED;
  for (size_t i = 0; i < runs.size(); i++) {
    Stmt st = db_.prepare(kSql);
    if (!st) {
      fail("claim run " + runs[i].first);
      break;
    }
    st.bind_all(runs[i].first, runs[i].second, new_owner,
                new_owner == getpid() ? self_identity() : std::string());
    out[i] = st.step_write() == SQLITE_DONE && db_.changes() == 1;
  }
  commit();
  if (failed()) std::fill(out.begin(), out.end(), false);
  return out;
}

bool SqliteStore::request_cancel(const std::string& run_id, const std::string& reason,
                                 int64_t now) {
  commit();
  if (!begin()) return false;
  Stmt st = db_.query(
      "UPDATE runs SET cancel_requested_at=?2, cancel_reason=?3 WHERE id=?1 AND status IN "
      ORCH_RUN_UNFINISHED);
  if (!st) return false;
  st.bind_all(run_id, now, reason);
  bool ok = st.step_write() == SQLITE_DONE && db_.changes() == 1;
  commit();
  return ok;
}

std::vector<std::pair<std::string, std::string>> SqliteStore::cancel_requests(int64_t pid) {
  std::vector<std::pair<std::string, std::string>> out;
  static const char* kSql =
      "SELECT id, coalesce(cancel_reason, 'cancelled') FROM runs WHERE owner_pid=?1 AND "
      "cancel_requested_at IS NOT NULL AND status IN " ORCH_RUN_UNFINISHED;
  Stmt st = db_.prepare(kSql);
  if (!st) return out;
  st.bind_int(1, pid);
  while (st.next()) out.emplace_back(st.col_text(0), st.col_text(1));
  return out;
}

bool SqliteStore::cancel_orphan_run(const RunRow& run, const std::string& reason, int64_t now) {
  commit();
  if (!begin()) return false;
  flush_attempts();
  Stmt st = db_.query(
      "UPDATE node_runs SET status='cancelled', error_type='cancelled', error_message=?2, "
      "finished_at=?3, duration_ms=?3-started_at WHERE run_id=?1 AND status='running'");
  if (!st) return false;
  st.bind_all(run.id, reason, now);
  if (st.step_write() != SQLITE_DONE) fail("cancel node attempts of " + run.id);
  finish_run(run.id, "cancelled", "", "cancelled", reason, "", true, now);
  insert_event(
      run_event(run, "run.cancelled", now,
                "{\"message\":" + nlohmann::json(reason).dump() + ",\"by\":\"orchrun cancel\"}"));
  commit();
  return !failed();
}

bool SqliteStore::begin_run_attempt(const std::string& run_id, int64_t owner, int64_t now) {
  commit();
  if (!begin()) return false;
  Stmt st = db_.query(
      "UPDATE runs SET status='running', attempts=attempts+1, owner_pid=?2, owner_start=?4, "
      "error_type=NULL, "
      "error_message=NULL, error_node=NULL, retryable=NULL, output=NULL, finished_at=NULL, "
      "cancel_requested_at=NULL, cancel_reason=NULL, started_at=?3 "
      "WHERE id=?1 AND status IN ('failed','cancelled')");
  if (!st) return false;
  st.bind_all(run_id, owner, now, owner == getpid() ? self_identity() : std::string());
  bool ok = st.step_write() == SQLITE_DONE && db_.changes() == 1;
  commit();
  return ok;
}

}  // namespace orch
