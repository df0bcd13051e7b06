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
  if (gate->kind == "signal") {
    d.code = "conflict";
    d.message = "step '" + node + "' of run " + run.id + " waits for the signal '" +
                gate->message + "', not for an approval: deliver it with orchrun signal " + run.id +
                " " + gate->message + " --data JSON";
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
  if (!is_parked(run.status) && run.status != RunStatus::running) {
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
          !is_parked(now_run->status) && now_run->status != RunStatus::queued)))
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

Decision deliver_signal(Store& store, const RunRow& run, const std::string& name,
                        const std::string& payload, const std::string& who, int64_t now) {
  Decision d;
  d.code = "conflict";
  if (is_finished(run.status)) {
    d.message = "run " + run.id + " is " + to_string(run.status) +
                "; it waits for no signal any more";
    return d;
  }
  const ApprovalRow* match = nullptr;
  std::vector<ApprovalRow> rows = store.approvals(run.id);
  std::string waits;  // what it waits for now, for the message
  for (const auto& g : rows) {
    if (g.status != ApprovalStatus::waiting || g.run_attempt != run.attempts) continue;
    if (g.kind == "signal" && g.message == name && !match) match = &g;
    waits += (waits.empty() ? "" : ", ") +
             (g.kind == "signal" ? "signal '" + g.message + "' (step " + g.node_id + ")"
                                 : "an approval of gate " + g.node_id);
  }
  if (!match) {
    std::string children;
    for (const auto& c : store.child_runs(run.id))
      for (const auto& g : store.approvals(c.id))
        if (g.kind == "signal" && g.message == name && g.status == ApprovalStatus::waiting &&
            g.run_attempt == c.attempts)
          children += (children.empty() ? "" : ", ") + c.id;
    d.message = "run " + run.id + " is not waiting for the signal '" + name + "'" +
                (waits.empty() ? " (it waits for nothing now; it is " + to_string(run.status) + ")"
                               : " (it waits for " + waits + ")") +
                (children.empty() ? "" : "; its child run " + children + " is: send it there");
    return d;
  }
  std::string node = match->node_id;
  int attempt = match->run_attempt;
  if (!store.decide_approval(run.id, node, attempt, ApprovalStatus::approved, who, payload, now)) {
    store.commit();
    auto now_run = store.find_run(run.id, nullptr);
    d.message = "run " + run.id + " stopped waiting for the signal '" + name + "' meanwhile" +
                (now_run ? " (now " + to_string(now_run->status) + ")" : "") +
                "; it was not delivered";
    if (store.failed()) {
      d.code = "store";
      d.message = store.error();
    }
    return d;
  }
  Event e = run_event(run, "signal.received", now,
                      dump_json(json{{"signal", name},
                                     {"by", who},
                                     {"bytes", payload.size()},
                                     {"run_attempt", attempt}}));
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
