#include "store/sqlite/sqlite_store.h"
#include "store/sqlite/tables.h"

namespace orch {

int64_t SqliteStore::insert_event(const Event& e) {
  static const char* kSql =
      "INSERT INTO events(run_id, trace_id, ts, kind, pipeline, version, node_id, attempt, data, "
      "incident_id, fingerprint, stage) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)";
  if (!begin()) return 0;
  Stmt st = db_.prepare(kSql);
  if (!st) return 0;
  st.bind_all(e.run_id, e.trace_id, e.ts, e.kind, e.pipeline, e.version, e.node,
              null_if(e.node.empty(), e.attempt), e.data, or_null(e.incident_id), e.fingerprint,
              e.stage);
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
  "incident_id, fingerprint, stage FROM events WHERE id>?1"
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
    st.read_all(e.id, e.ts, e.kind, e.run_id, e.trace_id, e.pipeline, e.version, e.node, e.attempt,
                e.data, e.incident_id, e.fingerprint, e.stage);
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
