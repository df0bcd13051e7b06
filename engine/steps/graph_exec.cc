// A list of steps (a seq, a parallel, the pipeline's steps) in which some step has `after`:
// each child starts as soon as what it depends on has settled and its trigger rule is met, and
// is recorded as skipped (upstream_failed, upstream_succeeded) when the rule cannot be met.
// The list settles once every child has: failed if a child that is not a hook failed.
#include <algorithm>
#include <climits>

#include "engine/steps/exec.h"

namespace orch {
namespace {

bool step_inside(const Step* a, const Step* d) {
  for (const Step* p = d; p; p = p->parent)
    if (p == a) return true;
  return false;
}

class GraphListExec : public Exec {
 public:
  using Exec::Exec;

  void begin() override {
    const size_t n = step_->children.size();
    kids_.resize(n);
    seq_ = step_->kind() == StepKind::Seq;
    if (!seq_) {
      lua_createtable(run_->L(), 0, static_cast<int>(n));
      output = LuaRef::pop(run_->L());
    }
    bool outside = false;
    for (size_t i = 0; i < n; i++) {
      const Step* c = step_->children[i].get();
      Kid& k = kids_[i];
      if (!c->has_after) {
        if (seq_ && i > 0) k.deps.push_back({static_cast<int>(i - 1), ""});
        continue;
      }
      k.rule = c->trigger;
      for (const Step* d : c->deps) {
        int sib = sibling(d);
        if (sib >= 0) {
          k.deps.push_back({sib, ""});
        } else {
          k.deps.push_back({-1, instance_path(d)});
          outside = true;
        }
      }
    }
    if (outside) {
      auto& w = run_->graph_waiters;
      w.erase(std::remove_if(w.begin(), w.end(), [](const auto& r) { return r.expired(); }),
              w.end());
      w.push_back(ref());
    }
    if (n == 0) {
      output = dup(run_->L(), input);
      finish(Outcome::Succeeded);
      return;
    }
    evaluate();
  }

  void child_done(Exec* c) override {
    for (auto& k : kids_)
      if (k.exec.get() == c) {
        k.state = State::Done;
        running_--;
        if (!seq_ && (c->outcome == Outcome::Succeeded || c->outcome == Outcome::Skipped))
          set_output_of(output, c);
        if (c->outcome == Outcome::Failed && !c->optional_failure && !c->step()->is_hook() &&
            !failed_) {
          failed_ = true;
          first_err_ = c->err;
        }
      }
    evaluate();
  }

  void deps_changed() override { evaluate(); }

  void cancel(const std::string& reason) override {
    if (done) return;
    for (auto& k : kids_)
      if (k.exec && !k.exec->done) k.exec->cancel(reason);
    mark_cancelled();
  }

 private:
  enum class State { Pending, Running, Done };
  struct Dep {
    int sibling;       // index of a child of this list, or -1
    std::string path;  // otherwise: the instance path of the step
  };
  struct Kid {
    State state = State::Pending;
    TriggerRule rule = TriggerRule::Success;
    std::vector<Dep> deps;
    std::unique_ptr<Exec> exec;
    bool skipped = false, upstream_failed = false;
  };
  // How one dependency stands.
  struct DepView {
    bool settled = false, ok = false, failed = false, succeeded = false;
  };

  int sibling(const Step* d) const {
    for (size_t i = 0; i < step_->children.size(); i++)
      if (step_->children[i].get() == d) return static_cast<int>(i);
    return -1;
  }

  // Where step d (outside this list) runs in this run: below the nearest enclosing step that
  // contains it, whose instance path is known; only lists lie between (the compiler checked).
  std::string instance_path(const Step* d) const {
    const Exec* e = this;
    while (e->parent() && !step_inside(e->step(), d)) e = e->parent();
    std::vector<const std::string*> ids;
    for (const Step* p = d; p && p != e->step(); p = p->parent)
      if (!p->id.empty()) ids.push_back(&p->id);
    std::string path = e->path();
    for (auto it = ids.rbegin(); it != ids.rend(); ++it) path += (path.empty() ? "" : "/") + **it;
    return path;
  }

  DepView view(const Dep& d) const {
    DepView v;
    Outcome o;
    bool optional = false, upstream = false;
    if (d.sibling >= 0) {
      const Kid& k = kids_[d.sibling];
      if (k.state != State::Done) return v;
      if (k.skipped) {
        o = Outcome::Skipped;
        upstream = k.upstream_failed;
      } else {
        o = k.exec->outcome;
        optional = k.exec->optional_failure;
      }
    } else {
      auto it = run_->settled.find(d.path);
      if (it == run_->settled.end()) return v;
      o = it->second.outcome;
      optional = it->second.optional_failure;
      upstream = it->second.upstream_failed;
    }
    v.settled = true;
    switch (o) {
      case Outcome::Succeeded:
        v.ok = v.succeeded = true;
        break;
      case Outcome::Skipped:
        v.ok = !upstream;
        v.failed = upstream;
        break;
      case Outcome::Failed:
        v.failed = true;
        v.ok = optional;  // an optional step's failure lets the steps after it run
        break;
      case Outcome::Cancelled:
        v.failed = true;
        break;
    }
    return v;
  }

  enum class Decision { Wait, Run, Skip };
  // Whether child k can start, and if it cannot ever, why (*reason).
  Decision decide(const Kid& k, std::string* reason) const {
    int settled = 0, ok = 0, failed = 0, succeeded = 0;
    for (const Dep& d : k.deps) {
      DepView v = view(d);
      if (!v.settled) continue;
      settled++;
      ok += v.ok;
      failed += v.failed;
      succeeded += v.succeeded;
    }
    const int n = static_cast<int>(k.deps.size());
    const bool all = settled == n;
    switch (k.rule) {
      case TriggerRule::Success:
        if (settled > ok) return *reason = "upstream_failed", Decision::Skip;
        return all ? Decision::Run : Decision::Wait;
      case TriggerRule::Failure:
        if (settled > failed) return *reason = "upstream_succeeded", Decision::Skip;
        return all ? Decision::Run : Decision::Wait;
      case TriggerRule::Always:
        return all ? Decision::Run : Decision::Wait;
      case TriggerRule::OneFailed:
        if (failed > 0) return Decision::Run;
        if (all) return *reason = "upstream_succeeded", Decision::Skip;
        return Decision::Wait;
      case TriggerRule::OneSuccess:
        if (succeeded > 0) return Decision::Run;
        if (all) return *reason = "upstream_failed", Decision::Skip;
        return Decision::Wait;
    }
    return Decision::Wait;
  }

  // Starts what can start and skips what never will, until nothing changes; settles the list
  // once every child has.
  void evaluate() {
    if (done) return;
    const int limit = !seq_ && step_->parallel().max_concurrency > 0
                          ? step_->parallel().max_concurrency
                          : INT_MAX;
    bool changed = true;
    while (changed) {
      changed = false;
      for (size_t i = 0; i < kids_.size(); i++) {
        Kid& k = kids_[i];
        if (k.state != State::Pending) continue;
        std::string reason;
        Decision d = decide(k, &reason);
        if (d == Decision::Skip) {
          k.state = State::Done;
          k.skipped = true;
          k.upstream_failed = reason == "upstream_failed";
          record_skipped_subtree(step_->children[i].get(), path_, reason);
          changed = true;
        } else if (d == Decision::Run && running_ < limit) {
          start(i);
          if (done) return;  // (cannot happen today: a child settles from the pump)
        }
      }
    }
    for (const auto& k : kids_)
      if (k.state != State::Done) return;
    settle();
  }

  void start(size_t i) {
    Kid& k = kids_[i];
    k.state = State::Running;
    running_++;
    // A child that follows one sibling gets its output, as in a seq; the others the list's input.
    LuaRef in;
    if (k.deps.size() == 1 && k.deps[0].sibling >= 0 && kids_[k.deps[0].sibling].exec)
      in = passthrough(kids_[k.deps[0].sibling].exec.get());
    else
      in = dup(run_->L(), input);
    k.exec = make_exec(s_, run_, step_->children[i].get(), this, path_);
    k.exec->start(std::move(in));
  }

  void settle() {
    for (const auto& k : kids_)
      if (k.exec && k.exec->outcome == Outcome::Cancelled && !k.exec->step()->is_hook()) {
        finish(Outcome::Cancelled);
        return;
      }
    if (failed_) {
      err = first_err_;
      finish(Outcome::Failed);
      return;
    }
    if (seq_) {
      // The output of the last step that ran and is not a hook (the input if none did).
      output = LuaRef();
      for (auto it = kids_.rbegin(); it != kids_.rend() && output.empty(); ++it)
        if (it->exec && !it->exec->step()->is_hook()) output = passthrough(it->exec.get());
      if (output.empty()) output = dup(run_->L(), input);
    }
    finish(Outcome::Succeeded);
  }

  std::vector<Kid> kids_;
  bool seq_ = true;
  int running_ = 0;
  bool failed_ = false;  // a child that is not a hook (nor optional) failed: the first one's
  ErrorInfo first_err_;
};

}  // namespace

std::unique_ptr<Exec> make_graph_list_exec(StepHost* s, Run* run, Step* step, Exec* parent,
                                           const std::string& prefix) {
  return std::make_unique<GraphListExec>(s, run, step, parent, prefix);
}

}  // namespace orch
