// Regression tests for defects found in code review (each names the defect it guards).
// They failed (or ASan aborted) on the code as first reviewed; all pass since the fixes.
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "base/json_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {
std::string q1(Harness& h, const std::string& sql) {
  return query_str(h.db_path, sql);
}
bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}
}  // namespace

// --- 1. lifetime ---------------------------------------------------------------------------

// start_run defers `root->start()` without checking whether the run was cancelled meanwhile.
// A cancel that lands before the first pump (in the CLI: a SIGINT handled in the first poll
// phase, e.g. while start_run waited on a busy database) still starts the nodes; the Run is then
// freed at the end of that pump while the node's o.sleep timer (or o.exec process) still holds
// the raw Task* -> heap-use-after-free when it fires.
TEST_CASE("review: a run cancelled before its first pump must not start its nodes", "[review]") {
  Harness h;
  h.on_started = [](Scheduler& s, const std::string& id) { s.cancel_run(id, "test cancel"); };
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "early-cancel" {
      o.node("a", function() o.sleep("200ms"); return {} end),
    })");
  CHECK(s.status == "cancelled");
  CHECK(h.log.count("node.started") == 0);
  CHECK(q1(h, "select count(*) from node_runs") == "0");
  CHECK(h.close().empty());
}

// l_sleep / l_exec start the driver and set t->waiting + cancel_hook *before* lua_yield. When
// the call cannot yield (inside a C function such as table.sort's comparator, string.gsub's
// callback, a __tostring called by tostring), lua_yield raises "attempt to yield across C-call
// boundary": the timer/process stays armed with a raw Task*, the node finishes (pcall) or fails,
// its Task is freed without the hook being run -> use-after-free when the timer fires.
TEST_CASE("review: an async call that cannot yield must not leave a driver pointing at the task",
          "[review]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "c-boundary" {
      o.node("a", function()
        local ok, err = pcall(table.sort, { 3, 1, 2 }, function(x, y) o.sleep("50ms"); return x < y end)
        return { ok = ok, err = tostring(err) }
      end),
      o.node("b", function() o.sleep("200ms"); return {} end),
    })");
  CHECK(s.status == "succeeded");
  CHECK(h.close().empty());
}

// --- 2. scheduler semantics -----------------------------------------------------------------

// NodeExec::start: when skip_if raises, begin_row() inserts a 'running' attempt row and
// fail_final() finishes the node without finish_row() and without a node.failed event: the row
// stays 'running' forever (and `inspect` shows a node that never ended).
TEST_CASE("review: a skip_if that raises records the attempt as failed", "[review]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "skip-err" {
      o.node("a", function() return {} end,
        { optional = true, skip_if = function() error("bad predicate") end }),
      o.node("b", function() return {} end),
    })");
  CHECK(s.status == "succeeded");
  CHECK(q1(h, "select status from node_runs where node_id='a'") == "failed");
  CHECK(q1(h, "select count(*) from node_runs where node_id='a' and finished_at is null") == "0");
  CHECK(h.log.count("node.failed", "a") == 1);
  CHECK(h.close().empty());
}

// compile_parallel maps join = n == #branches to join = "all", and "all" tolerates optional
// failures. So join = 2 of 2 succeeds with one branch failed, while join = 2 of 3 with the same
// failure counts it. A join = n must need n successes.
TEST_CASE("review: join = n equal to the branch count still needs n successes", "[review]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "join-n" {
      o.parallel("p", {
        o.node("a", function() return {} end),
        o.node("b", function() error("b down") end, { optional = true }),
      }, { join = 2 }),
    })");
  CHECK(s.status == "failed");
  CHECK(h.close().empty());
}

// --- 3. process driver ----------------------------------------------------------------------

// Process::on_exit stops timer_ (which, after terminate(), is the SIGKILL escalation) and reuses
// it for the 250 ms drain. Once the group leader dies of the SIGTERM, nothing ever SIGKILLs the
// rest of the group: a child that ignores SIGTERM outlives the timeout for good.
TEST_CASE(
    "review: a timed-out command's group gets SIGKILL after kill_grace even if the leader "
    "exited",
    "[review]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "grace" {
      o.node("a", function()
        local r = o.exec { sh = "(trap '' TERM; exec sleep 4) & echo $!; wait",
                           timeout = "200ms", kill_grace = "200ms" }
        return { pid = tonumber(r.stdout:match("%d+")), timed_out = r.timed_out }
      end),
    })");
  REQUIRE(s.status == "succeeded");
  json out = parse_json(s.output_json, nullptr);
  REQUIRE(out.contains("pid"));
  int pid = out["pid"].get<int>();
  CHECK(out["timed_out"].get<bool>());
  // Timeout at 200 ms + grace 200 ms: by 1 s the group must be gone.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  // A zombie (killed, waiting for init to reap it) is gone for this purpose.
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  bool alive = !stat.empty() && stat.find(") Z ") == std::string::npos;
  if (alive) kill(pid, SIGKILL);
  CHECK_FALSE(alive);
  CHECK(h.close().empty());
}

// mod_exec.cc: the cancel hook is `p->detach(2000)` whatever the command's kill_grace; a node
// timeout (or cancel) gives a TERM-ignoring command 2 s instead of the 100 ms asked for, and the
// run cannot end before.
TEST_CASE("review: a node timeout honours the command's kill_grace", "[review]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "grace2" {
      o.node("a", function()
        o.exec { sh = "trap '' TERM; sleep 3", kill_grace = "100ms" }
        return {}
      end, { timeout = "200ms" }),
    })");
  CHECK(s.status == "failed");
  CHECK(s.error_type == "timeout");
  INFO("took " << h.last_seconds << " s");
  CHECK(h.last_seconds < 1.2);
  CHECK(h.close().empty());
}

// mod_fs.cc do_write: the temporary file is `path + ".tmp." + pid`, shared by every write to the
// same path from this process. Two writes on the thread pool truncate and interleave the same
// temp file; one rename fails with ENOENT or the target gets mixed content.
TEST_CASE("review: concurrent o.fs.write to one path are each atomic", "[review]") {
  Harness h;
  std::string path = h.dir.file("report.txt");
  auto s = h.run(R"(
    local o = require "orch"
    local branches = {}
    for i, ch in ipairs { "a", "b", "c", "d" } do
      branches[i] = o.node("w" .. ch, function(ctx)
        local n, err = o.fs.write(ctx.input.path, string.rep(ch, 8 * 1024 * 1024))
        return { n = n, err = err }
      end)
    end
    return o.pipeline "writers" { o.parallel("p", branches) })",
                 json{{"path", path}}.dump());
  REQUIRE(s.status == "succeeded");
  INFO(s.output_json);
  CHECK_FALSE(contains(s.output_json, "\"err\""));
  std::string data = read_file(path);
  CHECK(data.size() == 8u * 1024 * 1024);
  CHECK(data.find_first_not_of(data.empty() ? 'x' : data[0]) == std::string::npos);
  CHECK(h.close().empty());
}

// --- 4/6. crashes and hangs from pipeline code ------------------------------------------------

// error_from() reads the error table with lua_getfield on the dead coroutine, outside any
// protected call: an __index metamethod that raises triggers LuaJIT's panic and exit(1). The
// run stays 'running' in the store, no summary is printed.
TEST_CASE("review: an error object whose __index raises fails the node and not the process",
          "[review]") {
  TempDir dir;
  std::string file = dir.file("meta.lua"), db = dir.file("o.db");
  write_file(file, R"(
    local o = require "orch"
    return o.pipeline "meta-err" {
      o.node("a", function()
        error(setmetatable({}, { __index = function() error("boom") end }))
      end),
    })");
  auto r = orchrun({file, "--progress", "none"}, db);
  INFO(r.err);
  CHECK_FALSE(contains(r.err, "PANIC"));
  CHECK(r.exit_code == 1);
  CHECK(query_str(db, "select status from runs") == "failed");
}

// Conditions (when/switch) and skip_if run through lua_pcall on the main state with no deadline
// (the count hook only acts while a task with a deadline runs), and SIGINT is only handled by a
// uv_signal callback on the blocked loop: a busy condition hangs the run for good and neither the
// first nor the "force" second Ctrl-C does anything.
TEST_CASE("review: Ctrl-C twice stops a run whose condition never returns", "[review]") {
  TempDir dir;
  std::string file = dir.file("busy.lua"), db = dir.file("o.db");
  write_file(file, R"(
    local o = require "orch"
    return o.pipeline "busy" {
      defaults = { timeout = "1s" },
      o.when("w", function() while true do end end, o.node("x", function() return {} end)),
    })");
  std::string script = "\"" + orchrun_bin() + "\" \"" + file + "\" --db \"" + db +
                       "\" --progress none & p=$!; sleep 0.7; kill -INT $p; sleep 0.3; "
                       "kill -INT $p; sleep 1.2; if kill -0 $p 2>/dev/null; then kill -9 $p; "
                       "echo STILL-RUNNING; fi; wait $p; echo rc=$?";
  auto r = run_cmd({"sh", "-c", script});
  INFO(r.out << r.err);
  CHECK_FALSE(contains(r.out, "STILL-RUNNING"));
}

// After a store failure the CLI does `view.reset()` and then `sched.cancel_all("shutdown")`,
// whose run_finished() emits run.cancelled to every sink, including the destroyed LiveView
// (still in sinks_): heap-use-after-free. The store failure here: a trigger makes the next
// event insert fail, which is what a full disk or a locked database does.
TEST_CASE("review: a store failure mid-run exits 3 cleanly", "[review]") {
  TempDir dir;
  std::string file = dir.file("break.lua"), db = dir.file("o.db");
  write_file(file, R"(
    local o = require "orch"
    return o.pipeline "store-break" {
      o.node("break", function(ctx)
        return o.exec { "sqlite3", "-cmd", ".timeout 3000", ctx.input.db,
          "CREATE TRIGGER no_events BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'no more events'); END;",
          check = true }
      end),
      o.node("after", function() return {} end),
    })");
  auto r = orchrun({file, "--progress", "plain", "--input", json{{"db", db}}.dump()}, db);
  INFO(r.out << r.err);
  CHECK(contains(r.err, "store error"));
  CHECK_FALSE(contains(r.err, "AddressSanitizer"));
  CHECK(r.exit_code == 3);
}

// --- 5. sandbox ---------------------------------------------------------------------------------

// getmetatable("") is allowed and returns the real string metatable, whose __index is the real
// `string` table shared with the sandbox's own code. is_deadline() in sandbox.cc uses
// e:find(...), so a pipeline that replaces string.find through it makes the sandboxed pcall
// swallow the deadline error: a body spinning in pcall runs past its timeout forever.
TEST_CASE("review: a node cannot disable its own timeout through the string metatable",
          "[review]") {
  TempDir dir;
  std::string file = dir.file("spin.lua"), db = dir.file("o.db");
  write_file(file, R"(
    local o = require "orch"
    return o.pipeline "spin" {
      o.node("a", function()
        -- The shared string metatable is hidden; replacing string functions from here only
        -- touches the sandbox's own copy of the library.
        assert(getmetatable("") == false)
        string.find = function() return nil end
        while true do pcall(function() while true do end end) end
      end, { timeout = "300ms" }),
    })");
  auto r = run_cmd(
      {"timeout", "-s", "KILL", "3", orchrun_bin(), file, "--db", db, "--progress", "none"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 1);  // 137: still spinning after 3 s, killed
  CHECK(query_str(db, "select error_type from node_runs where node_id='a'") == "timeout");
}
