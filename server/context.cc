#include "server/context.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>

#include <cstdarg>
#include <ctime>

#include "server/api.h"
#include "server/lifecycle.h"
#include "server/sse.h"

namespace orch {
namespace {

bool is_loopback(const std::string& host) {
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return host == "localhost";
}

}  // namespace

std::string lower_ascii(std::string s) {
  for (auto& c : s) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  return s;
}

bool equal_const_time(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

DoctorInputs ServerContext::doctor_inputs() const {
  DoctorInputs in;
  in.db_path = store->path();
  in.workspace_root = sched->workspace_root;
  in.pipelines_dir = registry->dir();
  in.have_load_errors = true;
  for (auto& [f, e] : registry->entries()) {
    if (e.active) in.pipelines_loaded++;
    if (!e.active && !e.removed && !e.error.empty()) in.load_errors.emplace_back(f, e.error);
  }
  in.load = opts.load;
  in.secrets_file = opts.secrets_file;
  in.token_file = opts.token_file;
  return in;
}

ServerContext::ServerContext(Loop* l, Store* st, ServeOptions o)
    : loop(l), store(st), opts(std::move(o)), secrets(opts.secrets_file) {
  loopback = is_loopback(opts.host);
  // A full disk does not stop the server: the store holds its writes, the scheduler waits,
  // new work is refused with 503 until a commit succeeds again.
  store->set_hold_when_full(true);
  sched = std::make_unique<Scheduler>(loop, store);
  sched->hold_gates = true;
  sched->on_store_full = [this](bool full) {
    if (full) {
      full_at = wall_ms();
      log("disk full: cannot commit to %s; %zu write(s) held in memory, %zu run(s) waiting; new "
          "runs, webhooks and API changes are refused (503 store_full) until a commit succeeds "
          "(tried every %.0f s)",
          store->path().c_str(), store->held_writes(), sched->active_runs(),
          Scheduler::kFullRetryMs / 1000.0);
    } else {
      log("the disk has room again: what was held is committed to %s after %.1f s; accepting "
          "new work",
          store->path().c_str(), (wall_ms() - full_at) / 1000.0);
    }
  };
  checkpointer = std::make_unique<Checkpointer>(loop->get(), store);
  sched->add_sink(&metrics);
  sse = std::make_unique<SseHub>(loop->get(), store);
  sched->add_sink(sse.get());
  store->on_commit = [this] { sse->flush(); };
  registry = std::make_unique<Registry>(loop->get(), store, opts.dir, opts.load, sched.get());
  registry->debounce_ms = opts.reload_debounce_ms;
  sched->pipeline_source = registry.get();
  sched->on_run_finished = [this](const RunSummary& s) { log_run_finished(*this, s); };
  registry->check_extra = [this](const Pipeline& p, const std::string& file) {
    return check_webhook_paths(*this, p, file);
  };
  registry->on_error = [this](const PipelineEntry& e) {
    log("pipeline %s: not loaded:\n%s", e.file.c_str(), e.error.c_str());
  };
  registry->on_change = [this](const PipelineEntry& e, const std::string& outcome) {
    if (outcome != "initial") {
      metrics.reload(outcome);
      if (outcome == "loaded")
        log("pipeline %s v%d loaded from %s", e.name.c_str(), e.version, e.file.c_str());
      else if (outcome == "removed")
        log("pipeline %s removed (%s deleted); runs in flight finish on v%d", e.name.c_str(),
            e.file.c_str(), e.version);
    } else {
      metrics.reload("loaded");
    }
    rebuild_triggers();
  };
}

ServerContext::~ServerContext() {
  close_server(*this);
}

void ServerContext::log(const char* fmt, ...) {
  if (!opts.log) return;
  time_t t = time(nullptr);
  struct tm tm {};
  localtime_r(&t, &tm);
  char ts[32];
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  fprintf(opts.log, "%s orchrun serve: ", ts);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(opts.log, fmt, ap);
  va_end(ap);
  fputc('\n', opts.log);
  fflush(opts.log);
}

bool ServerContext::authorized(const http::Request& rq, bool state_changing) const {
  if (opts.token.empty()) return loopback || !state_changing;
  if (!state_changing && loopback) return true;
  const std::string* h = rq.header("authorization");
  if (!h || h->size() < 7 || lower_ascii(h->substr(0, 7)) != "bearer ") return false;
  return equal_const_time(h->substr(7), opts.token);
}

http::Response ServerContext::store_full_response() const {
  http::Response r = http::error_response(
      503, "store_full",
      "the disk of the server's database is full: no new work until there is room again (the "
      "runs in flight wait in memory)");
  r.headers.emplace_back("Retry-After", "5");
  return r;
}

void ServerContext::answer(const ExchangePtr& ex, http::Response r) {
  metrics.http_response(r.status);
  ex->respond(std::move(r));
}

void ServerContext::start_and_answer(Pipeline* p, RunOptions ro, const ExchangePtr& ex,
                                     json extra) {
  std::string err;
  std::string id = sched->start_run(p, ro, &err);
  if (id.empty()) {
    // A delivery claimed for this run (the webhook's) is taken back: it started nothing.
    if (extra.is_object() && extra.contains("delivery_id") && !ro.run_id.empty())
      store->release_delivery(p->name, extra["delivery_id"].get<std::string>(), ro.run_id);
    if (err == "duplicate idempotency key") {
      auto prev = store->find_by_idempotency_key(p->name, ro.idempotency_key);
      json j{{"existing", true}};
      if (prev) {
        j["run_id"] = prev->id;
        j["trace_id"] = prev->trace_id;
        j["status"] = prev->status;
      }
      answer(ex, http::Response::json(200, dump_json(j)));
      return;
    }
    answer(ex, http::error_response(500, "store", err));
    return;
  }
  // 202 once the run is durable.
  json j{{"run_id", id}, {"pipeline", p->name}, {"status", "running"}};
  std::string trace;
  int version = 0;
  if (sched->run_info(id, &trace, &version)) {
    j["trace_id"] = trace;
    j["version"] = version;
  }
  j.update(extra);
  sched->after_commit([this, ex, j = std::move(j)] {
    if (store->failed())
      answer(ex, http::error_response(500, "store", store->error()));
    else
      answer(ex, http::Response::json(202, dump_json(j)));
  });
}

void ServerContext::rebuild_triggers() {
  auto hooks = build_webhooks(*registry);
  auto scheds = build_schedules(*this);
  webhooks = std::move(hooks);
  schedules = std::move(scheds);
  store->commit();
  if (http) arm_schedule_timer(*this);  // after start(): fires what is due, missed runs included
}

void handle_request(ServerContext& c, const ExchangePtr& ex) {
  if (dispatch_webhook(c, ex)) return;
  route_api(c, ex);
}

}  // namespace orch
