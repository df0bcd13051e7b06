// o.seq and o.parallel (join all/any/n, max concurrency): they share the running of a list of
// child steps.
#include <climits>

#include "engine/steps/exec.h"

namespace orch {
namespace {

class SeqExec : public Exec {
 public:
  using Exec::Exec;
  void begin() override {
    if (step_->children.empty()) {
      output = dup(run_->L(), input);
      finish(Outcome::Succeeded);
      return;
    }
    start_child(0, dup(run_->L(), input));
  }
  void child_done(Exec* c) override {
    if (c->outcome == Outcome::Failed && !c->optional_failure) {
      err = c->err;
      finish(Outcome::Failed);
      return;
    }
    if (c->outcome == Outcome::Cancelled) {
      finish(Outcome::Cancelled);
      return;
    }
    LuaRef next_in = passthrough(c);
    if (index_ + 1 < step_->children.size()) {
      start_child(index_ + 1, std::move(next_in));
    } else {
      output = std::move(next_in);
      finish(Outcome::Succeeded);
    }
  }
  void cancel(const std::string& reason) override {
    if (done) return;
    if (current_ && !current_->done) current_->cancel(reason);
    mark_cancelled();
  }

 private:
  void start_child(size_t i, LuaRef in) {
    index_ = i;
    children_.push_back(make_exec(s_, run_, step_->children[i].get(), this, path_));
    current_ = children_.back().get();
    current_->start(std::move(in));
  }
  size_t index_ = 0;
  Exec* current_ = nullptr;
  std::vector<std::unique_ptr<Exec>> children_;
};

// ---------------------------------------------------------------------------------------------
class ParallelExec : public Exec {
 public:
  using Exec::Exec;
  void begin() override {
    size_t n = step_->children.size();
    need_ = step_->parallel().join == 0  ? static_cast<int>(n)
            : step_->parallel().join < 0 ? 1
                                         : step_->parallel().join;
    lua_State* L = run_->L();
    lua_createtable(L, 0, static_cast<int>(n));
    output = LuaRef::pop(L);
    for (size_t i = 0; i < n; i++)
      children_.push_back(make_exec(s_, run_, step_->children[i].get(), this, path_));
    launch();
  }
  void child_done(Exec* c) override {
    running_--;
    finished_++;
    bool ok = c->outcome == Outcome::Succeeded || c->outcome == Outcome::Skipped;
    if (ok) {
      ok_++;
      set_output_of(output, c);
    } else if (c->outcome == Outcome::Failed) {
      // An optional branch's failure is tolerated by join = all; otherwise remember the first.
      if (!(c->optional_failure && step_->parallel().join == 0) && first_err_.type.empty())
        first_err_ = c->err;
    }
    int total = static_cast<int>(children_.size());
    if (step_->parallel().join == 0) {
      if (c->outcome == Outcome::Failed && !c->optional_failure) {
        cancel_rest("branch '" + c->step()->id + "' failed");
        err = c->err;
        finish(Outcome::Failed);
        return;
      }
      if (finished_ == total) {
        finish(Outcome::Succeeded);
        return;
      }
    } else {
      if (ok_ >= need_) {
        cancel_rest("join satisfied");
        finish(Outcome::Succeeded);
        return;
      }
      int possible = ok_ + (total - finished_);
      if (possible < need_) {
        cancel_rest("join can no longer be satisfied");
        err = first_err_;
        err.message = "parallel '" + step_->id + "': " + std::to_string(ok_) + " of " +
                      std::to_string(total) + " branches succeeded, " + std::to_string(need_) +
                      " needed; first failure: " + first_err_.message;
        finish(Outcome::Failed);
        return;
      }
    }
    launch();
  }
  void cancel(const std::string& reason) override {
    if (done) return;
    cancel_rest(reason, false);
    mark_cancelled();
  }

 private:
  void launch() {
    int limit =
        step_->parallel().max_concurrency > 0 ? step_->parallel().max_concurrency : INT32_MAX;
    while (next_ < children_.size() && running_ < limit) {
      running_++;
      children_[next_++]->start(dup(run_->L(), input));
    }
  }
  // Cancels running branches; branches not started yet are recorded as skipped when the
  // parallel step is settled (join satisfied or impossible), and left without a row when the
  // whole run is being cancelled.
  void cancel_rest(const std::string& reason, bool record_unstarted = true) {
    for (size_t i = 0; i < children_.size(); i++) {
      if (i < next_) {
        if (!children_[i]->done) children_[i]->cancel(reason);
      } else if (record_unstarted) {
        record_skipped_subtree(step_->children[i].get(), path_, reason);
      }
    }
    next_ = children_.size();
  }
  std::vector<std::unique_ptr<Exec>> children_;
  size_t next_ = 0;
  int running_ = 0, finished_ = 0, ok_ = 0, need_ = 0;
  ErrorInfo first_err_;
};

}  // namespace

std::unique_ptr<Exec> make_seq_exec(StepHost* s, Run* run, Step* step, Exec* parent,
                                    const std::string& prefix) {
  if (step->graph_list) return make_graph_list_exec(s, run, step, parent, prefix);
  return std::make_unique<SeqExec>(s, run, step, parent, prefix);
}
std::unique_ptr<Exec> make_parallel_exec(StepHost* s, Run* run, Step* step, Exec* parent,
                                         const std::string& prefix) {
  if (step->graph_list) return make_graph_list_exec(s, run, step, parent, prefix);
  return std::make_unique<ParallelExec>(s, run, step, parent, prefix);
}

}  // namespace orch
