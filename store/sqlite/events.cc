#include "store/sqlite/sqlite_store.h"
#include "store/sqlite/tables.h"

namespace orch {

int64_t SqliteStore::insert_event(const Event& e) {
  static const char* kSql =
      "INSERT INTO events(run_id, trace_id, ts, kind, pipeline, version, node_id, attempt, data, "
      "incident_id, fingerprint) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)";
  if (!begin()) return 0;
  Stmt st = db_.prepare(kSql);
  if (!st) return 0;
  st.bind_text(1, e.run_id);
  st.bind_text(2, e.trace_id);
  st.bind_int(3, e.ts);
  st.bind_text(4, e.kind);
  st.bind_text(5, e.pipeline);
  st.bind_int(6, e.version);
  st.bind_text(7, e.node);
  if (e.node.empty())
    st.bind_null(8);
  else
    st.bind_int(8, e.attempt);
  st.bind_text(9, e.data);
  st.bind_int(10, e.incident_id, true);
  st.bind_text(11, e.fingerprint);
  if (st.step_write() != SQLITE_DONE) {
    fail("insert event " + e.kind);
    return 0;
  }
  return db_.last_insert_rowid();
}

std::vector<Event> SqliteStore::events_after(int64_t after_id, const std::string& run_id,
                                             const std::string& pipeline, int limit) {
#define ORCH_EVENTS_AFTER                                                              \
  "SELECT id, ts, kind, run_id, trace_id, pipeline, version, node_id, attempt, data, " \
  "incident_id, fingerprint FROM events WHERE id>?1"
  // Indexed by (run given) + 2 * (pipeline given).
  static const char* const kSql[] = {
      ORCH_EVENTS_AFTER " ORDER BY id LIMIT ?4",
      ORCH_EVENTS_AFTER " AND run_id=?2 ORDER BY id LIMIT ?4",
      ORCH_EVENTS_AFTER " AND pipeline=?3 ORDER BY id LIMIT ?4",
      ORCH_EVENTS_AFTER " AND run_id=?2 AND pipeline=?3 ORDER BY id LIMIT ?4",
  };
#undef ORCH_EVENTS_AFTER
  std::vector<Event> out;
  Stmt st = db_.query(kSql[(run_id.empty() ? 0 : 1) + (pipeline.empty() ? 0 : 2)]);
  if (!st) return out;
  st.bind_int(1, after_id);
  if (!run_id.empty()) st.bind_text(2, run_id, false);
  if (!pipeline.empty()) st.bind_text(3, pipeline, false);
  st.bind_int(4, limit > 0 ? limit : -1);
  while (st.next()) {
    Event e;
    e.id = st.col_int64(0);
    e.ts = st.col_int64(1);
    e.kind = st.col_text(2);
    e.run_id = st.col_text(3);
    e.trace_id = st.col_text(4);
    e.pipeline = st.col_text(5);
    e.version = st.col_int(6);
    e.node = st.col_text(7);
    e.attempt = st.col_int(8);
    e.data = st.col_text(9);
    e.incident_id = st.col_int64(10);
    e.fingerprint = st.col_text(11);
    out.push_back(std::move(e));
  }
  return out;
}

int64_t SqliteStore::last_event_id() {
  static const char* kSql = "SELECT coalesce(max(id), 0) FROM events";
  Stmt st = db_.prepare(kSql);
  if (!st) return 0;
  int64_t v = st.step() == SQLITE_ROW ? st.col_int64(0) : 0;
  return v;
}

}  // namespace orch
