// orchrun serve: hosts the pipelines of a directory on one loop, behind webhooks, cron
// schedules, a JSON API, a server-sent-events stream and Prometheus metrics; reloads pipeline
// files when they change; resumes the runs it finds unfinished; shuts down gracefully.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/cron.h"
#include "base/ids.h"
#include "base/secrets.h"
#include "drivers/http_server.h"
#include "drivers/loop.h"
#include "drivers/timer.h"
#include "engine/pipeline_loader.h"
#include "engine/scheduler.h"
#include "server/metrics.h"
#include "server/registry.h"
#include "store/checkpointer.h"
#include "store/store.h"

namespace orch {

struct ServeOptions {
  std::string dir = "pipelines";
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (see Server::port())
  // Required for every state-changing call, and for every call when not on loopback.
  std::string token;
  http::ServerOptions http;
  int64_t grace_ms = 10000;  // shutdown: how long running nodes may take to finish
  int64_t reload_debounce_ms = 20;
  LoadOptions load;
  std::string secrets_file;  // webhook secrets (and o.secret): see base/secrets.h
  // The wall clock, unix ms (tests inject one to drive the cron schedules).
  std::function<int64_t()> clock;
  FILE* log = stderr;
};

// A webhook route: POST <path> starts a run of the pipeline.
struct WebhookRoute {
  std::string pipeline, path;
  std::string secret_name;       // a secret's name; empty: unsigned
  std::string signature_header;  // lower-case
  std::string signature_name;    // as the pipeline wrote it (for messages)
  std::string dedup_header;      // lower-case; empty: no deduplication
  bool envelope = false;         // input = {body, headers, query, delivery_id}
};

// A schedule of an active pipeline.
struct Schedule {
  std::string pipeline, key;  // key: the trigger's spec (cron, tz, ...), as JSON
  std::optional<CronExpr> cron;
  bool run_once_if_missed = false;
  std::string input_json = "{}";
  int64_t last_fire = 0;  // unix ms of the last fire time handled
  int64_t next_fire = -1;
};

class SseHub;

// W3C traceparent: "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>". The trace id, or
// "" when the header is not a valid one (an all-zero id is invalid; W3C says to ignore it).
std::string trace_from_traceparent(const std::string& header);

class Server {
 public:
  Server(Loop* loop, Store* store, ServeOptions opts);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Loads the pipelines, resumes unfinished runs, listens, watches the directory, arms the
  // schedules. False with *err (nothing listening) when it cannot.
  bool start(std::string* err);
  int port() const;
  // Graceful shutdown: stop accepting and stop the triggers; running node attempts get
  // grace_ms to finish (no new attempt starts); what is left is let go as it stands, to be
  // resumed by the next start. `done` is called once everything is closed.
  void shutdown(std::function<void()> done);
  bool shutting_down() const { return shutting_down_; }

  // Fires the schedules that are due at clock() (the schedule timer calls it; tests too).
  void check_schedules();
  const std::vector<Schedule>& schedules() const { return schedules_; }
  Registry& registry() { return *registry_; }
  Scheduler& scheduler() { return *sched_; }
  Metrics& metrics() { return metrics_; }
  int64_t now() const { return opts_.clock ? opts_.clock() : wall_ms(); }

 private:
  friend class Api;
  friend class ApiImpl;
  void handle(std::shared_ptr<http::Exchange> ex);
  bool authorized(const http::Request& rq, bool state_changing) const;
  void handle_webhook(const WebhookRoute& route, std::shared_ptr<http::Exchange> ex);
  void rebuild_triggers();
  void arm_schedule_timer();
  void fire(Schedule& s, int64_t fire_at, int missed);
  void resume_unfinished();
  static constexpr uint64_t kOwnerCheckMs = 2000;
  // Starts a run of `p`, answering `ex` (202, once the run is committed) or with an error.
  void start_and_answer(Pipeline* p, RunOptions ro, std::shared_ptr<http::Exchange> ex,
                        nlohmann::json extra);
  // 503 store_full with Retry-After: what a call that would write gets while the disk is full.
  http::Response store_full_response() const;
  void log(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
  void after_run(const RunSummary& s);

  Loop* loop_;
  Store* store_;
  ServeOptions opts_;
  bool loopback_ = true;
  std::unique_ptr<Scheduler> sched_;
  std::unique_ptr<Checkpointer> checkpointer_;
  std::unique_ptr<Registry> registry_;
  std::unique_ptr<http::HttpServer> http_;
  std::unique_ptr<SseHub> sse_;
  Metrics metrics_;
  SecretSource secrets_;
  std::map<std::string, WebhookRoute> webhooks_;  // by path
  std::vector<Schedule> schedules_;
  std::unique_ptr<Timer> schedule_timer_, prune_timer_, drain_timer_;
  // Every kOwnerCheckMs: runs whose owner died (a one-shot killed, another server that
  // crashed) are taken over, and a one-shot's parked gate gets its timeout applied on time.
  std::unique_ptr<Timer> owner_timer_;
  std::set<std::string> unresumable_;  // runs that failed to resume: logged once, not retried
  int64_t started_at_ = 0;
  int64_t full_at_ = 0;  // when the scheduler began waiting for a full disk
  bool shutting_down_ = false;
};

}  // namespace orch
