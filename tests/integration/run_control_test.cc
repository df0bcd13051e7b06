// Run control through the real binary: approval gates, cancel across processes, retry.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "base/json_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

bool has(const std::string& s, const std::string& sub) {
  return s.find(sub) != std::string::npos;
}

const char* kGate = R"(local o = require "orch"
return o.pipeline "nightly" {
  o.node("plan", function() return { tasks = 3 } end),
  o.approve("deploy", { message = "Ship it?", approvers = { "alice", "bob" } }),
  o.node("ship", function(ctx) return { by = ctx.outputs.deploy.by, note = ctx.outputs.deploy.comment } end),
}
)";

}  // namespace

TEST_CASE("an approval gate stops a one-shot, is approved, and the run resumes", "[control]") {
  TempDir tmp;
  std::string db = tmp.file("a.db"), file = tmp.file("gate.lua");
  write_file(file, kGate);
  auto first = orchrun({file}, db);
  CHECK(first.exit_code == 4);
  CHECK(has(first.out, "awaiting approval"));
  CHECK(has(first.out, "orchrun approve "));
  std::string id = query_str(db, "select id from runs");
  CHECK(query_str(db, "select status from runs") == "awaiting_approval");
  CHECK(query_str(db, "select status from approvals") == "waiting");
  CHECK(query_int(db, "select count(*) from events where kind='node.waiting'") == 1);
  CHECK(query_int(db, "select count(*) from node_runs where node_id='ship'") == 0);

  // Bad decisions change nothing.
  auto before = query(db, "select * from approvals");
  auto wrong = orchrun({"approve", id, "deploy", "--as", "mallory"}, db);
  CHECK(wrong.exit_code == 2);
  CHECK(has(wrong.err, "mallory is not among the approvers"));
  auto nogate = orchrun({"approve", id, "nope", "--as", "alice"}, db);
  CHECK(nogate.exit_code == 2);
  CHECK(has(nogate.err, "(waiting: deploy)"));
  CHECK(query(db, "select * from approvals") == before);
  // Nothing to resume until someone decides.
  CHECK(has(orchrun({"resume", "--all"}, db).out, "nothing to resume"));

  auto ok = orchrun({"approve", id, "deploy", "--as", "alice", "--comment", "green CI"}, db);
  CHECK(ok.exit_code == 0);
  CHECK(has(ok.out, "orchrun resume " + id));
  auto again = orchrun({"reject", id, "deploy", "--as", "bob"}, db);
  CHECK(again.exit_code == 2);
  CHECK(has(again.err, "already decided: approved by alice"));
  CHECK(query_str(db, "select decided_by || '|' || comment || '|' || status from approvals") ==
        "alice|green CI|approved");
  CHECK(query_int(db, "select count(*) from events where kind='approval.decided'") == 1);

  auto res = orchrun({"resume", "--all", "--json"}, db);
  CHECK(res.exit_code == 0);
  CHECK(query_str(db, "select status from runs") == "succeeded");
  CHECK(query_str(db, "select output from node_runs where node_id='ship'") ==
        R"({"by":"alice","note":"green CI"})");
  // plan ran once; the gate's row carries the decision.
  CHECK(query_int(db, "select count(*) from node_runs where node_id='plan'") == 1);
  CHECK(query_str(db, "select kind || ' ' || status from node_runs where node_id='deploy'") ==
        "approval succeeded");
  auto insp = orchrun({"inspect", id}, db);
  CHECK(has(insp.out, "approved by alice"));
  json j = parse_json(orchrun({"inspect", id, "--json"}, db).out, nullptr);
  REQUIRE(j.contains("approvals"));
  CHECK(j["approvals"][0]["decided_by"] == "alice");
}

TEST_CASE("a rejected gate fails the run with who and why", "[control]") {
  TempDir tmp;
  std::string db = tmp.file("r.db"), file = tmp.file("gate.lua");
  write_file(file, kGate);
  CHECK(orchrun({file}, db).exit_code == 4);
  std::string id = query_str(db, "select id from runs");
  CHECK(
      orchrun({"reject", id, "deploy", "--as", "bob", "--comment", "freeze week"}, db).exit_code ==
      0);
  auto res = orchrun({"resume", id}, db);
  CHECK(res.exit_code == 1);
  CHECK(query_str(db, "select status || '|' || error_type || '|' || error_message from runs") ==
        "failed|rejected|rejected by bob: freeze week");
  CHECK(query_int(db, "select count(*) from node_runs where node_id='ship'") == 0);
}

TEST_CASE("a gate's timeout decides with its configured outcome", "[control]") {
  TempDir tmp;
  std::string db = tmp.file("t.db"), file = tmp.file("t.lua");
  write_file(file, R"(local o = require "orch"
return o.pipeline "t" {
  o.approve("auto", { message = "silence means yes", timeout = "300ms", on_timeout = "approve" }),
  o.parallel("p", {
    o.approve("strict", { timeout = "200ms" }),
    o.node("busy", function() o.sleep("600ms") return {} end),
  }, { join = "any" }),
})");
  CHECK(orchrun({file}, db).exit_code == 4);
  std::string id = query_str(db, "select id from runs");
  usleep(400000);
  auto res = orchrun({"resume", "--all"}, db);
  CHECK(res.exit_code == 0);
  CHECK(query_str(db, "select status from approvals where node_id='auto'") == "timed_out");
  CHECK(query_str(db, "select output from node_runs where node_id='auto'")
            .find(R"("approved":true)") != std::string::npos);
  // Inside the run, the second gate timed out while `busy` was still going: rejected by
  // timeout, and join = any succeeds through the other branch.
  CHECK(query_str(db, "select error_type from node_runs where node_id='p/strict'") ==
        "approval_timeout");
  CHECK(query_str(db, "select status from runs") == "succeeded");
}

TEST_CASE("orchrun cancel stops a run owned by another process", "[control]") {
  TempDir tmp;
  std::string db = tmp.file("c.db"), file = tmp.file("long.lua");
  write_file(file,
             "local o = require 'orch'\nreturn o.pipeline 'long' { o.node('wait', "
             "function() return o.exec { 'sleep', '30' } end) }\n");
  pid_t owner = spawn_quiet({orchrun_bin(), file, "--db", db});
  std::string id;
  for (int i = 0; i < 100 && id.empty(); i++) {
    usleep(50000);
    if (poll_int(db, "select count(*) from node_runs where status='running'") > 0)
      id = query_str(db, "select id from runs");
  }
  REQUIRE(!id.empty());
  auto c = orchrun({"cancel", id, "--reason", "maintenance"}, db);
  CHECK(c.exit_code == 0);
  CHECK(has(c.out, "is cancelled"));
  int status = 0;
  waitpid(owner, &status, 0);
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(query_str(db, "select status || '|' || error_message from runs") ==
        "cancelled|maintenance");
  CHECK(query_str(db, "select status from node_runs") == "cancelled");
  CHECK(orchrun({"cancel", id}, db).exit_code == 2);  // already cancelled
}

TEST_CASE("orchrun cancel records an orphaned run as cancelled", "[control]") {
  TempDir tmp;
  std::string db = tmp.file("o.db"), file = tmp.file("long.lua");
  write_file(file,
             "local o = require 'orch'\nreturn o.pipeline 'long' { o.node('wait', "
             "function() o.sleep('30s') return {} end) }\n");
  pid_t owner = spawn_quiet({orchrun_bin(), file, "--db", db});
  for (int i = 0; i < 100; i++) {
    usleep(50000);
    if (poll_int(db, "select count(*) from node_runs where status='running'") > 0) break;
  }
  kill(owner, SIGKILL);
  waitpid(owner, nullptr, 0);
  std::string id = query_str(db, "select id from runs");
  auto c = orchrun({"cancel", id}, db);
  CHECK(c.exit_code == 0);
  CHECK(has(c.out, "its process " + std::to_string(owner) + " is gone"));
  CHECK(query_str(db, "select status from runs") == "cancelled");
  CHECK(query_str(db, "select status from node_runs") == "cancelled");
  CHECK(query_int(db, "select count(*) from events where kind='run.cancelled'") == 1);
}

TEST_CASE("orchrun retry continues a failed run from its failed nodes", "[control]") {
  TempDir tmp;
  std::string db = tmp.file("y.db"), file = tmp.file("y.lua"), flag = tmp.file("flag");
  write_file(file, R"(local o = require "orch"
return o.pipeline "y" {
  o.node("prep", function() return { n = 1 } end),
  o.node("flaky", function()
    if not o.exec({ "test", "-f", ")" +
                       flag + R"(" }).ok then
      o.fail("flag missing", { retryable = true })
    end
    return { ok = true }
  end, { retry = { max = 2, base = "10ms" } }),
})");
  CHECK(orchrun({file}, db).exit_code == 1);
  std::string id = query_str(db, "select id from runs");
  // Not failed: nothing to retry.
  CHECK(orchrun({"retry", "NOSUCHRUN"}, db).exit_code == 2);
  write_file(flag, "");
  auto r = orchrun({"retry", id}, db);
  CHECK(r.exit_code == 0);
  CHECK(query_str(db, "select status || '|' || attempts from runs") == "succeeded|2");
  // prep was reused; flaky's two failed attempts stay on record, the third succeeded in run
  // attempt 2.
  CHECK(query_int(db, "select count(*) from node_runs where node_id='prep'") == 1);
  CHECK(query_str(db,
                  "select group_concat(attempt || ':' || run_attempt || ':' || status, ' ') "
                  "from node_runs where node_id='flaky' order by seq") ==
        "1:1:failed 2:1:failed 3:2:succeeded");
  CHECK(query_int(db, "select count(*) from events where kind='run.retried'") == 1);
  auto again = orchrun({"retry", id}, db);
  CHECK(again.exit_code == 2);
  CHECK(has(again.err, "only a failed or cancelled run can be retried"));
}
