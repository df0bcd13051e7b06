// What the parts of orchrun serve share: the loop, the store, the scheduler, the registry, the
// HTTP server, the triggers, and the few helpers every handler uses (answer, auth, log).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "base/ids.h"
#include "base/json_util.h"
#include "base/secrets.h"
#include "drivers/http_server.h"
#include "drivers/loop.h"
#include "drivers/timer.h"
#include "engine/scheduler.h"
#include "server/doctor.h"
#include "server/metrics.h"
#include "server/registry.h"
#include "server/schedules.h"
#include "server/server.h"
#include "server/webhooks.h"
#include "store/checkpointer.h"
#include "store/store.h"

namespace orch {

class SseHub;
using ExchangePtr = std::shared_ptr<http::Exchange>;

struct ServerContext {
  ServerContext(Loop* loop, Store* store, ServeOptions opts);
  ~ServerContext();

  Loop* loop;
  Store* store;
  ServeOptions opts;
  bool loopback = true;
  std::unique_ptr<Scheduler> sched;
  std::unique_ptr<Checkpointer> checkpointer;
  std::unique_ptr<Registry> registry;
  std::unique_ptr<http::HttpServer> http;
  std::unique_ptr<SseHub> sse;
  std::unique_ptr<DoctorRunner> doctor;  // GET /api/doctor, off the loop
  Metrics metrics;
  SecretSource secrets;
  std::map<std::string, WebhookRoute> webhooks;  // by path
  std::vector<Schedule> schedules;
  std::unique_ptr<Timer> schedule_timer, prune_timer, drain_timer;
  // Every kOwnerCheckMs: runs whose owner died (a one-shot killed, another server that
  // crashed) are taken over, and a one-shot's parked gate gets its timeout applied on time.
  std::unique_ptr<Timer> owner_timer;
  static constexpr uint64_t kOwnerCheckMs = 2000;
  std::set<std::string> unresumable;  // runs that failed to resume: logged once, not retried
  int64_t started_at = 0;
  int64_t full_at = 0;  // when the scheduler began waiting for a full disk
  bool shutting_down = false;

  int64_t now() const { return opts.clock ? opts.clock() : wall_ms(); }
  void log(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
  // The token rules: with a token, every call beyond loopback and every state-changing call
  // needs it; without one, state-changing calls are allowed from loopback only.
  bool authorized(const http::Request& rq, bool state_changing) const;
  // 503 store_full with Retry-After: what a call that would write gets while the disk is full.
  http::Response store_full_response() const;
  // Sends `r` (and counts it in the metrics).
  void answer(const ExchangePtr& ex, http::Response r);
  // Starts a run of `p`, answering `ex` (202, once the run is committed) or with an error.
  void start_and_answer(Pipeline* p, RunOptions ro, const ExchangePtr& ex, json extra);
  // What the doctor checks of this server: its store's file, directory, secrets and token
  // file, with the load errors of the registry (the pipelines are not loaded again).
  DoctorInputs doctor_inputs() const;
  // Rebuilds the webhook routes and the schedules from the registry (after each load).
  void rebuild_triggers();
};

// Every request: a webhook delivery, or the JSON API.
void handle_request(ServerContext& c, const ExchangePtr& ex);

// Lower-case ASCII.
std::string lower_ascii(std::string s);
// Compares two strings in time that depends only on their lengths.
bool equal_const_time(const std::string& a, const std::string& b);

}  // namespace orch
