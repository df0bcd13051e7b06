// Dependencies, trigger rules and the pipeline's hooks, through the real binary: what runs,
// what is skipped and why, what the run's status is, and what is refused at load time.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <map>

#include "base/json_util.h"
#include "http_test_server.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

bool has(const std::string& s, const std::string& sub) {
  return s.find(sub) != std::string::npos;
}

// node id -> "status" or "status:error_message" of its last row, for one run.
std::map<std::string, std::string> nodes(const std::string& db) {
  std::map<std::string, std::string> m;
  for (auto& r : query(db,
                       "select node_id, status, coalesce(error_message, '') from node_runs "
                       "order by attempt"))
    m[r[0]] = r[2].empty() || r[1] != "skipped" ? r[1] : r[1] + ":" + r[2];
  return m;
}

// build -> { unit, lint } -> deploy; rollback if deploy or lint failed; cleanup always;
// notify only if deploy succeeded. lint fails when FAIL_LINT is in the input.
const char* kDiamond = R"(local o = require "orch"
return o.pipeline "diamond" {
  o.node("build", function() return { v = 1 } end),
  o.node("unit", function(ctx, input) return { got = input.v } end, { after = { "build" } }),
  o.node("lint", function(ctx) if ctx.input.fail_lint then error("lint failed") end return {} end,
         { after = { "build" } }),
  o.node("deploy", function() return { deployed = true } end, { after = { "unit", "lint" } }),
  o.node("rollback", function() return { rolled = true } end,
         { after = { "deploy", "lint" }, trigger = "one_failed" }),
  o.node("cleanup", function() return { clean = true } end, { after = { "deploy" }, trigger = "always" }),
  o.node("notify", function(ctx) return { deployed = ctx.outputs.deploy.deployed } end,
         { after = { "deploy" } }),
  o.node("after_failure", function() return {} end, { after = { "lint" }, trigger = "failure" }),
}
)";

}  // namespace

TEST_CASE(
    "a diamond DAG: a failed branch skips what needs it, failure and always steps run, "
    "the run stays failed",
    "[graph]") {
  TempDir tmp;
  std::string file = tmp.file("diamond.lua");
  write_file(file, kDiamond);

  SECTION("lint fails") {
    std::string db = tmp.file("f.db");
    auto r = orchrun({file, "--input", R"({"fail_lint":true})"}, db);
    INFO(r.out << r.err);
    CHECK(r.exit_code == 1);
    auto n = nodes(db);
    CHECK(n["build"] == "succeeded");
    CHECK(n["unit"] == "succeeded");
    CHECK(n["lint"] == "failed");
    CHECK(n["deploy"] == "skipped:upstream_failed");
    CHECK(n["notify"] == "skipped:upstream_failed");
    CHECK(n["rollback"] == "succeeded");
    CHECK(n["cleanup"] == "succeeded");
    CHECK(n["after_failure"] == "succeeded");
    CHECK(query_str(db, "select status || '|' || error_node from runs") == "failed|lint");
    CHECK(query_int(db,
                    "select count(*) from events where kind='node.skipped' and "
                    "json_extract(data, '$.reason')='upstream_failed'") == 2);
  }
  SECTION("everything succeeds") {
    std::string db = tmp.file("s.db");
    auto r = orchrun({file, "--json"}, db);
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    auto n = nodes(db);
    CHECK(n["deploy"] == "succeeded");
    CHECK(n["notify"] == "succeeded");
    CHECK(n["rollback"] == "skipped:upstream_succeeded");
    CHECK(n["after_failure"] == "skipped:upstream_succeeded");
    CHECK(n["cleanup"] == "succeeded");
    // unit got build's output as its input (one dependency: as in a seq).
    CHECK(query_str(db, "select output from node_runs where node_id='unit'") == R"({"got":1})");
    CHECK(query_str(db, "select status from runs") == "succeeded");
  }
}

TEST_CASE("steps with after = {} start together; a failing cleanup does not fail the run",
          "[graph]") {
  TempDir tmp;
  std::string file = tmp.file("p.lua"), db = tmp.file("p.db");
  write_file(file, R"(local o = require "orch"
return o.pipeline "together" {
  o.node("a", function() o.sleep("300ms") return {} end),
  o.node("b", function() o.sleep("300ms") return {} end, { after = {} }),
  o.seq("tail", {
    o.node("c", function() return {} end),
    after = { "a", "b" },
  }),
  o.node("cleanup", function() error("disk busy") end, { after = { "tail" }, trigger = "always" }),
}
)");
  auto r = orchrun({file}, db);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(query_str(db, "select status from runs") == "succeeded");
  CHECK(nodes(db)["cleanup"] == "failed");
  // b started before a finished: they ran at the same time.
  CHECK(query_int(db,
                  "select (select started_at from node_runs where node_id='b') < "
                  "(select finished_at from node_runs where node_id='a')") == 1);
  CHECK(query_int(db,
                  "select (select started_at from node_runs where node_id='tail/c') >= "
                  "(select max(finished_at) from node_runs where node_id in ('a','b'))") == 1);
}

TEST_CASE("a step waits for a step in another part of the pipeline", "[graph]") {
  TempDir tmp;
  std::string file = tmp.file("x.lua"), db = tmp.file("x.db");
  write_file(file, R"(local o = require "orch"
return o.pipeline "cross" {
  o.parallel("both", {
    o.seq("left", {
      o.node("slow", function() o.sleep("200ms") return { n = 1 } end),
    }),
    o.seq("right", {
      o.node("quick", function() return {} end),
      o.node("needs_slow", function(ctx) return { saw = ctx.outputs.slow.n } end,
             { after = { "slow", "quick" } }),
    }),
  }),
}
)");
  auto r = orchrun({file}, db);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(query_str(db, "select output from node_runs where node_id='both/right/needs_slow'") ==
        R"({"saw":1})");
}

TEST_CASE("bad dependencies are refused at load time with file:line, and nothing runs", "[graph]") {
  TempDir tmp;
  struct Case {
    const char* body;
    const char* message;
  } cases[] = {
      {R"(o.node("a", function() end, { after = { "bulid" } }),
          o.node("build", function() end),)",
       "p.lua:3: o.node 'a': after names 'bulid', which is not a step of this pipeline (did you "
       "mean 'build'?)"},
      {R"(o.node("a", function() end, { after = { "c" } }),
          o.node("b", function() end, { after = { "a" } }),
          o.node("c", function() end, { after = { "b" } }),)",
       "p.lua:3: dependency cycle: 'a' waits for 'c', which waits for 'b', which waits for 'a'"},
      {R"(o.seq("s", { o.node("h", function() end), o.node("i", function() end, { after = { "j" } }) }),
          o.seq("s2", { o.node("j", function() end) }),)",
       "dependency cycle: 's' contains 'i', which waits for 'j', which is inside 's2', which "
       "follows 's'"},
      {R"(o.node("a", function() end),
          o.node("b", function() end, { trigger = "always" }),)",
       "p.lua:4: o.node 'b': trigger = \"always\" needs after = { ... }"},
      {R"(o.node("a", function() end),
          o.node("b", function() end, { after = { "a" }, trigger = "on_fail" }),)",
       "p.lua:4: o.node 'b': trigger must be \"success\", \"failure\", \"always\", \"one_failed\" "
       "or \"one_success\", got 'on_fail'"},
      {R"(o.when("w", function() return true end, o.node("inner", function() end)),
          o.node("b", function() end, { after = { "inner" } }),)",
       "p.lua:4: o.node 'b': after names 'inner', which is inside when 'w', whose branch may not "
       "be taken; depend on 'w' instead"},
      {R"(o.map("m", { 1, 2 }, o.node("item", function() end)),
          o.node("b", function() end, { after = { "item" } }),)",
       "after names 'item', which is inside map 'm', where it runs once per item"},
      {R"(o.seq("s", { o.node("a", function() end, { after = { "s" } }) }),)",
       "o.node 'a': after names 's', which contains it"},
      {R"(o.node("a", function() end, { after = 3 }),)", "after must be a list of step ids"},
      {R"(o.seq { o.node("a", function() end), afterr = { "x" } },)",
       "unknown option 'afterr' (did you mean 'after'?)"},
      {R"(o.node("a", function() end),
          finally = function() end,)",
       "finally: a hook is a step"},
      {R"(o.node("a", function() end),
          on = { failure = o.node("n", function() end) },)",
       "on: unknown option 'failure' (did you mean 'failed'?)"},
  };
  for (const auto& c : cases) {
    std::string file = tmp.file("p.lua"), db = tmp.file("p.db");
    write_file(file, std::string("local o = require \"orch\"\nreturn o.pipeline \"p\" {\n") +
                         "          " + c.body + "\n}\n");
    auto v = orchrun({"validate", file}, "");
    INFO(c.body << "\n" << v.out << v.err);
    CHECK(v.exit_code == 2);
    CHECK(has(v.err, c.message));
    auto r = orchrun({file}, db);
    CHECK(r.exit_code == 2);
    CHECK(poll_int(db, "select count(*) from runs", 0) == 0);
  }
}

TEST_CASE("orchrun graph draws dependencies with their rule, and the hooks", "[graph]") {
  TempDir tmp;
  std::string file = tmp.file("diamond.lua");
  std::string src = kDiamond;
  src.insert(src.rfind('}'), "  finally = o.node(\"tidy\", function() return {} end),\n");
  write_file(file, src);
  auto m = orchrun({"graph", file}, "");
  INFO(m.out << m.err);
  REQUIRE(m.exit_code == 0);
  CHECK(has(m.out, "n_build --> n_unit\n"));
  CHECK(has(m.out, "n_build --> n_lint\n"));
  CHECK(has(m.out, "n_lint --> n_deploy\n"));
  CHECK(has(m.out, "n_deploy -- one_failed --> n_rollback\n"));
  CHECK(has(m.out, "n_deploy -- always --> n_cleanup\n"));
  CHECK(has(m.out, "n_lint -- failure --> n_after_failure\n"));
  CHECK(!has(m.out, "n_unit --> n_lint"));  // no chaining of steps that say what they follow
  CHECK(has(m.out, "hook_finally --> n_tidy"));
  auto d = orchrun({"graph", file, "--format", "dot"}, "");
  CHECK(has(d.out, "n_deploy -> n_rollback [label=\"one_failed\"];"));
}

TEST_CASE(
    "hooks: on.failed and finally run after the steps, see ctx.run, and do not change "
    "the status",
    "[graph]") {
  TempDir tmp;
  std::string file = tmp.file("h.lua"), db = tmp.file("h.db");
  write_file(file, R"(local o = require "orch"
return o.pipeline "hooks" {
  o.node("work", function(ctx) if ctx.input.fail then o.fail("broken", { retryable = false }) end return {} end),
  on = {
    failed = o.node("page", function(ctx)
      return { status = ctx.run.status, error = ctx.run.error.message, node = ctx.run.error.node }
    end),
    succeeded = o.node("celebrate", function(ctx) return { status = ctx.run.status } end),
  },
  finally = o.node("tidy", function(ctx) if ctx.input.break_tidy then error("tidy broke") end
    return { status = ctx.run.status } end),
}
)");
  SECTION("failed") {
    auto r = orchrun({file, "--input", R"({"fail":true})"}, db);
    INFO(r.out << r.err);
    CHECK(r.exit_code == 1);
    CHECK(has(r.out + r.err, "hooks: page succeeded, tidy succeeded"));
    CHECK(query_str(db, "select output from node_runs where node_id='page'") ==
          R"({"error":"broken","node":"work","status":"failed"})");
    CHECK(query_str(db, "select output from node_runs where node_id='tidy'") ==
          R"({"status":"failed"})");
    CHECK(query_int(db, "select count(*) from node_runs where node_id='celebrate'") == 0);
    CHECK(query_str(db, "select status || '|' || error_node from runs") == "failed|work");
    // The hooks ran after the steps, page before tidy.
    CHECK(query_int(db,
                    "select (select started_at from node_runs where node_id='page') >= "
                    "(select finished_at from node_runs where node_id='work')") == 1);
    CHECK(query_int(db,
                    "select (select id from events where kind='node.started' and "
                    "node_id='page') < (select id from events where kind='node.started' and "
                    "node_id='tidy')") == 1);
    CHECK(query_int(db,
                    "select (select max(id) from events where node_id='tidy') < "
                    "(select id from events where kind='run.failed')") == 1);
  }
  SECTION("succeeded, with a failing finally") {
    auto r = orchrun({file, "--json", "--input", R"({"break_tidy":true})"}, db);
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    json j = parse_json(r.out, nullptr);
    CHECK(j.value("status", "") == "succeeded");
    CHECK(j["hooks"] == json{{"celebrate", "succeeded"}, {"tidy", "failed"}});
    CHECK(query_str(db, "select status from runs") == "succeeded");
    CHECK(query_str(db, "select status from node_runs where node_id='tidy'") == "failed");
  }
}

TEST_CASE("finally runs when a run is cancelled: by Ctrl-C and by orchrun cancel", "[graph]") {
  TempDir tmp;
  std::string file = tmp.file("c.lua");
  write_file(file, R"(local o = require "orch"
return o.pipeline "cancelme" {
  o.node("wait", function() o.sleep("30s") return {} end),
  on = { cancelled = o.node("say", function(ctx) return { status = ctx.run.status, why = ctx.run.error.message } end) },
  finally = o.node("tidy", function(ctx) o.sleep("50ms") return { status = ctx.run.status } end),
}
)");
  for (const char* how : {"SIGINT", "orchrun cancel"}) {
    INFO(how);
    std::string db = tmp.file(std::string(how) == "SIGINT" ? "i.db" : "k.db");
    pid_t owner = spawn_quiet({orchrun_bin(), file, "--db", db});
    std::string id;
    for (int i = 0; i < 200 && id.empty(); i++) {
      usleep(25000);
      if (poll_int(db, "select count(*) from node_runs where status='running'") > 0)
        id = query_str(db, "select id from runs");
    }
    REQUIRE(!id.empty());
    if (std::string(how) == "SIGINT")
      kill(owner, SIGINT);
    else
      CHECK(orchrun({"cancel", id, "--reason", "maintenance"}, db).exit_code == 0);
    int status = 0;
    waitpid(owner, &status, 0);
    CHECK(query_str(db, "select status from runs") == "cancelled");
    CHECK(query_str(db, "select status from node_runs where node_id='wait'") == "cancelled");
    CHECK(query_str(db, "select status || '|' || output from node_runs where node_id='tidy'") ==
          R"(succeeded|{"status":"cancelled"})");
    CHECK(query_str(db,
                    "select json_extract(output, '$.status') from node_runs where "
                    "node_id='say'") == "cancelled");
  }
}

TEST_CASE("finally after kill -9 and resume runs exactly once", "[graph]") {
  TempDir tmp;
  std::string file = tmp.file("k.lua"), db = tmp.file("k.db"), count = tmp.file("count"),
              go = tmp.file("go");
  write_file(file, R"(local o = require "orch"
return o.pipeline "survive" {
  o.node("first", function() return {} end),
  o.node("long", function(ctx)
    for _ = 1, 600 do
      if o.exec { "test", "-e", ctx.input.go }.code == 0 then return {} end
      o.sleep("50ms")
    end
    error("never told to go")
  end),
  finally = o.node("tidy", function(ctx)
    o.exec { "sh", "-c", "printf x >> \"$1\"", "sh", ctx.input.count }
    return {}
  end),
}
)");
  std::string input = R"({"count":")" + count + R"(","go":")" + go + R"("})";
  pid_t owner = spawn_quiet({orchrun_bin(), file, "--db", db, "--input", input});
  for (int i = 0; i < 200; i++) {
    usleep(25000);
    if (poll_int(db, "select count(*) from node_runs where node_id='long' and status='running'",
                 0) > 0)
      break;
  }
  kill(owner, SIGKILL);
  waitpid(owner, nullptr, 0);
  CHECK(query_int(db, "select count(*) from node_runs where node_id='tidy'") == 0);
  write_file(go, "");
  auto r = orchrun({"resume", "--all"}, db);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(query_str(db, "select status from runs") == "succeeded");
  CHECK(query_int(db,
                  "select count(*) from node_runs where node_id='tidy' and "
                  "status='succeeded'") == 1);
  CHECK(read_file(count) == "x");
  orchrun({"resume", "--all"}, db);  // nothing left: tidy is not run again
  CHECK(read_file(count) == "x");
}

TEST_CASE("an awaiting_approval hook tells a local HTTP server which gate waits, once per gate",
          "[graph]") {
  HttpTestServer srv;
  TempDir tmp;
  std::string file = tmp.file("a.lua"), db = tmp.file("a.db");
  write_file(file, R"(local o = require "orch"
return o.pipeline "plan" {
  o.node("plan", function() return { tasks = 2 } end),
  o.approve("ship", { message = "Ship the plan?" }),
  on = {
    awaiting_approval = o.node("tell", function(ctx)
      local res, err = o.http.post(ctx.input.hook, { json = {
        run = ctx.run.id, status = ctx.run.status, gate = ctx.run.gate.node,
        message = ctx.run.gate.message, approve = ctx.run.gate.approve,
      }, timeout = "5s" })
      if not res then error(err) end
      return { posted = res.status }
    end),
  },
}
)");
  std::string input = R"({"hook":")" + srv.url("/slack") + R"("})";
  auto r = orchrun({file, "--input", input}, db);
  INFO(r.out << r.err);
  CHECK(query_str(db, "select status from runs") == "awaiting_approval");
  REQUIRE(srv.requests().size() == 1);
  json body = parse_json(srv.requests()[0].body, nullptr);
  std::string id = query_str(db, "select id from runs");
  CHECK(body.value("run", "") == id);
  CHECK(body.value("status", "") == "awaiting_approval");
  CHECK(body.value("gate", "") == "ship");
  CHECK(body.value("message", "") == "Ship the plan?");
  CHECK(body.value("approve", "") == "orchrun approve " + id + " ship --as NAME");
  CHECK(query_str(db, "select status from node_runs where node_id='ship/tell'") == "succeeded");
  // Approved and resumed: the gate is not announced again.
  CHECK(orchrun({"approve", id, "ship", "--as", "alice"}, db).exit_code == 0);
  auto res = orchrun({"resume", "--all"}, db);
  INFO(res.out << res.err);
  CHECK(query_str(db, "select status from runs") == "succeeded");
  CHECK(srv.requests().size() == 1);
}

TEST_CASE("orchrun retry of a failed graph runs what its upstream failure skipped", "[graph]") {
  TempDir tmp;
  std::string file = tmp.file("r.lua"), db = tmp.file("r.db"), flag = tmp.file("flag");
  write_file(file, R"(local o = require "orch"
return o.pipeline "again" {
  o.node("build", function() return {} end),
  o.node("lint", function(ctx)
    if o.exec { "test", "-e", ctx.input.flag }.code ~= 0 then o.fail("no flag", { retryable = false }) end
    return {}
  end, { after = { "build" } }),
  o.node("deploy", function() return { ok = true } end, { after = { "lint" } }),
}
)");
  std::string input = R"({"flag":")" + flag + R"("})";
  CHECK(orchrun({file, "--input", input}, db).exit_code == 1);
  CHECK(nodes(db)["deploy"] == "skipped:upstream_failed");
  std::string id = query_str(db, "select id from runs");
  write_file(flag, "");
  auto r = orchrun({"retry", id}, db);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(query_str(db, "select status from runs") == "succeeded");
  CHECK(query_str(db,
                  "select group_concat(run_attempt || ':' || status, ' ') from node_runs "
                  "where node_id='deploy' order by seq") == "1:skipped 2:succeeded");
  CHECK(query_int(db, "select count(*) from node_runs where node_id='build'") == 1);
}

TEST_CASE(
    "stages: a step moves the run into its stage; the run and its events record it, and "
    "runs filter by it",
    "[graph]") {
  TempDir tmp;
  std::string file = tmp.file("st.lua"), db = tmp.file("st.db");
  write_file(file, R"(local o = require "orch"
return o.pipeline "staged" {
  o.node("ingest", function() return {} end, { stage = "ingested" }),
  o.node("check", function() return {} end, { stage = "checked" }),
  o.seq("analysis", {
    o.node("analyze", function(ctx) if ctx.input.fail then error("model down") end return {} end),
    stage = "analyzed",
  }),
  o.node("notify", function() return {} end, { stage = "notified" }),
}
)");
  CHECK(orchrun({file}, db).exit_code == 0);
  CHECK(orchrun({file, "--input", R"({"fail":true})"}, db).exit_code == 1);
  auto runs = query(db, "select status, stage from runs order by created_at, id");
  REQUIRE(runs.size() == 2);
  CHECK(runs[0] == std::vector<std::string>{"succeeded", "notified"});
  CHECK(runs[1] == std::vector<std::string>{"failed", "analyzed"});
  // Each stage change is an event, and every event carries the stage it happened in.
  CHECK(query_str(db,
                  "select group_concat(json_extract(data, '$.stage'), ' ') from events "
                  "where kind='run.stage' and run_id=(select id from runs where "
                  "status='succeeded')") == "ingested checked analyzed notified");
  CHECK(query_str(db, "select stage from events where kind='node.failed'") == "analyzed");
  CHECK(query_str(db,
                  "select stage from events where kind='node.succeeded' and "
                  "node_id='check'") == "checked");
  CHECK(query_int(db, "select count(*) from events where kind='run.started' and stage is null") ==
        2);
  auto l = orchrun({"runs", "--stage", "analyzed", "--json"}, db);
  INFO(l.out << l.err);
  json j = parse_json(l.out, nullptr);
  REQUIRE(j.is_array());
  REQUIRE(j.size() == 1);
  CHECK(j[0].value("status", "") == "failed");
  CHECK(j[0].value("stage", "") == "analyzed");
  auto t = orchrun({"runs"}, db);
  CHECK(has(t.out, "STAGE"));
  CHECK(has(t.out, "notified"));
  CHECK(has(orchrun({"runs", "--stage", "nowhere"}, db).out, "no runs match"));

  std::string bad = tmp.file("bad.lua");
  write_file(bad,
             "local o = require 'orch'\nreturn o.pipeline 'b' {\n"
             "  o.node('a', function() end, { stage = 'in review' }),\n}\n");
  auto v = orchrun({"validate", bad}, "");
  CHECK(v.exit_code == 2);
  CHECK(has(v.err, "bad.lua:3: o.node 'a': stage must be a name"));
}

TEST_CASE("a long seq with dependencies loads: the cycle check does not recurse per step",
          "[graph]") {
  TempDir tmp;
  std::string file = tmp.file("long.lua");
  // 200,000 steps in one seq: a path of 400,000 events, deeper than any C stack would take
  // one frame each.
  write_file(file, R"(local o = require "orch"
local steps = {}
for i = 1, 200000 do steps[i] = o.node("n" .. i, function() return {} end) end
steps[#steps + 1] = o.node("last", function() return {} end, { after = { "n1", "n200000" } })
return o.pipeline "long" { o.seq(steps) }
)");
  auto r = orchrun({"validate", file}, "");
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
}
