// o.map: one instance of its step per item (`id[i]`). The list of items is recorded as a
// decision row, so a resumed run replays the same fan-out instead of asking again.
#include <climits>

#include "engine/steps/exec.h"

namespace orch {
namespace {

class MapExec : public Exec {
 public:
  using Exec::Exec;

  void begin() override {
    json d = stored_decision(path_);
    if (d.is_object() && d.contains("items") && d["items"].is_array()) {
      items_ = d["items"];
      run_->summary.nodes_reused++;
      s_->notify(run_, "node.reused", path_, 1, dump_json(json{{"count", items_.size()}}));
    } else if (!evaluate_items()) {
      return;
    }
    size_t n = items_.size();
    lua_State* L = run_->L();
    lua_createtable(L, static_cast<int>(n), 0);
    push_array_mt(L);
    lua_setmetatable(L, -2);
    output = LuaRef::pop(L);
    if (n == 0) {
      publish_output(output);
      finish(Outcome::Succeeded);
      return;
    }
    for (size_t i = 0; i < n; i++) {
      auto c = make_exec(s_, run_, step_->children[0].get(), this,
                         path_ + "[" + std::to_string(i + 1) + "]");
      c->scope_.index = static_cast<int>(i + 1);
      index_of_[c.get()] = i;
      children_.push_back(std::move(c));
    }
    launch();
  }

  void child_done(Exec* c) override {
    running_--;
    finished_++;
    size_t i = index_of_[c];
    if (c->outcome == Outcome::Failed && !c->optional_failure) {
      cancel_rest("item " + std::to_string(i + 1) + " failed");
      err = c->err;
      finish(Outcome::Failed);
      return;
    }
    if (c->outcome == Outcome::Cancelled) {
      cancel_rest("cancelled");
      finish(Outcome::Cancelled);
      return;
    }
    lua_State* L = run_->L();
    output.push(L);
    if (c->outcome == Outcome::Succeeded && !c->output.empty())
      c->output.push(L);
    else
      push_json(L, nullptr);  // a skipped item or a tolerated (optional) failure
    lua_rawseti(L, -2, static_cast<int>(i + 1));
    lua_pop(L, 1);
    if (finished_ == children_.size()) {
      publish_output(output);
      finish(Outcome::Succeeded);
      return;
    }
    launch();
  }

  void cancel(const std::string& reason) override {
    if (done) return;
    cancel_rest(reason);
    mark_cancelled();
  }

 private:
  // Asks the pipeline for the list and records it. False when the map has already failed.
  bool evaluate_items() {
    ErrorInfo e;
    lua_State* L = run_->L();
    bool ok = call_predicate(step_->map().items, &e);
    std::string why;
    if (ok) {
      json j;
      std::string cerr;
      if (lua_istable(L, -1) && lua_to_json(L, lua_gettop(L), &j, &cerr)) {
        if (j.is_array())
          items_ = std::move(j);
        else if (j.is_object() && j.empty())
          items_ = json::array();
        else
          why = "items must be a list (a table with keys 1..n), got a table with other keys";
      } else {
        why = lua_istable(L, -1)
                  ? "items cannot be stored: " + cerr
                  : std::string("items must be a list, got a ") + luaL_typename(L, -1);
      }
      lua_pop(L, 1);
      if (!why.empty()) e = {"bad_items", "map '" + step_->id + "': " + why, path_, "", false, ""};
    }
    if (!ok || !why.empty()) {
      if (!ok) e.message = "map '" + step_->id + "': items failed: " + e.message;
      record_decision("failed", "", &e);
      err = e;
      run_->summary.nodes_failed++;
      finish(Outcome::Failed);
      return false;
    }
    record_decision("succeeded", dump_json(json{{"items", items_}}), nullptr, "",
                    dump_json(json{{"count", items_.size()}}));
    return true;
  }

  void launch() {
    int limit = step_->map().max_concurrency > 0 ? step_->map().max_concurrency : INT32_MAX;
    lua_State* L = run_->L();
    while (next_ < children_.size() && running_ < limit) {
      running_++;
      size_t i = next_++;
      push_json(L, items_[i]);
      children_[i]->start(LuaRef::pop(L));
    }
  }

  // Running items are cancelled; items not started yet are not recorded (they have no id on
  // record, and a retry starts them afresh).
  void cancel_rest(const std::string& reason) {
    for (size_t i = 0; i < next_ && i < children_.size(); i++)
      if (!children_[i]->done) children_[i]->cancel(reason);
    next_ = children_.size();
  }

  json items_ = json::array();
  std::vector<std::unique_ptr<Exec>> children_;
  std::unordered_map<Exec*, size_t> index_of_;
  size_t next_ = 0, finished_ = 0;
  int running_ = 0;
};

}  // namespace

std::unique_ptr<Exec> make_map_exec(StepHost* s, Run* run, Step* step, Exec* parent,
                                    const std::string& prefix) {
  return std::make_unique<MapExec>(s, run, step, parent, prefix);
}

}  // namespace orch
