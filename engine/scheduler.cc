#include "engine/scheduler.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "base/ids.h"
#include "base/json_util.h"
#include "bindings/convert.h"
#include "drivers/http_client.h"
#include "drivers/procs.h"
#include "drivers/signals.h"
#include "drivers/timer.h"
#include "engine/orphans.h"
#include "engine/steps/exec.h"

namespace orch {

Scheduler::Scheduler(Loop* loop, Store* store)
    : loop_(loop), store_(store), check_(new uv_check_t), idle_(new uv_idle_t) {
  std::random_device rd;
  rng_.seed((static_cast<uint64_t>(rd()) << 32) ^ rd());
  uv_check_init(loop_->get(), check_);
  check_->data = this;
  uv_check_start(check_, [](uv_check_t* h) { static_cast<Scheduler*>(h->data)->pump(); });
  // The check handle runs the pump every loop turn but must not keep the loop alive by itself.
  uv_unref(reinterpret_cast<uv_handle_t*>(check_));
  processes_.on_gone = [this](int pid) {
    auto it = recorded_procs_.find(pid);
    if (it == recorded_procs_.end()) return;
    store_->end_process(it->second.first, pid, it->second.second, "exited", wall_ms());
    recorded_procs_.erase(it);
  };
  uv_idle_init(loop_->get(), idle_);
  idle_->data = this;
  std::string db = store_->path();
  size_t slash = db.rfind('/');
  std::error_code ec;
  auto dir = std::filesystem::absolute(slash == std::string::npos ? "." : db.substr(0, slash), ec)
                 .lexically_normal()
                 .string();
  if (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  workspace_root = dir + "/workspaces";
  control_timer_ = std::make_unique<Timer>(loop_->get());
  control_timer_->start(
      250, [this] { poll_control(); }, 250);
  control_timer_->unref();
}

json artifact_json(const ArtifactRow& a, const std::string& workspace) {
  json j{{"id", a.id},          {"name", a.path},     {"path", workspace + "/" + a.path},
         {"size", a.size},      {"sha256", a.sha256}, {"node", a.node_id},
         {"attempt", a.attempt}};
  if (!a.kind.empty()) j["kind"] = a.kind;
  return j;
}

void Scheduler::remove_gate(Gate* g) {
  gates_.erase(std::remove(gates_.begin(), gates_.end(), g), gates_.end());
}

void Scheduler::remove_slot_waiter(SlotWaiter* w) {
  slot_waiters_.erase(std::remove(slot_waiters_.begin(), slot_waiters_.end(), w),
                      slot_waiters_.end());
}

void Scheduler::slot_released(const std::string& key) {
  defer([this, key] {
    std::vector<SlotWaiter*> ws = slot_waiters_;
    for (SlotWaiter* w : ws)
      if (std::find(slot_waiters_.begin(), slot_waiters_.end(), w) != slot_waiters_.end() &&
          w->slot_key() == key)
        w->try_slot();
  });
}

namespace {

// A run of a pipeline with a concurrency key waits (status queued) for its slot.
class RunSlot : public SlotWaiter {
 public:
  RunSlot(Scheduler* s, Run* r, std::function<void()> go) : s_(s), r_(r), go_(std::move(go)) {}
  ~RunSlot() override { stop(); }
  const std::string& slot_key() const override { return r_->p->concurrency_key; }
  bool acquire() {
    const Pipeline* p = r_->p;
    return s_->store()->acquire_slot(p->concurrency_key, p->concurrency_limit, r_->id, "", getpid(),
                                     wall_ms(), &position_);
  }
  void wait() {
    waiting_ = true;
    s_->add_slot_waiter(this);
    timer_ = std::make_unique<Timer>(s_->loop());
    timer_->start(
        200, [this] { s_->defer([this] { try_slot(); }); }, 200);
  }
  void try_slot() override {
    if (!waiting_ || r_->finished) return;
    if (!acquire()) return;
    stop();
    auto go = std::move(go_);
    go();
  }
  int position() const { return position_; }

 private:
  void stop() {
    if (!waiting_) return;
    waiting_ = false;
    s_->remove_slot_waiter(this);
    timer_.reset();
  }
  Scheduler* s_;
  Run* r_;
  std::function<void()> go_;
  std::unique_ptr<Timer> timer_;
  bool waiting_ = false;
  int position_ = 0;
};

}  // namespace

void Scheduler::begin_root(Run* r) {
  auto go = [this, r] {
    if (r->finished || r->root->done) return;  // cancelled before it started
    LuaRef in = dup(r->L(), r->input);
    r->root->start(std::move(in));
  };
  const std::string& key = r->p->concurrency_key;
  if (key.empty()) {
    go();
    return;
  }
  auto slot = std::make_unique<RunSlot>(this, r, [this, r, go] {
    r->holds_slot = true;
    store_->set_run_status(r->id, RunStatus::running, wall_ms());
    emit(r, "run.dequeued", "", 0, dump_json(json{{"concurrency_key", r->p->concurrency_key}}));
    go();
  });
  RunSlot* rs = slot.get();
  r->slot = std::move(slot);
  if (rs->acquire()) {
    r->holds_slot = true;
    go();
    return;
  }
  store_->set_run_status(r->id, RunStatus::queued, wall_ms());
  emit(r, "run.queued", "", 0,
       dump_json(json{{"concurrency_key", key},
                      {"limit", r->p->concurrency_limit},
                      {"ahead", rs->position()}}));
  rs->wait();
}

void Scheduler::finished_hooks(Run* r, const RunSummary& sum) {
  if (!r->p->concurrency_key.empty()) {
    r->slot.reset();
    store_->release_slot(r->id, "");  // held, or a place in the queue
    if (r->holds_slot) {
      r->holds_slot = false;
      slot_released(r->p->concurrency_key);
    }
  }
  auto it = child_waiters_.find(r->id);
  if (it != child_waiters_.end()) {
    ChildDone done = std::move(it->second);
    child_waiters_.erase(it);
    done(sum);
  }
}

std::string Scheduler::start_child_run(Pipeline* p, const RunOptions& opts,
                                       const std::string& parent_run,
                                       const std::string& parent_node, ChildDone done,
                                       std::string* err) {
  RunOptions o = opts;
  o.parent_run = parent_run;
  o.parent_node = parent_node;
  std::string id = start_run(p, o, err);
  if (!id.empty()) child_waiters_[id] = std::move(done);
  return id;
}

bool Scheduler::resume_child_run(Pipeline* p, const RunRow& row, ChildDone done, std::string* err) {
  if (!resume_run(p, row, err)) return false;
  child_waiters_[row.id] = std::move(done);
  return true;
}

void Scheduler::park_waiting() {
  // Parking a child run can leave its parent waiting for it (o.call): park until none is left.
  for (;;) {
    std::vector<Run*> parked;
    for (auto& [id, r] : runs_)
      if (!r->finished && r->waiting_gates > 0) parked.push_back(r.get());
    if (parked.empty()) break;
    for (Run* r : parked) {
      int64_t now = wall_ms();
      RunSummary sum = r->summary;
      for (Gate* g : gates_) {
        if (g->gate_run() != r) continue;
        std::string on = g->decided_on().empty() ? r->id : g->decided_on();
        if (g->is_signal())
          sum.waiting_signals.push_back({on, g->gate_node(), g->signal_name()});
        else
          sum.waiting_gates.emplace_back(on, g->gate_node());
      }
      json gates = json::array(), signals = json::array();
      for (auto& [run_id, node] : sum.waiting_gates)
        gates.push_back(run_id == r->id ? json(node) : json{{"run", run_id}, {"node", node}});
      for (auto& w : sum.waiting_signals) {
        json j{{"node", w.node}, {"signal", w.signal}};
        if (w.run_id != r->id) j["run"] = w.run_id;
        signals.push_back(j);
      }
      RunStatus st = parked_status(r);
      store_->set_run_status(r->id, st, now);
      json d{{"gates", gates}};
      if (!signals.empty()) d["signals"] = signals;
      emit(r, st == RunStatus::waiting ? "run.waiting" : "run.awaiting_approval", "", 0,
           dump_json(d));
      r->finished = true;
      sum.status = to_string(st);
      sum.duration_ms = now - r->started_ms;
      auto it = runs_.find(r->id);
      finished_runs_.push_back(std::move(it->second));
      runs_.erase(it);
      finished_hooks(r, sum);
      if (on_run_finished) on_run_finished(sum);
    }
  }
  store_->commit();
  finished_runs_.clear();
}

void Scheduler::poll_gates() {
  std::vector<Gate*> gates = gates_;
  for (Gate* g : gates)
    if (std::find(gates_.begin(), gates_.end(), g) != gates_.end()) g->poll();
  store_->commit();
}

RunStatus Scheduler::parked_status(const Run* r) {
  // A person's decision is what an operator must know about first: a run waiting for both is
  // awaiting_approval.
  return r->waiting_gates > r->waiting_signals ? RunStatus::awaiting_approval : RunStatus::waiting;
}

void Scheduler::set_parked(Run* r) {
  RunStatus st = r->waiting_gates > 0 ? parked_status(r) : RunStatus::running;
  if (st == r->parked_as) return;
  r->parked_as = st;
  store_->set_run_status(r->id, st, wall_ms());
  emit(r,
       st == RunStatus::running   ? "run.continued"
       : st == RunStatus::waiting ? "run.waiting"
                                  : "run.awaiting_approval",
       "", 0, "{}");
}

void Scheduler::gate_opened(Run* r) {
  if (r->finished) return;
  if (Step* h = const_cast<Step*>(r->p->hook("awaiting_approval")); h && run_hooks)
    for (Gate* g : gates_) {
      if (g->gate_run() != r || g->is_signal()) continue;
      const std::string& node = g->gate_node();
      auto& seen = r->gates_announced;
      if (std::find(seen.begin(), seen.end(), node) != seen.end()) continue;
      seen.push_back(node);
      set_ctx_run(r, "awaiting_approval", nullptr, node);
      if (!r->hooks) r->hooks = std::make_unique<HookRunner>(this, r);
      // Once per gate, as <gate>/<hook>: a resumed run does not announce a gate twice.
      r->hooks->run(h, node, dup(r->L(), r->input), [r, id = h->id](Exec* e) {
        r->summary.hooks.emplace_back(id, outcome_name(e->outcome));
      });
    }
  if (hold_gates) set_parked(r);
}

void Scheduler::gate_closed(Run* r) {
  if (!hold_gates || r->finished || draining_ || !r->cancel_reason.empty()) return;
  set_parked(r);
}

bool Scheduler::run_info(const std::string& run_id, std::string* trace_id, int* version) const {
  auto it = runs_.find(run_id);
  if (it == runs_.end()) return false;
  *trace_id = it->second->trace_id;
  *version = it->second->version;
  return true;
}

bool Scheduler::uses_pipeline(const Pipeline* p) const {
  for (auto& [id, r] : runs_)
    if (r->p == p) return true;
  for (auto& r : finished_runs_)
    if (r->p == p) return true;
  return false;
}

std::vector<std::string> Scheduler::active_run_ids() const {
  std::vector<std::string> ids;
  for (auto& [id, r] : runs_) ids.push_back(id);
  return ids;
}

void Scheduler::detach_all() {
  // Destroying the exec trees stops their timers and drivers without writing an outcome;
  // concurrency slots are released (another process may take them at once).
  queue_.clear();
  std::vector<std::unique_ptr<Run>> gone;
  for (auto& [id, r] : runs_) {
    r->finished = true;
    gone.push_back(std::move(r));
  }
  runs_.clear();
  child_waiters_.clear();
  gone.clear();
  processes_.kill_all();
  store_->commit();
}

void Scheduler::poll_control() {
  if (runs_.empty()) return;
  poll_gates();
  for (auto& [id, reason] : store_->cancel_requests(getpid())) {
    auto it = runs_.find(id);
    if (it != runs_.end() && !it->second->finished) cancel_run(id, reason);
  }
  store_->commit();
}

Scheduler::~Scheduler() {
  processes_.on_gone = nullptr;  // what is killed from here on is ended by whoever resumes
  run_hooks = false;             // no loop runs them any more
  cancel_all("shutdown");
  queue_.clear();
  runs_.clear();
  finished_runs_.clear();
  store_->commit();
  processes_.kill_all();
  http_.reset();  // aborts what is left and closes its sockets
  control_timer_.reset();
  full_timer_.reset();
  close_and_delete(check_);
  close_and_delete(idle_);
}

HttpClient* Scheduler::http() {
  if (!http_) http_ = std::make_unique<HttpClient>(loop_->get());
  return http_.get();
}

void Scheduler::defer(std::function<void()> fn) {
  queue_.push_back(std::move(fn));
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(idle_)))
    uv_idle_start(idle_, [](uv_idle_t*) {});  // keeps poll from blocking until the pump runs
}

void Scheduler::defer_child_done(ExecRef child) {
  queue_.emplace_back(std::move(child));
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(idle_))) uv_idle_start(idle_, [](uv_idle_t*) {});
}

void Scheduler::Deferred::operator()() {
  if (fn)
    fn();
  else
    Exec::notify_parent(child);
}

void Scheduler::after_commit(std::function<void()> fn) {
  after_commit_.push_back(std::move(fn));
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(idle_))) uv_idle_start(idle_, [](uv_idle_t*) {});
}

void Scheduler::before_effect() {
  commit_point();
}

void Scheduler::commit_point() {
  store_->commit();
  if (store_->failed() || store_->full() || after_commit_.empty()) return;
  for (auto& fn : after_commit_) queue_.push_back(std::move(fn));
  after_commit_.clear();
}

void Scheduler::pump() {
  if (pumping_) return;
  if (store_->full()) {
    // Nothing runs while the disk is full. Writes made meanwhile (a timer's) are tried at
    // once: the store holds them too, and the transaction does not keep the write lock.
    if (store_->in_transaction()) commit_point();
    if (store_->failed()) return fail_fatal();
    if (store_->full()) return wait_for_store();
  }
  if (full_timer_) store_writable();  // committed meanwhile (by a retry, or a caller's commit)
  pumping_ = true;
  // Group commit: the waves of one loop turn share a transaction, committed when the queue is
  // empty or after a time slice (then the loop polls its sockets and timers before the pump
  // goes on, so that a long chain of Lua nodes neither starves the server nor holds the write
  // lock for long). Before any outside effect, drivers commit first (before_effect).
  constexpr uint64_t kSliceNs = 5 * 1000 * 1000;
  uint64_t start = uv_hrtime();
  for (;;) {
    if (queue_.empty() || uv_hrtime() - start > kSliceNs) {
      commit_point();
      if (queue_.empty() || store_->failed() || store_->full() || uv_hrtime() - start > kSliceNs)
        break;
    }
    std::vector<Deferred> batch;
    batch.swap(queue_);
    for (size_t i = 0; i < batch.size(); i++) {
      batch[i]();
      if (store_->full() && !store_->failed()) {
        // A commit before an effect found the disk full: what is left of the wave waits, in
        // order, ahead of what it queued.
        queue_.insert(queue_.begin(), std::make_move_iterator(batch.begin() + i + 1),
                      std::make_move_iterator(batch.end()));
        break;
      }
    }
    if (store_->failed() || store_->full()) break;
  }
  if (store_->failed())
    fail_fatal();
  else if (store_->full())
    wait_for_store();
  finished_runs_.clear();
  if (queue_.empty() && after_commit_.empty()) uv_idle_stop(idle_);
  pumping_ = false;
}

void Scheduler::wait_for_store() {
  // The queue waits: the idle handle would only spin the loop. A timer tries the commit again.
  uv_idle_stop(idle_);
  if (full_timer_) return;
  full_timer_ = std::make_unique<Timer>(loop_->get());
  full_timer_->start(
      kFullRetryMs,
      [this] {
        if (pumping_) return;
        if (!store_->retry_full()) {
          if (store_->failed()) fail_fatal();
          return;
        }
        store_writable();
      },
      kFullRetryMs);
  if (on_store_full) on_store_full(true);
}

void Scheduler::store_writable() {
  bool was_waiting = full_timer_ != nullptr;
  full_timer_.reset();
  for (auto& fn : after_commit_) queue_.push_back(std::move(fn));
  after_commit_.clear();
  if (!queue_.empty()) uv_idle_start(idle_, [](uv_idle_t*) {});
  if (was_waiting && on_store_full) on_store_full(false);
}

void Scheduler::fail_fatal() {
  if (!fatal_.empty()) return;
  full_timer_.reset();
  if (store_->failed_disk_full())
    fatal_ =
        "store error: disk full: cannot write to " + store_->path() + " (" + store_->error() + ")";
  else
    fatal_ = "store error: " + store_->error() + " (" + store_->path() + ")";
  fprintf(stderr, "orchrun: %s; stopping all runs\n", fatal_.c_str());
  queue_.clear();
  for (auto& [id, run] : runs_) run->root->cancel("store error");
  processes_.kill_all();
  uv_stop(loop_->get());
}

Task* Scheduler::find_task(uint64_t id) {
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : it->second;
}

void Scheduler::resume(Task* task, int nargs) {
  uint64_t id = task->id;
  defer([this, id, nargs] {
    if (Task* t = find_task(id)) run_task(t, nargs);
  });
}

Task* Scheduler::new_task(Run* run, void* owner, const std::string& node) {
  lua_State* L = run->L();
  auto* t = new Task();
  t->id = next_task_id_++;
  t->co = lua_newthread(L);
  t->thread = LuaRef::pop(L);
  t->node = node;
  t->engine = run->p->engine.get();
  t->owner = owner;
  t->engine->bind_task(t);
  tasks_[t->id] = t;
  return t;
}

void Scheduler::drop_task(Task* t) {
  tasks_.erase(t->id);
  t->engine->unbind_task(t);
  t->thread.reset();
  // The owner deletes the Task object itself.
}

void Scheduler::run_task(Task* t, int nargs) {
  LuaEngine* e = t->engine;
  e->current = t;
  int rc = lua_resume(t->co, nargs);
  e->current = nullptr;
  if (rc == LUA_YIELD) {
    if (t->waiting) return;
    // A plain coroutine.yield() in a node body: nothing would ever resume it.
    lua_settop(t->co, 0);
    lua_pushstring(t->co,
                   "node body yielded outside an orchrun async call (coroutine.yield "
                   "cannot be used directly in a node; use o.sleep, o.exec, ...)");
    rc = LUA_ERRRUN;
  }
  static_cast<TaskOwner*>(t->owner)->task_finished(t, rc);
}

double Scheduler::random_unit() {
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
}

namespace {

Event make_event(Run* run, const char* kind, const std::string& node, int attempt,
                 std::string data) {
  Event e;
  e.ts = wall_ms();
  e.kind = kind;
  e.run_id = run->id;
  e.trace_id = run->trace_id;
  e.pipeline = run->p->name;
  e.version = run->version;
  e.node = node;
  e.attempt = attempt;
  e.data = std::move(data);
  e.incident_id = run->incident_id;
  e.fingerprint = run->fingerprint;
  e.stage = run->stage;
  run->redact(&e.data);
  return e;
}

}  // namespace

void Scheduler::emit(Run* run, const char* kind, const std::string& node, int attempt,
                     std::string data) {
  Event e = make_event(run, kind, node, attempt, std::move(data));
  e.id = store_->insert_event(e);
  for (auto* s : sinks_) s->on_event(e);
}

void Scheduler::notify(Run* run, const char* kind, const std::string& node, int attempt,
                       std::string data) {
  if (sinks_.empty()) return;
  Event e = make_event(run, kind, node, attempt, std::move(data));
  for (auto* s : sinks_) s->on_event(e);
}

void Scheduler::process_started(Task* task, int pid, const std::string& command) {
  Run* run = nullptr;
  std::string node;
  int attempt = 0;
  if (!task || !task->owner ||
      !static_cast<TaskOwner*>(task->owner)->task_where(&run, &node, &attempt))
    return;
  std::string identity = process_identity(pid);
  if (identity.empty()) return;  // already gone
  ProcessRow row;
  row.run_id = run->id;
  row.node_id = node;
  row.attempt = attempt;
  row.run_attempt = run->run_attempt;
  row.pgid = pid;
  row.identity = identity;
  row.command = command;
  row.owner_pid = getpid();
  row.started_at = wall_ms();
  store_->insert_process(row);
  // On record before anything else happens: if this process dies now, a successor finds it.
  store_->commit();
  recorded_procs_[pid] = {run->id, identity};
}

bool Scheduler::record_artifact(Task* task, const std::string& rel, const std::string& kind,
                                int64_t size, const std::string& sha256, std::string* record,
                                std::string* err) {
  if (!task || !task->owner) {
    *err = "artifacts can only be recorded by a node body";
    return false;
  }
  ArtifactRow a;
  a.path = rel;
  a.kind = kind;
  a.size = size;
  a.sha256 = sha256;
  return static_cast<TaskOwner*>(task->owner)->task_artifact(std::move(a), record, err);
}

bool Scheduler::use_artifact(Task* task, const std::string& name, std::string* record,
                             std::string* err) {
  if (!task || !task->owner) {
    *err = "artifacts can only be used by a node body";
    return false;
  }
  return static_cast<TaskOwner*>(task->owner)->task_use_artifact(name, record, err);
}

bool Scheduler::record_incidents(Task* task, const std::string& incidents_json,
                                 std::string* records, std::string* err) {
  if (!task || !task->owner) {
    *err = "incidents can only be recorded by a node body";
    return false;
  }
  return static_cast<TaskOwner*>(task->owner)->task_incidents(incidents_json, records, err);
}

void Scheduler::log(Task* task, std::string_view level, std::string_view message,
                    const std::string& fields_json) {
  if (!task || !task->owner) {
    fprintf(stderr, "[%.*s] %.*s\n", static_cast<int>(level.size()), level.data(),
            static_cast<int>(message.size()), message.data());
    return;
  }
  static_cast<TaskOwner*>(task->owner)->task_log(level, message, fields_json);
}

namespace {

// __index of a run's ctx fields: `workspace` is created on first use, then kept as a field.
int workspace_index(lua_State* L) {
  size_t n = 0;
  const char* k = lua_tolstring(L, 2, &n);
  if (!k || std::string_view(k, n) != "workspace") return 0;
  const char* path = lua_tostring(L, lua_upvalueindex(1));
  // Only the owner may enter (0700, whatever the umask): a run's files and artifacts are its
  // own. A failure to create shows when the node uses it.
  const std::filesystem::path run_dir(path);
  std::error_code ec;
  bool made_root = std::filesystem::create_directory(run_dir.parent_path(), ec);
  if (made_root)
    std::filesystem::permissions(run_dir.parent_path(), std::filesystem::perms::owner_all, ec);
  if (std::filesystem::create_directories(run_dir, ec))
    std::filesystem::permissions(run_dir, std::filesystem::perms::owner_all, ec);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, -1);
  lua_setfield(L, 1, "workspace");
  return 1;
}

}  // namespace

Run* Scheduler::make_run(Pipeline* p, const std::string& id, const std::string& trace_id,
                         int version, const json& input, int64_t started_ms) {
  auto run = std::make_unique<Run>();
  Run* r = run.get();
  r->id = id;
  r->trace_id = trace_id;
  r->p = p;
  r->version = version;
  r->started_ms = started_ms;
  lua_State* L = p->engine->L();
  push_json(L, input);
  r->input = LuaRef::pop(L);
  lua_newtable(L);
  r->outputs = LuaRef::pop(L);
  lua_newtable(L);
  r->artifacts = LuaRef::pop(L);
  // The directory is created the first time a node reads ctx.workspace (a mkdir per run
  // costs more than the rest of a small run).
  r->workspace = workspace_root + "/" + id;
  // Run-level ctx fields, shared by every attempt through __index.
  lua_createtable(L, 0, 2);
  lua_createtable(L, 0, 8);
  lua_pushlstring(L, r->id.data(), r->id.size());
  lua_setfield(L, -2, "run_id");
  lua_pushlstring(L, r->trace_id.data(), r->trace_id.size());
  lua_setfield(L, -2, "trace_id");
  lua_pushlstring(L, p->name.data(), p->name.size());
  lua_setfield(L, -2, "pipeline");
  lua_pushinteger(L, r->version);
  lua_setfield(L, -2, "version");
  r->input.push(L);
  lua_setfield(L, -2, "input");
  r->outputs.push(L);
  lua_setfield(L, -2, "outputs");
  p->engine->push_logger(L);
  lua_setfield(L, -2, "log");
  lua_createtable(L, 0, 1);
  lua_pushlstring(L, r->workspace.data(), r->workspace.size());
  lua_pushcclosure(L, workspace_index, 1);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  r->artifacts.push(L);
  lua_setfield(L, -2, "artifacts");
  p->engine->push_orch(L);
  lua_getfield(L, -1, "__ctx_artifact");
  lua_setfield(L, -3, "artifact");
  lua_getfield(L, -1, "__ctx_use_artifact");
  lua_setfield(L, -3, "use_artifact");
  lua_pop(L, 1);
  lua_setfield(L, -2, "__index");
  r->ctx_mt = LuaRef::pop(L);
  r->summary.run_id = r->id;
  r->summary.trace_id = r->trace_id;
  r->summary.pipeline = p->name;
  r->summary.version = r->version;
  r->root = make_exec(this, r, p->root.get(), nullptr, "");
  runs_[r->id] = std::move(run);
  return r;
}

std::string Scheduler::start_run(Pipeline* p, const RunOptions& opts, std::string* err) {
  int64_t now = wall_ms();
  auto def = store_->upsert_definition(p->name, p->sha256, p->source, p->file, now);
  if (!def) {
    *err = "store error: " + store_->error();
    return "";
  }
  std::string perr;
  json input = parse_json(opts.input_json, &perr);
  if (input.is_discarded()) {
    *err = "invalid input JSON: " + perr;
    return "";
  }
  // A child run shares its parent's trace.
  std::string trace = opts.trace_id.empty() ? new_trace_id() : opts.trace_id;
  if (!opts.parent_run.empty())
    if (auto it = runs_.find(opts.parent_run); it != runs_.end()) trace = it->second->trace_id;
  Run* r = make_run(p, opts.run_id.empty() ? new_ulid(now) : opts.run_id, trace, def->version,
                    input, now);
  r->parent_run = opts.parent_run;
  r->summary.child = !opts.parent_run.empty();
  RunRow row;
  row.id = r->id;
  row.trace_id = r->trace_id;
  row.pipeline = p->name;
  row.version = r->version;
  row.status = RunStatus::running;
  row.source = opts.source;
  row.environment = opts.environment;
  row.input = dump_json(input);
  row.created_at = now;
  row.started_at = now;
  row.idempotency_key = opts.idempotency_key;
  row.parent_run = opts.parent_run;
  row.parent_node = opts.parent_node;
  row.workspace = r->workspace;
  row.owner_pid = getpid();
  bool duplicate = false;
  store_->insert_run(row, &duplicate);
  if (duplicate) {
    *err = "duplicate idempotency key";
    runs_.erase(r->id);
    return "";
  }
  json started{{"source", opts.source}, {"file", p->file}, {"sha256", p->sha256}};
  if (!opts.parent_run.empty()) {
    started["parent_run"] = opts.parent_run;
    started["parent_node"] = opts.parent_node;
  }
  emit(r, "run.started", "", 0, dump_json(started));
  if (store_->failed()) {
    *err = "store error: " + store_->error();
    runs_.erase(r->id);
    return "";
  }
  defer([this, r] { begin_root(r); });
  return r->id;
}

bool Scheduler::resume_run(Pipeline* p, const RunRow& row, std::string* err, bool retry) {
  if (runs_.count(row.id)) {
    *err = "run " + row.id + " is already active here";
    return false;
  }
  std::string perr;
  json input = parse_json(row.input.empty() ? "{}" : row.input, &perr);
  if (input.is_discarded()) input = json::object();
  // What the previous owner's attempts left running ends before anything runs again.
  std::vector<std::string> ended;
  int groups = end_orphan_groups(*store_, row.id, kOrphanGraceMs, &ended);
  int64_t now = wall_ms();
  int interrupted = store_->mark_interrupted(row.id, now);
  Run* r = make_run(p, row.id, row.trace_id, row.version, input,
                    retry ? now : (row.started_at ? row.started_at : row.created_at));
  r->run_attempt = std::max(1, row.attempts);
  r->parent_run = row.parent_run;
  r->incident_id = row.incident_id;
  r->fingerprint = row.fingerprint;
  r->stage = row.stage;
  r->summary.child = !row.parent_run.empty();
  for (auto& n : store_->node_runs(row.id)) {
    if (n.kind != "decision" && n.status != NodeStatus::skipped) r->summary.attempts++;
    r->history[n.node_id].push_back(std::move(n));
  }
  // The artifacts of the attempts that succeeded are there for the nodes still to run.
  for (auto& a : store_->artifacts(row.id)) {
    const auto* h = r->history_of(a.node_id);
    bool ok = false;
    if (h)
      for (auto& n : *h) ok = ok || (n.attempt == a.attempt && n.status == NodeStatus::succeeded);
    if (!ok) continue;
    lua_State* L = r->L();
    r->artifacts.push(L);
    lua_pushlstring(L, a.path.data(), a.path.size());
    push_json(L, artifact_json(a, r->workspace));
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  store_->set_run_status(row.id, RunStatus::running, now);
  if (retry)
    emit(r, "run.retried", "", 0,
         dump_json(json{{"pid", getpid()}, {"run_attempt", r->run_attempt}}));
  else
    emit(r, "run.resumed", "", 0,
         dump_json(json{{"pid", getpid()},
                        {"previous_owner", row.owner_pid},
                        {"interrupted_attempts", interrupted},
                        {"nodes_with_history", r->history.size()}}));
  // The process groups the previous owner left: ended above, on record here.
  if (!ended.empty())
    emit(r, "run.orphans_ended", "", 0,
         dump_json(
             json{{"signalled", groups}, {"groups", ended}, {"previous_owner", row.owner_pid}}));
  if (store_->failed()) {
    *err = "store error: " + store_->error();
    runs_.erase(r->id);
    return false;
  }
  defer([this, r] { begin_root(r); });
  return true;
}

void Scheduler::run_finished(Run* r) {
  if (r->finished) return;
  Exec* root = r->root.get();
  const char* status = "succeeded";
  if (!r->end_status.empty())
    status = r->end_status == "cancelled" ? "cancelled"
             : r->end_status == "failed"  ? "failed"
                                          : "succeeded";
  else if (!r->cancel_reason.empty() || root->outcome == Outcome::Cancelled)
    status = "cancelled";
  else if (root->outcome == Outcome::Failed)
    status = "failed";
  if (!r->hooks_done && end_hooks(r, status)) return;
  r->finished = true;
  // An awaiting_approval hook still at work when the run ends is stopped.
  if (r->hooks && r->hooks->running()) r->hooks->cancel("the run ended");
  std::string out_json;
  if (std::string(status) == "succeeded" && !root->output.empty()) {
    lua_State* L = r->L();
    root->output.push(L);
    json j;
    std::string e;
    if (lua_to_json(L, lua_gettop(L), &j, &e)) out_json = dump_json(j);
    lua_settop(L, 0);
  }
  int64_t now = wall_ms();
  ErrorInfo e = root->err;
  if (std::string(status) == "cancelled") e = {"cancelled", r->cancel_reason, "", "", true, ""};
  if (std::string(status) == "succeeded") e = {};
  r->redact(&out_json);
  r->redact(&e.message);
  store_->finish_run(r->id, status, out_json, e.type, e.message, e.node, e.retryable, now);
  json d{{"duration_ms", now - r->started_ms}};
  if (!e.type.empty()) {
    d["error_type"] = e.type;
    d["message"] = e.message;
    d["node"] = e.node;
    d["retryable"] = e.retryable;
  }
  emit(r, (std::string("run.") + status).c_str(), "", 0, dump_json(d));
  RunSummary sum = r->summary;
  sum.status = status;
  sum.duration_ms = now - r->started_ms;
  sum.error_type = e.type;
  sum.error_message = e.message;
  sum.error_node = e.node;
  sum.output_json = out_json;
  auto it = runs_.find(r->id);
  if (it != runs_.end()) {
    finished_runs_.push_back(std::move(it->second));
    runs_.erase(it);
  }
  finished_hooks(r, sum);
  if (!on_run_finished) return;
  if (pumping_) {
    after_commit([this, sum = std::move(sum)] { on_run_finished(sum); });
  } else {
    store_->commit();
    on_run_finished(sum);
  }
}

bool Scheduler::end_hooks(Run* r, const std::string& status) {
  if (!run_hooks) {
    r->hooks_done = true;
    return false;
  }
  std::vector<Step*> todo;
  for (auto& h : r->p->hooks)
    if (h.event == status) todo.push_back(h.step.get());
  for (auto& h : r->p->hooks)
    if (h.event == "finally") todo.push_back(h.step.get());
  if (todo.empty()) {
    r->hooks_done = true;
    return false;
  }
  r->end_status = status;
  ErrorInfo e = r->root->err;
  if (status == "cancelled") e = {"cancelled", r->cancel_reason, "", "", true, ""};
  set_ctx_run(r, status, status == "succeeded" ? nullptr : &e, "");
  if (!r->hooks) r->hooks = std::make_unique<HookRunner>(this, r);
  run_end_hook(r, std::move(todo), 0);
  return true;
}

void Scheduler::run_end_hook(Run* r, std::vector<Step*> todo, size_t i) {
  if (r->finished || r->hooks_done) return;  // cancelled meanwhile
  if (i == todo.size()) {
    r->hooks_done = true;
    run_finished(r);
    return;
  }
  Step* h = todo[i];
  r->hooks->run(h, "", dup(r->L(), r->input), [this, r, todo, i](Exec* e) {
    r->summary.hooks.emplace_back(e->path(), outcome_name(e->outcome));
    run_end_hook(r, todo, i + 1);
  });
}

void Scheduler::set_ctx_run(Run* r, const std::string& status, const ErrorInfo* e,
                            const std::string& gate) {
  json j{{"id", r->id}, {"pipeline", r->p->name}, {"status", status}};
  if (e && !e->type.empty())
    j["error"] = {{"type", e->type}, {"message", e->message}, {"node", e->node}};
  if (!gate.empty()) {
    json g{{"node", gate},
           {"approve", "orchrun approve " + r->id + " " + gate + " --as NAME"},
           {"reject", "orchrun reject " + r->id + " " + gate + " --as NAME"},
           {"url", "/api/runs/" + r->id + "/approvals/" + gate}};
    auto it = r->p->by_path.find(gate);
    if (it != r->p->by_path.end() && it->second->kind() == StepKind::Approve)
      g["message"] = it->second->approve().message;
    j["gate"] = g;
  }
  std::string text = dump_json(j);
  r->redact(&text);
  lua_State* L = r->L();
  r->ctx_mt.push(L);
  lua_getfield(L, -1, "__index");
  push_json(L, parse_json(text, nullptr));
  lua_setfield(L, -2, "run");
  lua_pop(L, 2);
}

void Scheduler::cancel_run(const std::string& run_id, const std::string& reason) {
  auto it = runs_.find(run_id);
  if (it == runs_.end()) return;
  Run* r = it->second.get();
  if (r->finished) return;
  if (!r->end_status.empty()) {  // in its hooks: they stop, and the run ends as decided
    if (r->hooks) r->hooks->cancel(reason);
    r->hooks_done = true;
    run_finished(r);
    return;
  }
  if (r->root->done && r->root->outcome != Outcome::Cancelled) return;  // finishing already
  r->cancel_reason = reason;
  r->root->cancel(reason);
  run_finished(r);
}

void Scheduler::cancel_all(const std::string& reason) {
  std::vector<std::string> ids;
  for (auto& [id, r] : runs_) ids.push_back(id);
  for (auto& id : ids) cancel_run(id, reason);
}

}  // namespace orch
