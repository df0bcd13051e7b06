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
  st.bind_all(p.run_id, p.node_id, p.attempt, p.run_attempt, p.pgid, p.identity, p.command,
              p.owner_pid, p.started_at);
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
  st.bind_all(run_id, pgid, identity, now, how);
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
    st.read_all(p.run_id, p.node_id, p.attempt, p.run_attempt, p.pgid, p.identity, p.command,
                p.owner_pid, p.started_at);
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace orch
