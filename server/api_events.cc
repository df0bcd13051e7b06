// GET /api/events: the server-sent events of runs and nodes (server/sse.h).
#include "server/api_call.h"
#include "server/sse.h"

namespace orch {

using http::error_response;
using http::Response;

void api_events(ApiCall& call) {
  ServerContext& c = call.c;
  std::string run = call.rq.param("run"), pipeline = call.rq.param("pipeline");
  int64_t last = -1;  // no position: from now on (0: from the first event)
  std::string lei;
  if (const std::string* h = call.rq.header("last-event-id")) lei = *h;
  bool found = false;
  std::string q = call.rq.param("last_event_id", &found);
  if (found) lei = q;
  if (!lei.empty()) {
    char* end = nullptr;
    long long v = strtoll(lei.c_str(), &end, 10);
    if (*end || v < 0)
      return call.fail(400, "bad_parameter", "Last-Event-ID: '" + lei + "' is not an event id");
    last = v;
  }
  if (!run.empty()) {
    auto r = call.find_run(run);
    if (!r) return;
    run = r->id;
  }
  c.metrics.http_response(200);
  c.sse->subscribe(call.ex, run, pipeline, last);
}

}  // namespace orch
