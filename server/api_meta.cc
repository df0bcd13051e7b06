// The API about the server itself: GET /healthz and GET /metrics.
#include "server/api_call.h"
#include "server/sse.h"

namespace orch {

using http::error_response;
using http::Response;

void api_healthz(ApiCall& call) {
  ServerContext& c = call.c;
  if (c.shutting_down)
    return call.ok(503, {{"status", "shutting_down"}, {"runs_active", c.sched->active_runs()}});
  if (c.store->full())
    return call.ok(503, {{"status", "store_full"},
                         {"full_since", iso8601_ms(c.store->full_since())},
                         {"held_writes", c.store->held_writes()},
                         {"runs_active", c.sched->active_runs()}});
  size_t active = 0, invalid = 0;
  for (auto& [f, e] : c.registry->entries()) {
    active += e.active ? 1 : 0;
    invalid += (!e.active && !e.removed) ? 1 : 0;
  }
  call.ok(200, {{"status", "ok"},
                {"pipelines", active},
                {"pipelines_invalid", invalid},
                {"runs_active", c.sched->active_runs()},
                {"uptime_s", (wall_ms() - c.started_at) / 1000}});
}

// GET /api/doctor[?full=1]: the doctor's checks of this server (200 when none failed, else
// 503, so a probe can use it), run off the loop on a read-only connection of its own.
void api_doctor(ApiCall& call) {
  ServerContext& c = call.c;
  DoctorInputs in = c.doctor_inputs();
  in.full_integrity = call.rq.param("full") == "1";
  in.check_libcurl = false;  // libcurl is initialised on the loop thread only
  DoctorCheck curl = libcurl_check();
  if (!c.doctor) c.doctor = std::make_unique<DoctorRunner>(c.loop->get());
  ServerContext* cp = &c;
  auto ex = call.ex;
  bool started = c.doctor->start(std::move(in), [cp, ex, curl](std::vector<DoctorCheck> checks) {
    checks.push_back(curl);
    json j = doctor_json(checks);
    cp->answer(ex, Response::json(doctor_failed(checks) ? 503 : 200, dump_json(j)));
  });
  if (!started) {
    Response r = error_response(503, "busy", "a doctor check is running; try again in a second");
    r.headers.emplace_back("Retry-After", "1");
    call.reply(std::move(r));
  }
}

void api_metrics(ApiCall& call) {
  ServerContext& c = call.c;
  Metrics::Gauges g;
  g.runs_in_flight = c.sched->active_runs();
  g.runs_by_status = c.store->count_runs_by_status();
  for (auto& [f, e] : c.registry->entries()) {
    g.pipelines_active += e.active ? 1 : 0;
    g.pipelines_invalid += (!e.active && !e.removed) ? 1 : 0;
  }
  g.http_connections = c.http ? c.http->connections() : 0;
  if (c.http) {
    g.http_bad_requests = c.http->stats().bad_requests;
    g.http_timeouts = c.http->stats().timeouts;
    g.http_connections_accepted = c.http->stats().connections_accepted;
  }
  g.sse_clients = c.sse->clients();
  g.store_commits = c.store->commits();
  g.store_full_errors = c.store->full_errors();
  g.store_full = c.store->full();
  g.start_time_s = c.started_at / 1000.0;
  call.reply(Response::text(200, c.metrics.render(g), "text/plain; version=0.0.4; charset=utf-8"));
}

}  // namespace orch
