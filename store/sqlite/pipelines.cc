#include "store/sqlite/sqlite_store.h"
#include "store/sqlite/tables.h"

namespace orch {
namespace {

constexpr const char* kLoadOutcomes[] = {"loaded", "unchanged", "invalid", "removed"};

}  // namespace

std::optional<DefinitionRow> SqliteStore::upsert_definition(const std::string& name,
                                                            const std::string& sha256,
                                                            const std::string& source,
                                                            const std::string& path, int64_t now) {
  static const char* kFind =
      "SELECT id, version, loaded_at FROM definitions WHERE name=?1 AND sha256=?2";
  static const char* kIns =
      "INSERT INTO definitions(name, version, sha256, source, path, loaded_at) VALUES(?1, "
      "(SELECT coalesce(max(version),0)+1 FROM definitions WHERE name=?1), ?2, ?3, ?4, ?5) "
      "RETURNING id, version";
  // Definitions are never changed or deleted once stored: a (name, sha256) seen once keeps its
  // id and version (every run of a pipeline asks again).
  std::string key = name + '\0' + sha256;
  if (auto it = definitions_seen_.find(key); it != definitions_seen_.end()) return it->second;
  if (!begin()) return std::nullopt;
  DefinitionRow d;
  d.name = name;
  d.sha256 = sha256;
  d.path = path;
  {
    Stmt find = db_.prepare(kFind);
    if (!find) return std::nullopt;
    find.bind_text(1, name);
    find.bind_text(2, sha256);
    if (find.step() == SQLITE_ROW) {
      find.read_all(d.id, d.version, d.loaded_at);
      definitions_seen_[key] = d;
      return d;
    }
  }
  Stmt st = db_.prepare(kIns);
  if (!st) return std::nullopt;
  st.bind_all(name, sha256, keep_empty(source), path, now);
  if (st.step_write() != SQLITE_ROW) {
    fail("insert definition");
    return std::nullopt;
  }
  d.id = st.col_int64(0);
  d.version = st.col_int(1);
  d.loaded_at = now;
  return d;
}

std::optional<std::string> SqliteStore::definition_source(const std::string& name, int version,
                                                          std::string* path) {
  Stmt st = db_.query("SELECT source, path FROM definitions WHERE name=?1 AND version=?2");
  if (!st) return std::nullopt;
  st.bind_text(1, name);
  st.bind_int(2, version);
  if (st.step() != SQLITE_ROW) return std::nullopt;
  if (path) *path = st.col_text(1);
  return st.col_text(0);
}

std::vector<DefinitionRow> SqliteStore::definitions(const std::string& name) {
  const char* sql =
      "SELECT id, name, version, sha256, path, loaded_at FROM definitions WHERE name=?1 "
      "ORDER BY version DESC";
  std::vector<DefinitionRow> out;
  Stmt st = db_.query(sql);
  if (!st) return out;
  st.bind_text(1, name, false);
  while (st.next()) {
    DefinitionRow d;
    st.read_all(d.id, d.name, d.version, d.sha256, d.path, d.loaded_at);
    out.push_back(std::move(d));
  }
  return out;
}

void SqliteStore::insert_load(const LoadRow& l) {
  static const char* kSql =
      "INSERT INTO pipeline_loads(name, path, at, outcome, version, sha256, error) "
      "VALUES(?1,?2,?3,?4,?5,?6,?7)";
  if (!db_.allowed("insert load of", l.path, "outcome", l.outcome, kLoadOutcomes) || !begin())
    return;
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_all(l.name, keep_empty(l.path), l.at, keep_empty(l.outcome), or_null(l.version), l.sha256,
              l.error);
  if (st.step_write() != SQLITE_DONE) fail("insert pipeline load");
}

std::vector<LoadRow> SqliteStore::loads(const std::string& name, const std::string& path,
                                        int limit) {
  static const char* kByPath =
      "SELECT id, name, path, at, outcome, version, sha256, error FROM pipeline_loads WHERE "
      "path=?1 ORDER BY id DESC LIMIT ?3";
  static const char* kByName =
      "SELECT id, name, path, at, outcome, version, sha256, error FROM pipeline_loads WHERE "
      "(name=?2 OR path=?1) ORDER BY id DESC LIMIT ?3";
  std::vector<LoadRow> out;
  Stmt st = db_.query(name.empty() ? kByPath : kByName);
  if (!st) return out;
  st.bind_text(1, path, false);
  if (!name.empty()) st.bind_text(2, name, false);
  st.bind_int(3, limit > 0 ? limit : -1);
  while (st.next()) {
    LoadRow l;
    st.read_all(l.id, l.name, l.path, l.at, l.outcome, l.version, l.sha256, l.error);
    out.push_back(std::move(l));
  }
  return out;
}

int64_t SqliteStore::schedule_last_fire(const std::string& pipeline, const std::string& schedule) {
  static const char* kSql =
      "SELECT last_fire_at FROM schedule_fires WHERE pipeline=?1 AND schedule=?2";
  Stmt st = db_.prepare(kSql);
  if (!st) return 0;
  st.bind_text(1, pipeline, false);
  st.bind_text(2, schedule, false);
  int64_t v = st.step() == SQLITE_ROW ? st.col_int64(0) : 0;
  return v;
}

void SqliteStore::set_schedule_fire(const std::string& pipeline, const std::string& schedule,
                                    int64_t at) {
  static const char* kSql =
      "INSERT INTO schedule_fires(pipeline, schedule, last_fire_at) VALUES(?1,?2,?3) "
      "ON CONFLICT(pipeline, schedule) DO UPDATE SET last_fire_at=excluded.last_fire_at";
  if (!begin()) return;
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_all(keep_empty(pipeline), keep_empty(schedule), at);
  if (st.step_write() != SQLITE_DONE) fail("record schedule fire");
}

}  // namespace orch
