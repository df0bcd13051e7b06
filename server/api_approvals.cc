// The API of approval gates: POST /api/runs/ID/approvals/NODE decides one.
#include <unistd.h>

#include "engine/control.h"
#include "server/api_call.h"
#include "server/sse.h"

namespace orch {

using http::error_response;
using http::Response;

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
  if (!d.ok) {
    int st = d.code == "not_found"   ? 404
             : d.code == "forbidden" ? 403
             : d.code == "conflict"  ? 409
                                     : 500;
    return call.fail(st, d.code.c_str(), d.message);
  }
  // The run goes on: here if it is active here; else, if nobody runs it, it is resumed here.
  RunRow root = *r;
  while (!root.parent_run.empty()) {
    auto parent = c.store->find_run(root.parent_run, nullptr);
    if (!parent) break;
    root = *parent;
  }
  std::string continued = "no";
  if (c.sched->is_active(root.id) || c.sched->is_active(r->id)) {
    c.sched->poll_gates();
    continued = "here";
  } else if (root.status == RunStatus::awaiting_approval && !owner_alive(root) &&
             !c.shutting_down) {
    std::string err;
    Pipeline* p = c.registry->for_run(root, &err);
    if (p && c.store->claim_run(root.id, root.owner_pid, getpid()) &&
        c.sched->resume_run(p, root, &err))
      continued = "resumed";
  } else if (owner_alive(root)) {
    continued = "owner";  // its process polls the store for decisions
  }
  call.ok(200, {{"run_id", r->id},
                {"node", node},
                {"decision", approve ? "approved" : "rejected"},
                {"by", who},
                {"continued", continued}});
}

}  // namespace orch
