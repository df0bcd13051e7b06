// The yield/resume seam (bindings/async_op.h) on its own: a real Lua state and a real loop, with
// a small host in place of the scheduler, so that each rule can be watched directly: misuse
// raises, a cancel runs its hook once, a late answer is ignored, nothing is left on the loop.
// The end of the file checks the same rules through real bindings in real runs.
#include "bindings/async_op.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bindings/lua_state.h"
#include "drivers/loop.h"
#include "test_util.h"

using namespace orch;

namespace {

// Plays the scheduler: knows its tasks by id and records what it is asked to resume.
struct FakeHost : TaskHost {
  Loop lp;
  std::map<uint64_t, Task*> tasks;
  std::vector<std::pair<uint64_t, int>> resumed;  // (task id, nargs)
  uv_loop_t* loop() override { return lp.get(); }
  ProcessTable* processes() override { return nullptr; }
  Task* find_task(uint64_t id) override {
    auto it = tasks.find(id);
    return it == tasks.end() ? nullptr : it->second;
  }
  void resume(Task* task, int nargs) override { resumed.emplace_back(task->id, nargs); }
};

// What the test C function saw, reachable from it through the registry-free global below.
struct Probe {
  AsyncOp op;
  int cancels = 0;
};
Probe* g_probe = nullptr;

// test_wait(): waits through the seam; a cancel counts in the probe.
int l_test_wait(lua_State* L) {
  AsyncOp op = AsyncOp::begin(L, "test.wait");
  g_probe->op = op;
  return op.yield(L, [] { g_probe->cancels++; });
}

class Fixture {
 public:
  Fixture() {
    std::string err;
    engine = LuaEngine::create(SandboxOptions{}, &err);
    INFO(err);
    REQUIRE(engine);
    engine->set_host(&host);
    lua_register(engine->L(), "test_wait", l_test_wait);
    g_probe = &probe;
    task = make_task(1);
  }
  ~Fixture() {
    for (auto& t : owned) drop(t.get());
    g_probe = nullptr;
    engine->set_host(nullptr);
  }

  std::unique_ptr<Task> make_task_owned(uint64_t id) {
    lua_State* L = engine->L();
    auto t = std::make_unique<Task>();
    t->id = id;
    t->co = lua_newthread(L);
    t->thread = LuaRef::pop(L);
    t->engine = engine.get();
    t->node = "n";
    engine->bind_task(t.get());
    host.tasks[id] = t.get();
    return t;
  }
  Task* make_task(uint64_t id) {
    owned.push_back(make_task_owned(id));
    return owned.back().get();
  }
  // As the scheduler's drop_task: the task is gone from the host and the engine.
  void drop(Task* t) {
    if (!host.tasks.count(t->id)) return;
    host.tasks.erase(t->id);
    engine->unbind_task(t);
    t->thread.reset();
  }
  // Starts `fn_name(args...)` on the task's coroutine; the lua_resume status.
  int start(Task* t, const char* global) {
    lua_getglobal(t->co, global);
    return lua_resume(t->co, 0);
  }
  std::string error_of(Task* t) {
    const char* m = lua_tostring(t->co, -1);
    return m ? m : "";
  }

  FakeHost host;
  std::unique_ptr<LuaEngine> engine;
  Probe probe;
  std::vector<std::unique_ptr<Task>> owned;
  Task* task = nullptr;
};

bool has(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("async op: a wait yields, marks the task and resumes it by id when completed",
          "[bindings][async]") {
  Fixture f;
  REQUIRE(f.start(f.task, "test_wait") == LUA_YIELD);
  CHECK(f.task->waiting);
  CHECK(f.task->cancel_hook);
  CHECK(f.probe.op.task() == f.task);
  CHECK(f.probe.op.host() == &f.host);

  bool pushed = f.probe.op.complete([](lua_State* co) {
    lua_pushstring(co, "answer");
    return 1;
  });
  CHECK(pushed);
  CHECK_FALSE(f.task->waiting);
  CHECK_FALSE(f.task->cancel_hook);
  REQUIRE(f.host.resumed.size() == 1);
  CHECK(f.host.resumed[0] == std::make_pair(uint64_t{1}, 1));
  // The scheduler resumes with what was pushed: test_wait returns it.
  REQUIRE(lua_resume(f.task->co, 1) == 0);
  CHECK(std::string(lua_tostring(f.task->co, -1)) == "answer");
  // Completed once: a second answer of the same driver is ignored.
  CHECK_FALSE(f.probe.op.complete([](lua_State*) -> int {
    FAIL("pushed twice");
    return 0;
  }));
  CHECK(f.host.resumed.size() == 1);
  CHECK(f.probe.cancels == 0);
  CHECK(f.host.lp.close().empty());
}

TEST_CASE("async op: fail resumes with nil, message, code", "[bindings][async]") {
  Fixture f;
  REQUIRE(f.start(f.task, "test_wait") == LUA_YIELD);
  CHECK(f.probe.op.fail("it broke", "EIO"));
  REQUIRE(f.host.resumed.size() == 1);
  CHECK(f.host.resumed[0].second == 3);
  REQUIRE(lua_resume(f.task->co, 3) == 0);
  REQUIRE(lua_gettop(f.task->co) == 3);
  CHECK(lua_isnil(f.task->co, 1));
  CHECK(std::string(lua_tostring(f.task->co, 2)) == "it broke");
  CHECK(std::string(lua_tostring(f.task->co, 3)) == "EIO");
}

TEST_CASE("async op: misuse raises, naming the function", "[bindings][async]") {
  Fixture f;
  lua_State* L = f.engine->L();

  SECTION("outside any task") {
    lua_getglobal(L, "test_wait");
    REQUIRE(lua_pcall(L, 0, 0, 0) != 0);
    CHECK(has(lua_tostring(L, -1),
              "test.wait can only be called inside a node body while the pipeline runs"));
    lua_pop(L, 1);
  }
  SECTION("with no host (the pipeline is not running)") {
    f.engine->set_host(nullptr);
    REQUIRE(f.start(f.task, "test_wait") == LUA_ERRRUN);
    CHECK(has(f.error_of(f.task), "test.wait can only be called inside a node body"));
    f.engine->set_host(&f.host);
  }
  SECTION("while the task already waits") {
    f.task->waiting = true;
    REQUIRE(f.start(f.task, "test_wait") == LUA_ERRRUN);
    CHECK(has(f.error_of(f.task), "test.wait: the task is already waiting"));
    f.task->waiting = false;
  }
  SECTION("where the coroutine cannot yield, with the author's line") {
    const char* chunk =
        "return function()\n"
        "  return pcall(table.sort, { 3, 1, 2 }, function(a, b) test_wait(); return a < b end)\n"
        "end";
    REQUIRE(luaL_loadbuffer(f.task->co, chunk, strlen(chunk), "@mine.lua") == 0);
    REQUIRE(lua_pcall(f.task->co, 0, 1, 0) == 0);
    REQUIRE(lua_resume(f.task->co, 0) == 0);
    CHECK_FALSE(lua_toboolean(f.task->co, 1));
    std::string msg = lua_tostring(f.task->co, 2);
    CHECK(has(msg, "mine.lua:2: test.wait cannot wait here"));
    CHECK_FALSE(f.task->waiting);
  }
  // Nothing started, nothing to cancel, nothing resumed.
  CHECK(f.probe.cancels == 0);
  CHECK(f.host.resumed.empty());
  CHECK_FALSE(f.task->cancel_hook);
}

TEST_CASE("async op: a cancel runs the hook exactly once and the late answer is ignored",
          "[bindings][async]") {
  Fixture f;
  REQUIRE(f.start(f.task, "test_wait") == LUA_YIELD);
  cancel_wait(f.task);
  CHECK(f.probe.cancels == 1);
  CHECK_FALSE(f.task->waiting);
  CHECK_FALSE(f.task->cancel_hook);
  cancel_wait(f.task);  // the timeout and then the drop both ask: still once
  CHECK(f.probe.cancels == 1);
  // The driver answers anyway (it could not be stopped in time): ignored, nothing pushed.
  CHECK_FALSE(f.probe.op.complete([](lua_State*) -> int {
    FAIL("pushed after a cancel");
    return 0;
  }));
  CHECK_FALSE(f.probe.op.fail("late", "EIO"));
  CHECK(f.host.resumed.empty());
  CHECK(lua_gettop(f.task->co) == 0);
  // A task that waits for nothing: a cancel is harmless.
  Task* idle = f.make_task(2);
  cancel_wait(idle);
  CHECK(f.probe.cancels == 1);
}

TEST_CASE("async op: an answer after the task is gone is ignored", "[bindings][async]") {
  Fixture f;
  REQUIRE(f.start(f.task, "test_wait") == LUA_YIELD);
  AsyncOp op = f.probe.op;
  f.drop(f.task);
  CHECK(op.task() == nullptr);
  CHECK_FALSE(op.complete([](lua_State*) -> int {
    FAIL("pushed to a task that is gone");
    return 0;
  }));
  CHECK(f.host.resumed.empty());
  // An empty operation (a pool job whose task was cancelled) is a no-op, too.
  CHECK_FALSE(AsyncOp().complete([](lua_State*) { return 0; }));
  CHECK(AsyncOp().task() == nullptr);
}

TEST_CASE("async op: an answer to an earlier wait does not complete the current one",
          "[bindings][async]") {
  Fixture f;
  REQUIRE(f.start(f.task, "test_wait") == LUA_YIELD);
  AsyncOp first = f.probe.op;
  REQUIRE(first.complete([](lua_State*) { return 0; }));
  REQUIRE(lua_resume(f.task->co, 0) == 0);
  // The task waits again (a loop of o.sleep, say).
  REQUIRE(f.start(f.task, "test_wait") == LUA_YIELD);
  AsyncOp second = f.probe.op;
  CHECK_FALSE(first.complete([](lua_State*) -> int {
    FAIL("an old answer completed the new wait");
    return 0;
  }));
  CHECK(f.task->waiting);
  CHECK(second.task() == f.task);
  CHECK(second.complete([](lua_State*) { return 0; }));
  CHECK(f.host.resumed.size() == 2);
}

TEST_CASE("async op: yield_detached empties the job's slot on cancel", "[bindings][async]") {
  Fixture f;
  static AsyncOp slot;  // where a pool job keeps its operation
  lua_register(f.engine->L(), "test_pool_wait", [](lua_State* L) {
    AsyncOp op = AsyncOp::begin(L, "test.pool");
    slot = op;
    return op.yield_detached(L, &slot);
  });
  REQUIRE(f.start(f.task, "test_pool_wait") == LUA_YIELD);
  CHECK(slot.host() == &f.host);
  cancel_wait(f.task);
  CHECK(slot.host() == nullptr);  // the job's completion no longer reaches the host
  CHECK_FALSE(slot.complete([](lua_State*) { return 0; }));
  CHECK(f.host.resumed.empty());
}

TEST_CASE("async op: on_cancel replaces the hook only while the operation waits",
          "[bindings][async]") {
  Fixture f;
  REQUIRE(f.start(f.task, "test_wait") == LUA_YIELD);
  int second_stage = 0;
  f.probe.op.on_cancel([&] { second_stage++; });
  cancel_wait(f.task);
  CHECK(second_stage == 1);
  CHECK(f.probe.cancels == 0);  // the first stage's hook was replaced, not run
  f.probe.op.on_cancel([&] { second_stage += 10; });  // no longer waiting: no-op
  CHECK_FALSE(f.task->cancel_hook);
  CHECK(second_stage == 1);
}

TEST_CASE("async op: a real timer (o.sleep) completes or is cancelled, and the loop closes clean",
          "[bindings][async]") {
  Fixture f;
  lua_State* L = f.engine->L();
  lua_getglobal(L, "require");
  lua_pushstring(L, "orch.core");
  REQUIRE(lua_pcall(L, 1, 1, 0) == 0);
  lua_getfield(L, -1, "sleep");
  lua_setglobal(L, "core_sleep");
  lua_pop(L, 1);

  auto sleep_on = [&](Task* t, double seconds) {
    lua_getglobal(t->co, "core_sleep");
    lua_pushnumber(t->co, seconds);
    return lua_resume(t->co, 1);
  };
  // Completes: the loop's timer answers, the host is asked to resume.
  REQUIRE(sleep_on(f.task, 0.01) == LUA_YIELD);
  f.host.lp.run();
  REQUIRE(f.host.resumed.size() == 1);
  CHECK(f.host.resumed[0] == std::make_pair(uint64_t{1}, 0));
  CHECK(lua_resume(f.task->co, 0) == 0);

  // Cancelled: the hook stops the timer, so the loop has nothing left to run.
  Task* other = f.make_task(2);
  REQUIRE(sleep_on(other, 60) == LUA_YIELD);
  CHECK(open_handles(f.host.loop()).size() == 1);
  cancel_wait(other);
  f.drop(other);
  f.host.lp.run();  // returns at once: the timer is closed, not pending
  CHECK(f.host.resumed.size() == 1);
  CHECK(f.host.lp.close().empty());
}

// --- the seam through the real bindings, in real runs ---------------------------------------

TEST_CASE("async op: a bad o.exec duration option raises, naming the option", "[bindings][async]") {
  orch::test::Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "bad-exec" {
      o.node("a", function()
        local ok, err = pcall(o.exec, { "true", timeout = "soon" })
        local ok2, err2 = pcall(o.exec, { "true", kill_grace = {} })
        return { ok = ok, err = tostring(err), ok2 = ok2, err2 = tostring(err2) }
      end),
    })");
  INFO(s.error_message);
  REQUIRE(s.status == "succeeded");
  json out = parse_json(s.output_json, nullptr);
  CHECK_FALSE(out["ok"].get<bool>());
  CHECK(has(out["err"].get<std::string>(), "o.exec timeout: "));
  CHECK_FALSE(out["ok2"].get<bool>());
  CHECK(has(out["err2"].get<std::string>(),
            "o.exec kill_grace: expected a duration (seconds or a string like \"5s\"), got table"));
  CHECK(h.close().empty());
}

TEST_CASE("async op: ctx:artifact refuses bad options and paths before anything starts",
          "[bindings][async]") {
  orch::test::Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "bad-artifact" {
      o.node("a", function(ctx)
        local r = {}
        local ok, err = pcall(ctx.artifact, ctx, "x.txt", { kind = 3 })
        r.kind = tostring(err)
        ok, err = pcall(ctx.artifact, ctx, "x.txt", "report")
        r.opts = tostring(err)
        ok, err = pcall(ctx.artifact, ctx, "../outside.txt")
        r.outside = type(err) == "table" and err.message or tostring(err)
        ok, err = pcall(ctx.use_artifact, ctx, "nothing-upstream")
        r.use = type(err) == "table" and err.type or tostring(err)
        return r
      end),
    })");
  INFO(s.error_message);
  REQUIRE(s.status == "succeeded");
  json out = parse_json(s.output_json, nullptr);
  INFO(out.dump(2));
  CHECK(has(out["kind"].get<std::string>(), "ctx:artifact: kind must be a string"));
  CHECK(has(out["opts"].get<std::string>(), "ctx:artifact: options must be a table {kind=}"));
  CHECK(has(out["outside"].get<std::string>(), "is outside the run's workspace"));
  CHECK(out["use"].get<std::string>() == "artifact");
  CHECK(h.close().empty());
}
