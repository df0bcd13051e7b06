// The store's core: one prepared statement per SQL text, statuses as enums with their text only
// at the boundary, and the factory's refusal of a database that is not orchrun's.
#include <sqlite3.h>

#include <catch2/catch.hpp>

#include "store/sqlite/sqlite_store.h"
#include "store/status.h"
#include "store/store.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

TEST_CASE("the statement cache prepares each SQL text once", "[store]") {
  TempDir d;
  std::string err;
  auto s = SqliteStore::open(d.file("o.db"), StoreOptions{}, &err);
  REQUIRE(s);
  RunRow r;
  r.id = "R1";
  r.trace_id = "T";
  r.pipeline = "p";
  r.version = 1;
  r.source = "cli";
  r.status = RunStatus::running;
  r.created_at = 1;
  s->insert_run(r);
  s->commit();
  INFO(s->error());
  REQUIRE_FALSE(s->failed());
  // The first read of each kind compiles its statement; the same reads again compile nothing.
  s->list_runs(RunFilter{});
  s->find_run("R1", &err);
  s->node_runs("R1");
  s->events("R1");
  uint64_t after_first = s->db().prepares();
  for (int i = 0; i < 5; i++) {
    r.id = "R" + std::to_string(i + 2);
    s->insert_run(r);
    s->set_run_status(r.id, RunStatus::succeeded, 2);
    s->list_runs(RunFilter{});
    CHECK(s->find_run(r.id, &err));
    s->node_runs(r.id);
    s->events(r.id);
    s->commit();
  }
  REQUIRE_FALSE(s->failed());
  // insert_run and set_run_status were compiled in the first turn of the loop only.
  CHECK(s->db().prepares() == after_first + 1);
  // A filter that adds a condition is another SQL text: one more statement, once.
  RunFilter f;
  f.status = "succeeded";
  CHECK(s->list_runs(f).size() == 5);
  CHECK(s->list_runs(f).size() == 5);
  CHECK(s->db().prepares() == after_first + 2);
}

TEST_CASE("every status round-trips between its enum and its text", "[store]") {
  for (size_t i = 0; i < status_names(RunStatus{}).size(); i++) {
    auto s = static_cast<RunStatus>(i);
    CHECK(parse_run_status(to_string(s)) == s);
    RunStatusValue v(to_string(s));
    CHECK(v.valid());
    CHECK(v == s);
  }
  for (size_t i = 0; i < status_names(NodeStatus{}).size(); i++) {
    auto s = static_cast<NodeStatus>(i);
    CHECK(parse_node_status(to_string(s)) == s);
  }
  for (size_t i = 0; i < status_names(ApprovalStatus{}).size(); i++) {
    auto s = static_cast<ApprovalStatus>(i);
    CHECK(parse_approval_status(to_string(s)) == s);
  }
  CHECK(status_names(RunStatus{}).size() == 7);
  CHECK(status_names(NodeStatus{}).size() == 6);
  CHECK(status_names(ApprovalStatus{}).size() == 5);
  CHECK(to_string(RunStatus::awaiting_approval) == "awaiting_approval");
  CHECK(to_string(ApprovalStatus::timed_out) == "timed_out");
}

TEST_CASE("unknown status text is refused, and kept for the message", "[store]") {
  CHECK_FALSE(parse_run_status("done"));
  CHECK_FALSE(parse_run_status("Running"));
  CHECK_FALSE(parse_run_status(""));
  CHECK_FALSE(parse_node_status("passed"));
  CHECK_FALSE(parse_approval_status("maybe"));
  RunStatusValue v("exploded");
  CHECK_FALSE(v.valid());
  CHECK(v.str() == "exploded");
  CHECK_FALSE(v == RunStatus::failed);
  RunStatusValue none;
  CHECK_FALSE(none.valid());
  CHECK(none.empty());
}

TEST_CASE("open_store refuses a database that is not orchrun's", "[store]") {
  TempDir d;
  sqlite3* db;
  REQUIRE(sqlite3_open(d.file("other.db").c_str(), &db) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db, "create table foo(x);", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
  std::string err;
  CHECK_FALSE(open_store(d.file("other.db"), StoreOptions{}, &err));
  CHECK(err.find("not an orchrun database") != std::string::npos);
  CHECK(query_int(d.file("other.db"), "select count(*) from sqlite_master") == 1);
}
