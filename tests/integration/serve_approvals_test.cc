// orchrun serve end to end: the real binary as a child process on 127.0.0.1:0 with a temporary
// database, driven by real HTTP clients (tests/serve_util.h), checked through the API and in
// the store. Approval gates decided through the API (server/api_approvals.cc).
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "base/ids.h"
#include "base/json_util.h"
#include "drivers/loop.h"
#include "serve_util.h"
#include "server/server.h"
#include "store/store.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;
using namespace orch::test::serve;

// --- 6. approvals -----------------------------------------------------------------------------

TEST_CASE("serve: approval gates are decided through the API", "[serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"gate.lua", kGate}});
  std::string db = tmp.file("s.db");
  ServeProcess srv(dir, db);
  auto start = [&] {
    auto r = srv.post("/api/pipelines/gate/runs", "{}");
    REQUIRE(r.status == 202);
    std::string id = r.json_body()["run_id"];
    REQUIRE(srv.wait_run(id, "awaiting_approval")["status"] == "awaiting_approval");
    return id;
  };
  std::string a = start(), b = start();
  auto decide = [&](const std::string& run, const std::string& node, const std::string& body) {
    return srv.post("/api/runs/" + run + "/approvals/" + node, body);
  };
  auto approvals = [&] { return query(db, "select * from approvals order by run_id"); };
  auto before = approvals();

  struct Bad {
    std::string node, body;
    int status;
    std::string code;
  };
  for (const Bad& x : std::vector<Bad>{
           {"deploy", R"({"decision":"maybe","approver":"alice"})", 400, "invalid_body"},
           {"deploy", R"({"decision":"approve"})", 400, "invalid_body"},
           {"deploy", R"({"approver":"alice"})", 400, "invalid_body"},
           {"deploy", R"({"decision":"approve","approver":""})", 400, "invalid_body"},
           {"deploy", R"({"decision":"approve","approver":7})", 400, "invalid_body"},
           {"deploy", R"({"decision":"approve","approver":"alice","comment":[]})", 400,
            "invalid_body"},
           {"deploy", "not json", 400, "invalid_json"},
           {"deploy", "[]", 400, "invalid_body"},
           {"nope", R"({"decision":"approve","approver":"alice"})", 404, "not_found"},
           {"plan", R"({"decision":"approve","approver":"alice"})", 404, "not_found"},
           {"deploy", R"({"decision":"approve","approver":"mallory"})", 403, "forbidden"},
       }) {
    auto r = decide(a, x.node, x.body);
    INFO(x.node << " " << x.body << " -> " << show(r));
    CHECK(r.status == x.status);
    CHECK(r.error_code() == x.code);
  }
  CHECK(decide("NOSUCHRUN", "deploy", R"({"decision":"approve","approver":"alice"})").status ==
        404);
  CHECK(approvals() == before);
  CHECK(query_str(db, "select status from runs where id=" + sql_literal(a)) == "awaiting_approval");

  // Approve: the run goes on here and succeeds.
  auto r = decide(a, "deploy", R"({"decision":"approve","approver":"alice","comment":"lgtm"})");
  INFO(show(r));
  REQUIRE(r.status == 200);
  CHECK(r.json_body()["decision"] == "approved");
  CHECK(r.json_body()["by"] == "alice");
  CHECK(r.json_body()["continued"] == "here");
  json run = srv.wait_run(a, "succeeded,failed");
  CHECK(run["status"] == "succeeded");
  CHECK(run["output"] == json::parse(R"({"by":"alice","note":"lgtm"})"));
  CHECK(query_str(db,
                  "select status || '|' || decided_by || '|' || comment from approvals "
                  "where run_id=" +
                      sql_literal(a)) == "approved|alice|lgtm");
  // Twice: 409.
  r = decide(a, "deploy", R"({"decision":"approve","approver":"alice"})");
  CHECK(r.status == 409);
  CHECK(r.error_code() == "conflict");
  r = decide(a, "deploy", R"({"decision":"reject","approver":"bob"})");
  CHECK(r.status == 409);

  // Reject: the run fails, saying who and why.
  r = decide(b, "deploy", R"({"decision":"reject","approver":"bob","comment":"freeze week"})");
  INFO(show(r));
  REQUIRE(r.status == 200);
  CHECK(r.json_body()["decision"] == "rejected");
  run = srv.wait_run(b, "succeeded,failed");
  CHECK(run["status"] == "failed");
  CHECK(run["error"]["type"] == "rejected");
  CHECK(has(run["error"]["message"].get<std::string>(), "bob"));
  CHECK(count(db, "select count(*) from node_runs where run_id=" + sql_literal(b) +
                      " and node_id='ship'") == 0);
  CHECK(decide(b, "deploy", R"({"decision":"approve","approver":"alice"})").status == 409);

  // A run waiting at its gate can be cancelled; its gate can then no longer be decided.
  std::string c = start();
  r = srv.post("/api/runs/" + c + "/cancel", R"({"reason":"not today"})");
  INFO(show(r));
  CHECK(r.status == 200);
  CHECK(srv.wait_run(c, "cancelled,succeeded,failed")["status"] == "cancelled");
  r = decide(c, "deploy", R"({"decision":"approve","approver":"alice"})");
  INFO(show(r));
  CHECK(r.status == 409);
  CHECK(query_str(db, "select status from runs where id=" + sql_literal(c)) == "cancelled");
  CHECK(count(db, "select count(*) from node_runs where run_id=" + sql_literal(c) +
                      " and node_id='ship'") == 0);

  // A run parked at its gate by a one-shot `orchrun FILE` (exit 4, process gone): approved
  // through the API, the server resumes it.
  std::string file = tmp.file("gate-oneshot.lua");
  write_file(file, kGate);
  auto oneshot = orchrun({file}, db);
  INFO(oneshot.out << oneshot.err);
  REQUIRE(oneshot.exit_code == 4);
  std::string parked =
      query_str(db, "select id from runs where status='awaiting_approval' and source='cli'");
  REQUIRE(!parked.empty());
  r = decide(parked, "deploy",
             R"({"decision":"approve","approver":"bob","comment":"from the API"})");
  INFO(show(r));
  REQUIRE(r.status == 200);
  CHECK(r.json_body()["continued"] == "resumed");
  run = srv.wait_run(parked, "succeeded,failed");
  CHECK(run["status"] == "succeeded");
  CHECK(run["output"] == json::parse(R"({"by":"bob","note":"from the API"})"));
  CHECK(count(db, "select count(*) from node_runs where run_id=" + sql_literal(parked) +
                      " and node_id='plan'") == 1);
  CHECK(srv.stop() == 0);
}
