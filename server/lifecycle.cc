#include "server/lifecycle.h"

#include <unistd.h>

#include "engine/control.h"
#include "server/context.h"
#include "server/sse.h"

namespace orch {

bool start_server(ServerContext& c, std::string* err) {
  c.started_at = wall_ms();
  if (!c.loopback && c.opts.token.empty()) {
    *err = "refusing to listen on " + c.opts.host +
           " without a token: anyone who can reach it could start and approve runs. Set "
           "ORCHRUN_TOKEN or --token-file, or listen on 127.0.0.1";
    return false;
  }
  if (!c.registry->load_all(err)) return false;
  size_t ok = 0, bad = 0;
  for (auto& [f, e] : c.registry->entries()) (e.active ? ok : bad)++;
  // The doctor's view of this set-up, each problem logged (the store was opened already, the
  // pipelines are loaded: what it adds is integrity, free space and the files' modes).
  for (const auto& k : run_doctor(c.doctor_inputs())) {
    if (k.level == CheckLevel::kOk || k.name.rfind("pipeline", 0) == 0) continue;  // logged by load
    c.log("doctor: %s %s: %s%s%s", check_level_name(k.level), k.name.c_str(), k.message.c_str(),
          k.fix.empty() ? "" : " -> ", k.fix.c_str());
  }
  resume_unfinished(c);
  ServerContext* cp = &c;
  c.http = std::make_unique<http::HttpServer>(
      c.loop->get(), c.opts.http,
      [cp](std::shared_ptr<http::Exchange> ex) { handle_request(*cp, ex); });
  if (!c.http->listen(c.opts.host, c.opts.port, err)) return false;
  std::string werr;
  if (!c.registry->watch(&werr)) c.log("%s; pipeline files will not be reloaded", werr.c_str());
  c.prune_timer = std::make_unique<Timer>(c.loop->get());
  c.prune_timer->start(
      5000,
      [cp] {
        cp->registry->prune([cp](const Pipeline* p) { return cp->sched->uses_pipeline(p); });
      },
      5000);
  c.prune_timer->unref();
  c.owner_timer = std::make_unique<Timer>(c.loop->get());
  c.owner_timer->start(
      ServerContext::kOwnerCheckMs, [cp] { resume_unfinished(*cp); }, ServerContext::kOwnerCheckMs);
  c.owner_timer->unref();
  arm_schedule_timer(c);
  const std::string& host = c.opts.host;
  c.log("listening on http://%s%s%s:%d  (%zu pipelines from %s%s; db %s)",
        host.find(':') != std::string::npos ? "[" : "", host.c_str(),
        host.find(':') != std::string::npos ? "]" : "", c.http->port(), ok,
        c.registry->dir().c_str(), bad ? (", " + std::to_string(bad) + " invalid").c_str() : "",
        c.store->path().c_str());
  return true;
}

void resume_unfinished(ServerContext& c) {
  // A full disk holds what is in memory; taking more over waits until there is room.
  if (c.store->full()) return;
  std::vector<RunRow> todo;
  for (auto& r : c.store->unfinished_runs()) {
    if (c.sched->is_active(r.id) || c.unresumable.count(r.id) || owner_alive(r)) continue;
    if (!r.parent_run.empty()) {
      // A child run continues with its parent, unless the parent is over.
      auto parent = c.store->find_run(r.parent_run, nullptr);
      if (parent && (parent->status == RunStatus::running || parent->status == RunStatus::queued ||
                     is_parked(parent->status)))
        continue;
    }
    todo.push_back(r);
  }
  std::vector<std::pair<Pipeline*, RunRow*>> loadable;
  for (auto& r : todo) {
    std::string err;
    Pipeline* p = c.registry->for_run(r, &err);
    if (!p) {
      c.log("run %s: cannot resume: %s", r.id.c_str(), err.c_str());
      c.unresumable.insert(r.id);
      continue;
    }
    loadable.emplace_back(p, &r);
  }
  // Claimed in one transaction, each claim its own compare-and-set.
  std::vector<std::pair<std::string, int64_t>> claims;
  for (auto& [p, r] : loadable) claims.emplace_back(r->id, r->owner_pid);
  std::vector<bool> taken = c.store->claim_runs(claims, getpid());
  int n = 0;
  for (size_t i = 0; i < loadable.size(); i++) {
    if (!taken[i]) continue;
    auto& [p, r] = loadable[i];
    std::string err;
    if (c.sched->resume_run(p, *r, &err)) {
      n++;
    } else {
      c.log("run %s: cannot resume: %s", r->id.c_str(), err.c_str());
      c.unresumable.insert(r->id);
    }
  }
  c.store->commit();
  if (n) c.log("resumed %d unfinished run(s) (their process is gone)", n);
}

void log_run_finished(ServerContext& c, const RunSummary& s) {
  if (s.child) return;
  if (s.status == "failed")
    c.log("run %s of %s failed: %s%s%s", s.run_id.c_str(), s.pipeline.c_str(),
          s.error_node.empty() ? "" : (s.error_node + ": ").c_str(), s.error_type.c_str(),
          s.error_message.empty() ? "" : (" — " + s.error_message.substr(0, 200)).c_str());
}

void shutdown_server(ServerContext& c, std::function<void()> done) {
  if (c.shutting_down) return;
  c.shutting_down = true;
  c.log("shutting down: no new runs; %zu run(s) active, %zu node attempt(s) in flight (grace %s)",
        c.sched->active_runs(), c.sched->tasks_in_flight(),
        (std::to_string(c.opts.grace_ms / 1000.0).substr(0, 4) + "s").c_str());
  if (c.http) c.http->stop_accepting();
  c.registry->stop_watching();
  c.schedule_timer.reset();
  c.owner_timer.reset();
  c.sched->drain();
  int64_t deadline = wall_ms() + c.opts.grace_ms;
  c.drain_timer = std::make_unique<Timer>(c.loop->get());
  ServerContext* cp = &c;
  auto finish = [cp, done] {
    ServerContext& c = *cp;
    c.drain_timer.reset();
    size_t left = c.sched->active_runs();
    c.sched->detach_all();
    if (left) c.log("%zu run(s) left as they stand; the next start resumes them", left);
    c.sse->close_all();
    if (c.http) c.http->close_all();
    c.prune_timer.reset();
    // detach_all() sent SIGKILL to the child processes of the runs let go: each frees itself
    // once the loop has seen its exit and its pipes close. Wait for that (briefly: they were
    // killed) so that nothing is left open when `done` runs.
    int64_t reap_deadline = wall_ms() + 2000;
    c.drain_timer = std::make_unique<Timer>(c.loop->get());
    c.drain_timer->start(
        0,
        [cp, done, reap_deadline] {
          if (cp->sched->processes()->size() > 0 && wall_ms() < reap_deadline) return;
          cp->drain_timer.reset();
          if (done) done();
        },
        10);
  };
  c.drain_timer->start(
      0,
      [cp, deadline, finish] {
        if (cp->sched->tasks_in_flight() == 0 || wall_ms() >= deadline) finish();
      },
      20);
}

void close_server(ServerContext& c) {
  c.store->on_commit = nullptr;
  c.schedule_timer.reset();
  c.prune_timer.reset();
  c.drain_timer.reset();
  c.owner_timer.reset();
  if (c.sse) c.sse->close_all();
  c.http.reset();
  // Runs still active are let go as they stand (see shutdown()).
  if (c.sched) c.sched->detach_all();
  c.sched.reset();
  c.checkpointer.reset();
  c.registry.reset();
}

}  // namespace orch
