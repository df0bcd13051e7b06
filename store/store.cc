#include "store/store.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/ids.h"
#include "drivers/procs.h"
#include "store/sql_util.h"

namespace orch {
namespace {

bool exec_sql(sqlite3* db, const char* sql, std::string* err) {
  char* msg = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
    *err = msg ? msg : sqlite3_errmsg(db);
    sqlite3_free(msg);
    return false;
  }
  return true;
}

int64_t pragma_int(sqlite3* db, const char* sql, std::string* err) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) {
    *err = sqlite3_errmsg(db);
    return -1;
  }
  int64_t v = 0;
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  else if (rc != SQLITE_DONE) {
    *err = sqlite3_errmsg(db);
    v = -1;
  }
  sqlite3_finalize(st);
  return v;
}

// SQLITE_FULL, or an I/O error whose cause was a full disk or a quota (extending the -shm file
// when the database is opened, a file that cannot grow).
bool is_disk_full(sqlite3* db, int rc) {
  if ((rc & 0xff) == SQLITE_FULL) return true;
  if ((rc & 0xff) != SQLITE_IOERR) return false;
  int e = sqlite3_system_errno(db);
  return e == ENOSPC || e == EDQUOT;
}

}  // namespace

const char* const kRunCols =
    "id, trace_id, pipeline, version, status, source, environment, input, output, error_type, "
    "error_message, error_node, retryable, attempts, created_at, started_at, finished_at, "
    "parent_run, idempotency_key, owner_pid, cancel_requested_at, cancel_reason, parent_node, "
    "workspace, incident_id, fingerprint, owner_start";

RunRow read_run(sqlite3_stmt* st) {
  RunRow r;
  r.id = col_text(st, 0);
  r.trace_id = col_text(st, 1);
  r.pipeline = col_text(st, 2);
  r.version = sqlite3_column_int(st, 3);
  r.status = col_text(st, 4);
  r.source = col_text(st, 5);
  r.environment = col_text(st, 6);
  r.input = col_text(st, 7);
  r.output = col_text(st, 8);
  r.error_type = col_text(st, 9);
  r.error_message = col_text(st, 10);
  r.error_node = col_text(st, 11);
  r.retryable = sqlite3_column_int(st, 12) != 0;
  r.attempts = sqlite3_column_int(st, 13);
  r.created_at = sqlite3_column_int64(st, 14);
  r.started_at = sqlite3_column_int64(st, 15);
  r.finished_at = sqlite3_column_int64(st, 16);
  r.parent_run = col_text(st, 17);
  r.idempotency_key = col_text(st, 18);
  r.owner_pid = sqlite3_column_int64(st, 19);
  r.cancel_requested_at = sqlite3_column_int64(st, 20);
  r.cancel_reason = col_text(st, 21);
  r.parent_node = col_text(st, 22);
  r.workspace = col_text(st, 23);
  r.incident_id = sqlite3_column_int64(st, 24);
  r.fingerprint = col_text(st, 25);
  r.owner_start = col_text(st, 26);
  return r;
}

Event run_event(const RunRow& run, const char* kind, int64_t ts, std::string data) {
  Event e;
  e.ts = ts;
  e.kind = kind;
  e.run_id = run.id;
  e.trace_id = run.trace_id;
  e.pipeline = run.pipeline;
  e.version = run.version;
  e.incident_id = run.incident_id;  // later events of a run carry its incident, like the rest
  e.fingerprint = run.fingerprint;
  e.data = std::move(data);
  return e;
}

Stmt::Stmt(sqlite3* db, const char* sql, std::string* err) {
  if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st_, nullptr) != SQLITE_OK) {
    *err = std::string(sqlite3_errmsg(db)) + " in: " + sql;
    st_ = nullptr;
  }
}
Stmt::~Stmt() {
  if (st_) sqlite3_finalize(st_);
}

std::unique_ptr<Store> Store::open(const std::string& path, const StoreOptions& opts,
                                   std::string* err) {
  std::unique_ptr<Store> s(new Store());
  s->path_ = path;
  std::error_code ec;
  auto parent = std::filesystem::path(path).parent_path();
  if (!opts.read_only && !parent.empty() && !std::filesystem::exists(parent, ec)) {
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      *err = "cannot create directory " + parent.string() + " for database: " + ec.message();
      return nullptr;
    }
    // The store holds inputs, outputs and logs: the directory it made is its owner's only.
    std::filesystem::permissions(parent, std::filesystem::perms::owner_all, ec);
  }
  // A new database file is created 0600 whatever the umask (SQLite would make it 0644 under
  // umask 022); SQLite gives its -wal and -shm files the database file's mode. An existing file
  // keeps the mode its operator gave it.
  if (!opts.read_only && path != ":memory:" && path.rfind("file:", 0) != 0) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) ::close(fd);
  }
  int flags = opts.read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (sqlite3_open_v2(path.c_str(), &s->db_, flags | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    *err =
        "cannot open database " + path + ": " + (s->db_ ? sqlite3_errmsg(s->db_) : "out of memory");
    return nullptr;
  }
  sqlite3_extended_result_codes(s->db_, 1);
  sqlite3_busy_timeout(s->db_, 5000);
  std::string e;
  // One statement, one snapshot: the application id and the table count must be read together,
  // or a concurrent first open that commits its migration between two reads looks foreign.
  // Reading the schema is also the first thing that fails on a file that is not a database.
  int64_t app_id = -1, tables = -1;
  bool full = false;
  for (int attempt = 0; attempt < 200; attempt++) {
    sqlite3_stmt* st = nullptr;
    int rc = sqlite3_prepare_v2(s->db_,
                                "SELECT (SELECT application_id FROM pragma_application_id), "
                                "(SELECT count(*) FROM sqlite_master)",
                                -1, &st, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      app_id = sqlite3_column_int64(st, 0);
      tables = sqlite3_column_int64(st, 1);
    } else {
      e = sqlite3_errmsg(s->db_);
      full = is_disk_full(s->db_, sqlite3_extended_errcode(s->db_));
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW || ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)) break;
    usleep(10000);
  }
  if (app_id < 0 || tables < 0) {
    // Opening a WAL database creates its -shm file: on a full disk that is the first failure.
    *err = full ? "cannot open database " + path + ": disk full (" + e + ")"
                : path + ": not an orchrun database (" + e + ")";
    return nullptr;
  }
  if (tables > 0 && app_id != kApplicationId) {
    *err = path +
           ": not an orchrun database (it is a SQLite file with other tables; "
           "refusing to modify it)";
    return nullptr;
  }
  if (!opts.read_only) {
    const char* setup = opts.synchronous_full
                            ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                            : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;";
    // Switching to WAL takes an exclusive lock and may answer BUSY without waiting on the
    // busy handler while another process opens the same new file: retry, bounded.
    bool ok = false;
    for (int attempt = 0; attempt < 200 && !ok; attempt++) {
      ok = exec_sql(s->db_, setup, &e);
      if (!ok && e.find("locked") == std::string::npos && e.find("busy") == std::string::npos)
        break;
      if (!ok) usleep(10000);
    }
    if (!ok) {
      *err = path + ": " + e;
      return nullptr;
    }
    if (!s->migrate(&e)) {
      *err = path + ": " + e;
      return nullptr;
    }
    // The CHECK(status IN (...)) constraints of the schema guard the tables against other
    // writers (a person with the sqlite3 shell, another tool). orchrun's own statuses are
    // constants of its code or validated before they reach the store, and SQLite evaluates
    // such an IN list by building a temporary B-tree on every row written: about 4% of the
    // CPU of a webhook-triggered run. This connection skips them; every other one keeps them.
    exec_sql(s->db_, "PRAGMA ignore_check_constraints=ON;", &e);
  } else {
    s->schema_version_ = static_cast<int>(pragma_int(s->db_, "PRAGMA user_version", &e));
  }
  if (s->schema_version_ > 0) {
    // Node rows are numbered in the order they were written, across runs and processes.
    int64_t seq = pragma_int(s->db_, "SELECT coalesce(max(seq), 0) FROM node_runs", &e);
    s->node_seq_ = seq > 0 ? static_cast<uint64_t>(seq) : 0;
  }
  return s;
}

Store::~Store() {
  if (in_tx_) commit();
  stmts_.clear();
  if (db_) sqlite3_close_v2(db_);
}

bool Store::migrate(std::string* err) {
  const auto& migs = store_migrations();
  // Several processes may open a new database at once: the version is read and the
  // migrations applied under one write lock, so exactly one of them migrates.
  if (!exec_sql(db_, "BEGIN IMMEDIATE", err)) return false;
  int v = static_cast<int>(pragma_int(db_, "PRAGMA user_version", err));
  std::string ignored;
  if (v < 0) {
    exec_sql(db_, "ROLLBACK", &ignored);
    return false;
  }
  if (v > static_cast<int>(migs.size())) {
    exec_sql(db_, "ROLLBACK", &ignored);
    *err = "database schema version " + std::to_string(v) + " is newer than this orchrun (" +
           std::to_string(migs.size()) + "); upgrade orchrun";
    return false;
  }
  for (int i = v; i < static_cast<int>(migs.size()); ++i) {
    std::string sql = std::string(migs[i]) + "PRAGMA user_version=" + std::to_string(i + 1) +
                      ";PRAGMA application_id=" + std::to_string(kApplicationId) + ";";
    if (!exec_sql(db_, sql.c_str(), err)) {
      exec_sql(db_, "ROLLBACK", &ignored);
      *err = "migration to schema version " + std::to_string(i + 1) + " failed: " + *err;
      return false;
    }
  }
  if (!exec_sql(db_, "COMMIT", err)) {
    exec_sql(db_, "ROLLBACK", &ignored);
    return false;
  }
  schema_version_ = static_cast<int>(migs.size());
  return true;
}

void Store::fail(const std::string& what) {
  if (!error_.empty()) return;
  failed_disk_full_ = disk_full(sqlite3_extended_errcode(db_));
  error_ = what + ": " + sqlite3_errmsg(db_);
}

bool Store::disk_full(int rc) const {
  return is_disk_full(db_, rc);
}

void Store::set_hold_when_full(bool on) {
  hold_when_full_ = on;
  // No dirty page goes to the WAL before the commit: a full disk then fails the COMMIT, whose
  // writes are held, and never a statement half-way through a transaction.
  std::string e;
  exec_sql(db_, on ? "PRAGMA cache_spill=OFF" : "PRAGMA cache_spill=ON", &e);
}

void Store::arm_capture(sqlite3_stmt* st) {
  if (!hold_when_full_ || sqlite3_stmt_readonly(st)) return;
  capture_st_ = st;
  capture_.clear();
}

int Store::step_write(sqlite3_stmt* st) {
  if (!hold_when_full_) return sqlite3_step(st);
  sqlite3_set_last_insert_rowid(db_, 0);
  int rc = sqlite3_step(st);
  if (in_tx_ && (rc == SQLITE_DONE || rc == SQLITE_ROW)) {
    if (st != capture_st_) {
      held_incomplete_ = true;
    } else {
      Held h;
      h.st = st;
      h.values = std::move(capture_);
      h.rowid = sqlite3_last_insert_rowid(db_);
      if (rc == SQLITE_ROW) {
        h.changes = -1;
        h.returned = col_text(st, 0);
        held_changes_ += 1;
      } else {
        h.changes = sqlite3_changes(db_);
        held_changes_ += h.changes;
      }
      held_.push_back(std::move(h));
    }
  }
  capture_st_ = nullptr;
  capture_.clear();
  return rc;
}

bool Store::apply_held() {
  for (size_t n = 0; n < held_.size(); n++) {
    Held& h = held_[n];
    sqlite3_stmt* st = h.st;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    for (const BoundValue& v : h.values) {
      if (v.type == SQLITE_INTEGER)
        sqlite3_bind_int64(st, v.index, v.i);
      else if (v.type == SQLITE_TEXT)
        sqlite3_bind_text(st, v.index, v.s.data(), static_cast<int>(v.s.size()), SQLITE_STATIC);
      else
        sqlite3_bind_null(st, v.index);
    }
    sqlite3_set_last_insert_rowid(db_, 0);
    int rc = sqlite3_step(st);
    bool same = false;
    if (rc == SQLITE_ROW)
      same = h.changes < 0 && col_text(st, 0) == h.returned;
    else if (rc == SQLITE_DONE)
      same = h.changes == sqlite3_changes(db_);
    same = same && sqlite3_last_insert_rowid(db_) == h.rowid;
    std::string why =
        rc == SQLITE_ROW || rc == SQLITE_DONE ? "it changes other rows now" : sqlite3_errmsg(db_);
    int ext = sqlite3_extended_errcode(db_);
    std::string sql = sqlite3_sql(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (same) continue;
    if (disk_full(ext)) failed_disk_full_ = true;
    error_ = "the disk was full; " + std::to_string(held_.size()) +
             " write(s) held in memory since cannot be applied again: write " +
             std::to_string(n + 1) + " (" + sql.substr(0, 60) + "...): " + why;
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    in_tx_ = false;
    held_.clear();
    held_changes_ = 0;
    return false;
  }
  return true;
}

bool Store::retry_full() {
  if (!full_) return true;
  if (!in_tx_ && !begin()) return false;
  commit();
  return !full_ && !failed();
}

bool Store::allowed(const char* what, const std::string& subject, const char* column,
                    const std::string& value, std::span<const char* const> allowed) {
  for (const char* a : allowed)
    if (value == a) return true;
  if (error_.empty()) {
    std::string list;
    for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
    error_ = std::string(what) + " " + subject + ": " + column + " '" + value + "' is not one of " +
             list;
  }
  return false;
}

bool Store::begin() {
  if (in_tx_) return true;
  // Prepared once: parsing BEGIN/COMMIT anew at every commit shows in the chain benchmark.
  static const char* kBegin = "BEGIN IMMEDIATE";
  sqlite3_stmt* st = prepare(kBegin, kBegin);
  if (!st || sqlite3_step(st) != SQLITE_DONE) {
    fail("begin transaction");
    return false;
  }
  sqlite3_reset(st);
  in_tx_ = true;
  tx_changes_base_ = sqlite3_total_changes(db_);
  // What a full disk held back comes first, as it was written.
  if (!held_.empty()) return apply_held();
  return true;
}

void Store::commit() {
  if (!in_tx_) return;
  flush_attempts();  // attempts still running are on record once committed
  in_tx_ = false;
  static const char* kCommit = "COMMIT";
  sqlite3_stmt* st = prepare(kCommit, kCommit);
  // Every write of the transaction is held (hold_when_full): the rows they changed add up.
  if (hold_when_full_ && sqlite3_total_changes(db_) - tx_changes_base_ != held_changes_)
    held_incomplete_ = true;
  int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
  if (st) sqlite3_reset(st);
  if (rc != SQLITE_DONE) {
    if (hold_when_full_ && disk_full(rc) && !held_incomplete_ && error_.empty()) {
      // SQLite rolls back a transaction whose commit failed on a full disk (if it has not,
      // this does): the writes are held, to be applied again by the next begin(). What this
      // process holds in memory (definitions seen, node sequence numbers) stays as it is.
      if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      if (!full_) full_since_ = wall_ms();
      full_ = true;
      full_errors_++;
      return;
    }
    fail("commit");
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    definitions_seen_.clear();  // may hold one the rollback took back
    pending_attempts_.clear();
    held_.clear();
    held_changes_ = 0;
    held_incomplete_ = false;
    return;
  }
  held_.clear();
  held_changes_ = 0;
  held_incomplete_ = false;
  full_ = false;
  full_since_ = 0;
  commits_++;
  if (on_commit) on_commit();
}

sqlite3_stmt* Store::prepare(const char* key, const char* sql) {
  auto it = stmts_.find(key);
  if (it == stmts_.end()) {
    std::string err;
    auto st = std::make_unique<Stmt>(db_, sql, &err);
    if (!*st) {
      if (error_.empty()) error_ = "prepare: " + err;
      return nullptr;
    }
    it = stmts_.emplace(key, std::move(st)).first;
  }
  sqlite3_stmt* st = it->second->get();
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  if (strncmp(sql, "BEGIN", 5) != 0) arm_capture(st);
  return st;
}

CachedStmt Store::cached(const std::string& sql, std::string* err) {
  auto it = by_sql_.find(sql);
  if (it == by_sql_.end()) {
    auto st = std::make_unique<Stmt>(db_, sql.c_str(), err);
    if (!*st) return CachedStmt(nullptr);
    it = by_sql_.emplace(sql, std::move(st)).first;
  }
  arm_capture(it->second->get());
  return CachedStmt(it->second->get());
}

std::optional<DefinitionRow> Store::upsert_definition(const std::string& name,
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
  sqlite3_stmt* st = prepare(kFind, kFind);
  if (!st) return std::nullopt;
  bind_text(st, 1, name);
  bind_text(st, 2, sha256);
  if (sqlite3_step(st) == SQLITE_ROW) {
    d.id = sqlite3_column_int64(st, 0);
    d.version = sqlite3_column_int(st, 1);
    d.loaded_at = sqlite3_column_int64(st, 2);
    sqlite3_reset(st);
    definitions_seen_[key] = d;
    return d;
  }
  st = prepare(kIns, kIns);
  if (!st) return std::nullopt;
  bind_text(st, 1, name);
  bind_text(st, 2, sha256);
  bind_text(st, 3, source, false);
  bind_text(st, 4, path);
  bind_int(st, 5, now);
  if (step_write(st) != SQLITE_ROW) {
    fail("insert definition");
    return std::nullopt;
  }
  d.id = sqlite3_column_int64(st, 0);
  d.version = sqlite3_column_int(st, 1);
  d.loaded_at = now;
  sqlite3_reset(st);
  return d;
}

void Store::insert_run(const RunRow& r, bool* duplicate) {
  static const char* kSql =
      "INSERT INTO runs(id, trace_id, pipeline, version, status, source, environment, input, "
      "attempts, created_at, started_at, parent_run, idempotency_key, owner_pid, parent_node, "
      "workspace, owner_start) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)";
  if (!allowed("insert run", r.id, "status", r.status, kRunStatuses) || !begin()) return;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_text(st, 1, r.id);
  bind_text(st, 2, r.trace_id);
  bind_text(st, 3, r.pipeline);
  bind_int(st, 4, r.version);
  bind_text(st, 5, r.status);
  bind_text(st, 6, r.source);
  bind_text(st, 7, r.environment);
  bind_text(st, 8, r.input);
  bind_int(st, 9, r.attempts);
  bind_int(st, 10, r.created_at);
  bind_int(st, 11, r.started_at, true);
  bind_text(st, 12, r.parent_run);
  bind_text(st, 13, r.idempotency_key);
  bind_int(st, 14, r.owner_pid, true);
  bind_text(st, 15, r.parent_node);
  bind_text(st, 16, r.workspace);
  bind_text(st, 17, r.owner_pid == getpid() ? self_identity() : r.owner_start);
  int rc = step_write(st);
  if (rc == SQLITE_CONSTRAINT_UNIQUE && duplicate && !r.idempotency_key.empty()) {
    *duplicate = true;
    return;
  }
  if (rc != SQLITE_DONE) fail("insert run " + r.id);
}

void Store::set_run_status(const std::string& run_id, const std::string& status, int64_t ts) {
  static const char* kSql =
      "UPDATE runs SET status=?2, started_at=coalesce(started_at, ?3) WHERE id=?1";
  if (!allowed("set status of run", run_id, "status", status, kRunStatuses) || !begin()) return;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_text(st, 1, run_id);
  bind_text(st, 2, status);
  bind_int(st, 3, ts);
  if (step_write(st) != SQLITE_DONE) fail("update run " + run_id);
}

void Store::finish_run(const std::string& run_id, const std::string& status,
                       const std::string& output, const std::string& error_type,
                       const std::string& error_message, const std::string& error_node,
                       bool retryable, int64_t finished_at) {
  static const char* kSql =
      "UPDATE runs SET status=?2, output=?3, error_type=?4, error_message=?5, error_node=?6, "
      "retryable=?7, finished_at=?8 WHERE id=?1";
  if (!allowed("finish run", run_id, "status", status, kRunStatuses) || !begin()) return;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_text(st, 1, run_id);
  bind_text(st, 2, status);
  bind_text(st, 3, output);
  bind_text(st, 4, error_type);
  bind_text(st, 5, error_message);
  bind_text(st, 6, error_node);
  if (error_type.empty())
    bind_null(st, 7);
  else
    bind_int(st, 7, retryable ? 1 : 0);
  bind_int(st, 8, finished_at);
  if (step_write(st) != SQLITE_DONE) {
    fail("finish run " + run_id);
    return;
  }
  // A run that ends leaves no gate open: nothing can be decided for it any more.
  static const char* kClose =
      "UPDATE approvals SET status='cancelled', decided_by='run ended', decided_at=?2, "
      "comment=?3 WHERE run_id=?1 AND status='waiting'";
  sqlite3_stmt* cl = prepare(kClose, kClose);
  if (!cl) return;
  bind_text(cl, 1, run_id);
  bind_int(cl, 2, finished_at);
  bind_text(cl, 3, "the run was " + status);
  if (step_write(cl) != SQLITE_DONE) fail("close gates of " + run_id);
  sqlite3_reset(cl);
}

namespace {
std::string attempt_key(const std::string& run_id, const std::string& node_id, int attempt) {
  std::string k = run_id;
  k += '\0';
  k += node_id;
  k += '\0';
  k += std::to_string(attempt);
  return k;
}
}  // namespace

void Store::insert_node_attempt(const std::string& run_id, const std::string& node_id, int attempt,
                                const std::string& kind, int64_t started_at, int run_attempt) {
  // Written at the commit (flush_attempts) if it is still running then; an attempt that ends
  // in the same transaction is written once, as it ended (finish_node_attempt).
  if (!begin()) return;
  PendingAttempt a{
      run_id, node_id, kind, attempt, started_at, static_cast<int64_t>(++node_seq_), run_attempt};
  pending_attempts_[attempt_key(run_id, node_id, attempt)] = std::move(a);
}

void Store::write_attempt(const PendingAttempt& a) {
  static const char* kSql =
      "INSERT INTO node_runs(run_id, node_id, attempt, kind, status, started_at, seq, "
      "run_attempt) VALUES(?1,?2,?3,?4,'running',?5,?6,?7)";
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_text(st, 1, a.run_id);
  bind_text(st, 2, a.node_id);
  bind_int(st, 3, a.attempt);
  bind_text(st, 4, a.kind);
  bind_int(st, 5, a.started_at);
  bind_int(st, 6, a.seq);
  bind_int(st, 7, a.run_attempt);
  if (step_write(st) != SQLITE_DONE) fail("insert node attempt " + a.node_id);
}

void Store::flush_attempts() {
  if (pending_attempts_.empty()) return;
  std::vector<const PendingAttempt*> order;
  order.reserve(pending_attempts_.size());
  for (auto& [k, a] : pending_attempts_) order.push_back(&a);
  std::sort(order.begin(), order.end(),
            [](const PendingAttempt* x, const PendingAttempt* y) { return x->seq < y->seq; });
  for (const PendingAttempt* a : order) write_attempt(*a);
  pending_attempts_.clear();
}

void Store::finish_node_attempt(const NodeRunRow& r) {
  if (!allowed("finish node attempt", r.node_id, "status", r.status, kNodeStatuses) || !begin())
    return;
  auto pending = pending_attempts_.find(attempt_key(r.run_id, r.node_id, r.attempt));
  if (pending != pending_attempts_.end()) {
    // Started in this transaction: one row, as it ended.
    static const char* kIns =
        "INSERT INTO node_runs(run_id, node_id, attempt, kind, started_at, seq, run_attempt, "
        "status, finished_at, duration_ms, output, error_type, error_message, traceback, "
        "retryable, verdict, verdict_reason) "
        "VALUES(?1,?2,?3,?14,?15,?16,?17,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)";
    const PendingAttempt& a = pending->second;
    sqlite3_stmt* st = prepare(kIns, kIns);
    if (!st) return;
    bind_node_end(st, r);
    bind_text(st, 14, a.kind);
    bind_int(st, 15, a.started_at);
    bind_int(st, 16, a.seq);
    bind_int(st, 17, a.run_attempt);
    pending_attempts_.erase(pending);
    if (step_write(st) != SQLITE_DONE) fail("finish node attempt " + r.node_id);
    return;
  }
  static const char* kSql =
      "UPDATE node_runs SET status=?4, finished_at=?5, duration_ms=?6, output=?7, "
      "error_type=?8, error_message=?9, traceback=?10, retryable=?11, verdict=?12, "
      "verdict_reason=?13 WHERE run_id=?1 AND node_id=?2 AND attempt=?3";
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_node_end(st, r);
  if (step_write(st) != SQLITE_DONE) fail("finish node attempt " + r.node_id);
}

void Store::bind_node_end(sqlite3_stmt* st, const NodeRunRow& r) {
  bind_text(st, 1, r.run_id);
  bind_text(st, 2, r.node_id);
  bind_int(st, 3, r.attempt);
  bind_text(st, 4, r.status);
  bind_int(st, 5, r.finished_at);
  bind_int(st, 6, r.duration_ms);
  bind_text(st, 7, r.output);
  bind_text(st, 8, r.error_type);
  bind_text(st, 9, r.error_message);
  bind_text(st, 10, r.traceback);
  if (r.error_type.empty())
    bind_null(st, 11);
  else
    bind_int(st, 11, r.retryable ? 1 : 0);
  bind_text(st, 12, r.verdict);
  bind_text(st, 13, r.verdict_reason);
}

void Store::insert_node_final(const NodeRunRow& r) {
  static const char* kSql =
      "INSERT INTO node_runs(run_id, node_id, attempt, kind, status, started_at, finished_at, "
      "duration_ms, output, error_type, error_message, seq, run_attempt) "
      "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)";
  if (!allowed("insert node row", r.node_id, "status", r.status, kNodeStatuses) || !begin()) return;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_text(st, 1, r.run_id);
  bind_text(st, 2, r.node_id);
  bind_int(st, 3, r.attempt);
  bind_text(st, 4, r.kind.empty() ? std::string("body") : r.kind);
  bind_text(st, 5, r.status);
  bind_int(st, 6, r.started_at);
  bind_int(st, 7, r.finished_at);
  bind_int(st, 8, r.duration_ms);
  bind_text(st, 9, r.output);
  bind_text(st, 10, r.error_type);
  bind_text(st, 11, r.error_message);
  bind_int(st, 12, static_cast<int64_t>(++node_seq_));
  bind_int(st, 13, r.run_attempt);
  if (step_write(st) != SQLITE_DONE) fail("insert node row " + r.node_id);
}

int64_t Store::insert_event(const Event& e) {
  static const char* kSql =
      "INSERT INTO events(run_id, trace_id, ts, kind, pipeline, version, node_id, attempt, data, "
      "incident_id, fingerprint) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)";
  if (!begin()) return 0;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return 0;
  bind_text(st, 1, e.run_id);
  bind_text(st, 2, e.trace_id);
  bind_int(st, 3, e.ts);
  bind_text(st, 4, e.kind);
  bind_text(st, 5, e.pipeline);
  bind_int(st, 6, e.version);
  bind_text(st, 7, e.node);
  if (e.node.empty())
    bind_null(st, 8);
  else
    bind_int(st, 8, e.attempt);
  bind_text(st, 9, e.data);
  bind_int(st, 10, e.incident_id, true);
  bind_text(st, 11, e.fingerprint);
  if (step_write(st) != SQLITE_DONE) {
    fail("insert event " + e.kind);
    return 0;
  }
  return sqlite3_last_insert_rowid(db_);
}

std::optional<std::string> Store::definition_source(const std::string& name, int version,
                                                    std::string* path) {
  std::string err;
  CachedStmt st = cached("SELECT source, path FROM definitions WHERE name=?1 AND version=?2", &err);
  if (!st) return std::nullopt;
  bind_text(st.get(), 1, name);
  bind_int(st.get(), 2, version);
  if (sqlite3_step(st.get()) != SQLITE_ROW) return std::nullopt;
  if (path) *path = col_text(st.get(), 1);
  return col_text(st.get(), 0);
}

bool Store::claim_run(const std::string& run_id, int64_t expected_owner, int64_t new_owner) {
  std::vector<bool> ok = claim_runs({{run_id, expected_owner}}, new_owner);
  return !ok.empty() && ok[0];
}

std::vector<bool> Store::claim_runs(const std::vector<std::pair<std::string, int64_t>>& runs,
                                    int64_t new_owner) {
  std::vector<bool> out(runs.size(), false);
  commit();  // the claims must not ride along with other writes
  if (!begin()) return out;
  static const char* kSql =
      "UPDATE runs SET owner_pid=?3, owner_start=?4 WHERE id=?1 AND coalesce(owner_pid,0)=?2 "
      "AND status IN ('queued','running','awaiting_approval')";
  for (size_t i = 0; i < runs.size(); i++) {
    sqlite3_stmt* st = prepare(kSql, kSql);
    if (!st) {
      fail("claim run " + runs[i].first);
      break;
    }
    bind_text(st, 1, runs[i].first);
    bind_int(st, 2, runs[i].second);
    bind_int(st, 3, new_owner);
    bind_text(st, 4, new_owner == getpid() ? self_identity() : std::string());
    out[i] = step_write(st) == SQLITE_DONE && sqlite3_changes(db_) == 1;
    sqlite3_reset(st);
  }
  commit();
  if (failed()) std::fill(out.begin(), out.end(), false);
  return out;
}

int Store::mark_interrupted(const std::string& run_id, int64_t now) {
  if (!begin()) return 0;
  flush_attempts();
  std::string err;
  CachedStmt st = cached(
      "UPDATE node_runs SET status='failed', error_type='interrupted', retryable=1, "
      "error_message='interrupted: the process running this attempt stopped (crash, kill "
      "or shutdown)', finished_at=?2, duration_ms=?2-started_at "
      "WHERE run_id=?1 AND status='running' AND kind != 'approval'",
      &err);
  if (!st) {
    fail("mark interrupted " + run_id);
    return 0;
  }
  bind_text(st.get(), 1, run_id);
  bind_int(st.get(), 2, now);
  if (step_write(st.get()) != SQLITE_DONE) fail("mark interrupted " + run_id);
  return sqlite3_changes(db_);
}

std::vector<RunRow> Store::unfinished_runs() {
  std::string sql = std::string("SELECT ") + kRunCols +
                    " FROM runs WHERE status IN ('queued','running','awaiting_approval') "
                    "ORDER BY created_at, id";
  std::vector<RunRow> out;
  std::string err;
  CachedStmt st = cached(sql.c_str(), &err);
  if (!st) return out;
  while (sqlite3_step(st.get()) == SQLITE_ROW) out.push_back(read_run(st.get()));
  return out;
}

std::optional<RunRow> Store::find_by_idempotency_key(const std::string& pipeline,
                                                     const std::string& key) {
  std::string sql =
      std::string("SELECT ") + kRunCols + " FROM runs WHERE pipeline=?1 AND idempotency_key=?2";
  std::string err;
  CachedStmt st = cached(sql.c_str(), &err);
  if (!st) return std::nullopt;
  bind_text(st.get(), 1, pipeline);
  bind_text(st.get(), 2, key);
  if (sqlite3_step(st.get()) != SQLITE_ROW) return std::nullopt;
  return read_run(st.get());
}

bool Store::request_cancel(const std::string& run_id, const std::string& reason, int64_t now) {
  commit();
  if (!begin()) return false;
  std::string err;
  CachedStmt st = cached(
      "UPDATE runs SET cancel_requested_at=?2, cancel_reason=?3 WHERE id=?1 AND status IN "
      "('queued','running','awaiting_approval')",
      &err);
  if (!st) return false;
  bind_text(st.get(), 1, run_id);
  bind_int(st.get(), 2, now);
  bind_text(st.get(), 3, reason);
  bool ok = step_write(st.get()) == SQLITE_DONE && sqlite3_changes(db_) == 1;
  commit();
  return ok;
}

std::vector<std::pair<std::string, std::string>> Store::cancel_requests(int64_t pid) {
  std::vector<std::pair<std::string, std::string>> out;
  static const char* kSql =
      "SELECT id, coalesce(cancel_reason, 'cancelled') FROM runs WHERE owner_pid=?1 AND "
      "cancel_requested_at IS NOT NULL AND status IN ('queued','running','awaiting_approval')";
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return out;
  bind_int(st, 1, pid);
  while (sqlite3_step(st) == SQLITE_ROW) out.emplace_back(col_text(st, 0), col_text(st, 1));
  sqlite3_reset(st);
  return out;
}

bool Store::cancel_orphan_run(const RunRow& run, const std::string& reason, int64_t now) {
  commit();
  if (!begin()) return false;
  flush_attempts();
  std::string err;
  CachedStmt st = cached(
      "UPDATE node_runs SET status='cancelled', error_type='cancelled', error_message=?2, "
      "finished_at=?3, duration_ms=?3-started_at WHERE run_id=?1 AND status='running'",
      &err);
  if (!st) return false;
  bind_text(st.get(), 1, run.id);
  bind_text(st.get(), 2, reason);
  bind_int(st.get(), 3, now);
  if (step_write(st.get()) != SQLITE_DONE) fail("cancel node attempts of " + run.id);
  finish_run(run.id, "cancelled", "", "cancelled", reason, "", true, now);
  insert_event(
      run_event(run, "run.cancelled", now,
                "{\"message\":" + nlohmann::json(reason).dump() + ",\"by\":\"orchrun cancel\"}"));
  commit();
  return !failed();
}

bool Store::begin_run_attempt(const std::string& run_id, int64_t owner, int64_t now) {
  commit();
  if (!begin()) return false;
  std::string err;
  CachedStmt st = cached(
      "UPDATE runs SET status='running', attempts=attempts+1, owner_pid=?2, owner_start=?4, "
      "error_type=NULL, "
      "error_message=NULL, error_node=NULL, retryable=NULL, output=NULL, finished_at=NULL, "
      "cancel_requested_at=NULL, cancel_reason=NULL, started_at=?3 "
      "WHERE id=?1 AND status IN ('failed','cancelled')",
      &err);
  if (!st) return false;
  bind_text(st.get(), 1, run_id);
  bind_int(st.get(), 2, owner);
  bind_int(st.get(), 3, now);
  bind_text(st.get(), 4, owner == getpid() ? self_identity() : std::string());
  bool ok = step_write(st.get()) == SQLITE_DONE && sqlite3_changes(db_) == 1;
  commit();
  return ok;
}

void Store::insert_approval(const ApprovalRow& a) {
  static const char* kSql =
      "INSERT OR IGNORE INTO approvals(run_id, node_id, status, message, approvers, "
      "requested_at, timeout_at, on_timeout, run_attempt, kind) "
      "VALUES(?1,?2,'waiting',?3,?4,?5,?6,?7,?8,?9)";
  if (!begin()) return;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_text(st, 1, a.run_id);
  bind_text(st, 2, a.node_id);
  bind_text(st, 3, a.message);
  bind_text(st, 4, a.approvers);
  bind_int(st, 5, a.requested_at);
  bind_int(st, 6, a.timeout_at, true);
  bind_text(st, 7, a.on_timeout);
  bind_int(st, 8, a.run_attempt);
  bind_text(st, 9, a.kind);
  if (step_write(st) != SQLITE_DONE) fail("insert approval " + a.node_id);
}

namespace {
const char* kApprovalCols =
    "run_id, node_id, status, message, approvers, requested_at, timeout_at, on_timeout, "
    "decided_by, decided_at, comment, run_attempt, kind";
ApprovalRow read_approval(sqlite3_stmt* st) {
  ApprovalRow a;
  a.run_id = col_text(st, 0);
  a.node_id = col_text(st, 1);
  a.status = col_text(st, 2);
  a.message = col_text(st, 3);
  a.approvers = col_text(st, 4);
  a.requested_at = sqlite3_column_int64(st, 5);
  a.timeout_at = sqlite3_column_int64(st, 6);
  a.on_timeout = col_text(st, 7);
  a.decided_by = col_text(st, 8);
  a.decided_at = sqlite3_column_int64(st, 9);
  a.comment = col_text(st, 10);
  a.run_attempt = sqlite3_column_int(st, 11);
  a.kind = col_text(st, 12);
  return a;
}
}  // namespace

std::optional<ApprovalRow> Store::approval(const std::string& run_id, const std::string& node_id) {
  std::string sql =
      std::string("SELECT ") + kApprovalCols +
      " FROM approvals WHERE run_id=?1 AND node_id=?2 ORDER BY run_attempt DESC LIMIT 1";
  std::string err;
  CachedStmt st = cached(sql.c_str(), &err);
  if (!st) return std::nullopt;
  bind_text(st.get(), 1, run_id);
  bind_text(st.get(), 2, node_id);
  if (sqlite3_step(st.get()) != SQLITE_ROW) return std::nullopt;
  return read_approval(st.get());
}

std::vector<ApprovalRow> Store::approvals(const std::string& run_id) {
  std::string sql = std::string("SELECT ") + kApprovalCols +
                    " FROM approvals WHERE run_id=?1 ORDER BY requested_at, node_id, run_attempt";
  std::vector<ApprovalRow> out;
  std::string err;
  CachedStmt st = cached(sql.c_str(), &err);
  if (!st) return out;
  bind_text(st.get(), 1, run_id);
  while (sqlite3_step(st.get()) == SQLITE_ROW) out.push_back(read_approval(st.get()));
  return out;
}

bool Store::decide_approval(const std::string& run_id, const std::string& node_id, int run_attempt,
                            const std::string& status, const std::string& by,
                            const std::string& comment, int64_t now) {
  commit();
  if (!allowed("decide approval", node_id, "status", status, kApprovalStatuses) || !begin())
    return false;
  std::string err;
  // One statement: the gate's attempt is checked against the run's in the same write.
  CachedStmt st = cached(
      "UPDATE approvals SET status=?3, decided_by=?4, comment=?5, decided_at=?6 "
      "WHERE run_id=?1 AND node_id=?2 AND run_attempt=?7 AND status='waiting' AND EXISTS "
      "(SELECT 1 FROM runs WHERE id=?1 AND attempts=?7 AND "
      "status IN ('queued','running','awaiting_approval'))",
      &err);
  if (!st) return false;
  bind_text(st.get(), 1, run_id);
  bind_text(st.get(), 2, node_id);
  bind_text(st.get(), 3, status);
  bind_text(st.get(), 4, by);
  bind_text(st.get(), 5, comment);
  bind_int(st.get(), 6, now);
  bind_int(st.get(), 7, run_attempt);
  bool ok = step_write(st.get()) == SQLITE_DONE && sqlite3_changes(db_) == 1;
  commit();
  return ok;
}

void Store::insert_process(const ProcessRow& p) {
  static const char* kSql =
      "INSERT OR REPLACE INTO run_processes(run_id, node_id, attempt, run_attempt, pgid, "
      "identity, command, owner_pid, started_at) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)";
  if (!begin()) return;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_text(st, 1, p.run_id);
  bind_text(st, 2, p.node_id);
  bind_int(st, 3, p.attempt);
  bind_int(st, 4, p.run_attempt);
  bind_int(st, 5, p.pgid);
  bind_text(st, 6, p.identity);
  bind_text(st, 7, p.command);
  bind_int(st, 8, p.owner_pid);
  bind_int(st, 9, p.started_at);
  if (step_write(st) != SQLITE_DONE) fail("record process group " + std::to_string(p.pgid));
  sqlite3_reset(st);
}

void Store::end_process(const std::string& run_id, int64_t pgid, const std::string& identity,
                        const std::string& how, int64_t now) {
  static const char* kSql =
      "UPDATE run_processes SET ended_at=?4, ended_how=?5 WHERE run_id=?1 AND pgid=?2 AND "
      "identity=?3 AND ended_at IS NULL";
  if (!begin()) return;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_text(st, 1, run_id);
  bind_int(st, 2, pgid);
  bind_text(st, 3, identity);
  bind_int(st, 4, now);
  bind_text(st, 5, how);
  if (step_write(st) != SQLITE_DONE) fail("end process group " + std::to_string(pgid));
  sqlite3_reset(st);
}

std::vector<ProcessRow> Store::open_processes(const std::string& run_id) {
  std::vector<ProcessRow> out;
  static const char* kSql =
      "SELECT run_id, node_id, attempt, run_attempt, pgid, identity, command, owner_pid, "
      "started_at FROM run_processes WHERE run_id=?1 AND ended_at IS NULL ORDER BY started_at";
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return out;
  bind_text(st, 1, run_id);
  while (sqlite3_step(st) == SQLITE_ROW) {
    ProcessRow p;
    p.run_id = col_text(st, 0);
    p.node_id = col_text(st, 1);
    p.attempt = sqlite3_column_int(st, 2);
    p.run_attempt = sqlite3_column_int(st, 3);
    p.pgid = sqlite3_column_int64(st, 4);
    p.identity = col_text(st, 5);
    p.command = col_text(st, 6);
    p.owner_pid = sqlite3_column_int64(st, 7);
    p.started_at = sqlite3_column_int64(st, 8);
    out.push_back(std::move(p));
  }
  sqlite3_reset(st);
  return out;
}

int64_t Store::insert_artifact(const ArtifactRow& a) {
  static const char* kSql =
      "INSERT INTO artifacts(run_id, node_id, attempt, path, kind, size, sha256, created_at) "
      "VALUES(?1,?2,?3,?4,?5,?6,?7,?8)";
  if (!begin()) return 0;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return 0;
  bind_text(st, 1, a.run_id);
  bind_text(st, 2, a.node_id);
  bind_int(st, 3, a.attempt);
  bind_text(st, 4, a.path);
  bind_text(st, 5, a.kind);
  bind_int(st, 6, a.size);
  bind_text(st, 7, a.sha256);
  bind_int(st, 8, a.created_at);
  if (step_write(st) != SQLITE_DONE) {
    fail("insert artifact " + a.path);
    return 0;
  }
  return sqlite3_last_insert_rowid(db_);
}

void Store::insert_artifact_use(int64_t artifact_id, const std::string& run_id,
                                const std::string& node_id, int attempt, int64_t now) {
  static const char* kSql =
      "INSERT OR IGNORE INTO artifact_uses(artifact_id, run_id, node_id, attempt, used_at) "
      "VALUES(?1,?2,?3,?4,?5)";
  if (!begin()) return;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_int(st, 1, artifact_id);
  bind_text(st, 2, run_id);
  bind_text(st, 3, node_id);
  bind_int(st, 4, attempt);
  bind_int(st, 5, now);
  if (step_write(st) != SQLITE_DONE) fail("insert artifact use " + node_id);
}

std::vector<ArtifactRow> Store::artifacts(const std::string& run_id) {
  std::vector<ArtifactRow> out;
  std::string err;
  CachedStmt st = cached(
      "SELECT a.id, a.run_id, a.node_id, a.attempt, a.path, a.kind, a.size, a.sha256, "
      "a.created_at, (SELECT group_concat(u.node_id || '#' || u.attempt, ' ') FROM "
      "artifact_uses u WHERE u.artifact_id = a.id) FROM artifacts a WHERE a.run_id=?1 "
      "ORDER BY a.id",
      &err);
  if (!st) return out;
  bind_text(st.get(), 1, run_id);
  while (sqlite3_step(st.get()) == SQLITE_ROW) {
    ArtifactRow a;
    a.id = sqlite3_column_int64(st.get(), 0);
    a.run_id = col_text(st.get(), 1);
    a.node_id = col_text(st.get(), 2);
    a.attempt = sqlite3_column_int(st.get(), 3);
    a.path = col_text(st.get(), 4);
    a.kind = col_text(st.get(), 5);
    a.size = sqlite3_column_int64(st.get(), 6);
    a.sha256 = col_text(st.get(), 7);
    a.created_at = sqlite3_column_int64(st.get(), 8);
    std::string uses = col_text(st.get(), 9);
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

bool Store::acquire_slot(const std::string& key, int limit, const std::string& run_id,
                         const std::string& node_id, int64_t owner_pid, int64_t now,
                         int* position) {
  if (try_acquire_slot(key, limit, run_id, node_id, owner_pid, now, position)) return true;
  return reap_slots(key) > 0 &&
         try_acquire_slot(key, limit, run_id, node_id, owner_pid, now, position);
}

bool Store::try_acquire_slot(const std::string& key, int limit, const std::string& run_id,
                             const std::string& node_id, int64_t owner_pid, int64_t now,
                             int* position) {
  commit();
  if (!begin()) return false;
  std::string err;
  {
    CachedStmt ins = cached(
        "INSERT OR IGNORE INTO concurrency_slots(key, run_id, node_id, owner_pid, "
        "enqueued_at) VALUES(?1,?2,?3,?4,?5)",
        &err);
    if (!ins) {
      fail("queue for concurrency key " + key);
      return false;
    }
    bind_text(ins.get(), 1, key);
    bind_text(ins.get(), 2, run_id);
    bind_text(ins.get(), 3, node_id, false);  // "" is the whole run
    bind_int(ins.get(), 4, owner_pid);
    bind_int(ins.get(), 5, now);
    if (step_write(ins.get()) != SQLITE_DONE) fail("queue for concurrency key " + key);
  }
  // Held slots, and the waiters queued before this one.
  CachedStmt q = cached(
      "SELECT (SELECT count(*) FROM concurrency_slots WHERE key=?1 AND acquired_at IS NOT "
      "NULL), (SELECT count(*) FROM concurrency_slots WHERE key=?1 AND acquired_at IS NULL AND "
      "id < (SELECT id FROM concurrency_slots WHERE run_id=?2 AND node_id=?3)), (SELECT "
      "acquired_at IS NOT NULL FROM concurrency_slots WHERE run_id=?2 AND node_id=?3)",
      &err);
  if (!q) {
    fail("read concurrency key " + key);
    return false;
  }
  bind_text(q.get(), 1, key);
  bind_text(q.get(), 2, run_id);
  bind_text(q.get(), 3, node_id, false);
  bool got = false;
  if (sqlite3_step(q.get()) == SQLITE_ROW) {
    int held = sqlite3_column_int(q.get(), 0);
    int ahead = sqlite3_column_int(q.get(), 1);
    bool mine = sqlite3_column_int(q.get(), 2) != 0;
    if (mine) {
      got = true;
    } else if (held + ahead < limit) {
      CachedStmt up = cached(
          "UPDATE concurrency_slots SET acquired_at=?3, owner_pid=?4 WHERE run_id=?1 AND "
          "node_id=?2",
          &err);
      if (up) {
        bind_text(up.get(), 1, run_id);
        bind_text(up.get(), 2, node_id, false);
        bind_int(up.get(), 3, now);
        bind_int(up.get(), 4, owner_pid);
        got = step_write(up.get()) == SQLITE_DONE;
      }
    }
    if (position) *position = got ? 0 : ahead;
  }
  commit();
  return got && !failed();
}

void Store::release_slot(const std::string& run_id, const std::string& node_id) {
  static const char* kSql = "DELETE FROM concurrency_slots WHERE run_id=?1 AND node_id=?2";
  if (!begin()) return;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_text(st, 1, run_id);
  bind_text(st, 2, node_id, false);
  if (step_write(st) != SQLITE_DONE) fail("release concurrency slot " + node_id);
}

int Store::reap_slots(const std::string& key) {
  std::vector<std::pair<int64_t, int64_t>> rows;  // id, pid
  {
    std::string err;
    CachedStmt st = cached("SELECT id, owner_pid FROM concurrency_slots WHERE key=?1", &err);
    if (!st) return 0;
    bind_text(st.get(), 1, key);
    while (sqlite3_step(st.get()) == SQLITE_ROW)
      rows.emplace_back(sqlite3_column_int64(st.get(), 0), sqlite3_column_int64(st.get(), 1));
  }
  int n = 0;
  for (auto& [id, pid] : rows) {
    if (pid > 0 && (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM)) continue;
    if (!begin()) return n;
    std::string err;
    CachedStmt del = cached("DELETE FROM concurrency_slots WHERE id=?1", &err);
    if (!del) return n;
    bind_int(del.get(), 1, id);
    if (step_write(del.get()) == SQLITE_DONE) n++;
  }
  return n;
}

std::optional<RunRow> Store::child_run(const std::string& parent_run,
                                       const std::string& parent_node) {
  std::string sql = std::string("SELECT ") + kRunCols +
                    " FROM runs WHERE parent_run=?1 AND parent_node=?2 ORDER BY created_at DESC, "
                    "id DESC LIMIT 1";
  std::string err;
  CachedStmt st = cached(sql.c_str(), &err);
  if (!st) return std::nullopt;
  bind_text(st.get(), 1, parent_run);
  bind_text(st.get(), 2, parent_node);
  if (sqlite3_step(st.get()) != SQLITE_ROW) return std::nullopt;
  return read_run(st.get());
}

std::vector<RunRow> Store::child_runs(const std::string& parent_run) {
  std::string sql =
      std::string("SELECT ") + kRunCols + " FROM runs WHERE parent_run=?1 ORDER BY created_at, id";
  std::vector<RunRow> out;
  std::string err;
  CachedStmt st = cached(sql.c_str(), &err);
  if (!st) return out;
  bind_text(st.get(), 1, parent_run);
  while (sqlite3_step(st.get()) == SQLITE_ROW) out.push_back(read_run(st.get()));
  return out;
}

std::vector<RunRow> Store::list_runs(const RunFilter& f) {
  std::string sql = std::string("SELECT ") + kRunCols + " FROM runs WHERE 1=1";
  if (!f.status.empty()) sql += " AND status=?1";
  if (!f.pipeline.empty()) sql += " AND pipeline=?2";
  if (!f.source.empty()) sql += " AND source=?3";
  if (f.since_ms > 0) sql += " AND created_at>=?4";
  if (f.until_ms > 0) sql += " AND created_at<?5";
  if (f.before_created_at > 0) sql += " AND (created_at<?6 OR (created_at=?6 AND id<?7))";
  sql += " ORDER BY created_at DESC, id DESC LIMIT ?8";
  std::vector<RunRow> out;
  std::string err;
  CachedStmt st = cached(sql.c_str(), &err);
  if (!st) return out;
  if (!f.status.empty()) bind_text(st.get(), 1, f.status);
  if (!f.pipeline.empty()) bind_text(st.get(), 2, f.pipeline);
  if (!f.source.empty()) bind_text(st.get(), 3, f.source);
  if (f.since_ms > 0) bind_int(st.get(), 4, f.since_ms);
  if (f.until_ms > 0) bind_int(st.get(), 5, f.until_ms);
  if (f.before_created_at > 0) {
    bind_int(st.get(), 6, f.before_created_at);
    bind_text(st.get(), 7, f.before_id, false);
  }
  bind_int(st.get(), 8, f.limit > 0 ? f.limit : -1);
  while (sqlite3_step(st.get()) == SQLITE_ROW) out.push_back(read_run(st.get()));
  return out;
}

std::optional<RunRow> Store::find_run(const std::string& id_or_prefix, std::string* err) {
  std::string sql = std::string("SELECT ") + kRunCols +
                    " FROM runs WHERE id >= ?1 AND id < ?1 || 'zzzz' ORDER BY id LIMIT 2";
  std::string e;
  CachedStmt st = cached(sql.c_str(), &e);
  if (!st) {
    *err = e;
    return std::nullopt;
  }
  std::string key = id_or_prefix;
  for (auto& c : key) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
  bind_text(st.get(), 1, key, false);
  std::vector<RunRow> rows;
  while (sqlite3_step(st.get()) == SQLITE_ROW) {
    RunRow r = read_run(st.get());
    if (r.id.compare(0, key.size(), key) == 0) rows.push_back(std::move(r));
  }
  if (rows.empty()) {
    *err = "no run with id '" + id_or_prefix + "' in " + path_;
    return std::nullopt;
  }
  if (rows.size() > 1 && rows[0].id != key) {
    *err = "run id prefix '" + id_or_prefix + "' is ambiguous; give more characters";
    return std::nullopt;
  }
  return rows[0];
}

std::vector<NodeRunRow> Store::node_runs(const std::string& run_id) {
  flush_attempts();  // reads see the attempts started in the open transaction too
  const char* sql =
      "SELECT run_id, node_id, attempt, kind, status, started_at, finished_at, duration_ms, "
      "output, error_type, error_message, traceback, retryable, run_attempt, verdict, "
      "verdict_reason FROM node_runs "
      "WHERE run_id=?1 ORDER BY seq";
  std::vector<NodeRunRow> out;
  std::string err;
  CachedStmt st = cached(sql, &err);
  if (!st) return out;
  bind_text(st.get(), 1, run_id);
  while (sqlite3_step(st.get()) == SQLITE_ROW) {
    NodeRunRow r;
    r.run_id = col_text(st.get(), 0);
    r.node_id = col_text(st.get(), 1);
    r.attempt = sqlite3_column_int(st.get(), 2);
    r.kind = col_text(st.get(), 3);
    r.status = col_text(st.get(), 4);
    r.started_at = sqlite3_column_int64(st.get(), 5);
    r.finished_at = sqlite3_column_int64(st.get(), 6);
    r.duration_ms = sqlite3_column_int64(st.get(), 7);
    r.output = col_text(st.get(), 8);
    r.error_type = col_text(st.get(), 9);
    r.error_message = col_text(st.get(), 10);
    r.traceback = col_text(st.get(), 11);
    r.retryable = sqlite3_column_int(st.get(), 12) != 0;
    r.run_attempt = sqlite3_column_int(st.get(), 13);
    r.verdict = col_text(st.get(), 14);
    r.verdict_reason = col_text(st.get(), 15);
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<Event> Store::events(const std::string& run_id) {
  return events_after(0, run_id, "", -1);
}

}  // namespace orch

namespace orch {

namespace {

const char* kIncidentCols =
    "id, fingerprint, title, severity, status, source, labels, annotations, starts_at, ends_at, "
    "first_seen, last_seen, count, resolved_at, last_run_id";

IncidentRow read_incident(sqlite3_stmt* st) {
  IncidentRow r;
  r.id = sqlite3_column_int64(st, 0);
  r.fingerprint = col_text(st, 1);
  r.title = col_text(st, 2);
  r.severity = col_text(st, 3);
  r.status = col_text(st, 4);
  r.source = col_text(st, 5);
  r.labels = col_text(st, 6);
  r.annotations = col_text(st, 7);
  r.starts_at = col_text(st, 8);
  r.ends_at = col_text(st, 9);
  r.first_seen = sqlite3_column_int64(st, 10);
  r.last_seen = sqlite3_column_int64(st, 11);
  r.count = sqlite3_column_int64(st, 12);
  r.resolved_at = sqlite3_column_int64(st, 13);
  r.last_run_id = col_text(st, 14);
  return r;
}

}  // namespace

std::optional<IncidentRow> Store::incident(const std::string& fingerprint) {
  static const std::string kSql =
      std::string("SELECT ") + kIncidentCols + " FROM incidents WHERE fingerprint=?1";
  sqlite3_stmt* st = prepare("incident_by_fp", kSql.c_str());
  if (!st) return std::nullopt;
  bind_text(st, 1, fingerprint);
  std::optional<IncidentRow> out;
  if (sqlite3_step(st) == SQLITE_ROW) out = read_incident(st);
  sqlite3_reset(st);
  return out;
}

std::vector<IncidentRow> Store::record_incidents(const std::vector<IncidentIn>& in,
                                                 const std::string& run_id,
                                                 const std::string& node_id, int attempt,
                                                 int64_t now) {
  std::vector<IncidentRow> out;
  if (!begin()) return out;
  // The whole list or nothing: a failure half-way rolls back to here.
  std::string err;
  if (!exec_sql(db_, "SAVEPOINT record_incidents", &err)) {
    fail("record incidents: " + err);
    return out;
  }
  size_t held_mark = held_.size();
  int held_changes_mark = held_changes_;
  auto step = [&](sqlite3_stmt* st) {
    int rc = step_write(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE;
  };
  for (const IncidentIn& a : in)
    if (!allowed("record incident", a.fingerprint, "status", a.status, kIncidentStatuses))
      return {};
  bool ok = true;
  for (const IncidentIn& a : in) {
    bool resolved = a.status == "resolved";
    std::optional<IncidentRow> cur = incident(a.fingerprint);
    if (cur) {
      sqlite3_stmt* link = prepare(
          "incident_link", "SELECT created FROM incident_runs WHERE incident_id=?1 AND run_id=?2");
      if (!link) return {};
      bind_int(link, 1, cur->id);
      bind_text(link, 2, run_id);
      int rc = sqlite3_step(link);
      bool linked = rc == SQLITE_ROW;
      bool created = linked && sqlite3_column_int(link, 0) != 0;
      sqlite3_reset(link);
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
      sqlite3_stmt* st = prepare(kUpd, kUpd);
      if (!st) return {};
      bind_int(st, 1, cur->id);
      bind_text(st, 2, a.title);
      bind_text(st, 3, a.severity);
      bind_text(st, 4, a.status);
      bind_text(st, 5, a.source);
      bind_text(st, 6, a.labels);
      bind_text(st, 7, a.annotations);
      bind_text(st, 8, a.starts_at);
      bind_text(st, 9, a.ends_at);
      bind_int(st, 10, now);
      bind_int(st, 11, resolved ? 0 : 1);  // a resolution closes; it is not another firing
      bind_text(st, 12, run_id);
      ok = step(st);
    } else {
      static const char* kIns =
          "INSERT INTO incidents(fingerprint, title, severity, status, source, labels, "
          "annotations, starts_at, ends_at, first_seen, last_seen, count, resolved_at, "
          "last_run_id) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?10,1,?11,?12)";
      sqlite3_stmt* st = prepare(kIns, kIns);
      if (!st) return {};
      bind_text(st, 1, a.fingerprint);
      bind_text(st, 2, a.title);
      bind_text(st, 3, a.severity);
      bind_text(st, 4, a.status);
      bind_text(st, 5, a.source);
      bind_text(st, 6, a.labels);
      bind_text(st, 7, a.annotations);
      bind_text(st, 8, a.starts_at);
      bind_text(st, 9, a.ends_at);
      bind_int(st, 10, now);
      bind_int(st, 11, resolved ? now : 0, true);
      bind_text(st, 12, run_id);
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
    sqlite3_stmt* st = prepare(kLink, kLink);
    if (!st) return {};
    bind_int(st, 1, row->id);
    bind_text(st, 2, run_id);
    bind_text(st, 3, node_id);
    bind_int(st, 4, attempt);
    bind_text(st, 5, a.status);
    bind_int(st, 6, row->is_new ? 1 : 0);
    bind_int(st, 7, now);
    if (!(ok = step(st))) break;
    out.push_back(std::move(*row));
  }
  if (!ok) {
    std::string what = "record incident: " + std::string(sqlite3_errmsg(db_));
    exec_sql(db_, "ROLLBACK TO record_incidents", &err);
    exec_sql(db_, "RELEASE record_incidents", &err);
    held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(held_mark), held_.end());
    held_changes_ = held_changes_mark;
    fail(what);
    return {};
  }
  exec_sql(db_, "RELEASE record_incidents", &err);
  return out;
}

void Store::set_run_incident(const std::string& run_id, int64_t incident_id,
                             const std::string& fingerprint) {
  static const char* kSql =
      "UPDATE runs SET incident_id=?2, fingerprint=?3 WHERE id=?1 AND incident_id IS NULL";
  if (!begin()) return;
  sqlite3_stmt* st = prepare(kSql, kSql);
  if (!st) return;
  bind_text(st, 1, run_id);
  bind_int(st, 2, incident_id);
  bind_text(st, 3, fingerprint);
  if (step_write(st) != SQLITE_DONE) fail("set run incident " + run_id);
}

}  // namespace orch
