#include <signal.h>

#include <cerrno>

#include "store/sqlite/sqlite_store.h"
#include "store/sqlite/tables.h"

namespace orch {

bool SqliteStore::acquire_slot(const std::string& key, int limit, const std::string& run_id,
                               const std::string& node_id, int64_t owner_pid, int64_t now,
                               int* position) {
  if (try_acquire_slot(key, limit, run_id, node_id, owner_pid, now, position)) return true;
  return reap_slots(key) > 0 &&
         try_acquire_slot(key, limit, run_id, node_id, owner_pid, now, position);
}

bool SqliteStore::try_acquire_slot(const std::string& key, int limit, const std::string& run_id,
                                   const std::string& node_id, int64_t owner_pid, int64_t now,
                                   int* position) {
  commit();
  if (!begin()) return false;
  {
    Stmt ins = db_.query(
        "INSERT OR IGNORE INTO concurrency_slots(key, run_id, node_id, owner_pid, "
        "enqueued_at) VALUES(?1,?2,?3,?4,?5)");
    if (!ins) {
      fail("queue for concurrency key " + key);
      return false;
    }
    ins.bind_text(1, key);
    ins.bind_text(2, run_id);
    ins.bind_text(3, node_id, false);  // "" is the whole run
    ins.bind_int(4, owner_pid);
    ins.bind_int(5, now);
    if (ins.step_write() != SQLITE_DONE) fail("queue for concurrency key " + key);
  }
  // Held slots, and the waiters queued before this one.
  Stmt q = db_.query(
      "SELECT (SELECT count(*) FROM concurrency_slots WHERE key=?1 AND acquired_at IS NOT "
      "NULL), (SELECT count(*) FROM concurrency_slots WHERE key=?1 AND acquired_at IS NULL AND "
      "id < (SELECT id FROM concurrency_slots WHERE run_id=?2 AND node_id=?3)), (SELECT "
      "acquired_at IS NOT NULL FROM concurrency_slots WHERE run_id=?2 AND node_id=?3)");
  if (!q) {
    fail("read concurrency key " + key);
    return false;
  }
  q.bind_all(key, run_id, keep_empty(node_id));
  bool got = false;
  if (q.step() == SQLITE_ROW) {
    int held = q.col_int(0);
    int ahead = q.col_int(1);
    bool mine = q.col_bool(2);
    if (mine) {
      got = true;
    } else if (held + ahead < limit) {
      Stmt up = db_.query(
          "UPDATE concurrency_slots SET acquired_at=?3, owner_pid=?4 WHERE run_id=?1 AND "
          "node_id=?2");
      if (up) {
        up.bind_all(run_id, keep_empty(node_id), now, owner_pid);
        got = up.step_write() == SQLITE_DONE;
      }
    }
    if (position) *position = got ? 0 : ahead;
  }
  commit();
  return got && !failed();
}

void SqliteStore::release_slot(const std::string& run_id, const std::string& node_id) {
  static const char* kSql = "DELETE FROM concurrency_slots WHERE run_id=?1 AND node_id=?2";
  if (!begin()) return;
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_text(1, run_id);
  st.bind_text(2, node_id, false);
  if (st.step_write() != SQLITE_DONE) fail("release concurrency slot " + node_id);
}

int SqliteStore::reap_slots(const std::string& key) {
  std::vector<std::pair<int64_t, int64_t>> rows;  // id, pid
  {
    Stmt st = db_.query("SELECT id, owner_pid FROM concurrency_slots WHERE key=?1");
    if (!st) return 0;
    st.bind_text(1, key);
    while (st.next()) rows.emplace_back(st.col_int64(0), st.col_int64(1));
  }
  int n = 0;
  for (auto& [id, pid] : rows) {
    if (pid > 0 && (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM)) continue;
    if (!begin()) return n;
    Stmt del = db_.query("DELETE FROM concurrency_slots WHERE id=?1");
    if (!del) return n;
    del.bind_int(1, id);
    if (del.step_write() == SQLITE_DONE) n++;
  }
  return n;
}

}  // namespace orch
