#include "store/sqlite/sqlite_store.h"
#include "store/sqlite/tables.h"

namespace orch {

std::optional<std::string> SqliteStore::find_delivery(const std::string& pipeline,
                                                      const std::string& delivery_id) {
  static const char* kSql =
      "SELECT run_id FROM webhook_deliveries WHERE pipeline=?1 AND delivery_id=?2";
  Stmt st = db_.prepare(kSql);
  if (!st) return std::nullopt;
  st.bind_text(1, pipeline, false);
  st.bind_text(2, delivery_id, false);
  std::optional<std::string> out;
  if (st.step() == SQLITE_ROW) out = st.col_text(0);
  return out;
}

std::optional<std::string> SqliteStore::claim_delivery(const std::string& pipeline,
                                                       const std::string& delivery_id,
                                                       const std::string& run_id, int64_t now,
                                                       std::string* err) {
  // The look-up and the insert are one statement in a write transaction: no other process can
  // record the same delivery in between. On a conflict the row is the first delivery's, and
  // RETURNING names its run.
  static const char* kSql =
      "INSERT INTO webhook_deliveries(pipeline, delivery_id, run_id, received_at) "
      "VALUES(?1,?2,?3,?4) ON CONFLICT(pipeline, delivery_id) DO UPDATE SET "
      "duplicates=duplicates+1, last_duplicate_at=excluded.received_at RETURNING run_id";
  if (!begin()) {
    *err = db_.error();
    return std::nullopt;
  }
  Stmt st = db_.prepare(kSql);
  if (!st) {
    *err = db_.error();
    return std::nullopt;
  }
  st.bind_all(keep_empty(pipeline), keep_empty(delivery_id), keep_empty(run_id), now);
  int rc = st.step_write();
  if (rc == SQLITE_ROW) {
    std::string recorded = st.col_text(0);
    return recorded;
  }
  std::string msg = sqlite3_errmsg(db_.handle());
  if ((rc & 0xff) == SQLITE_CONSTRAINT) {
    // Cannot happen with the upsert above; should it all the same, a conflict on a delivery
    // is a duplicate, not a reason to stop the server.
    if (auto prev = find_delivery(pipeline, delivery_id)) return prev;
    *err = "record webhook delivery: " + msg;
    return std::nullopt;
  }
  fail("record webhook delivery");
  *err = db_.error();
  return std::nullopt;
}

void SqliteStore::release_delivery(const std::string& pipeline, const std::string& delivery_id,
                                   const std::string& run_id) {
  static const char* kSql =
      "DELETE FROM webhook_deliveries WHERE pipeline=?1 AND delivery_id=?2 AND run_id=?3";
  if (!begin()) return;
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_all(keep_empty(pipeline), keep_empty(delivery_id), keep_empty(run_id));
  if (st.step_write() != SQLITE_DONE) fail("release webhook delivery");
}

void SqliteStore::count_duplicate_delivery(const std::string& pipeline,
                                           const std::string& delivery_id, int64_t now) {
  static const char* kSql =
      "UPDATE webhook_deliveries SET duplicates=duplicates+1, last_duplicate_at=?3 "
      "WHERE pipeline=?1 AND delivery_id=?2";
  if (!begin()) return;
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_all(keep_empty(pipeline), keep_empty(delivery_id), now);
  if (st.step_write() != SQLITE_DONE) fail("count duplicate delivery");
}

}  // namespace orch
