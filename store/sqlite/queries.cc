#include <array>
#include <cctype>

#include "store/sqlite/sqlite_store.h"
#include "store/sqlite/tables.h"

namespace orch {

std::vector<RunRow> SqliteStore::unfinished_runs() {
  static const char* kSql =
      "SELECT " ORCH_RUN_COLS " FROM runs WHERE status IN " ORCH_RUN_UNFINISHED
      " ORDER BY created_at, id";
  std::vector<RunRow> out;
  Stmt st = db_.query(kSql);
  if (!st) return out;
  while (st.next()) out.push_back(read_run(st));
  return out;
}

std::optional<RunRow> SqliteStore::find_by_idempotency_key(const std::string& pipeline,
                                                           const std::string& key) {
  static const char* kSql =
      "SELECT " ORCH_RUN_COLS " FROM runs WHERE pipeline=?1 AND idempotency_key=?2";
  Stmt st = db_.query(kSql);
  if (!st) return std::nullopt;
  st.bind_text(1, pipeline);
  st.bind_text(2, key);
  if (st.step() != SQLITE_ROW) return std::nullopt;
  return read_run(st);
}

std::optional<RunRow> SqliteStore::child_run(const std::string& parent_run,
                                             const std::string& parent_node) {
  static const char* kSql = "SELECT " ORCH_RUN_COLS
                            " FROM runs WHERE parent_run=?1 AND parent_node=?2 ORDER BY "
                            "created_at DESC, id DESC LIMIT 1";
  Stmt st = db_.query(kSql);
  if (!st) return std::nullopt;
  st.bind_text(1, parent_run);
  st.bind_text(2, parent_node);
  if (st.step() != SQLITE_ROW) return std::nullopt;
  return read_run(st);
}

std::vector<RunRow> SqliteStore::child_runs(const std::string& parent_run) {
  static const char* kSql =
      "SELECT " ORCH_RUN_COLS " FROM runs WHERE parent_run=?1 ORDER BY created_at, id";
  std::vector<RunRow> out;
  Stmt st = db_.query(kSql);
  if (!st) return out;
  st.bind_text(1, parent_run);
  while (st.next()) out.push_back(read_run(st));
  return out;
}

std::vector<RunRow> SqliteStore::list_runs(const RunFilter& f) {
  // One SQL text per combination of the filters given, each built once (the cache is keyed by
  // the text's address).
  static const char* const kConds[] = {" AND status=?1",
                                       " AND pipeline=?2",
                                       " AND source=?3",
                                       " AND created_at>=?4",
                                       " AND created_at<?5",
                                       " AND (created_at<?6 OR "
                                       "(created_at=?6 AND id<?7))",
                                       " AND stage=?9"};
  static const std::array<std::string, 128> kVariants = [&] {
    std::array<std::string, 128> v;
    for (size_t mask = 0; mask < v.size(); mask++) {
      v[mask] = "SELECT " ORCH_RUN_COLS " FROM runs WHERE 1=1";
      for (size_t i = 0; i < 7; i++)
        if (mask & (1u << i)) v[mask] += kConds[i];
      v[mask] += " ORDER BY created_at DESC, id DESC LIMIT ?8";
    }
    return v;
  }();
  size_t mask = (f.status.empty() ? 0 : 1) | (f.pipeline.empty() ? 0 : 2) |
                (f.source.empty() ? 0 : 4) | (f.since_ms > 0 ? 8 : 0) | (f.until_ms > 0 ? 16 : 0) |
                (f.before_created_at > 0 ? 32 : 0) | (f.stage.empty() ? 0 : 64);
  std::vector<RunRow> out;
  Stmt st = db_.query(kVariants[mask].c_str());
  if (!st) return out;
  if (!f.status.empty()) st.bind_text(1, f.status);
  if (!f.pipeline.empty()) st.bind_text(2, f.pipeline);
  if (!f.source.empty()) st.bind_text(3, f.source);
  if (f.since_ms > 0) st.bind_int(4, f.since_ms);
  if (f.until_ms > 0) st.bind_int(5, f.until_ms);
  if (f.before_created_at > 0) {
    st.bind_int(6, f.before_created_at);
    st.bind_text(7, f.before_id, false);
  }
  st.bind_int(8, f.limit > 0 ? f.limit : -1);
  if (!f.stage.empty()) st.bind_text(9, f.stage);
  while (st.next()) out.push_back(read_run(st));
  return out;
}

std::optional<RunRow> SqliteStore::find_run(const std::string& id_or_prefix, std::string* err) {
  static const char* kSql =
      "SELECT " ORCH_RUN_COLS " FROM runs WHERE id >= ?1 AND id < ?1 || 'zzzz' ORDER BY id LIMIT 2";
  std::string e;
  Stmt st = db_.query(kSql, &e);
  if (!st) {
    *err = e;
    return std::nullopt;
  }
  std::string key = id_or_prefix;
  for (auto& c : key) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
  st.bind_text(1, key, false);
  std::vector<RunRow> rows;
  while (st.next()) {
    RunRow r = read_run(st);
    if (r.id.compare(0, key.size(), key) == 0) rows.push_back(std::move(r));
  }
  if (rows.empty()) {
    *err = "no run with id '" + id_or_prefix + "' in " + path();
    return std::nullopt;
  }
  if (rows.size() > 1 && rows[0].id != key) {
    *err = "run id prefix '" + id_or_prefix + "' is ambiguous; give more characters";
    return std::nullopt;
  }
  return rows[0];
}

std::vector<std::pair<std::string, int64_t>> SqliteStore::count_runs_by_status() {
  static const char* kSql = "SELECT status, count(*) FROM runs GROUP BY status";
  std::vector<std::pair<std::string, int64_t>> out;
  Stmt st = db_.prepare(kSql);
  if (!st) return out;
  while (st.next()) out.emplace_back(st.col_text(0), st.col_int64(1));
  return out;
}

}  // namespace orch
