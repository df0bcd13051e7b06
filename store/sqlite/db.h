// The SQLite store's core: one connection (open, pragmas, the application-id guard,
// migrations), its transactions and group commit, the writes held on a full disk, and one cache
// of prepared statements with a typed wrapper. The tables (runs.cc, node_attempts.cc, ...) are
// written over it; nothing outside store/sqlite/ sees it.
#pragma once
#include <sqlite3.h>

#include <concepts>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace orch {

struct StoreOptions;
class Db;

// Markers for Stmt::bind_all: a number bound as NULL when it is 0 (a time not set yet, an
// optional id), and text bound as '' when it is empty (text is NULL when empty otherwise).
struct NullIfZero {
  int64_t v;
};
inline NullIfZero or_null(int64_t v) {
  return {v};
}
struct KeepEmpty {
  std::string_view s;
};
inline KeepEmpty keep_empty(std::string_view s) {
  return {s};
}
// For Stmt::bind_all: NULL when `cond` holds, else v.
template <class T>
std::optional<T> null_if(bool cond, T v) {
  return cond ? std::nullopt : std::optional<T>(std::move(v));
}
// A status (StatusOf<E>): bound and read as its name.
template <class T>
concept NamedValue = requires(const T& t) {
  { t.view() } -> std::convertible_to<std::string_view>;
};

// A statement from the cache, reset (and its bindings cleared) when it goes out of scope, so
// that no read transaction stays open behind a half-read result. The binds of a write keep
// their values for the writes held on a full disk (Db::set_hold_when_full).
class Stmt {
 public:
  Stmt(Db* db, sqlite3_stmt* st) : db_(db), st_(st) {}
  ~Stmt();
  Stmt(Stmt&& o) noexcept : db_(o.db_), st_(o.st_) { o.st_ = nullptr; }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt& operator=(Stmt&&) = delete;
  explicit operator bool() const { return st_ != nullptr; }

  void bind_text(int i, std::string_view s, bool null_if_empty = true);
  void bind_int(int i, int64_t v, bool null_if_zero = false);
  void bind_null(int i);
  // Binds ?1, ?2, ... in this order, each by its type: text (NULL when empty), a number, a bool
  // (0/1), a status (its name), an optional (NULL when empty), or_null(n), keep_empty(s),
  // nullptr (NULL). The columns of a write are listed once, in the SQL, and once here.
  template <class... Ts>
  void bind_all(const Ts&... values) {
    int i = 1;
    (bind_value(i++, values), ...);
  }

  // A read: SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return sqlite3_step(st_); }
  // The next row of a read (false at the end and on an error).
  bool next() { return sqlite3_step(st_) == SQLITE_ROW; }
  // A write (Db::step_write).
  int step_write();

  std::string col_text(int i) const;
  int64_t col_int64(int i) const { return sqlite3_column_int64(st_, i); }
  int col_int(int i) const { return sqlite3_column_int(st_, i); }
  bool col_bool(int i) const { return sqlite3_column_int(st_, i) != 0; }
  // Reads columns 0, 1, ... of the current row into these fields, each by its type (NULL reads
  // as "" or 0).
  template <class... Ts>
  void read_all(Ts&... fields) const {
    int i = 0;
    (read_value(i++, fields), ...);
  }

 private:
  void bind_value(int i, std::string_view s) { bind_text(i, s); }
  void bind_value(int i, KeepEmpty v) { bind_text(i, v.s, false); }
  void bind_value(int i, NullIfZero v) { bind_int(i, v.v, true); }
  void bind_value(int i, bool v) { bind_int(i, v ? 1 : 0); }
  void bind_value(int i, std::nullptr_t) { bind_null(i); }
  template <std::integral T>
  void bind_value(int i, T v) {
    bind_int(i, static_cast<int64_t>(v));
  }
  template <NamedValue T>
  void bind_value(int i, const T& v) {
    bind_text(i, v.view());
  }
  template <class T>
  void bind_value(int i, const std::optional<T>& v) {
    if (v)
      bind_value(i, *v);
    else
      bind_null(i);
  }
  void read_value(int i, std::string& out) const { out = col_text(i); }
  void read_value(int i, bool& out) const { out = col_bool(i); }
  template <std::integral T>
  void read_value(int i, T& out) const {
    out = static_cast<T>(col_int64(i));
  }
  template <NamedValue T>
  void read_value(int i, T& out) const {
    out = col_text(i);
  }

 private:
  Db* db_;
  sqlite3_stmt* st_;
};

class Db {
 public:
  Db() = default;
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Opens (creating if needed) and migrates the database; false with *err naming the path and
  // the problem. Refuses a SQLite file that is not orchrun's.
  bool open(const std::string& path, const StoreOptions& opts, std::string* err);

  sqlite3* handle() { return db_; }
  const std::string& path() const { return path_; }
  int schema_version() const { return schema_version_; }
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  // Keeps the first failure: `what` and SQLite's message.
  void fail(const std::string& what);
  // Keeps the first failure as it is given.
  void fail_with(std::string message);
  // The schema's CHECK(status IN (...)), in C++ (this connection skips the CHECKs): false, and
  // the store failed with a message naming `what` and `subject`, when `value` is not one of
  // `allowed`. The message is only built then: this is on every write's path.
  bool allowed(const char* what, const std::string& subject, const char* column,
               std::string_view value, std::span<const char* const> allowed);

  // The statement for a SQL text that lives as long as the program (a literal, or a string
  // built once): the cache is keyed by its address, so a call builds no string. prepare()
  // fails the store when the statement does not compile; query() only returns an empty Stmt.
  Stmt prepare(const char* sql);
  Stmt query(const char* sql, std::string* err = nullptr);
  // Statements compiled since the store opened (each cached SQL text once).
  uint64_t prepares() const { return prepares_; }

  bool exec(const char* sql, std::string* err);
  int changes() { return sqlite3_changes(db_); }
  int64_t last_insert_rowid() { return sqlite3_last_insert_rowid(db_); }

  // --- Transactions and group commit ---
  bool begin();
  bool in_transaction() const { return in_tx_; }
  enum class Commit { nothing, committed, held, failed };
  // Ends the open transaction. `held`: the disk is full and the writes are kept (with
  // hold_when_full); `failed`: rolled back, the store failed.
  Commit commit();
  uint64_t commits() const { return commits_; }
  // A savepoint around a group of writes: rolled back with the writes it held.
  struct Savepoint {
    size_t held = 0;
    int held_changes = 0;
  };
  bool savepoint(const char* name, Savepoint* mark, std::string* err);
  void rollback_to(const char* name, const Savepoint& mark);
  void release(const char* name);

  // --- A full disk (Store::set_hold_when_full) ---
  void set_hold_when_full(bool on);
  bool full() const { return full_; }
  uint64_t full_errors() const { return full_errors_; }
  int64_t full_since() const { return full_since_; }
  size_t held_writes() const { return held_.size(); }
  bool failed_disk_full() const { return failed_disk_full_; }
  // sqlite3_step for every write statement: with hold_when_full, a write that succeeded in the
  // open transaction is kept (held_) until the commit.
  int step_write(sqlite3_stmt* st);

 private:
  friend class Stmt;
  bool migrate(std::string* err);
  // The cached statement for `sql`, compiled on first use (nullptr when it does not compile).
  sqlite3_stmt* lookup(const char* sql, std::string* err);
  Stmt cached(const char* sql, bool fail_store, std::string* err);
  bool disk_full(int rc) const;
  // Applies the held writes again in the transaction begin() just opened. False (store failed,
  // transaction rolled back) when one of them fails or changes something else.
  bool apply_held();
  // A statement from the cache that writes: its values are kept from now on.
  void arm_capture(sqlite3_stmt* st);
  void capture(sqlite3_stmt* st, int i, int type, int64_t v, std::string_view s);

  struct BoundValue {
    int index = 0;
    int type = SQLITE_NULL;  // SQLITE_NULL, SQLITE_INTEGER or SQLITE_TEXT
    int64_t i = 0;
    std::string s;
  };
  // A write of the open transaction as it was made. `st` is a cached statement (they live as
  // long as the connection).
  struct Held {
    sqlite3_stmt* st = nullptr;
    std::vector<BoundValue> values;
    int changes = 0;       // rows changed; -1 for a statement with RETURNING (one row)
    int64_t rowid = 0;     // the row it inserted, 0: none
    std::string returned;  // RETURNING: the first column
  };

  sqlite3* db_ = nullptr;
  std::string path_;
  std::string error_;
  int schema_version_ = 0;
  bool in_tx_ = false;
  uint64_t commits_ = 0;
  uint64_t prepares_ = 0;
  std::unordered_map<const char*, sqlite3_stmt*> stmts_;

  bool hold_when_full_ = false;
  bool full_ = false;
  bool failed_disk_full_ = false;
  // A write of the transaction was not kept (a statement stepped without step_write, or
  // bound without the helpers): it cannot be applied again, and a full disk is a failure.
  bool held_incomplete_ = false;
  std::vector<Held> held_;
  int held_changes_ = 0;     // the rows the held writes changed (RETURNING: 1)
  int tx_changes_base_ = 0;  // sqlite3_total_changes() when the transaction began
  sqlite3_stmt* capture_st_ = nullptr;
  std::vector<BoundValue> capture_;
  uint64_t full_errors_ = 0;
  int64_t full_since_ = 0;
};

// The text of column i (an empty string for NULL).
std::string column_text(sqlite3_stmt* st, int i);

}  // namespace orch
