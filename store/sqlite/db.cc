#include "store/sqlite/db.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "base/ids.h"
#include "store/sqlite/schema.h"
#include "store/store.h"

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

bool Db::open(const std::string& path, const StoreOptions& opts, std::string* err) {
  Db* s = this;
  s->path_ = path;
  std::error_code ec;
  auto parent = std::filesystem::path(path).parent_path();
  if (!opts.read_only && !parent.empty() && !std::filesystem::exists(parent, ec)) {
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      *err = "cannot create directory " + parent.string() + " for database: " + ec.message();
      return false;
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
    return false;
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
    return false;
  }
  if (tables > 0 && app_id != kApplicationId) {
    *err = path +
           ": not an orchrun database (it is a SQLite file with other tables; "
           "refusing to modify it)";
    return false;
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
      return false;
    }
    if (!s->migrate(&e)) {
      *err = path + ": " + e;
      return false;
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
  return true;
}

Db::~Db() {
  for (auto& [sql, st] : stmts_) sqlite3_finalize(st);
  stmts_.clear();
  if (db_) sqlite3_close_v2(db_);
}

bool Db::migrate(std::string* err) {
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

void Db::fail(const std::string& what) {
  if (!error_.empty()) return;
  failed_disk_full_ = disk_full(sqlite3_extended_errcode(db_));
  error_ = what + ": " + sqlite3_errmsg(db_);
}

bool Db::disk_full(int rc) const {
  return is_disk_full(db_, rc);
}

void Db::set_hold_when_full(bool on) {
  hold_when_full_ = on;
  // No dirty page goes to the WAL before the commit: a full disk then fails the COMMIT, whose
  // writes are held, and never a statement half-way through a transaction.
  std::string e;
  exec_sql(db_, on ? "PRAGMA cache_spill=OFF" : "PRAGMA cache_spill=ON", &e);
}

void Db::arm_capture(sqlite3_stmt* st) {
  if (!hold_when_full_ || sqlite3_stmt_readonly(st)) return;
  capture_st_ = st;
  capture_.clear();
}

int Db::step_write(sqlite3_stmt* st) {
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
        h.returned = column_text(st, 0);
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

bool Db::apply_held() {
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
      same = h.changes < 0 && column_text(st, 0) == h.returned;
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

bool Db::allowed(const char* what, const std::string& subject, const char* column,
                 std::string_view value, std::span<const char* const> allowed) {
  for (const char* a : allowed)
    if (value == a) return true;
  if (error_.empty()) {
    std::string list;
    for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
    error_ = std::string(what) + " " + subject + ": " + column + " '" + std::string(value) +
             "' is not one of " + list;
  }
  return false;
}

void Db::fail_with(std::string message) {
  if (error_.empty()) error_ = std::move(message);
}

bool Db::exec(const char* sql, std::string* err) {
  return exec_sql(db_, sql, err);
}

sqlite3_stmt* Db::lookup(const char* sql, std::string* err) {
  auto it = stmts_.find(sql);
  if (it != stmts_.end()) return it->second;
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, nullptr) != SQLITE_OK) {
    *err = std::string(sqlite3_errmsg(db_)) + " in: " + sql;
    return nullptr;
  }
  prepares_++;
  stmts_.emplace(sql, st);
  return st;
}

Stmt Db::cached(const char* sql, bool fail_store, std::string* err) {
  std::string e;
  sqlite3_stmt* st = lookup(sql, &e);
  if (!st) {
    if (fail_store) fail_with("prepare: " + e);
    if (err) *err = e;
    return Stmt(this, nullptr);
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  arm_capture(st);
  return Stmt(this, st);
}

Stmt Db::prepare(const char* sql) {
  return cached(sql, true, nullptr);
}

Stmt Db::query(const char* sql, std::string* err) {
  return cached(sql, false, err);
}

void Db::capture(sqlite3_stmt* st, int i, int type, int64_t v, std::string_view s) {
  if (st == capture_st_) capture_.push_back(BoundValue{i, type, v, std::string(s)});
}

bool Db::savepoint(const char* name, Savepoint* mark, std::string* err) {
  std::string sql = std::string("SAVEPOINT ") + name;
  if (!exec_sql(db_, sql.c_str(), err)) return false;
  mark->held = held_.size();
  mark->held_changes = held_changes_;
  return true;
}

void Db::rollback_to(const char* name, const Savepoint& mark) {
  std::string err;
  exec_sql(db_, (std::string("ROLLBACK TO ") + name).c_str(), &err);
  exec_sql(db_, (std::string("RELEASE ") + name).c_str(), &err);
  held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(mark.held), held_.end());
  held_changes_ = mark.held_changes;
}

void Db::release(const char* name) {
  std::string err;
  exec_sql(db_, (std::string("RELEASE ") + name).c_str(), &err);
}

Stmt::~Stmt() {
  if (st_) {
    sqlite3_reset(st_);
    sqlite3_clear_bindings(st_);
  }
}

void Stmt::bind_text(int i, std::string_view s, bool null_if_empty) {
  if (s.empty() && null_if_empty) {
    sqlite3_bind_null(st_, i);
    db_->capture(st_, i, SQLITE_NULL, 0, {});
  } else {
    sqlite3_bind_text(st_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    db_->capture(st_, i, SQLITE_TEXT, 0, s);
  }
}

void Stmt::bind_int(int i, int64_t v, bool null_if_zero) {
  if (v == 0 && null_if_zero) {
    sqlite3_bind_null(st_, i);
    db_->capture(st_, i, SQLITE_NULL, 0, {});
  } else {
    sqlite3_bind_int64(st_, i, v);
    db_->capture(st_, i, SQLITE_INTEGER, v, {});
  }
}

void Stmt::bind_null(int i) {
  sqlite3_bind_null(st_, i);
  db_->capture(st_, i, SQLITE_NULL, 0, {});
}

int Stmt::step_write() {
  return db_->step_write(st_);
}

std::string Stmt::col_text(int i) const {
  return column_text(st_, i);
}

std::string column_text(sqlite3_stmt* st, int i) {
  const unsigned char* t = sqlite3_column_text(st, i);
  return t ? std::string(reinterpret_cast<const char*>(t), sqlite3_column_bytes(st, i)) : "";
}

bool Db::begin() {
  if (in_tx_) return true;
  // Prepared once: parsing BEGIN/COMMIT anew at every commit shows in the chain benchmark.
  static const char* kBegin = "BEGIN IMMEDIATE";
  std::string err;
  sqlite3_stmt* st = lookup(kBegin, &err);
  if (!st) fail_with("prepare: " + err);
  if (st) sqlite3_reset(st);
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

Db::Commit Db::commit() {
  if (!in_tx_) return Commit::nothing;
  in_tx_ = false;
  static const char* kCommit = "COMMIT";
  std::string err;
  sqlite3_stmt* st = lookup(kCommit, &err);
  if (!st) fail_with("prepare: " + err);
  if (st) sqlite3_reset(st);
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
      return Commit::held;
    }
    fail("commit");
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    held_.clear();
    held_changes_ = 0;
    held_incomplete_ = false;
    return Commit::failed;
  }
  held_.clear();
  held_changes_ = 0;
  held_incomplete_ = false;
  full_ = false;
  full_since_ = 0;
  commits_++;
  return Commit::committed;
}

}  // namespace orch
