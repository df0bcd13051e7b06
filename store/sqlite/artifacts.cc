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
  st.bind_all(a.run_id, a.node_id, a.attempt, a.path, a.kind, a.size, a.sha256, a.created_at);
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
  st.bind_all(artifact_id, run_id, node_id, attempt, now);
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
    st.read_all(a.id, a.run_id, a.node_id, a.attempt, a.path, a.kind, a.size, a.sha256,
                a.created_at);
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
