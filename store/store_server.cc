// The store's tables for orchrun serve: webhook deliveries, pipeline loads, schedule fires,
// and the reads the API and the event stream need.
#include "store/sql_util.h"
#include "store/store.h"

namespace orch {

std::optional<std::string> Store::find_delivery(const std::string& pipeline,
                                                const std::string& delivery_id) {
  static const char* kSql =
      "SELECT run_id FROM webhook_deliveries WHERE pipeline=?1 AND delivery_id=?2";
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return std::nullopt;
  bind_text(st, 1, pipeline, false);
  bind_text(st, 2, delivery_id, false);
  std::optional<std::string> out;
  if (sqlite3_step(st) == SQLITE_ROW) out = col_text(st, 0);
  sqlite3_reset(st);
  return out;
}

std::optional<std::string> Store::claim_delivery(const std::string& pipeline,
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
    *err = error_;
    return std::nullopt;
  }
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) {
    *err = error_;
    return std::nullopt;
  }
  bind_text(st, 1, pipeline, false);
  bind_text(st, 2, delivery_id, false);
  bind_text(st, 3, run_id, false);
  bind_int(st, 4, now);
  int rc = step_write(st);
  if (rc == SQLITE_ROW) {
    std::string recorded = col_text(st, 0);
    sqlite3_reset(st);
    return recorded;
  }
  std::string msg = sqlite3_errmsg(db_);
  sqlite3_reset(st);
  if ((rc & 0xff) == SQLITE_CONSTRAINT) {
    // Cannot happen with the upsert above; should it all the same, a conflict on a delivery
    // is a duplicate, not a reason to stop the server.
    if (auto prev = find_delivery(pipeline, delivery_id)) return prev;
    *err = "record webhook delivery: " + msg;
    return std::nullopt;
  }
  fail("record webhook delivery");
  *err = error_;
  return std::nullopt;
}

void Store::release_delivery(const std::string& pipeline, const std::string& delivery_id,
                             const std::string& run_id) {
  static const char* kSql =
      "DELETE FROM webhook_deliveries WHERE pipeline=?1 AND delivery_id=?2 AND run_id=?3";
  if (!begin()) return;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_text(st, 1, pipeline, false);
  bind_text(st, 2, delivery_id, false);
  bind_text(st, 3, run_id, false);
  if (step_write(st) != SQLITE_DONE) fail("release webhook delivery");
}

void Store::count_duplicate_delivery(const std::string& pipeline, const std::string& delivery_id,
                                     int64_t now) {
  static const char* kSql =
      "UPDATE webhook_deliveries SET duplicates=duplicates+1, last_duplicate_at=?3 "
      "WHERE pipeline=?1 AND delivery_id=?2";
  if (!begin()) return;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_text(st, 1, pipeline, false);
  bind_text(st, 2, delivery_id, false);
  bind_int(st, 3, now);
  if (step_write(st) != SQLITE_DONE) fail("count duplicate delivery");
}

void Store::insert_load(const LoadRow& l) {
  static const char* kSql =
      "INSERT INTO pipeline_loads(name, path, at, outcome, version, sha256, error) "
      "VALUES(?1,?2,?3,?4,?5,?6,?7)";
  if (!allowed("insert load of", l.path, "outcome", l.outcome, kLoadOutcomes) || !begin()) return;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_text(st, 1, l.name);
  bind_text(st, 2, l.path, false);
  bind_int(st, 3, l.at);
  bind_text(st, 4, l.outcome, false);
  bind_int(st, 5, l.version, true);
  bind_text(st, 6, l.sha256);
  bind_text(st, 7, l.error);
  if (step_write(st) != SQLITE_DONE) fail("insert pipeline load");
}

std::vector<LoadRow> Store::loads(const std::string& name, const std::string& path, int limit) {
  std::string sql =
      "SELECT id, name, path, at, outcome, version, sha256, error FROM pipeline_loads WHERE ";
  sql += name.empty() ? "path=?1" : "(name=?2 OR path=?1)";
  sql += " ORDER BY id DESC LIMIT ?3";
  std::vector<LoadRow> out;
  std::string err;
  CachedStmt st = cached(sql.c_str(), &err);
  if (!st) return out;
  bind_text(st.get(), 1, path, false);
  if (!name.empty()) bind_text(st.get(), 2, name, false);
  bind_int(st.get(), 3, limit > 0 ? limit : -1);
  while (sqlite3_step(st.get()) == SQLITE_ROW) {
    LoadRow l;
    l.id = sqlite3_column_int64(st.get(), 0);
    l.name = col_text(st.get(), 1);
    l.path = col_text(st.get(), 2);
    l.at = sqlite3_column_int64(st.get(), 3);
    l.outcome = col_text(st.get(), 4);
    l.version = sqlite3_column_int(st.get(), 5);
    l.sha256 = col_text(st.get(), 6);
    l.error = col_text(st.get(), 7);
    out.push_back(std::move(l));
  }
  return out;
}

std::vector<DefinitionRow> Store::definitions(const std::string& name) {
  const char* sql =
      "SELECT id, name, version, sha256, path, loaded_at FROM definitions WHERE name=?1 "
      "ORDER BY version DESC";
  std::vector<DefinitionRow> out;
  std::string err;
  CachedStmt st = cached(sql, &err);
  if (!st) return out;
  bind_text(st.get(), 1, name, false);
  while (sqlite3_step(st.get()) == SQLITE_ROW) {
    DefinitionRow d;
    d.id = sqlite3_column_int64(st.get(), 0);
    d.name = col_text(st.get(), 1);
    d.version = sqlite3_column_int(st.get(), 2);
    d.sha256 = col_text(st.get(), 3);
    d.path = col_text(st.get(), 4);
    d.loaded_at = sqlite3_column_int64(st.get(), 5);
    out.push_back(std::move(d));
  }
  return out;
}

int64_t Store::schedule_last_fire(const std::string& pipeline, const std::string& schedule) {
  static const char* kSql =
      "SELECT last_fire_at FROM schedule_fires WHERE pipeline=?1 AND schedule=?2";
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return 0;
  bind_text(st, 1, pipeline, false);
  bind_text(st, 2, schedule, false);
  int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  sqlite3_reset(st);
  return v;
}

void Store::set_schedule_fire(const std::string& pipeline, const std::string& schedule,
                              int64_t at) {
  static const char* kSql =
      "INSERT INTO schedule_fires(pipeline, schedule, last_fire_at) VALUES(?1,?2,?3) "
      "ON CONFLICT(pipeline, schedule) DO UPDATE SET last_fire_at=excluded.last_fire_at";
  if (!begin()) return;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_text(st, 1, pipeline, false);
  bind_text(st, 2, schedule, false);
  bind_int(st, 3, at);
  if (step_write(st) != SQLITE_DONE) fail("record schedule fire");
}

std::vector<Event> Store::events_after(int64_t after_id, const std::string& run_id,
                                       const std::string& pipeline, int limit) {
  std::string sql =
      "SELECT id, ts, kind, run_id, trace_id, pipeline, version, node_id, attempt, data, "
      "incident_id, fingerprint FROM events WHERE id>?1";
  if (!run_id.empty()) sql += " AND run_id=?2";
  if (!pipeline.empty()) sql += " AND pipeline=?3";
  sql += " ORDER BY id LIMIT ?4";
  std::vector<Event> out;
  std::string err;
  CachedStmt st = cached(sql.c_str(), &err);
  if (!st) return out;
  bind_int(st.get(), 1, after_id);
  if (!run_id.empty()) bind_text(st.get(), 2, run_id, false);
  if (!pipeline.empty()) bind_text(st.get(), 3, pipeline, false);
  bind_int(st.get(), 4, limit > 0 ? limit : -1);
  while (sqlite3_step(st.get()) == SQLITE_ROW) {
    Event e;
    e.id = sqlite3_column_int64(st.get(), 0);
    e.ts = sqlite3_column_int64(st.get(), 1);
    e.kind = col_text(st.get(), 2);
    e.run_id = col_text(st.get(), 3);
    e.trace_id = col_text(st.get(), 4);
    e.pipeline = col_text(st.get(), 5);
    e.version = sqlite3_column_int(st.get(), 6);
    e.node = col_text(st.get(), 7);
    e.attempt = sqlite3_column_int(st.get(), 8);
    e.data = col_text(st.get(), 9);
    e.incident_id = sqlite3_column_int64(st.get(), 10);
    e.fingerprint = col_text(st.get(), 11);
    out.push_back(std::move(e));
  }
  return out;
}

int64_t Store::last_event_id() {
  static const char* kSql = "SELECT coalesce(max(id), 0) FROM events";
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return 0;
  int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  sqlite3_reset(st);
  return v;
}

std::vector<std::pair<std::string, int64_t>> Store::count_runs_by_status() {
  static const char* kSql = "SELECT status, count(*) FROM runs GROUP BY status";
  std::vector<std::pair<std::string, int64_t>> out;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return out;
  while (sqlite3_step(st) == SQLITE_ROW)
    out.emplace_back(col_text(st, 0), sqlite3_column_int64(st, 1));
  sqlite3_reset(st);
  return out;
}

}  // namespace orch
