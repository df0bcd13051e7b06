// Opening the SQLite store, its group commit and what a full disk holds (the core, db.cc, does
// the work; this adds what the tables keep in memory across a transaction).
#include "store/sqlite/sqlite_store.h"

#include "store/sqlite/schema.h"

namespace orch {

std::unique_ptr<SqliteStore> SqliteStore::open(const std::string& path, const StoreOptions& opts,
                                               std::string* err) {
  std::unique_ptr<SqliteStore> s(new SqliteStore());
  if (!s->db_.open(path, opts, err)) return nullptr;
  if (s->db_.schema_version() > 0) {
    // Node rows are numbered in the order they were written, across runs and processes.
    Stmt st = s->db_.query("SELECT coalesce(max(seq), 0) FROM node_runs");
    int64_t seq = st && st.next() ? st.col_int64(0) : 0;
    s->node_seq_ = seq > 0 ? static_cast<uint64_t>(seq) : 0;
  }
  return s;
}

std::unique_ptr<Store> open_store(const std::string& path, const StoreOptions& opts,
                                  std::string* err) {
  return SqliteStore::open(path, opts, err);
}

std::unique_ptr<Store> Store::open(const std::string& path, const StoreOptions& opts,
                                   std::string* err) {
  return open_store(path, opts, err);
}

SqliteStore::~SqliteStore() {
  if (db_.in_transaction()) commit();
}

const std::string& SqliteStore::path() const {
  return db_.path();
}
int SqliteStore::schema_version() const {
  return db_.schema_version();
}
int SqliteStore::latest_schema_version() const {
  return static_cast<int>(store_migrations().size());
}
std::string SqliteStore::check_integrity(bool full) {
  // At most 10 problems: a badly damaged file can report thousands.
  sqlite3* db = db_.handle();
  sqlite3_stmt* st = nullptr;
  int rc = sqlite3_prepare_v2(db, full ? "PRAGMA integrity_check(10)" : "PRAGMA quick_check(10)",
                              -1, &st, nullptr);
  std::string out;
  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char* t = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    std::string line = t ? t : "";
    for (size_t i = 0; (i = line.find('\n', i)) != std::string::npos;) line.replace(i, 1, "; ");
    if (line != "ok") out += (out.empty() ? "" : "; ") + line;
    rc = SQLITE_OK;
  }
  if (rc != SQLITE_DONE && rc != SQLITE_OK)
    out += std::string(out.empty() ? "" : "; ") + "the check stopped: " + sqlite3_errmsg(db);
  sqlite3_finalize(st);
  return out;
}
bool SqliteStore::failed() const {
  return db_.failed();
}
const std::string& SqliteStore::error() const {
  return db_.error();
}
bool SqliteStore::in_transaction() const {
  return db_.in_transaction();
}
uint64_t SqliteStore::commits() const {
  return db_.commits();
}
bool SqliteStore::full() const {
  return db_.full();
}
uint64_t SqliteStore::full_errors() const {
  return db_.full_errors();
}
int64_t SqliteStore::full_since() const {
  return db_.full_since();
}
size_t SqliteStore::held_writes() const {
  return db_.held_writes();
}
bool SqliteStore::failed_disk_full() const {
  return db_.failed_disk_full();
}

void SqliteStore::set_hold_when_full(bool on) {
  db_.set_hold_when_full(on);
}

void SqliteStore::commit() {
  if (!db_.in_transaction()) return;
  flush_attempts();  // attempts still running are on record once committed
  switch (db_.commit()) {
    case Db::Commit::committed:
      if (on_commit) on_commit();
      break;
    case Db::Commit::failed:
      // What this process holds in memory may hold what the rollback took back. (A full disk
      // holds the writes: then it stays as it is.)
      definitions_seen_.clear();
      pending_attempts_.clear();
      break;
    case Db::Commit::held:
    case Db::Commit::nothing:
      break;
  }
}

bool SqliteStore::retry_full() {
  if (!db_.full()) return true;
  if (!db_.in_transaction() && !db_.begin()) return false;
  commit();
  return !db_.full() && !failed();
}
}  // namespace orch
