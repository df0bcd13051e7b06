#include "store/sqlite/sqlite_store.h"
#include "store/sqlite/tables.h"

namespace orch {

int64_t SqliteStore::insert_artifact(const ArtifactRow& a) {
  static const char* kSql =
      "INSERT INTO artifacts(run_id, node_id, attempt, path, kind, size, sha256, created_at) "
      "VALUES(?1,?2,?3,?4,?5,?6,?7,?8)";
  if (!begin()) return 0;
  Stmt st = db_.prepare(kSql);
  if (!st) return 0;
  st.bind_text(1, a.run_id);
  st.bind_text(2, a.node_id);
  st.bind_int(3, a.attempt);
  st.bind_text(4, a.path);
  st.bind_text(5, a.kind);
  st.bind_int(6, a.size);
  st.bind_text(7, a.sha256);
  st.bind_int(8, a.created_at);
  if (st.step_write() != SQLITE_DONE) {
    fail("insert artifact " + a.path);
    return 0;
  }
  return db_.last_insert_rowid();
}

void SqliteStore::insert_artifact_use(int64_t artifact_id, const std::string& run_id,
                                      const std::string& node_id, int attempt, int64_t now) {
  static const char* kSql =
      "INSERT OR IGNORE INTO artifact_uses(artifact_id, run_id, node_id, attempt, used_at) "
      "VALUES(?1,?2,?3,?4,?5)";
  if (!begin()) return;
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_int(1, artifact_id);
  st.bind_text(2, run_id);
  st.bind_text(3, node_id);
  st.bind_int(4, attempt);
  st.bind_int(5, now);
  if (st.step_write() != SQLITE_DONE) fail("insert artifact use " + node_id);
}

std::vector<ArtifactRow> SqliteStore::artifacts(const std::string& run_id) {
  std::vector<ArtifactRow> out;
  Stmt st = db_.query(
      "SELECT a.id, a.run_id, a.node_id, a.attempt, a.path, a.kind, a.size, a.sha256, "
      "a.created_at, (SELECT group_concat(u.node_id || '#' || u.attempt, ' ') FROM "
      "artifact_uses u WHERE u.artifact_id = a.id) FROM artifacts a WHERE a.run_id=?1 "
      "ORDER BY a.id");
  if (!st) return out;
  st.bind_text(1, run_id);
  while (st.next()) {
    ArtifactRow a;
    a.id = st.col_int64(0);
    a.run_id = st.col_text(1);
    a.node_id = st.col_text(2);
    a.attempt = st.col_int(3);
    a.path = st.col_text(4);
    a.kind = st.col_text(5);
    a.size = st.col_int64(6);
    a.sha256 = st.col_text(7);
    a.created_at = st.col_int64(8);
    std::string uses = st.col_text(9);
    for (size_t i = 0; i < uses.size();) {
      size_t j = uses.find(' ', i);
      if (j == std::string::npos) j = uses.size();
      a.used_by.push_back(uses.substr(i, j - i));
      i = j + 1;
    }
    out.push_back(std::move(a));
  }
  return out;
}

}  // namespace orch
