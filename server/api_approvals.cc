// The API of gates: POST /api/runs/ID/approvals/NODE decides an approval, POST
// /api/runs/ID/signals/NAME delivers a signal to a run that waits for it (o.wait).
#include <unistd.h>

#include "engine/control.h"
#include "server/api_call.h"
#include "server/sse.h"

namespace orch {

using http::error_response;
using http::Response;

namespace {

// After a decision or a signal was recorded: the run goes on here if it is active here; else,
// if nobody runs it, it is resumed here. Says which ("here", "resumed", "owner", "no").
std::string continue_run(ApiCall& call, const RunRow& r) {
  ServerContext& c = call.c;
  RunRow root = r;
  while (!root.parent_run.empty()) {
    auto parent = c.store->find_run(root.parent_run, nullptr);
    if (!parent) break;
    root = *parent;
  }
  if (c.sched->is_active(root.id) || c.sched->is_active(r.id)) {
    c.sched->poll_gates();
    return "here";
  }
  if (is_parked(root.status) && !owner_alive(root) && !c.shutting_down) {
    std::string err;
    Pipeline* p = c.registry->for_run(root, &err);
    if (p && c.store->claim_run(root.id, root.owner_pid, getpid()) &&
        c.sched->resume_run(p, root, &err))
      return "resumed";
    return "no";
  }
  if (owner_alive(root)) return "owner";  // its process polls the store for decisions
  return "no";
}

int status_of(const Decision& d) {
  return d.code == "not_found"   ? 404
         : d.code == "forbidden" ? 403
         : d.code == "conflict"  ? 409
                                 : 500;
}

}  // namespace

void api_decide_gate(ApiCall& call) {
  ServerContext& c = call.c;
  const std::string& id = call.params.get("id");
  const std::string& node = call.params.get("node");
  if (call.store_full()) return;
  json body;
  if (!call.body_object(&body)) return;
  std::string decision, who, comment;
  if (!call.string_field(body, "decision", &decision, true)) return;
  if (!call.string_field(body, "approver", &who, true)) return;
  if (!call.string_field(body, "comment", &comment, false)) return;
  bool approve = decision == "approve" || decision == "approved";
  if (!approve && decision != "reject" && decision != "rejected")
    return call.fail(400, "invalid_body", "decision: '" + decision + "' must be approve or reject");
  if (who.empty()) return call.fail(400, "invalid_body", "'approver' must not be empty");
  if (node.empty()) return call.fail(404, "not_found", "no gate named in the path");
  auto r = call.find_run(id);
  if (!r) return;
  // Committed by decide_gate: the hub sends it after the next commit, with what follows.
  Decision d = decide_gate(*c.store, *r, node, approve, who, comment, wall_ms());
  if (d.ok) c.sse->on_event(d.event);
  if (!d.ok) return call.fail(status_of(d), d.code.c_str(), d.message);
  std::string continued = continue_run(call, *r);
  call.ok(200, {{"run_id", r->id},
                {"node", node},
                {"decision", approve ? "approved" : "rejected"},
                {"by", who},
                {"continued", continued}});
}

// The body is the payload, any JSON value (empty: null); ?by=NAME says who sends it.
void api_deliver_signal(ApiCall& call) {
  ServerContext& c = call.c;
  const std::string& id = call.params.get("id");
  const std::string& name = call.params.get("name");
  if (call.store_full()) return;
  std::string payload = "null";
  if (call.rq.body.find_first_not_of(" \t\r\n") != std::string::npos) {
    std::string err;
    json body = parse_json(call.rq.body, &err, kMaxJsonDepth);
    if (body.is_discarded())
      return call.fail(400, "invalid_json", "the body (the signal's payload) is not valid JSON: " +
                                                err);
    payload = dump_json(body);
  }
  bool given = false;
  std::string who = call.rq.param("by", &given);
  if (given && who.empty()) return call.fail(400, "invalid_query", "'by' must not be empty");
  if (who.size() > 200) return call.fail(400, "invalid_query", "'by' is longer than 200 bytes");
  if (!given) who = "api";
  auto r = call.find_run(id);
  if (!r) return;
  Decision d = deliver_signal(*c.store, *r, name, payload, who, wall_ms());
  if (d.ok) c.sse->on_event(d.event);
  if (!d.ok) return call.fail(status_of(d), d.code.c_str(), d.message);
  std::string continued = continue_run(call, *r);
  call.ok(200, {{"run_id", r->id},
                {"signal", name},
                {"node", d.event.node},
                {"by", who},
                {"continued", continued}});
}

}  // namespace orch
