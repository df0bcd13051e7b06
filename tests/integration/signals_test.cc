// Signals from outside (o.wait), through the real binary: delivered through the API of
// orchrun serve and through orchrun signal, refused when the run does not wait for them, and
// timing out.
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "base/json_util.h"
#include "serve_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;
using namespace orch::test::serve;

namespace {

const char* kCi = R"(local o = require "orch"
return o.pipeline "ci" {
  o.node("build", function() return { sha = "abc" } end),
  o.wait("ci", { signal = "ci_done", timeout = "1h" }),
  o.node("deploy", function(ctx) return { result = ctx.outputs.ci } end),
  on = { awaiting_approval = o.node("tell", function() return {} end) },
}
)";

std::string where(const std::string& id) {
  return " where run_id=" + sql_literal(id);
}

}  // namespace

TEST_CASE("serve: a signal delivered through the API continues the waiting run with its payload",
          "[signal]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"ci.lua", kCi}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  std::string id = srv.post("/api/pipelines/ci/runs", "{}").json_body()["run_id"];
  json run = srv.wait_run(id, "waiting");
  REQUIRE(run.value("status", "") == "waiting");

  // Refused: a signal it does not wait for, an approval of the wait, a body that is not JSON,
  // an unknown run. Nothing of it is stored.
  auto r = srv.post("/api/runs/" + id + "/signals/deployed", "{}");
  INFO(show(r));
  CHECK(r.status == 409);
  CHECK(has(r.body, "is not waiting for the signal 'deployed'"));
  CHECK(has(r.body, "signal 'ci_done' (step ci)"));
  r = srv.post("/api/runs/" + id + "/approvals/ci", R"({"decision":"approve","approver":"x"})");
  CHECK(r.status == 409);
  CHECK(has(r.body, "waits for the signal 'ci_done', not for an approval"));
  r = srv.post("/api/runs/" + id + "/signals/ci_done", "{not json");
  CHECK(r.status == 400);
  CHECK(r.error_code() == "invalid_json");
  CHECK(srv.post("/api/runs/NOSUCHRUN/signals/ci_done", "{}").status == 404);
  CHECK(query_str(db, "select status from approvals" + where(id)) == "waiting");

  r = srv.post("/api/runs/" + id + "/signals/ci_done?by=jenkins", R"({"build":42,"ok":true})");
  INFO(show(r));
  REQUIRE(r.status == 200);
  CHECK(r.json_body()["continued"] == "here");
  CHECK(r.json_body()["node"] == "ci");
  run = srv.wait_run(id, "succeeded,failed");
  CHECK(run.value("status", "") == "succeeded");
  CHECK(query_str(db, "select output from node_runs" + where(id) + " and node_id='ci'") ==
        R"({"build":42,"ok":true})");
  CHECK(query_str(db, "select json_extract(output, '$.result.build') from node_runs" + where(id) +
                          " and node_id='deploy'") == "42");
  CHECK(query_str(db, "select json_extract(data, '$.by') from events" + where(id) +
                          " and kind='signal.received'") == "jenkins");
  CHECK(count(db, "select count(*) from events" + where(id) + " and kind='run.waiting'") == 1);
  // The run JSON shows the signal with its sender and payload.
  json aps = srv.get("/api/runs/" + id).json_body()["approvals"];
  REQUIRE(aps.size() == 1);
  CHECK(aps[0]["kind"] == "signal");
  CHECK(aps[0]["signal"] == "ci_done");
  CHECK(aps[0]["decided_by"] == "jenkins");
  CHECK(aps[0]["payload"]["build"] == 42);
  // A wait for a signal is not a wait for a person: the awaiting_approval hook did not run.
  CHECK(count(db, "select count(*) from node_runs" + where(id) + " and node_id like '%tell'") ==
        0);
  // Once over, the run takes no signal.
  r = srv.post("/api/runs/" + id + "/signals/ci_done", "{}");
  CHECK(r.status == 409);
  CHECK(has(r.body, "is succeeded"));
}

TEST_CASE("serve: a run waiting for a signal survives kill -9 of the server", "[signal]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"ci.lua", kCi}});
  std::string db = tmp.file("k.db");
  std::string id;
  {
    ServeProcess srv(dir, db);
    id = srv.post("/api/pipelines/ci/runs", "{}").json_body()["run_id"];
    srv.wait_run(id, "waiting");
    srv.stop(SIGKILL);
  }
  ServeProcess srv(dir, db);
  auto r = srv.post("/api/runs/" + id + "/signals/ci_done", R"("green")");
  INFO(show(r));
  REQUIRE(r.status == 200);
  json run = srv.wait_run(id, "succeeded,failed");
  CHECK(run.value("status", "") == "succeeded");
  CHECK(query_str(db, "select output from node_runs" + where(id) +
                          " and node_id='ci' and status='succeeded'") == R"("green")");
  // build ran once: its stored success was reused.
  CHECK(count(db, "select count(*) from node_runs" + where(id) + " and node_id='build'") == 1);
}

TEST_CASE("serve: a run waiting for a person and a signal is awaiting_approval until decided",
          "[signal]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"both.lua", R"(local o = require "orch"
return o.pipeline "both" {
  o.parallel("gates", {
    o.approve("ok", { message = "go?" }),
    o.wait("deployed"),
  }),
}
)"}});
  std::string db = tmp.file("b.db");
  ServeProcess srv(dir, db);
  std::string id = srv.post("/api/pipelines/both/runs", "{}").json_body()["run_id"];
  srv.wait_run(id, "awaiting_approval");
  REQUIRE(srv.post("/api/runs/" + id + "/approvals/gates/ok",
                   R"({"decision":"approve","approver":"alice"})")
              .status == 200);
  CHECK(srv.wait_run(id, "waiting").value("status", "") == "waiting");
  REQUIRE(srv.post("/api/runs/" + id + "/signals/deployed", "").status == 200);
  CHECK(srv.wait_run(id, "succeeded,failed").value("status", "") == "succeeded");
  CHECK(query_str(db, "select output from node_runs" + where(id) +
                          " and node_id='gates/deployed'") == "null");
}

TEST_CASE("orchrun signal: a one-shot parks as waiting, the CLI delivers, resume goes on",
          "[signal]") {
  TempDir tmp;
  std::string file = tmp.file("ci.lua"), db = tmp.file("c.db");
  write_file(file, kCi);
  auto r = orchrun({file}, db);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 4);
  std::string id = query_str(db, "select id from runs");
  CHECK(query_str(db, "select status from runs") == "waiting");
  CHECK(has(r.out + r.err, "waits for the signal ci_done"));
  CHECK(has(r.out + r.err, "orchrun signal " + id + " ci_done --data JSON"));
  auto l = orchrun({"runs", "--status", "waiting"}, db);
  CHECK(has(l.out, id));

  // Refused, and nothing written: bad JSON, a signal it does not wait for.
  auto bad = orchrun({"signal", id, "ci_done", "--data", "{oops"}, db);
  CHECK(bad.exit_code == 2);
  CHECK(has(bad.err, "--data is not valid JSON"));
  bad = orchrun({"signal", id, "nope"}, db);
  CHECK(bad.exit_code == 2);
  CHECK(has(bad.err, "is not waiting for the signal 'nope'"));
  CHECK(query_str(db, "select status from approvals") == "waiting");

  write_file(tmp.file("p.json"), R"({"tests": 120, "failed": 0})");
  auto s = orchrun({"signal", id, "ci_done", "--data", "@" + tmp.file("p.json"), "--as", "ci-bot"},
                   db);
  INFO(s.out << s.err);
  CHECK(s.exit_code == 0);
  CHECK(has(s.out, "delivered signal 'ci_done' to step ci of run " + id + " as ci-bot"));
  auto res = orchrun({"resume", id}, db);
  INFO(res.out << res.err);
  CHECK(res.exit_code == 0);
  CHECK(query_str(db, "select status from runs") == "succeeded");
  CHECK(query_str(db, "select json_extract(output, '$.result.tests') from node_runs where "
                      "node_id='deploy'") == "120");
  // One attempt row for the wait: the resume picked up the same attempt, not a new one.
  CHECK(query_str(db, "select group_concat(status) from node_runs where node_id='ci'") ==
        "succeeded");
  CHECK(query_str(db, "select decided_by from approvals") == "ci-bot");
}

TEST_CASE("a wait for a signal times out: fails the run, or continues with on_timeout=continue",
          "[signal]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"t.lua", R"(local o = require "orch"
return o.pipeline "t" {
  o.wait("soft", { signal = "maybe", timeout = "200ms", on_timeout = "continue" }),
  o.wait("hard", { signal = "ci_done", timeout = "300ms" }),
}
)"}});
  std::string db = tmp.file("t.db");
  {
    ServeProcess srv(dir, db);
    std::string id = srv.post("/api/pipelines/t/runs", "{}").json_body()["run_id"];
    json run = srv.wait_run(id, "failed,succeeded");
    CHECK(run.value("status", "") == "failed");
    CHECK(query_str(db, "select output from node_runs where node_id='soft'") ==
          R"({"signal":"maybe","timed_out":true})");
    CHECK(query_str(db, "select error_type || ': ' || error_message from node_runs where "
                        "node_id='hard'") ==
          "signal_timeout: no signal 'ci_done' within 300ms (on_timeout = fail)");
    CHECK(query_str(db, "select status from approvals where node_id='hard'") == "timed_out");
  }
  // A one-shot parks; its resume after the deadline applies the timeout.
  std::string file = tmp.file("one.lua"), db2 = tmp.file("one.db");
  write_file(file, R"(local o = require "orch"
return o.pipeline "one" { o.wait("w", { signal = "s", timeout = "100ms" }) }
)");
  CHECK(orchrun({file}, db2).exit_code == 4);
  usleep(200 * 1000);
  auto res = orchrun({"resume", "--all"}, db2);
  INFO(res.out << res.err);
  CHECK(res.exit_code == 1);
  CHECK(query_str(db2, "select error_type from runs") == "signal_timeout");
}

TEST_CASE("bad o.wait options are refused at load time with file:line, and nothing runs",
          "[signal]") {
  TempDir tmp;
  struct Case {
    const char* step;
    const char* message;
  } cases[] = {
      {R"(o.wait("w", { signal = "ci done" }))", "signal 'ci done' is not a usable name"},
      {R"(o.wait("w", { on_timeout = "approve", timeout = "1s" }))",
       "on_timeout must be \"fail\" or \"continue\", got 'approve'"},
      {R"(o.wait("w", { on_timeout = "continue" }))", "on_timeout = \"continue\" needs a timeout"},
      {R"(o.wait("w", { signal = 3 }))", "signal must be a string"},
      {R"(o.wait("w", { singal = "x" }))", "singal"},
  };
  for (const auto& c : cases) {
    INFO(c.step);
    std::string file = tmp.file("bad.lua"), db = tmp.file("bad.db");
    write_file(file, std::string("local o = require \"orch\"\nreturn o.pipeline \"bad\" {\n  ") +
                         c.step + ",\n}\n");
    auto r = orchrun({file}, db);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(has(r.err, "bad.lua:3:"));
    CHECK(has(r.err, c.message));
    CHECK(poll_int(db, "select count(*) from runs", 0) == 0);
  }
}
