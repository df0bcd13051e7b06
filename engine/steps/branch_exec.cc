// o.when and o.switch: decide, record the decision, run the chosen branch.
#include "engine/steps/exec.h"

namespace orch {
namespace {

class BranchExec : public Exec {
 public:
  using Exec::Exec;
  void begin() override {
    // A resumed run takes the branch it took before: the decision is part of the record.
    if (const auto* h = run_->history_of(path_)) {
      for (const auto& r : *h) {
        if (r.status != NodeStatus::succeeded) continue;
        json d = parse_json(r.output, nullptr);
        int chosen = -1;
        if (step_->kind() == StepKind::When && d.is_object() && d.contains("branch"))
          chosen = d["branch"] == "then" ? 0 : 1;
        if (step_->kind() == StepKind::Switch && d.is_object() && d.contains("case"))
          for (size_t i = 0; i < step_->switch_().case_keys.size(); i++)
            if (d["case"] == step_->switch_().case_keys[i]) chosen = static_cast<int>(i);
        if (chosen >= 0) {
          run_->summary.nodes_reused++;
          s_->notify(run_, "node.reused", path_, r.attempt, r.output);
          take(chosen);
          return;
        }
      }
    }
    ErrorInfo e;
    if (!call_predicate(
            step_->kind() == StepKind::When ? step_->when().cond : step_->switch_().selector, &e)) {
      record_decision("failed", "", &e);
      err = e;
      run_->summary.nodes_failed++;
      finish(Outcome::Failed);
      return;
    }
    lua_State* L = run_->L();
    int chosen = -1;
    json decision;
    if (step_->kind() == StepKind::When) {
      bool v = lua_toboolean(L, -1);
      lua_pop(L, 1);
      chosen = v ? 0 : 1;
      decision = {{"branch", v ? "then" : "else"}};
    } else {
      std::string key;
      if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
        key = lua_tostring(L, -1);
      } else if (lua_type(L, -1) == LUA_TBOOLEAN) {
        key = lua_toboolean(L, -1) ? "true" : "false";
      }
      bool valid = lua_type(L, -1) != LUA_TNIL && !key.empty();
      std::string tname = luaL_typename(L, -1);
      lua_pop(L, 1);
      for (size_t i = 0; valid && i < step_->switch_().case_keys.size(); i++)
        if (step_->switch_().case_keys[i] == key) chosen = static_cast<int>(i);
      for (size_t i = 0; chosen < 0 && i < step_->switch_().case_keys.size(); i++)
        if (step_->switch_().case_keys[i] == "default") chosen = static_cast<int>(i);
      if (chosen < 0) {
        std::string cases;
        for (auto& k : step_->switch_().case_keys) cases += (cases.empty() ? "" : ", ") + k;
        e = {"no_case",
             "switch '" + step_->id + "': the selector returned " +
                 (valid ? "'" + key + "'" : "a " + tname) +
                 " and there is no such case and no default (cases: " + cases + ")",
             path_,
             "",
             false,
             ""};
        record_decision("failed", "", &e);
        err = e;
        run_->summary.nodes_failed++;
        finish(Outcome::Failed);
        return;
      }
      decision = {{"case", step_->switch_().case_keys[chosen]}, {"value", key}};
    }
    record_decision("succeeded", dump_json(decision), nullptr);
    take(chosen);
  }

  void take(int chosen) {
    for (size_t i = 0; i < step_->children.size(); i++)
      if (static_cast<int>(i) != chosen)
        record_skipped_subtree(step_->children[i].get(), path_, "branch not taken");
    Step* target =
        chosen < static_cast<int>(step_->children.size()) ? step_->children[chosen].get() : nullptr;
    if (!target) {  // when without else, condition false
      finish(Outcome::Skipped);
      return;
    }
    child_ = make_exec(s_, run_, target, this, path_);
    child_->start(dup(run_->L(), input));
  }
  void child_done(Exec* c) override {
    err = c->err;
    optional_failure = c->optional_failure;
    if (!c->output.empty()) output = dup(run_->L(), c->output);
    if (c->outcome == Outcome::Succeeded) publish_output(output);
    finish(c->outcome);
  }
  void cancel(const std::string& reason) override {
    if (done) return;
    if (child_) child_->cancel(reason);
    mark_cancelled();
  }

 private:
  std::unique_ptr<Exec> child_;
};

}  // namespace

std::unique_ptr<Exec> make_branch_exec(StepHost* s, Run* run, Step* step, Exec* parent,
                                       const std::string& prefix) {
  return std::make_unique<BranchExec>(s, run, step, parent, prefix);
}

}  // namespace orch
