#include "store/checkpointer.h"

#include <sqlite3.h>

#include "store/sqlite/sqlite_store.h"

namespace orch {

struct Checkpointer::State {
  std::string path;
  sqlite3* db = nullptr;        // used by one job at a time, on a pool thread
  sqlite3* store_db = nullptr;  // the store's own connection (nullptr: not a SQLite store)
  bool busy = false;            // a job is queued or running
  bool alive = true;            // the Checkpointer still exists
  uint64_t done = 0;
  uint64_t last_commits = 0;
};

namespace {

struct Job {
  uv_work_t req;
  std::shared_ptr<void> keep;  // the State, alive until after_work
};

}  // namespace

Checkpointer::Checkpointer(uv_loop_t* loop, Store* store, int64_t interval_ms)
    : loop_(loop), store_(store), st_(std::make_shared<State>()) {
  st_->path = store->path();
  // Only a SQLite store has a WAL to checkpoint.
  auto* sqlite = dynamic_cast<SqliteStore*>(store);
  if (!sqlite) return;
  st_->store_db = sqlite->db().handle();
  sqlite3_wal_autocheckpoint(st_->store_db, 0);
  timer_ = std::make_unique<Timer>(loop);
  timer_->start(
      static_cast<uint64_t>(interval_ms), [this] { tick(); }, static_cast<uint64_t>(interval_ms));
  timer_->unref();
}

Checkpointer::~Checkpointer() {
  timer_.reset();
  st_->alive = false;
  if (!st_->busy && st_->db) {
    sqlite3_close(st_->db);
    st_->db = nullptr;
  }
  // A job in flight closes the connection in its after_work callback.
  if (st_->store_db) sqlite3_wal_autocheckpoint(st_->store_db, 1000);
}

uint64_t Checkpointer::checkpoints() const {
  return st_->done;
}

void Checkpointer::tick() {
  if (st_->busy || store_->commits() == st_->last_commits) return;
  st_->last_commits = store_->commits();
  st_->busy = true;
  auto* job = new Job;
  job->keep = st_;
  job->req.data = job;
  uv_queue_work(
      loop_, &job->req,
      [](uv_work_t* req) {
        auto* st = static_cast<State*>(static_cast<Job*>(req->data)->keep.get());
        if (!st->db) {
          if (sqlite3_open_v2(st->path.c_str(), &st->db, SQLITE_OPEN_READWRITE, nullptr) !=
              SQLITE_OK) {
            sqlite3_close(st->db);
            st->db = nullptr;
            return;
          }
          sqlite3_busy_timeout(st->db, 1000);
        }
        int log = 0, ckpt = 0;
        if (sqlite3_wal_checkpoint_v2(st->db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &ckpt) ==
            SQLITE_OK)
          st->done++;
      },
      [](uv_work_t* req, int) {
        auto* job = static_cast<Job*>(req->data);
        auto* st = static_cast<State*>(job->keep.get());
        st->busy = false;
        if (!st->alive && st->db) {
          sqlite3_close(st->db);
          st->db = nullptr;
        }
        delete job;
      });
}

}  // namespace orch
