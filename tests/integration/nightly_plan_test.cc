// pipelines/nightly-plan.lua through the real binary: tasks run (a failing one does not stop
// the others), each keeps its exit code, an excerpt of its log and the whole log as an
// artifact; the run stops for approval; approving publishes, rejecting fails the run.
#include <catch2/catch.hpp>

#include "base/json_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

std::string pipeline() {
  return source_dir() + "/pipelines/nightly-plan.lua";
}

const char* kPlan = R"({"excerpt_lines": 3, "tasks": [
  {"name": "count", "run": "for i in 1 2 3 4 5 6; do echo line$i; done"},
  {"name": "broken", "run": "echo about to fail; echo oops >&2; exit 3"}
]})";

}  // namespace

TEST_CASE("nightly plan: tasks, excerpts, artifacts, then a person decides", "[nightly]") {
  TempDir tmp;
  std::string db = tmp.file("n.db");
  auto r = orchrun({pipeline(), "--input", kPlan, "--json", "--quiet"}, db);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 4);  // awaiting approval
  json sum = parse_json(r.out, nullptr);
  std::string id = sum.at("run_id").get<std::string>();
  CHECK(sum.at("status") == "awaiting_approval");

  json tasks = json::array();
  for (auto& row : query(db, "select output from node_runs where run_id='" + id +
                                 "' and node_id like 'tasks[%' order by node_id"))
    tasks.push_back(parse_json(row[0], nullptr));
  REQUIRE(tasks.size() == 2);
  CHECK(tasks[0].at("name") == "count");
  CHECK(tasks[0].at("ok") == true);
  // The last 3 lines only.
  CHECK(tasks[0].at("excerpt") == json::array({"line4", "line5", "line6"}));
  CHECK(tasks[1].at("ok") == false);
  CHECK(tasks[1].at("exit_code") == 3);
  CHECK(tasks[1].at("excerpt") == json::array({"about to fail", "oops"}));
  json report = parse_json(
      query_str(db, "select output from node_runs where run_id='" + id + "' and node_id='report'"),
      nullptr);
  CHECK(report.at("tasks") == 2);
  CHECK(report.at("failed") == 1);

  // The logs and the report are artifacts with the content written.
  auto arts = query(db, "select path, kind, size from artifacts where run_id='" + id +
                            "' order by path");
  REQUIRE(arts.size() == 3);
  CHECK(arts[0][0] == "broken.log");
  CHECK(arts[1][0] == "count.log");
  CHECK(arts[2][0] == "report.md");
  CHECK(arts[2][1] == "report");
  std::string ws = query_str(db, "select workspace from runs where id='" + id + "'");
  CHECK(read_file(ws + "/count.log") == "line1\nline2\nline3\nline4\nline5\nline6\n");
  std::string md = read_file(ws + "/report.md");
  CHECK(md.find("## ✗ broken (exit 3") != std::string::npos);
  CHECK(md.find("## ✓ count (exit 0") != std::string::npos);

  SECTION("approved: published") {
    REQUIRE(orchrun({"approve", id, "publish", "--as", "ana"}, db).exit_code == 0);
    auto res = orchrun({"resume", id, "--quiet"}, db);
    INFO(res.out << res.err);
    CHECK(res.exit_code == 0);
    json out = parse_json(query_str(db, "select output from runs where id='" + id + "'"), nullptr);
    CHECK(out.at("by") == "ana");
    CHECK(out.at("report") == ws + "/report.md");
    // The tasks did not run again.
    CHECK(query_int(db, "select count(*) from node_runs where run_id='" + id +
                            "' and node_id like 'tasks[%'") == 2);
  }
  SECTION("rejected: the run fails at the gate") {
    REQUIRE(orchrun({"reject", id, "publish", "--as", "ana", "--comment", "not tonight"}, db)
                .exit_code == 0);
    auto res = orchrun({"resume", id, "--quiet"}, db);
    CHECK(res.exit_code == 1);
    CHECK(query_str(db, "select status || ' ' || error_node from runs where id='" + id + "'") ==
          "failed publish");
  }
}
