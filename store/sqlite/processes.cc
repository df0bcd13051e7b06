#include "store/sqlite/sqlite_store.h"
#include "store/sqlite/tables.h"

namespace orch {

void SqliteStore::insert_process(const ProcessRow& p) {
  static const char* kSql =
      "INSERT OR REPLACE INTO run_processes(run_id, node_id, attempt, run_attempt, pgid, "
      "identity, command, owner_pid, started_at) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)";
  if (!begin()) return;
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_text(1, p.run_id);
  st.bind_text(2, p.node_id);
  st.bind_int(3, p.attempt);
  st.bind_int(4, p.run_attempt);
  st.bind_int(5, p.pgid);
  st.bind_text(6, p.identity);
  st.bind_text(7, p.command);
  st.bind_int(8, p.owner_pid);
  st.bind_int(9, p.started_at);
  if (st.step_write() != SQLITE_DONE) fail("record process group " + std::to_string(p.pgid));
}

void SqliteStore::end_process(const std::string& run_id, int64_t pgid, const std::string& identity,
                              const std::string& how, int64_t now) {
  static const char* kSql =
      "UPDATE run_processes SET ended_at=?4, ended_how=?5 WHERE run_id=?1 AND pgid=?2 AND "
      "identity=?3 AND ended_at IS NULL";
  if (!begin()) return;
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_text(1, run_id);
  st.bind_int(2, pgid);
  st.bind_text(3, identity);
  st.bind_int(4, now);
  st.bind_text(5, how);
  if (st.step_write() != SQLITE_DONE) fail("end process group " + std::to_string(pgid));
}

std::vector<ProcessRow> SqliteStore::open_processes(const std::string& run_id) {
  std::vector<ProcessRow> out;
  static const char* kSql =
      "SELECT run_id, node_id, attempt, run_attempt, pgid, identity, command, owner_pid, "
      "started_at FROM run_processes WHERE run_id=?1 AND ended_at IS NULL ORDER BY started_at";
  Stmt st = db_.prepare(kSql);
  if (!st) return out;
  st.bind_text(1, run_id);
  while (st.next()) {
    ProcessRow p;
    p.run_id = st.col_text(0);
    p.node_id = st.col_text(1);
    p.attempt = st.col_int(2);
    p.run_attempt = st.col_int(3);
    p.pgid = st.col_int64(4);
    p.identity = st.col_text(5);
    p.command = st.col_text(6);
    p.owner_pid = st.col_int64(7);
    p.started_at = st.col_int64(8);
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace orch
