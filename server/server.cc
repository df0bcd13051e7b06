#include "server/server.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <unistd.h>

#include <cstdarg>
#include <ctime>

#include "base/digest.h"
#include "base/ids.h"
#include "base/json_util.h"
#include "engine/control.h"
#include "server/api.h"
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

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  return s;
}

// Compares two strings in time that depends only on their lengths.
bool equal_const_time(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

std::string trace_from_traceparent(const std::string& v) {
  if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return "";
  std::string version = v.substr(0, 2), trace = v.substr(3, 32);
  if (version == "ff") return "";
  bool zero = true;
  for (char c : version + trace) {
    if (!isxdigit(static_cast<unsigned char>(c)) || isupper(static_cast<unsigned char>(c)))
      return "";
  }
  for (char c : trace) zero = zero && c == '0';
  return zero ? "" : trace;
}

Server::Server(Loop* loop, Store* store, ServeOptions opts)
    : loop_(loop), store_(store), opts_(std::move(opts)), secrets_(opts_.secrets_file) {
  loopback_ = is_loopback(opts_.host);
  // A full disk does not stop the server: the store holds its writes, the scheduler waits,
  // new work is refused with 503 until a commit succeeds again.
  store_->set_hold_when_full(true);
  sched_ = std::make_unique<Scheduler>(loop_, store_);
  sched_->hold_gates = true;
  sched_->on_store_full = [this](bool full) {
    if (full) {
      full_at_ = wall_ms();
      log("disk full: cannot commit to %s; %zu write(s) held in memory, %zu run(s) waiting; new "
          "runs, webhooks and API changes are refused (503 store_full) until a commit succeeds "
          "(tried every %.0f s)",
          store_->path().c_str(), store_->held_writes(), sched_->active_runs(),
          Scheduler::kFullRetryMs / 1000.0);
    } else {
      log("the disk has room again: what was held is committed to %s after %.1f s; accepting "
          "new work",
          store_->path().c_str(), (wall_ms() - full_at_) / 1000.0);
    }
  };
  checkpointer_ = std::make_unique<Checkpointer>(loop_->get(), store_);
  sched_->add_sink(&metrics_);
  sse_ = std::make_unique<SseHub>(loop_->get(), store_);
  sched_->add_sink(sse_.get());
  store_->on_commit = [this] { sse_->flush(); };
  registry_ = std::make_unique<Registry>(loop_->get(), store_, opts_.dir, opts_.load, sched_.get());
  registry_->debounce_ms = opts_.reload_debounce_ms;
  sched_->pipeline_source = registry_.get();
  sched_->on_run_finished = [this](const RunSummary& s) { after_run(s); };
  registry_->check_extra = [this](const Pipeline& p, const std::string& file) -> std::string {
    for (auto& t : p.triggers) {
      if (t.type != "webhook") continue;
      std::string path = parse_json(t.spec, nullptr).value("path", "");
      if (path == "/healthz" || path == "/metrics" || path.rfind("/api/", 0) == 0 || path == "/api")
        return "o.webhook: path " + path + " is reserved for the server";
      auto it = webhooks_.find(path);
      if (it == webhooks_.end() || it->second.pipeline == p.name) continue;
      // The path's owner may be this very file under its previous name (a rename).
      const PipelineEntry* owner = registry_->by_name(it->second.pipeline);
      if (!owner || owner->file != file)
        return "o.webhook: path " + path + " is already used by pipeline " + it->second.pipeline;
    }
    return "";
  };
  registry_->on_error = [this](const PipelineEntry& e) {
    log("pipeline %s: not loaded:\n%s", e.file.c_str(), e.error.c_str());
  };
  registry_->on_change = [this](const PipelineEntry& e, const std::string& outcome) {
    if (outcome != "initial") {
      metrics_.reload(outcome);
      if (outcome == "loaded")
        log("pipeline %s v%d loaded from %s", e.name.c_str(), e.version, e.file.c_str());
      else if (outcome == "removed")
        log("pipeline %s removed (%s deleted); runs in flight finish on v%d", e.name.c_str(),
            e.file.c_str(), e.version);
    } else {
      metrics_.reload("loaded");
    }
    rebuild_triggers();
  };
}

Server::~Server() {
  store_->on_commit = nullptr;
  schedule_timer_.reset();
  prune_timer_.reset();
  drain_timer_.reset();
  owner_timer_.reset();
  if (sse_) sse_->close_all();
  http_.reset();
  // Runs still active are let go as they stand (see shutdown()).
  if (sched_) sched_->detach_all();
  sched_.reset();
  checkpointer_.reset();
  registry_.reset();
}

void Server::log(const char* fmt, ...) {
  if (!opts_.log) return;
  time_t t = time(nullptr);
  struct tm tm {};
  localtime_r(&t, &tm);
  char ts[32];
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  fprintf(opts_.log, "%s orchrun serve: ", ts);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(opts_.log, fmt, ap);
  va_end(ap);
  fputc('\n', opts_.log);
  fflush(opts_.log);
}

int Server::port() const {
  return http_ ? http_->port() : 0;
}

bool Server::start(std::string* err) {
  started_at_ = wall_ms();
  if (!loopback_ && opts_.token.empty()) {
    *err = "refusing to listen on " + opts_.host +
           " without a token: anyone who can reach it could start and approve runs. Set "
           "ORCHRUN_TOKEN or --token-file, or listen on 127.0.0.1";
    return false;
  }
  if (!registry_->load_all(err)) return false;
  size_t ok = 0, bad = 0;
  for (auto& [f, e] : registry_->entries()) (e.active ? ok : bad)++;
  resume_unfinished();
  http_ = std::make_unique<http::HttpServer>(
      loop_->get(), opts_.http, [this](std::shared_ptr<http::Exchange> ex) { handle(ex); });
  if (!http_->listen(opts_.host, opts_.port, err)) return false;
  std::string werr;
  if (!registry_->watch(&werr)) log("%s; pipeline files will not be reloaded", werr.c_str());
  prune_timer_ = std::make_unique<Timer>(loop_->get());
  prune_timer_->start(
      5000,
      [this] { registry_->prune([this](const Pipeline* p) { return sched_->uses_pipeline(p); }); },
      5000);
  prune_timer_->unref();
  owner_timer_ = std::make_unique<Timer>(loop_->get());
  owner_timer_->start(
      kOwnerCheckMs, [this] { resume_unfinished(); }, kOwnerCheckMs);
  owner_timer_->unref();
  arm_schedule_timer();
  log("listening on http://%s%s%s:%d  (%zu pipelines from %s%s; db %s)",
      opts_.host.find(':') != std::string::npos ? "[" : "", opts_.host.c_str(),
      opts_.host.find(':') != std::string::npos ? "]" : "", port(), ok, registry_->dir().c_str(),
      bad ? (", " + std::to_string(bad) + " invalid").c_str() : "", store_->path().c_str());
  return true;
}

// --- requests -------------------------------------------------------------------------------

http::Response Server::store_full_response() const {
  http::Response r = http::error_response(
      503, "store_full",
      "the disk of the server's database is full: no new work until there is room again (the "
      "runs in flight wait in memory)");
  r.headers.emplace_back("Retry-After", "5");
  return r;
}

bool Server::authorized(const http::Request& rq, bool state_changing) const {
  if (opts_.token.empty()) return loopback_ || !state_changing;
  if (!state_changing && loopback_) return true;
  const std::string* h = rq.header("authorization");
  if (!h || h->size() < 7 || lower(h->substr(0, 7)) != "bearer ") return false;
  return equal_const_time(h->substr(7), opts_.token);
}

void Server::handle(std::shared_ptr<http::Exchange> ex) {
  const http::Request& rq = ex->request();
  auto it = webhooks_.find(rq.path);
  if (it != webhooks_.end()) {
    if (rq.method == "POST") return handle_webhook(it->second, ex);
    http::Response r = http::error_response(
        405, "method_not_allowed",
        rq.path + " is a webhook of pipeline " + it->second.pipeline + ": deliveries are POSTed");
    r.headers.emplace_back("Allow", "POST");
    return Api::answer(*this, ex, std::move(r));
  }
  Api::route(*this, ex);
}

void Server::start_and_answer(Pipeline* p, RunOptions ro, std::shared_ptr<http::Exchange> ex,
                              json extra) {
  std::string err;
  std::string id = sched_->start_run(p, ro, &err);
  if (id.empty()) {
    // A delivery claimed for this run (handle_webhook) is taken back: it started nothing.
    if (extra.is_object() && extra.contains("delivery_id") && !ro.run_id.empty())
      store_->release_delivery(p->name, extra["delivery_id"].get<std::string>(), ro.run_id);
    if (err == "duplicate idempotency key") {
      auto prev = store_->find_by_idempotency_key(p->name, ro.idempotency_key);
      json j{{"existing", true}};
      if (prev) {
        j["run_id"] = prev->id;
        j["trace_id"] = prev->trace_id;
        j["status"] = prev->status;
      }
      Api::answer(*this, ex, http::Response::json(200, dump_json(j)));
      return;
    }
    Api::answer(*this, ex, http::error_response(500, "store", err));
    return;
  }
  // 202 once the run is durable.
  json j{{"run_id", id}, {"pipeline", p->name}, {"status", "running"}};
  std::string trace;
  int version = 0;
  if (sched_->run_info(id, &trace, &version)) {
    j["trace_id"] = trace;
    j["version"] = version;
  }
  j.update(extra);
  sched_->after_commit([this, ex, j = std::move(j)] {
    if (store_->failed())
      Api::answer(*this, ex, http::error_response(500, "store", store_->error()));
    else
      Api::answer(*this, ex, http::Response::json(202, dump_json(j)));
  });
}

void Server::handle_webhook(const WebhookRoute& route, std::shared_ptr<http::Exchange> ex) {
  const http::Request& rq = ex->request();
  auto reject = [&](int status, const char* code, const std::string& msg) {
    metrics_.webhook(route.pipeline, code);
    Api::answer(*this, ex, http::error_response(status, code, msg));
  };
  if (shutting_down_) return reject(503, "shutting_down", "the server is shutting down");
  if (store_->full()) {
    metrics_.webhook(route.pipeline, "store_full");
    return Api::answer(*this, ex, store_full_response());
  }
  Pipeline* p = registry_->active(route.pipeline);
  if (!p) return reject(404, "not_found", "pipeline " + route.pipeline + " is not active");
  if (!route.secret_name.empty()) {
    std::string serr;
    auto secret = secrets_.get(route.secret_name, &serr);
    if (!secret) {
      log("webhook %s: secret %s is not set (%s); refusing deliveries", route.path.c_str(),
          route.secret_name.c_str(), serr.c_str());
      return reject(500, "secret_missing",
                    "the webhook's secret " + route.secret_name + " is not configured");
    }
    const std::string* sig = rq.header(route.signature_header);
    if (!sig) return reject(401, "signature_missing", "missing header " + route.signature_name);
    std::string given = lower(*sig);
    if (given.rfind("sha256=", 0) == 0) given = given.substr(7);
    if (!equal_const_time(given, hmac_sha256_hex(*secret, rq.body)))
      return reject(401, "bad_signature",
                    route.signature_name +
                        " does not match the body (HMAC-SHA256 with the "
                        "webhook's secret)");
  } else if (!loopback_ && !authorized(rq, true)) {
    return reject(401, "unauthorized",
                  "this webhook has no secret; beyond loopback it needs the bearer token");
  }
  std::string delivery;
  // A delivery seen before: 200 with the run the first one started, answered once the count
  // is committed, like an accepted delivery.
  auto duplicate = [&](const std::string& run_id) {
    metrics_.webhook(route.pipeline, "duplicate");
    auto r = store_->find_run(run_id, nullptr);
    json j{{"run_id", run_id}, {"duplicate", true}, {"delivery_id", delivery}};
    if (r) {
      j["trace_id"] = r->trace_id;
      j["status"] = r->status;
    }
    sched_->after_commit([this, ex, body = dump_json(j)] {
      Api::answer(*this, ex, http::Response::json(200, body));
    });
  };
  if (!route.dedup_header.empty()) {
    if (const std::string* d = rq.header(route.dedup_header)) delivery = *d;
    if (!delivery.empty()) {
      if (auto prev = store_->find_delivery(p->name, delivery)) {
        store_->count_duplicate_delivery(p->name, delivery, now());
        return duplicate(*prev);
      }
    }
  }
  json body = json::object();
  if (!rq.body.empty()) {
    std::string perr;
    // Bounded depth: deeper bodies are refused here, before anything copies or converts them.
    body = parse_json(rq.body, &perr, kMaxJsonDepth);
    if (body.is_discarded())
      return reject(400, "invalid_json", "the body is not valid JSON: " + perr);
  }
  json input;
  if (route.envelope) {
    json headers = json::object();
    for (auto& [k, v] : rq.headers)
      if (k != "authorization" && k != route.signature_header) headers[k] = v;
    input = {{"body", body}, {"headers", headers}, {"path", rq.path}, {"query", rq.query}};
    if (!delivery.empty()) input["delivery_id"] = delivery;
  } else {
    input = body.is_object() ? body : json{{"payload", body}};
  }
  RunOptions ro;
  ro.source = "webhook";
  ro.input_json = dump_json(input);
  if (const std::string* tp = rq.header("traceparent")) ro.trace_id = trace_from_traceparent(*tp);
  json extra = json::object();
  if (!delivery.empty()) {
    // The look-up above is a read: another server on the same store may record this delivery
    // meanwhile. The claim is the statement that decides, for a run id made here; when the
    // other server has it, this is a duplicate.
    extra["delivery_id"] = delivery;
    ro.run_id = new_ulid(wall_ms());
    std::string err;
    auto recorded = store_->claim_delivery(p->name, delivery, ro.run_id, now(), &err);
    if (!recorded) return reject(500, "store", err);
    if (*recorded != ro.run_id) return duplicate(*recorded);
  }
  metrics_.webhook(route.pipeline, "accepted");
  start_and_answer(p, ro, ex, extra);
}

// --- triggers --------------------------------------------------------------------------------

void Server::rebuild_triggers() {
  std::map<std::string, WebhookRoute> hooks;
  std::vector<Schedule> scheds;
  for (auto& [f, e] : registry_->entries()) {
    if (!e.active) continue;
    for (auto& t : e.active->triggers) {
      json spec = parse_json(t.spec, nullptr);
      if (t.type == "webhook") {
        WebhookRoute r;
        r.pipeline = e.active->name;
        r.path = spec.value("path", "");
        r.secret_name = spec.value("secret", "");
        r.signature_name = spec.value("signature_header", "X-Hub-Signature-256");
        r.signature_header = lower(r.signature_name);
        r.dedup_header = lower(spec.value("dedup_header", ""));
        r.envelope = spec.value("input", "body") == "envelope";
        hooks[r.path] = r;
      } else if (t.type == "schedule") {
        Schedule s;
        s.pipeline = e.active->name;
        s.key = t.spec;
        std::string cerr;
        s.cron = CronExpr::parse(spec.value("cron", ""), spec.value("tz", ""), &cerr);
        if (!s.cron) {
          log("pipeline %s: schedule %s: %s", s.pipeline.c_str(), t.spec.c_str(), cerr.c_str());
          continue;
        }
        s.run_once_if_missed = spec.value("missed", "skip") == "run_once";
        if (spec.contains("input")) s.input_json = dump_json(spec["input"]);
        // Keep what we know of a schedule that was there before the reload.
        for (auto& old : schedules_)
          if (old.pipeline == s.pipeline && old.key == s.key) s.last_fire = old.last_fire;
        if (s.last_fire == 0) {
          s.last_fire = store_->schedule_last_fire(s.pipeline, s.key);
          if (s.last_fire == 0) {
            // Never fired: it starts from now (no backfill of the past).
            s.last_fire = now();
            store_->set_schedule_fire(s.pipeline, s.key, s.last_fire);
          }
        }
        scheds.push_back(std::move(s));
      }
    }
  }
  webhooks_ = std::move(hooks);
  schedules_ = std::move(scheds);
  store_->commit();
  if (http_) arm_schedule_timer();  // after start(): fires what is due, missed runs included
}

void Server::arm_schedule_timer() {
  if (shutting_down_) return;
  if (!schedule_timer_) schedule_timer_ = std::make_unique<Timer>(loop_->get());
  check_schedules();
}

void Server::check_schedules() {
  if (shutting_down_) return;
  int64_t t = now();
  // A fire time counts as on time while it is less than a minute old; older ones were missed
  // (the server was down, or the loop was held up).
  constexpr int64_t kLate = 60000;
  int64_t soonest = -1;
  for (auto& s : schedules_) {
    int64_t due = s.cron->next_after(s.last_fire);
    int64_t latest = -1;
    int missed = 0, steps = 0;
    bool many = false;
    while (due > 0 && due <= t) {
      if (latest > 0) missed++;
      latest = due;
      if (++steps == 10000 && t - latest > 25 * 3600 * 1000LL) {
        // Down for a long time with a frequent schedule: only the last day matters now.
        many = true;
        due = s.cron->next_after(t - 25 * 3600 * 1000LL);
        continue;
      }
      due = s.cron->next_after(due);
    }
    if (latest > 0) {
      bool on_time = t - latest < kLate;
      if (!on_time) missed++;
      if (on_time || s.run_once_if_missed)
        fire(s, latest, missed);
      else
        log("pipeline %s: schedule %s missed %s%d fire time(s) up to %s; skipped (missed = "
            "\"skip\")",
            s.pipeline.c_str(), s.cron->expr().c_str(), many ? "more than " : "", missed,
            iso8601_ms(latest).c_str());
      s.last_fire = latest;
      store_->set_schedule_fire(s.pipeline, s.key, latest);
    }
    s.next_fire = due;
    if (due > 0 && (soonest < 0 || due < soonest)) soonest = due;
  }
  store_->commit();
  if (!schedule_timer_) return;
  if (soonest < 0) {
    schedule_timer_->stop();
    return;
  }
  // Wake at the next fire time, and at least once a minute (the wall clock may jump).
  int64_t wait = std::clamp<int64_t>(soonest - now(), 0, 60000);
  schedule_timer_->start(static_cast<uint64_t>(wait) + 1, [this] { check_schedules(); });
  schedule_timer_->unref();
}

void Server::fire(Schedule& s, int64_t fire_at, int missed) {
  Pipeline* p = registry_->active(s.pipeline);
  if (!p) return;
  RunOptions ro;
  ro.source = "schedule";
  json input = parse_json(s.input_json, nullptr);
  if (!input.is_object()) input = json::object();
  ro.input_json = dump_json(input);
  // One run per schedule and fire time, even with several servers on one store. A schedule
  // is its whole spec (cron, tz, input...), as in schedule_fires: two schedules of a pipeline
  // with the same expression (e.g. one per input) are two schedules, each with its run.
  ro.idempotency_key = "schedule:" + s.key + "@" + iso8601_ms(fire_at);
  std::string err;
  std::string id = sched_->start_run(p, ro, &err);
  if (id.empty()) {
    if (err != "duplicate idempotency key")
      log("pipeline %s: scheduled run not started: %s", s.pipeline.c_str(), err.c_str());
    return;
  }
  log("pipeline %s: scheduled run %s (%s, due %s%s)", s.pipeline.c_str(), id.c_str(),
      s.cron->expr().c_str(), iso8601_ms(fire_at).c_str(),
      missed ? (", " + std::to_string(missed) + " missed before").c_str() : "");
}

// --- runs ------------------------------------------------------------------------------------

void Server::resume_unfinished() {
  // A full disk holds what is in memory; taking more over waits until there is room.
  if (store_->full()) return;
  std::vector<RunRow> todo;
  for (auto& r : store_->unfinished_runs()) {
    if (sched_->is_active(r.id) || unresumable_.count(r.id) || owner_alive(r)) continue;
    if (!r.parent_run.empty()) {
      // A child run continues with its parent, unless the parent is over.
      auto parent = store_->find_run(r.parent_run, nullptr);
      if (parent && (parent->status == RunStatus::running || parent->status == RunStatus::queued ||
                     parent->status == RunStatus::awaiting_approval))
        continue;
    }
    todo.push_back(r);
  }
  std::vector<std::pair<Pipeline*, RunRow*>> loadable;
  for (auto& r : todo) {
    std::string err;
    Pipeline* p = registry_->for_run(r, &err);
    if (!p) {
      log("run %s: cannot resume: %s", r.id.c_str(), err.c_str());
      unresumable_.insert(r.id);
      continue;
    }
    loadable.emplace_back(p, &r);
  }
  // Claimed in one transaction, each claim its own compare-and-set.
  std::vector<std::pair<std::string, int64_t>> claims;
  for (auto& [p, r] : loadable) claims.emplace_back(r->id, r->owner_pid);
  std::vector<bool> taken = store_->claim_runs(claims, getpid());
  int n = 0;
  for (size_t i = 0; i < loadable.size(); i++) {
    if (!taken[i]) continue;
    auto& [p, r] = loadable[i];
    std::string err;
    if (sched_->resume_run(p, *r, &err)) {
      n++;
    } else {
      log("run %s: cannot resume: %s", r->id.c_str(), err.c_str());
      unresumable_.insert(r->id);
    }
  }
  store_->commit();
  if (n) log("resumed %d unfinished run(s) (their process is gone)", n);
}

void Server::after_run(const RunSummary& s) {
  if (s.child) return;
  if (s.status == "failed")
    log("run %s of %s failed: %s%s%s", s.run_id.c_str(), s.pipeline.c_str(),
        s.error_node.empty() ? "" : (s.error_node + ": ").c_str(), s.error_type.c_str(),
        s.error_message.empty() ? "" : (" — " + s.error_message.substr(0, 200)).c_str());
}

// --- shutdown --------------------------------------------------------------------------------

void Server::shutdown(std::function<void()> done) {
  if (shutting_down_) return;
  shutting_down_ = true;
  log("shutting down: no new runs; %zu run(s) active, %zu node attempt(s) in flight (grace %s)",
      sched_->active_runs(), sched_->tasks_in_flight(),
      (std::to_string(opts_.grace_ms / 1000.0).substr(0, 4) + "s").c_str());
  if (http_) http_->stop_accepting();
  registry_->stop_watching();
  schedule_timer_.reset();
  owner_timer_.reset();
  sched_->drain();
  int64_t deadline = wall_ms() + opts_.grace_ms;
  drain_timer_ = std::make_unique<Timer>(loop_->get());
  auto finish = [this, done] {
    drain_timer_.reset();
    size_t left = sched_->active_runs();
    sched_->detach_all();
    if (left) log("%zu run(s) left as they stand; the next start resumes them", left);
    sse_->close_all();
    if (http_) http_->close_all();
    prune_timer_.reset();
    // detach_all() sent SIGKILL to the child processes of the runs let go: each frees itself
    // once the loop has seen its exit and its pipes close. Wait for that (briefly: they were
    // killed) so that nothing is left open when `done` runs.
    int64_t reap_deadline = wall_ms() + 2000;
    drain_timer_ = std::make_unique<Timer>(loop_->get());
    drain_timer_->start(
        0,
        [this, done, reap_deadline] {
          if (sched_->processes()->size() > 0 && wall_ms() < reap_deadline) return;
          drain_timer_.reset();
          if (done) done();
        },
        10);
  };
  drain_timer_->start(
      0,
      [this, deadline, finish] {
        if (sched_->tasks_in_flight() == 0 || wall_ms() >= deadline) finish();
      },
      20);
}

}  // namespace orch
