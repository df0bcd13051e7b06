#include "engine/graph.h"

#include <algorithm>
#include <cmath>

#include "bindings/lua_state.h"

namespace orch {

Pipeline::Pipeline() = default;

Pipeline::~Pipeline() {
  root.reset();
  hooks.clear();
  engine.reset();
}

const char* step_kind_name(StepKind k) {
  switch (k) {
    case StepKind::Node:
      return "node";
    case StepKind::Seq:
      return "seq";
    case StepKind::Parallel:
      return "parallel";
    case StepKind::When:
      return "when";
    case StepKind::Switch:
      return "switch";
    case StepKind::Approve:
      return "approve";
    case StepKind::Map:
      return "map";
    case StepKind::Loop:
      return "loop";
    case StepKind::Call:
      return "call";
    case StepKind::Wait:
      return "wait";
  }
  return "?";
}

const char* trigger_rule_name(TriggerRule r) {
  switch (r) {
    case TriggerRule::Success:
      return "success";
    case TriggerRule::Failure:
      return "failure";
    case TriggerRule::Always:
      return "always";
    case TriggerRule::OneFailed:
      return "one_failed";
    case TriggerRule::OneSuccess:
      return "one_success";
  }
  return "?";
}

bool parse_trigger_rule(const std::string& s, TriggerRule* out) {
  for (auto r : {TriggerRule::Success, TriggerRule::Failure, TriggerRule::Always,
                 TriggerRule::OneFailed, TriggerRule::OneSuccess})
    if (s == trigger_rule_name(r)) {
      *out = r;
      return true;
    }
  return false;
}

int64_t Step::timeout_ms() const {
  if (const auto* n = std::get_if<NodeSpec>(&spec)) return n->timeout_ms;
  if (const auto* a = std::get_if<ApproveSpec>(&spec)) return a->timeout_ms;
  if (const auto* c = std::get_if<CallSpec>(&spec)) return c->timeout_ms;
  if (const auto* w = std::get_if<WaitSpec>(&spec)) return w->timeout_ms;
  return 0;
}

int64_t RetryPolicy::delay_ms(int next_attempt, double unit) const {
  double d = static_cast<double>(base_ms);
  if (exponential) d *= std::pow(2.0, std::max(0, next_attempt - 2));
  d = std::min(d, static_cast<double>(cap_ms));
  if (jitter) d *= unit;
  return static_cast<int64_t>(d);
}

}  // namespace orch
