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

#include "base/ids.h"
#include "base/secrets.h"
#include "drivers/http_server.h"
#include "drivers/loop.h"
#include "drivers/timer.h"
#include "engine/pipeline_loader.h"
#include "engine/scheduler.h"
#include "server/metrics.h"
#include "server/registry.h"
#include "server/schedules.h"
#include "store/checkpointer.h"
#include "store/store.h"

namespace orch {

struct ServeOptions {
  std::string dir = "pipelines";
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (see Server::port())
  // Required for every state-changing call, and for every call when not on loopback.
  std::string token;
  std::string token_file;  // where the token came from ("" = none, or $ORCHRUN_TOKEN): doctor
  http::ServerOptions http;
  int64_t grace_ms = 10000;  // shutdown: how long running nodes may take to finish
  int64_t reload_debounce_ms = 20;
  LoadOptions load;
  std::string secrets_file;  // webhook secrets (and o.secret): see base/secrets.h
  // The wall clock, unix ms (tests inject one to drive the cron schedules).
  std::function<int64_t()> clock;
  FILE* log = stderr;
};

struct ServerContext;

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
  bool shutting_down() const;

  // Fires the schedules that are due at clock() (the schedule timer calls it; tests too).
  void check_schedules();
  const std::vector<Schedule>& schedules() const;
  Registry& registry();
  Scheduler& scheduler();
  Metrics& metrics();
  int64_t now() const;

 private:
  // What the webhooks, the schedules, the lifecycle and the API handlers share.
  std::unique_ptr<ServerContext> ctx_;
};

}  // namespace orch
