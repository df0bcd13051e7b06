#include <algorithm>

#include "store/sqlite/sqlite_store.h"
#include "store/sqlite/tables.h"

namespace orch {
namespace {

std::string attempt_key(const std::string& run_id, const std::string& node_id, int attempt) {
  std::string k = run_id;
  k += '\0';
  k += node_id;
  k += '\0';
  k += std::to_string(attempt);
  return k;
}

void bind_node_end(Stmt& st, const NodeRunRow& r) {
  st.bind_all(r.run_id, r.node_id, r.attempt, r.status.view(), r.finished_at, r.duration_ms,
              r.output, r.error_type, r.error_message, r.traceback,
              null_if(r.error_type.empty(), r.retryable ? 1 : 0), r.verdict, r.verdict_reason);
}

}  // namespace

void SqliteStore::insert_node_attempt(const std::string& run_id, const std::string& node_id,
                                      int attempt, const std::string& kind, int64_t started_at,
                                      int run_attempt) {
  // Written at the commit (flush_attempts) if it is still running then; an attempt that ends
  // in the same transaction is written once, as it ended (finish_node_attempt).
  if (!begin()) return;
  PendingAttempt a{
      run_id, node_id, kind, attempt, started_at, static_cast<int64_t>(++node_seq_), run_attempt};
  pending_attempts_[attempt_key(run_id, node_id, attempt)] = std::move(a);
}

void SqliteStore::write_attempt(const PendingAttempt& a) {
  static const char* kSql =
      "INSERT INTO node_runs(run_id, node_id, attempt, kind, status, started_at, seq, "
      "run_attempt) VALUES(?1,?2,?3,?4,'running',?5,?6,?7)";
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_all(a.run_id, a.node_id, a.attempt, a.kind, a.started_at, a.seq, a.run_attempt);
  if (st.step_write() != SQLITE_DONE) fail("insert node attempt " + a.node_id);
}

void SqliteStore::flush_attempts() {
  if (pending_attempts_.empty()) return;
  std::vector<const PendingAttempt*> order;
  order.reserve(pending_attempts_.size());
  for (auto& [k, a] : pending_attempts_) order.push_back(&a);
  std::sort(order.begin(), order.end(),
            [](const PendingAttempt* x, const PendingAttempt* y) { return x->seq < y->seq; });
  for (const PendingAttempt* a : order) write_attempt(*a);
  pending_attempts_.clear();
}

void SqliteStore::finish_node_attempt(const NodeRunRow& r) {
  if (!db_.allowed("finish node attempt", r.node_id, "status", r.status.view(),
                   status_names(NodeStatus{})) ||
      !begin())
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
    Stmt st = db_.prepare(kIns);
    if (!st) return;
    bind_node_end(st, r);
    st.bind_text(14, a.kind);
    st.bind_int(15, a.started_at);
    st.bind_int(16, a.seq);
    st.bind_int(17, a.run_attempt);
    pending_attempts_.erase(pending);
    if (st.step_write() != SQLITE_DONE) fail("finish node attempt " + r.node_id);
    return;
  }
  static const char* kSql =
      "UPDATE node_runs SET status=?4, finished_at=?5, duration_ms=?6, output=?7, "
      "error_type=?8, error_message=?9, traceback=?10, retryable=?11, verdict=?12, "
      "verdict_reason=?13 WHERE run_id=?1 AND node_id=?2 AND attempt=?3";
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  bind_node_end(st, r);
  if (st.step_write() != SQLITE_DONE) fail("finish node attempt " + r.node_id);
}

void SqliteStore::insert_node_final(const NodeRunRow& r) {
  static const char* kSql =
      "INSERT INTO node_runs(run_id, node_id, attempt, kind, status, started_at, finished_at, "
      "duration_ms, output, error_type, error_message, seq, run_attempt) "
      "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)";
  if (!db_.allowed("insert node row", r.node_id, "status", r.status.view(),
                   status_names(NodeStatus{})) ||
      !begin())
    return;
  Stmt st = db_.prepare(kSql);
  if (!st) return;
  st.bind_all(r.run_id, r.node_id, r.attempt, r.kind.empty() ? std::string("body") : r.kind,
              r.status.view(), r.started_at, r.finished_at, r.duration_ms, r.output, r.error_type,
              r.error_message, static_cast<int64_t>(++node_seq_), r.run_attempt);
  if (st.step_write() != SQLITE_DONE) fail("insert node row " + r.node_id);
}

int SqliteStore::mark_interrupted(const std::string& run_id, int64_t now) {
  if (!begin()) return 0;
  flush_attempts();
  Stmt st = db_.query(
      "UPDATE node_runs SET status='failed', error_type='interrupted', retryable=1, "
      "error_message='interrupted: the process running this attempt stopped (crash, kill "
      "or shutdown)', finished_at=?2, duration_ms=?2-started_at "
      "WHERE run_id=?1 AND status='running' AND kind NOT IN ('approval','signal')");
  if (!st) {
    fail("mark interrupted " + run_id);
    return 0;
  }
  st.bind_text(1, run_id);
  st.bind_int(2, now);
  if (st.step_write() != SQLITE_DONE) fail("mark interrupted " + run_id);
  return db_.changes();
}

std::vector<NodeRunRow> SqliteStore::node_runs(const std::string& run_id) {
  flush_attempts();  // reads see the attempts started in the open transaction too
  const char* sql =
      "SELECT run_id, node_id, attempt, kind, status, started_at, finished_at, duration_ms, "
      "output, error_type, error_message, traceback, retryable, run_attempt, verdict, "
      "verdict_reason FROM node_runs "
      "WHERE run_id=?1 ORDER BY seq";
  std::vector<NodeRunRow> out;
  Stmt st = db_.query(sql);
  if (!st) return out;
  st.bind_text(1, run_id);
  while (st.next()) {
    NodeRunRow r;
    st.read_all(r.run_id, r.node_id, r.attempt, r.kind, r.status, r.started_at, r.finished_at,
                r.duration_ms, r.output, r.error_type, r.error_message, r.traceback, r.retryable,
                r.run_attempt, r.verdict, r.verdict_reason);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace orch
