#include "store/sqlite/sqlite_store.h"
#include "store/sqlite/tables.h"

namespace orch {
namespace {

#define ORCH_APPROVAL_COLS                                                              \
  "run_id, node_id, status, message, approvers, requested_at, timeout_at, on_timeout, " \
  "decided_by, decided_at, comment, run_attempt, kind"

ApprovalRow read_approval(const Stmt& st) {
  ApprovalRow a;
  st.read_all(a.run_id, a.node_id, a.status, a.message, a.approvers, a.requested_at, a.timeout_at,
              a.on_timeout, a.decided_by, a.decided_at, a.comment, a.run_attempt, a.kind);
  return a;
}

}  // namespace

void SqliteStore::insert_approval(const ApprovalRow& a) {
  static const char* kSql =
      "INSERT OR IGNORE INTO approvals(run_id, node_id, status, message, approvers, "
      "requested_at, timeout_at, on_timeout, run_attempt, kind) "
      "VALUES(?1,?2,'waiting',?3,?4,?5,?6,?7,?8,?9)";
  if (!begin()) return;
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_all(a.run_id, a.node_id, a.message, a.approvers, a.requested_at, or_null(a.timeout_at),
              a.on_timeout, a.run_attempt, a.kind);
  if (st.step_write() != SQLITE_DONE) fail("insert approval " + a.node_id);
}

std::optional<ApprovalRow> SqliteStore::approval(const std::string& run_id,
                                                 const std::string& node_id) {
  static const char* kSql =
      "SELECT " ORCH_APPROVAL_COLS
      " FROM approvals WHERE run_id=?1 AND node_id=?2 ORDER BY run_attempt DESC LIMIT 1";
  Stmt st = db_.query(kSql);
  if (!st) return std::nullopt;
  st.bind_text(1, run_id);
  st.bind_text(2, node_id);
  if (st.step() != SQLITE_ROW) return std::nullopt;
  return read_approval(st);
}

std::vector<ApprovalRow> SqliteStore::approvals(const std::string& run_id) {
  static const char* kSql =
      "SELECT " ORCH_APPROVAL_COLS
      " FROM approvals WHERE run_id=?1 ORDER BY requested_at, node_id, run_attempt";
  std::vector<ApprovalRow> out;
  Stmt st = db_.query(kSql);
  if (!st) return out;
  st.bind_text(1, run_id);
  while (st.next()) out.push_back(read_approval(st));
  return out;
}

bool SqliteStore::decide_approval(const std::string& run_id, const std::string& node_id,
                                  int run_attempt, const ApprovalStatusValue& status,
                                  const std::string& by, const std::string& comment, int64_t now) {
  commit();
  if (!db_.allowed("decide approval", node_id, "status", status.view(),
                   status_names(ApprovalStatus{})) ||
      !begin())
    return false;
  // One statement: the gate's attempt is checked against the run's in the same write.
  Stmt st = db_.query(
      "UPDATE approvals SET status=?3, decided_by=?4, comment=?5, decided_at=?6 "
      "WHERE run_id=?1 AND node_id=?2 AND run_attempt=?7 AND status='waiting' AND EXISTS "
      "(SELECT 1 FROM runs WHERE id=?1 AND attempts=?7 AND "
      "status IN " ORCH_RUN_UNFINISHED ")");
  if (!st) return false;
  st.bind_all(run_id, node_id, status.view(), by, comment, now, run_attempt);
  bool ok = st.step_write() == SQLITE_DONE && db_.changes() == 1;
  commit();
  return ok;
}

}  // namespace orch
