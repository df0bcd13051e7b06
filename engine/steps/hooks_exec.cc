// The pipeline's hooks (on = { awaiting_approval, failed, succeeded, cancelled }, finally):
// steps run outside the graph, when the run reaches a state. The scheduler decides when
// (engine/scheduler.cc: end_hooks, gate_opened); this runs them as children of one holder.
#include <algorithm>

#include "engine/steps/exec.h"

namespace orch {

HookRunner::HookRunner(StepHost* s, Run* run) : Exec(s, run, run->p->root.get(), nullptr, "") {}

void HookRunner::run(Step* hook, const std::string& prefix, LuaRef in,
                     std::function<void(Exec*)> done) {
  hooks_.push_back({make_exec(s_, run_, hook, this, prefix), std::move(done)});
  hooks_.back().exec->start(std::move(in));
}

bool HookRunner::running() const {
  return std::any_of(hooks_.begin(), hooks_.end(),
                     [](const Running& h) { return h.done && !h.exec->done; });
}

void HookRunner::child_done(Exec* c) {
  for (auto& h : hooks_)
    if (h.exec.get() == c && h.done) {
      auto done = std::move(h.done);
      h.done = nullptr;
      done(c);
      return;
    }
}

void HookRunner::cancel(const std::string& reason) {
  for (auto& h : hooks_)
    if (h.done && !h.exec->done) h.exec->cancel(reason);
}

}  // namespace orch
