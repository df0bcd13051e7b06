#include "store/sqlite/sqlite_store.h"
#include "store/sqlite/tables.h"

namespace orch {
namespace {

constexpr const char* kIncidentStatuses[] = {"firing", "resolved"};

#define ORCH_INCIDENT_COLS                                                                      \
  "id, fingerprint, title, severity, status, source, labels, annotations, starts_at, ends_at, " \
  "first_seen, last_seen, count, resolved_at, last_run_id"

IncidentRow read_incident(const Stmt& st) {
  IncidentRow r;
  st.read_all(r.id, r.fingerprint, r.title, r.severity, r.status, r.source, r.labels, r.annotations,
              r.starts_at, r.ends_at, r.first_seen, r.last_seen, r.count, r.resolved_at,
              r.last_run_id);
  return r;
}

}  // namespace

std::optional<IncidentRow> SqliteStore::incident(const std::string& fingerprint) {
  static const char* kSql = "SELECT " ORCH_INCIDENT_COLS " FROM incidents WHERE fingerprint=?1";
  Stmt st = db_.prepare(kSql);
  if (!st) return std::nullopt;
  st.bind_text(1, fingerprint);
  std::optional<IncidentRow> out;
  if (st.step() == SQLITE_ROW) out = read_incident(st);
  return out;
}

std::vector<IncidentRow> SqliteStore::record_incidents(const std::vector<IncidentIn>& in,
                                                       const std::string& run_id,
                                                       const std::string& node_id, int attempt,
                                                       int64_t now) {
  std::vector<IncidentRow> out;
  if (!begin()) return out;
  // The whole list or nothing: a failure half-way rolls back to here.
  std::string err;
  Db::Savepoint mark;
  if (!db_.savepoint("record_incidents", &mark, &err)) {
    fail("record incidents: " + err);
    return out;
  }
  auto step = [&](Stmt& st) {
    int rc = st.step_write();
    return rc == SQLITE_DONE;
  };
  for (const IncidentIn& a : in)
    if (!db_.allowed("record incident", a.fingerprint, "status", a.status, kIncidentStatuses))
      return {};
  bool ok = true;
  for (const IncidentIn& a : in) {
    bool resolved = a.status == "resolved";
    std::optional<IncidentRow> cur = incident(a.fingerprint);
    if (cur) {
      Stmt link =
          db_.prepare("SELECT created FROM incident_runs WHERE incident_id=?1 AND run_id=?2");
      if (!link) return {};
      link.bind_int(1, cur->id);
      link.bind_text(2, run_id);
      int rc = link.step();
      bool linked = rc == SQLITE_ROW;
      bool created = linked && link.col_bool(0);
      if (linked) {  // this run counted it already (a retry or a resume)
        cur->is_new = created;
        out.push_back(std::move(*cur));
        continue;
      }
      static const char* kUpd =
          "UPDATE incidents SET title=?2, severity=?3, status=?4, source=?5, labels=?6, "
          "annotations=?7, starts_at=coalesce(?8, starts_at), ends_at=?9, last_seen=?10, "
          "count=count+?11, resolved_at=CASE WHEN ?4='resolved' THEN coalesce(resolved_at, ?10) "
          "ELSE NULL END, last_run_id=?12 WHERE id=?1";
      Stmt st = db_.prepare(kUpd);
      if (!st) return {};
      // ?11: a resolution closes the incident; it is not another firing.
      st.bind_all(cur->id, a.title, a.severity, a.status, a.source, a.labels, a.annotations,
                  a.starts_at, a.ends_at, now, resolved ? 0 : 1, run_id);
      ok = step(st);
    } else {
      static const char* kIns =
          "INSERT INTO incidents(fingerprint, title, severity, status, source, labels, "
          "annotations, starts_at, ends_at, first_seen, last_seen, count, resolved_at, "
          "last_run_id) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?10,1,?11,?12)";
      Stmt st = db_.prepare(kIns);
      if (!st) return {};
      st.bind_all(a.fingerprint, a.title, a.severity, a.status, a.source, a.labels, a.annotations,
                  a.starts_at, a.ends_at, now, or_null(resolved ? now : 0), run_id);
      ok = step(st);
    }
    std::optional<IncidentRow> row = ok ? incident(a.fingerprint) : std::nullopt;
    if (!row) {
      ok = false;
      break;
    }
    row->is_new = !cur;
    static const char* kLink =
        "INSERT INTO incident_runs(incident_id, run_id, node_id, attempt, status, created, "
        "recorded_at) VALUES(?1,?2,?3,?4,?5,?6,?7)";
    Stmt st = db_.prepare(kLink);
    if (!st) return {};
    st.bind_all(row->id, run_id, node_id, attempt, a.status, row->is_new ? 1 : 0, now);
    if (!(ok = step(st))) break;
    out.push_back(std::move(*row));
  }
  if (!ok) {
    std::string what = "record incident: " + std::string(sqlite3_errmsg(db_.handle()));
    db_.rollback_to("record_incidents", mark);
    fail(what);
    return {};
  }
  db_.release("record_incidents");
  return out;
}

void SqliteStore::set_run_incident(const std::string& run_id, int64_t incident_id,
                                   const std::string& fingerprint) {
  static const char* kSql =
      "UPDATE runs SET incident_id=?2, fingerprint=?3 WHERE id=?1 AND incident_id IS NULL";
  if (!begin()) return;
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_all(run_id, incident_id, fingerprint);
  if (st.step_write() != SQLITE_DONE) fail("set run incident " + run_id);
}

}  // namespace orch
