// The scheduler, in-process: real loop, real SQLite file, real processes and timers.
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "drivers/timer.h"
#include "base/json_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

TEST_CASE("a sequence passes each output to the next node and stores every attempt",
          "[scheduler]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "seq" {
      o.node("a", function(ctx, input) return { n = input.start + 1 } end),
      o.node("b", function(ctx, input) return { n = input.n * 10, a = ctx.outputs.a.n } end),
    })",
                 R"({"start": 4})");
  CHECK(s.status == "succeeded");
  CHECK(s.nodes_succeeded == 2);
  CHECK(query_str(h.db_path, "select output from runs where id='" + s.run_id + "'") ==
        R"({"a":5,"n":50})");
  CHECK(query_int(h.db_path, "select count(*) from node_runs where run_id='" + s.run_id +
                                 "' and status='succeeded'") == 2);
  // Every event carries the trace and run ids.
  CHECK(query_int(h.db_path, "select count(*) from events where run_id='" + s.run_id +
                                 "' and trace_id='" + s.trace_id + "'") ==
        query_int(h.db_path, "select count(*) from events where run_id='" + s.run_id + "'"));
  CHECK(h.log.count("run.started") == 1);
  CHECK(h.log.count("node.started") == 2);
  CHECK(h.log.count("node.succeeded") == 2);
  CHECK(h.log.count("run.succeeded") == 1);
  CHECK(h.close().empty());
}

TEST_CASE("parallel branches overlap: timers and processes", "[scheduler]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "par" {
      o.parallel("p", {
        o.node("t1", function() o.sleep("300ms"); return {} end),
        o.node("t2", function() o.sleep(0.3); return {} end),
        o.node("x1", function() return o.exec { "sleep", "0.3" } end),
        o.node("x2", function() return o.exec "sleep 0.3" end),
      }),
    })");
  CHECK(s.status == "succeeded");
  INFO("took " << h.last_seconds << "s");
  // Four 300 ms waits in sequence would take 1.2 s.
  CHECK(h.last_seconds < 0.9);
  CHECK(h.last_seconds >= 0.29);
  CHECK(h.close().empty());
}

static std::string q1(Harness& h, const std::string& sql) {
  return query_str(h.db_path, sql);
}

TEST_CASE("join = any succeeds on the first branch and cancels the rest", "[scheduler]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "any" {
      o.parallel("race", {
        o.node("fast", function() o.sleep("20ms"); return { who = "fast" } end),
        o.node("slow", function() o.sleep("10s"); return {} end),
        o.node("proc", function() return o.exec { "sleep", "10" } end),
      }, { join = "any" }),
      o.node("after", function(ctx, input) return { winner = input.fast.who } end),
    })");
  CHECK(s.status == "succeeded");
  CHECK(h.last_seconds < 3);
  CHECK(q1(h, "select status from node_runs where node_id='race/slow'") == "cancelled");
  CHECK(q1(h, "select status from node_runs where node_id='race/proc'") == "cancelled");
  CHECK(s.output_json == R"({"winner":"fast"})");
  CHECK(h.close().empty());
}

TEST_CASE("join = n needs n successes; fails as soon as it cannot get them", "[scheduler]") {
  Harness h;
  auto ok = h.run(R"(
    local o = require "orch"
    return o.pipeline "n" {
      o.parallel("p", {
        o.node("a", function() return {} end),
        o.node("b", function() error("b down") end),
        o.node("c", function() return {} end),
      }, { join = 2 }),
    })");
  CHECK(ok.status == "succeeded");
  auto bad = h.run(R"(
    local o = require "orch"
    return o.pipeline "n2" {
      o.parallel("p", {
        o.node("a", function() error("a down") end),
        o.node("b", function() error("b down") end),
        o.node("c", function() o.sleep("10s") return {} end),
      }, { join = 2 }),
    })");
  CHECK(bad.status == "failed");
  CHECK(bad.error_message.find("branches succeeded, 2 needed") != std::string::npos);
  CHECK(h.last_seconds < 3);
  CHECK(h.close().empty());
}

TEST_CASE("a failing branch fails a join-all parallel at once and cancels its siblings",
          "[scheduler]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "ff" {
      o.parallel("p", {
        o.node("boom", function() o.sleep("10ms"); error("disk on fire") end),
        o.node("long", function() o.sleep("30s"); return {} end),
      }),
      o.node("never", function() return {} end),
    })");
  CHECK(s.status == "failed");
  CHECK(s.error_node == "p/boom");
  CHECK(s.error_message.find("disk on fire") != std::string::npos);
  CHECK(h.last_seconds < 3);
  CHECK(q1(h, "select status from node_runs where node_id='p/long'") == "cancelled");
  CHECK(q1(h, "select count(*) from node_runs where node_id='never'") == "0");
  CHECK(q1(h, "select error_node from runs where id='" + s.run_id + "'") == "p/boom");
  CHECK(h.close().empty());
}

TEST_CASE("parallel max limits how many branches run at once", "[scheduler]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    local branches = {}
    for i = 1, 4 do
      branches[i] = o.node("b" .. i, function() o.sleep("150ms"); return {} end)
    end
    return o.pipeline "max" { o.parallel("p", branches, { max = 2 }) })");
  CHECK(s.status == "succeeded");
  INFO(h.last_seconds);
  CHECK(h.last_seconds >= 0.29);  // two waves of 150 ms
  CHECK(h.last_seconds < 0.6);
  CHECK(h.close().empty());
}

TEST_CASE("when and switch take one branch, record the decision, skip the others", "[scheduler]") {
  Harness h;
  const char* src = R"(
    local o = require "orch"
    return o.pipeline "route" {
      o.when("big", function(ctx, input) return input.n > 10 end,
        o.node("large", function() return { size = "large" } end),
        o.node("small", function() return { size = "small" } end)),
      o.switch("sev", function(ctx) return ctx.input.sev end, {
        critical = o.node("page", function() return { via = "page" } end),
        default = o.node("chat", function() return { via = "chat" } end),
      }),
      o.node("out", function(ctx) return { size = ctx.outputs.big.size, via = ctx.outputs.sev.via } end),
    })";
  auto a = h.run(src, R"({"n": 50, "sev": "critical"})");
  CHECK(a.status == "succeeded");
  CHECK(a.output_json == R"({"size":"large","via":"page"})");
  CHECK(q1(h, "select status from node_runs where run_id='" + a.run_id +
                  "' and node_id='big/small'") == "skipped");
  CHECK(q1(h, "select output from node_runs where run_id='" + a.run_id + "' and node_id='big'") ==
        R"({"branch":"then"})");
  auto b = h.run(src, R"({"n": 1, "sev": "info"})");
  CHECK(b.output_json == R"({"size":"small","via":"chat"})");
  CHECK(q1(h, "select status from node_runs where run_id='" + b.run_id +
                  "' and node_id='sev/page'") == "skipped");
  CHECK(h.close().empty());
}

TEST_CASE("a switch with no matching case and no default fails clearly", "[scheduler]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "nocase" {
      o.switch("sev", function() return "warning" end, {
        critical = o.node("page", function() return {} end),
      }),
    })");
  CHECK(s.status == "failed");
  CHECK(s.error_type == "no_case");
  CHECK(s.error_message.find("'warning'") != std::string::npos);
  CHECK(h.close().empty());
}

TEST_CASE("skip_if skips a node and passes its input on", "[scheduler]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "skip" {
      o.node("a", function() return { v = 1 } end),
      o.node("b", function() return { v = 2 } end, { skip_if = function(ctx, input) return input.v == 1 end }),
      o.node("c", function(ctx, input) return { got = input.v } end),
    })");
  CHECK(s.status == "succeeded");
  CHECK(s.output_json == R"({"got":1})");
  CHECK(q1(h, "select status from node_runs where node_id='b'") == "skipped");
  CHECK(h.log.count("node.skipped", "b") == 1);
  CHECK(h.close().empty());
}

TEST_CASE("retries record every attempt and wait the backoff between them", "[scheduler]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "retry" {
      o.node("flaky", function(ctx)
        if ctx.attempt < 3 then error("try again") end
        return { attempt = ctx.attempt, key = ctx.idempotency_key }
      end, { retry = { max = 4, backoff = "fixed", base = "100ms", jitter = false } }),
    })");
  CHECK(s.status == "succeeded");
  auto rows = query(h.db_path,
                    "select attempt, status, retryable, started_at from node_runs where "
                    "node_id='flaky' order by attempt");
  REQUIRE(rows.size() == 3);
  CHECK(rows[0][1] == "failed");
  CHECK(rows[0][2] == "1");
  CHECK(rows[2][1] == "succeeded");
  CHECK(std::stoll(rows[1][3]) - std::stoll(rows[0][3]) >= 95);
  CHECK(std::stoll(rows[2][3]) - std::stoll(rows[1][3]) >= 95);
  // The idempotency key is stable across attempts: run id and node path.
  CHECK(s.output_json == R"({"attempt":3,"key":")" + s.run_id + R"(:flaky"})");
  auto ev =
      query(h.db_path,
            "select data from events where kind='node.failed' and node_id='flaky' order by id");
  REQUIRE(ev.size() == 2);
  CHECK(ev[0][0].find(R"("will_retry":true)") != std::string::npos);
  CHECK(h.close().empty());
}

TEST_CASE("exponential backoff with jitter stays within its cap", "[scheduler]") {
  RetryPolicy p;
  p.base_ms = 100;
  p.cap_ms = 1000;
  p.jitter = false;
  CHECK(p.delay_ms(2, 0.5) == 100);
  CHECK(p.delay_ms(3, 0.5) == 200);
  CHECK(p.delay_ms(4, 0.5) == 400);
  CHECK(p.delay_ms(10, 0.5) == 1000);
  p.jitter = true;
  CHECK(p.delay_ms(4, 0.5) == 200);
  CHECK(p.delay_ms(4, 0.0) == 0);
  p.exponential = false;
  CHECK(p.delay_ms(9, 0.99) == 99);
}

TEST_CASE("a non-retryable error is not retried; fallback and optional take over", "[scheduler]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "fb" {
      o.node("hard", function() o.fail("bad request", { retryable = false, type = "http_400" }) end,
             { retry = 5, fallback = function(ctx, input, err)
                 return { fell_back = true, why = err.message, type = err.type } end }),
      o.node("opt", function() error("nope") end, { optional = true }),
      o.node("last", function(ctx, input) return { prev = input.fell_back, why = input.why } end),
    })");
  CHECK(s.status == "succeeded");
  CHECK(q1(h, "select count(*) from node_runs where node_id='hard' and kind='body'") == "1");
  CHECK(q1(h, "select error_type from node_runs where node_id='hard' and attempt=1") == "http_400");
  CHECK(q1(h, "select kind || ' ' || status from node_runs where node_id='hard' and attempt=2") ==
        "fallback succeeded");
  CHECK(q1(h, "select status from node_runs where node_id='opt'") == "failed");
  // The optional node's failure passes the previous output through.
  CHECK(s.output_json == R"({"prev":true,"why":"bad request"})");
  CHECK(h.close().empty());
}

TEST_CASE("a node timeout cancels what the node waits on", "[scheduler]") {
  TempDir d;
  std::string pidfile = d.file("pid");
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "to" {
      o.parallel("p", {
        o.node("sleeper", function() o.sleep("30s"); return {} end, { timeout = "150ms" }),
        o.node("proc", function(ctx)
          return o.exec { sh = "echo $$ > )" +
                 pidfile + R"(; sleep 30 & wait" }
        end, { timeout = "300ms" }),
      }),
    })");
  CHECK(s.status == "failed");
  CHECK(h.last_seconds < 3);
  CHECK(q1(h, "select error_type from node_runs where node_id='p/sleeper'") == "timeout");
  CHECK(q1(h, "select retryable from node_runs where node_id='p/sleeper'") == "1");
  // The shell leads its own process group; the whole group is gone (TERM, then KILL after
  // the grace period).
  int pid = std::stoi(read_file(pidfile));
  for (int i = 0; i < 50 && kill(pid, 0) == 0; i++) usleep(100000);
  CHECK(kill(pid, 0) != 0);
  // Members of the group that are still alive (zombies wait for init to reap them: gone).
  std::string alive_cmd =
      "ps -e -o pgid=,stat=,pid= | awk '$1==" + std::to_string(pid) + " && $2 !~ /Z/ {print $3}'";
  CmdResult ps;
  for (int i = 0; i < 50; i++) {
    ps = run_cmd({"sh", "-c", alive_cmd});
    if (ps.out.empty()) break;
    usleep(100000);
  }
  INFO("left in the group: " << ps.out);
  CHECK(ps.out.empty());
  CHECK(h.close().empty());
}

TEST_CASE("cancelling a run stops timers and processes and records it", "[scheduler]") {
  Harness h;
  h.on_started = [](Scheduler& s, const std::string& id) {
    auto* t = new Timer(s.loop());
    t->start(200, [&s, id, t] {
      s.cancel_run(id, "operator said stop");
      delete t;
    });
  };
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "cancel" {
      o.parallel("p", {
        o.node("wait", function() o.sleep("30s"); return {} end),
        o.node("proc", function() return o.exec { "sleep", "30" } end),
      }),
    })");
  CHECK(s.status == "cancelled");
  CHECK(h.last_seconds < 5);
  CHECK(q1(h, "select status from runs where id='" + s.run_id + "'") == "cancelled");
  CHECK(q1(h, "select error_message from runs where id='" + s.run_id + "'") ==
        "operator said stop");
  CHECK(q1(h, "select count(*) from node_runs where status='cancelled'") == "2");
  CHECK(h.log.count("run.cancelled") == 1);
  CHECK(h.close().empty());
}

TEST_CASE("a node's success is committed before the next node starts", "[scheduler]") {
  // The second node asks another process (the sqlite3 shell) what the store says about the
  // first: it must already read 'succeeded'.
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "durable" {
      o.node("first", function() return { v = 1 } end),
      o.node("second", function(ctx)
        local r = o.exec { "sqlite3", ")" +
                 h.db_path + R"(",
          "select node_id || '=' || status from node_runs where run_id='" .. ctx.run_id ..
          "' order by seq" }
        return { seen = r.stdout:gsub("%s+$", ""):gsub("\n", " "), err = r.stderr }
      end),
    })");
  CHECK(s.status == "succeeded");
  // The attempt that spawns the process is on record too (running) before the process starts.
  CHECK(s.output_json.find(R"("seen":"first=succeeded second=running")") != std::string::npos);
  CHECK(h.close().empty());
}

TEST_CASE("a chain of Lua nodes is group-committed per time slice, not per node", "[scheduler]") {
  Harness h;
  uint64_t before = h.store->commits();
  auto s = h.run(R"(
    local o = require "orch"
    local b = {}
    for i = 1, 1000 do b[i] = o.node("n" .. i, function(ctx, x) return { i = i } end) end
    return o.pipeline "chain" (b))");
  CHECK(s.status == "succeeded");
  CHECK(s.nodes_succeeded == 1000);
  uint64_t commits = h.store->commits() - before;
  INFO("commits: " << commits);
  // One commit per 5 ms slice of work: a handful here, about 100 under valgrind; never one
  // per node (1,000) as before.
  CHECK(commits < 300);
  CHECK(query_int(h.db_path, "select count(*) from node_runs where status='succeeded'") == 1000);
  CHECK(h.close().empty());
}

TEST_CASE("writes made in one loop turn are committed together", "[scheduler]") {
  Harness h;
  uint64_t before = h.store->commits();
  auto s = h.run(R"(
    local o = require "orch"
    local b = {}
    for i = 1, 200 do b[i] = o.node("n" .. i, function() return { i = i } end) end
    return o.pipeline "wide" { o.parallel("p", b) })");
  CHECK(s.status == "succeeded");
  CHECK(s.nodes_succeeded == 200);
  uint64_t commits = h.store->commits() - before;
  INFO("commits: " << commits);
  // 200 nodes x (start + finish) rows and events, in a handful of transactions.
  CHECK(commits < 10);
  CHECK(h.close().empty());
}

TEST_CASE("node bodies see ctx; ctx.log and print become log events", "[scheduler]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "ctx" {
      o.node("look", function(ctx, input)
        ctx.log("hello", { k = 1 })
        ctx.log.warn("careful")
        print("printed", 42)
        return { run_id = ctx.run_id, trace_id = ctx.trace_id, attempt = ctx.attempt,
                 node = ctx.node, input = ctx.input.x, pipeline = ctx.pipeline }
      end),
    })",
                 R"({"x": "in"})");
  CHECK(s.status == "succeeded");
  auto out = parse_json(s.output_json, nullptr);
  CHECK(out["run_id"] == s.run_id);
  CHECK(out["trace_id"] == s.trace_id);
  CHECK(out["attempt"] == 1);
  CHECK(out["node"] == "look");
  CHECK(out["input"] == "in");
  CHECK(out["pipeline"] == "ctx");
  CHECK(h.log.count("log", "look") == 3);
  CHECK(q1(h,
           "select count(*) from events where kind='log' and data like '%careful%' and data like "
           "'%warn%'") == "1");
  CHECK(h.close().empty());
}

TEST_CASE("a plain coroutine.yield in a node fails the node with a clear message", "[scheduler]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "y" { o.node("bad", function() coroutine.yield() return {} end) })");
  CHECK(s.status == "failed");
  CHECK(s.error_message.find("yielded outside an orchrun async call") != std::string::npos);
  CHECK(h.close().empty());
}

TEST_CASE("o.exec captures output, exit codes, signals, stdin, env and cwd", "[scheduler][exec]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "exec" {
      o.node("x", function()
        local a = o.exec { "sh", "-c", "echo out; echo err >&2; exit 3" }
        local b = o.exec { "cat", stdin = "from stdin" }
        local c = o.exec { "sh", "-c", "echo $FOO; pwd", env = { FOO = "bar" }, cwd = "/tmp" }
        local d = o.exec { "sh", "-c", "kill -9 $$" }
        local e, emsg, ecode = o.exec { "/nonexistent/binary" }
        local f = o.exec { "head", "-c", "300000", "/dev/zero", max_output = 1000 }
        local ok, cerr = pcall(o.exec, { "false", check = true })
        return { a_out = a.stdout, a_err = a.stderr, a_code = a.code, b = b.stdout,
                 c = c.stdout, d_sig = d.signal, e = e == nil, emsg = emsg, ecode = ecode,
                 f_bytes = f.stdout_bytes, f_trunc = f.truncated, f_len = #f.stdout,
                 check_raised = not ok, check_type = type(cerr) == "table" and cerr.type }
      end),
    })");
  REQUIRE(s.status == "succeeded");
  auto o = parse_json(s.output_json, nullptr);
  CHECK(o["a_out"] == "out\n");
  CHECK(o["a_err"] == "err\n");
  CHECK(o["a_code"] == 3);
  CHECK(o["b"] == "from stdin");
  CHECK(o["c"] == "bar\n/tmp\n");
  CHECK(o["d_sig"] == 9);
  CHECK(o["e"] == true);
  CHECK(o["ecode"] == "ENOENT");
  CHECK(o["emsg"].get<std::string>().find("/nonexistent/binary") != std::string::npos);
  CHECK(o["f_bytes"] == 300000);
  CHECK(o["f_trunc"] == true);
  CHECK(o["f_len"].get<int>() < 1200);
  CHECK(o["check_raised"] == true);
  CHECK(o["check_type"] == "exec");
  CHECK(h.close().empty());
}

TEST_CASE("a failing run leaves earlier runs untouched", "[scheduler]") {
  Harness h;
  auto ok = h.run(R"(
    local o = require "orch"
    return o.pipeline "p" { o.node("a", function() return { v = 1 } end) })");
  auto snapshot = query(h.db_path, "select * from runs where id='" + ok.run_id + "'");
  auto nodes = query(h.db_path, "select * from node_runs where run_id='" + ok.run_id + "'");
  auto bad = h.run(R"(
    local o = require "orch"
    return o.pipeline "p" { o.node("a", function() error("boom") end) })");
  CHECK(bad.status == "failed");
  CHECK(query(h.db_path, "select * from runs where id='" + ok.run_id + "'") == snapshot);
  CHECK(query(h.db_path, "select * from node_runs where run_id='" + ok.run_id + "'") == nodes);
  // A changed source is a new version of the same pipeline.
  CHECK(bad.version == ok.version + 1);
  CHECK(h.close().empty());
}

TEST_CASE("a long o.loop keeps only its current iteration's steps alive", "[scheduler]") {
  Harness h;
  size_t peak = 0, live_at_end = 0;
  h.on_started = [&](Scheduler& sched, const std::string&) {
    auto prev = sched.on_run_finished;
    sched.on_run_finished = [&sched, &peak, &live_at_end, prev](const RunSummary& s) {
      peak = sched.peak_live_execs();
      live_at_end = sched.live_execs();
      prev(s);
    };
  };
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "long" {
      o.loop("spin", { max = 1000, done = function(ctx, out) return out.n >= 1000 end }, o.seq {
        o.node("step", function(ctx, input) return { n = (input.n or 0) + 1 } end),
        o.node("check", function(ctx, input) return input end),
      }),
    })");
  CHECK(s.status == "succeeded");
  CHECK(s.output_json.find("\"n\":1000") != std::string::npos);
  INFO("peak live Exec objects: " << peak);
  // root seq + loop + one iteration (seq + 2 nodes); the one finishing may overlap the next.
  CHECK(peak <= 10);
  CHECK(live_at_end <= 10);
  CHECK(h.close().empty());
}
