// Hardening, finding 5: an approval racing a retry of a cancelled gate run. A decision must
// land on the gate of the attempt it was made for, or be refused (409); never answered 200 and
// then lost on the gate of an attempt that is over, with the new attempt waiting again.
// 200 rounds through a real server, the approve and the retry sent from two threads at once
// (and, every other round, the approve from another process: orchrun approve on the store).
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <thread>

#include "base/json_util.h"
#include "serve_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

const char* kGate = R"(local o = require "orch"
return o.pipeline "gate" {
  o.approve("deploy", { message = "Ship it?" }),
  o.node("ship", function(ctx) return { by = ctx.outputs.deploy.by } end),
}
)";

std::string show(const HttpReply& r) {
  return "HTTP " + std::to_string(r.status) + " " + r.body.substr(0, 400);
}

}  // namespace

TEST_CASE("approve racing retry of a cancelled gate run: landed on the live attempt or 409",
          "[hardening][races][serve]") {
  TempDir d;
  std::string dir = d.file("pipelines");
  mkdir(dir.c_str(), 0755);
  write_file(dir + "/gate.lua", kGate);
  const std::string db = d.file("s.db");
  ServeProcess srv(dir, db);
  int landed = 0, refused = 0;
  const int kRounds = 200;
  for (int round = 0; round < kRounds; round++) {
    auto started = srv.post("/api/pipelines/gate/runs", "{}");
    REQUIRE(started.status == 202);
    std::string id = started.json_body()["run_id"];
    REQUIRE(srv.wait_run(id, "awaiting_approval")["status"] == "awaiting_approval");
    auto cancelled = srv.post("/api/runs/" + id + "/cancel", "{}");
    INFO(show(cancelled));
    REQUIRE(cancelled.status == 200);
    // The cancelled attempt's gate is closed at once.
    CHECK(query_str(db, "SELECT status FROM approvals WHERE run_id=" + sql_literal(id)) ==
          "cancelled");

    HttpReply retry, approve;
    CmdResult cli;
    bool by_cli = round % 2 == 1;
    TestThread t1([&] { retry = srv.post("/api/runs/" + id + "/retry"); });
    TestThread t2([&] {
      if (by_cli)
        cli = orchrun({"approve", id, "deploy", "--as", "alice"}, db);
      else
        approve = srv.post("/api/runs/" + id + "/approvals/deploy",
                           R"({"decision":"approve","approver":"alice"})");
    });
    t1.join();
    t2.join();
    INFO("round " << round << " retry " << show(retry) << " approve " << show(approve) << " cli "
                  << cli.exit_code << " " << cli.out << cli.err);
    REQUIRE(retry.status == 202);
    bool ok = by_cli ? cli.exit_code == 0 : approve.status == 200;
    if (!by_cli) CHECK((approve.status == 200 || approve.status == 409));
    if (by_cli) CHECK((cli.exit_code == 0 || cli.exit_code == 2));  // 2: refused
    if (ok) {
      // Accepted: it is the live attempt's gate that was approved, and the run goes through.
      landed++;
      json run = srv.wait_run(id, "succeeded,failed,cancelled");
      CHECK(run["status"] == "succeeded");
      CHECK(query_str(db, "SELECT run_attempt FROM approvals WHERE run_id=" + sql_literal(id) +
                              " AND status='approved'") == "2");
      // The audit trail names that attempt.
      std::string ev = query_str(db, "SELECT data FROM events WHERE run_id=" + sql_literal(id) +
                                         " AND kind='approval.decided'");
      CHECK(ev.find("\"run_attempt\":2") != std::string::npos);
    } else {
      // Refused: the new attempt waits at its own gate, which a decision now reaches.
      refused++;
      REQUIRE(srv.wait_run(id, "awaiting_approval")["status"] == "awaiting_approval");
      CHECK(query_int(db, "SELECT count(*) FROM approvals WHERE run_id=" + sql_literal(id) +
                              " AND status='waiting' AND run_attempt=2") == 1);
      CHECK(query_int(db, "SELECT count(*) FROM events WHERE run_id=" + sql_literal(id) +
                              " AND kind='approval.decided'") == 0);
      auto again = srv.post("/api/runs/" + id + "/approvals/deploy",
                            R"({"decision":"approve","approver":"bob"})");
      CHECK(again.status == 200);
      CHECK(srv.wait_run(id, "succeeded,failed")["status"] == "succeeded");
    }
    // Never: a waiting gate of an attempt that is over.
    CHECK(query_int(db,
                    "SELECT count(*) FROM approvals a JOIN runs r ON r.id=a.run_id WHERE "
                    "a.status='waiting' AND (a.run_attempt < r.attempts OR r.status IN "
                    "('succeeded','failed','cancelled'))") == 0);
  }
  CHECK(landed + refused == kRounds);
  WARN("approve landed " << landed << ", refused " << refused << " of " << kRounds);
  CHECK(srv.stop() == 0);
}

TEST_CASE("a decision for an attempt that is over is refused with 409",
          "[hardening][races][serve]") {
  TempDir d;
  std::string dir = d.file("pipelines");
  mkdir(dir.c_str(), 0755);
  write_file(dir + "/gate.lua", kGate);
  const std::string db = d.file("s.db");
  {
    ServeProcess srv(dir, db);
    auto started = srv.post("/api/pipelines/gate/runs", "{}");
    std::string id = started.json_body()["run_id"];
    REQUIRE(srv.wait_run(id, "awaiting_approval")["status"] == "awaiting_approval");
    REQUIRE(srv.post("/api/runs/" + id + "/cancel", "{}").status == 200);
    auto late = srv.post("/api/runs/" + id + "/approvals/deploy",
                         R"({"decision":"approve","approver":"alice"})");
    INFO(show(late));
    CHECK(late.status == 409);
    CHECK(late.body.find("was closed undecided when attempt 1 ended (the run was cancelled") !=
          std::string::npos);
    CHECK(srv.stop() == 0);
  }
}
