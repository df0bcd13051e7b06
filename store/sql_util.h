// Binding and reading helpers shared by the store's translation units (internal to store/).
#pragma once
#include <sqlite3.h>

#include <cstdint>
#include <string>

#include "store/store.h"

namespace orch {

inline void bind_text(sqlite3_stmt* st, int i, const std::string& s, bool null_if_empty = true) {
  if (s.empty() && null_if_empty)
    sqlite3_bind_null(st, i);
  else
    sqlite3_bind_text(st, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
}
inline void bind_int(sqlite3_stmt* st, int i, int64_t v, bool null_if_zero = false) {
  if (v == 0 && null_if_zero)
    sqlite3_bind_null(st, i);
  else
    sqlite3_bind_int64(st, i, v);
}
inline std::string col_text(sqlite3_stmt* st, int i) {
  const unsigned char* t = sqlite3_column_text(st, i);
  return t ? std::string(reinterpret_cast<const char*>(t), sqlite3_column_bytes(st, i)) : "";
}

// Inside the store's members these names are the members below: they bind, and keep the values
// of a write statement for the writes held on a full disk (Store::set_hold_when_full).
inline void Store::bind_text(sqlite3_stmt* st, int i, const std::string& s, bool null_if_empty) {
  orch::bind_text(st, i, s, null_if_empty);
  if (st != capture_st_) return;
  if (s.empty() && null_if_empty)
    capture_.push_back(BoundValue{i, SQLITE_NULL, 0, {}});
  else
    capture_.push_back(BoundValue{i, SQLITE_TEXT, 0, s});
}
inline void Store::bind_int(sqlite3_stmt* st, int i, int64_t v, bool null_if_zero) {
  orch::bind_int(st, i, v, null_if_zero);
  if (st != capture_st_) return;
  if (v == 0 && null_if_zero)
    capture_.push_back(BoundValue{i, SQLITE_NULL, 0, {}});
  else
    capture_.push_back(BoundValue{i, SQLITE_INTEGER, v, {}});
}
inline void Store::bind_null(sqlite3_stmt* st, int i) {
  sqlite3_bind_null(st, i);
  if (st == capture_st_) capture_.push_back(BoundValue{i, SQLITE_NULL, 0, {}});
}

// The values the schema's CHECK constraints allow.
inline constexpr const char* kRunStatuses[] = {"queued",    "running", "awaiting_approval",
                                               "succeeded", "failed",  "cancelled"};
inline constexpr const char* kNodeStatuses[] = {"pending", "running", "succeeded",
                                                "failed",  "skipped", "cancelled"};
inline constexpr const char* kApprovalStatuses[] = {"waiting", "approved", "rejected", "timed_out",
                                                    "cancelled"};
inline constexpr const char* kIncidentStatuses[] = {"firing", "resolved"};
inline constexpr const char* kLoadOutcomes[] = {"loaded", "unchanged", "invalid", "removed"};

// The columns read_run() expects, in order.
extern const char* const kRunCols;
RunRow read_run(sqlite3_stmt* st);

}  // namespace orch
