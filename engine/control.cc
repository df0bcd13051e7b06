#include "engine/control.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include "base/ids.h"
#include "base/json_util.h"

namespace orch {

Decision decide_gate(Store& store, const RunRow& run, const std::string& node, bool approve,
                     const std::string& who, const std::string& comment, int64_t now) {
  Decision d;
  auto gate = store.approval(run.id, node);
  if (!gate) {
    std::string waiting;
    for (auto& g : store.approvals(run.id))
      if (g.status == ApprovalStatus::waiting) waiting += (waiting.empty() ? "" : ", ") + g.node_id;
    d.code = "not_found";
    d.message = "run " + run.id + " has no approval gate '" + node + "' waiting" +
                (waiting.empty() ? "" : " (waiting: " + waiting + ")");
    return d;
  }
  if (gate->status == ApprovalStatus::cancelled) {
    d.code = "conflict";
    d.message = "gate '" + node + "' of run " + run.id + " was closed undecided when attempt " +
                std::to_string(gate->run_attempt) + " ended (" + gate->comment + ", at " +
                iso8601_ms(gate->decided_at) + ")";
    return d;
  }
  if (gate->status != ApprovalStatus::waiting) {
    d.code = "conflict";
    d.message = "gate '" + node + "' of run " + run.id +
                " was already decided: " + to_string(gate->status) + " by " + gate->decided_by +
                " at " + iso8601_ms(gate->decided_at);
    return d;
  }
  if (gate->run_attempt != run.attempts) {
    d.code = "conflict";
    d.message = "gate '" + node + "' belongs to attempt " + std::to_string(gate->run_attempt) +
                " of run " + run.id + ", which is now at attempt " + std::to_string(run.attempts) +
                "; decide the gate once this attempt asks for it";
    return d;
  }
  if (run.status != RunStatus::awaiting_approval && run.status != RunStatus::running) {
    d.code = "conflict";
    d.message =
        "run " + run.id + " is " + to_string(run.status) + "; its gates can no longer be decided";
    return d;
  }
  if (!gate->approvers.empty()) {
    json list = parse_json(gate->approvers, nullptr);
    bool allowed = false;
    if (list.is_array())
      for (auto& n : list) allowed = allowed || (n.is_string() && n.get<std::string>() == who);
    if (!allowed) {
      d.code = "forbidden";
      d.message =
          who + " is not among the approvers of gate '" + node + "' (" + gate->approvers + ")";
      return d;
    }
  }
  if (!store.decide_approval(run.id, node, gate->run_attempt,
                             approve ? ApprovalStatus::approved : ApprovalStatus::rejected, who,
                             comment, now)) {
    store.commit();
    d.code = "conflict";
    auto now_gate = store.approval(run.id, node);
    auto now_run = store.find_run(run.id, nullptr);
    if (now_run &&
        (now_run->attempts != gate->run_attempt ||
         (now_run->status != RunStatus::running &&
          now_run->status != RunStatus::awaiting_approval && now_run->status != RunStatus::queued)))
      d.message = "run " + run.id + " moved on meanwhile (now " + to_string(now_run->status) +
                  ", attempt " + std::to_string(now_run->attempts) +
                  "); the decision was not recorded";
    else if (now_gate && now_gate->status != ApprovalStatus::waiting)
      d.message = "gate '" + node + "' was decided meanwhile: " + to_string(now_gate->status) +
                  " by " + now_gate->decided_by;
    else
      d.message = "gate '" + node + "' changed meanwhile; the decision was not recorded";
    return d;
  }
  Event e = run_event(run, "approval.decided", now,
                      dump_json(json{{"decision", approve ? "approved" : "rejected"},
                                     {"by", who},
                                     {"comment", comment},
                                     {"run_attempt", gate->run_attempt}}));
  e.node = node;
  e.id = store.insert_event(e);
  d.event = e;
  store.commit();
  d.ok = !store.failed();
  if (!d.ok) {
    d.code = "store";
    d.message = store.error();
  }
  return d;
}

}  // namespace orch
