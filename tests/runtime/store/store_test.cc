// The store: schema and migrations, refusing foreign files, group commit, lookups.
#include "store/store.h"

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "test_util.h"

using namespace orch;
using namespace orch::test;

// A run row with what the schema requires.
static RunRow run_row(const std::string& id, const std::string& status = "running") {
  RunRow r;
  r.id = id;
  r.trace_id = "t";
  r.pipeline = "p";
  r.version = 1;
  r.status = status;
  r.source = "cli";
  r.created_at = 1;
  return r;
}

static std::unique_ptr<Store> open_ok(const std::string& path) {
  std::string err;
  auto s = Store::open(path, StoreOptions{}, &err);
  INFO(err);
  REQUIRE(s);
  return s;
}

TEST_CASE("a new database gets the current schema, WAL mode and orchrun's application id",
          "[store]") {
  TempDir d;
  auto s = open_ok(d.file("sub/dir/o.db"));  // parent directories are created
  CHECK(s->schema_version() == static_cast<int>(store_migrations().size()));
  CHECK(query_str(d.file("sub/dir/o.db"), "pragma journal_mode") == "wal");
  CHECK(query_int(d.file("sub/dir/o.db"), "pragma application_id") == kApplicationId);
  CHECK(query_int(d.file("sub/dir/o.db"), "pragma user_version") == s->schema_version());
}

TEST_CASE("reopening keeps data and does not migrate twice", "[store]") {
  TempDir d;
  {
    auto s = open_ok(d.file("o.db"));
    s->insert_run(run_row("01TEST"));
    s->commit();
  }
  auto s = open_ok(d.file("o.db"));
  std::string err;
  auto r = s->find_run("01test", &err);  // case-insensitive prefix
  REQUIRE(r);
  CHECK(r->pipeline == "p");
}

TEST_CASE("files that are not orchrun databases are refused and left unchanged", "[store]") {
  TempDir d;
  std::string err;
  SECTION("garbage bytes") {
    std::string garbage(4096, 'x');
    write_file(d.file("g.db"), garbage);
    CHECK_FALSE(Store::open(d.file("g.db"), StoreOptions{}, &err));
    CHECK(err.find("not an orchrun database") != std::string::npos);
    CHECK(err.find(d.file("g.db")) != std::string::npos);
    CHECK(read_file(d.file("g.db")) == garbage);
  }
  SECTION("another application's SQLite file") {
    sqlite3* db;
    REQUIRE(sqlite3_open(d.file("other.db").c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "create table foo(x); insert into foo values(42);", nullptr, nullptr,
                         nullptr) == SQLITE_OK);
    sqlite3_close(db);
    CHECK_FALSE(Store::open(d.file("other.db"), StoreOptions{}, &err));
    CHECK(err.find("not an orchrun database") != std::string::npos);
    CHECK(query_int(d.file("other.db"), "select x from foo") == 42);
    CHECK(query_int(d.file("other.db"), "select count(*) from sqlite_master") == 1);
  }
  SECTION("a schema newer than this binary") {
    { auto s = open_ok(d.file("new.db")); }
    sqlite3* db;
    REQUIRE(sqlite3_open(d.file("new.db").c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "pragma user_version=999", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
    CHECK_FALSE(Store::open(d.file("new.db"), StoreOptions{}, &err));
    CHECK(err.find("newer than this orchrun") != std::string::npos);
  }
}

TEST_CASE("writes stay invisible to other connections until commit", "[store]") {
  TempDir d;
  auto s = open_ok(d.file("o.db"));
  Event e;
  e.ts = 1;
  e.kind = "run.started";
  e.run_id = "R";
  e.trace_id = "T";
  e.pipeline = "p";
  for (int i = 0; i < 100; i++) s->insert_event(e);
  CHECK(s->in_transaction());
  CHECK(query_int(d.file("o.db"), "select count(*) from events") == 0);
  uint64_t before = s->commits();
  s->commit();
  CHECK(s->commits() == before + 1);
  CHECK(query_int(d.file("o.db"), "select count(*) from events") == 100);
  CHECK_FALSE(s->failed());
}

TEST_CASE("definitions: same source keeps its version, new source gets the next", "[store]") {
  TempDir d;
  auto s = open_ok(d.file("o.db"));
  auto a = s->upsert_definition("p", "sha-a", "src a", "p.lua", 1);
  auto b = s->upsert_definition("p", "sha-a", "src a", "p.lua", 2);
  auto c = s->upsert_definition("p", "sha-b", "src b", "p.lua", 3);
  auto other = s->upsert_definition("q", "sha-b", "src b", "q.lua", 3);
  REQUIRE(a);
  REQUIRE(b);
  REQUIRE(c);
  REQUIRE(other);
  CHECK(a->version == 1);
  CHECK(b->version == 1);
  CHECK(c->version == 2);
  CHECK(other->version == 1);
}

TEST_CASE("run lookup by prefix: unique, ambiguous, missing", "[store]") {
  TempDir d;
  auto s = open_ok(d.file("o.db"));
  for (const char* id : {"01AAA1", "01AAA2", "01BBB1"}) s->insert_run(run_row(id, "succeeded"));
  s->commit();
  std::string err;
  CHECK(s->find_run("01B", &err)->id == "01BBB1");
  CHECK(s->find_run("01AAA2", &err)->id == "01AAA2");
  CHECK_FALSE(s->find_run("01A", &err));
  CHECK(err.find("ambiguous") != std::string::npos);
  CHECK_FALSE(s->find_run("01C", &err));
  CHECK(err.find("no run") != std::string::npos);
  RunFilter f;
  f.status = "succeeded";
  CHECK(s->list_runs(f).size() == 3);
  f.limit = 2;
  CHECK(s->list_runs(f).size() == 2);
}

TEST_CASE("a status the schema does not allow is a store failure, not silent", "[store]") {
  TempDir d;
  auto s = open_ok(d.file("o.db"));
  s->insert_run(run_row("X", "exploded"));
  CHECK(s->failed());
  CHECK(s->error() ==
        "insert run X: status 'exploded' is not one of queued, running, awaiting_approval, waiting, "
        "succeeded, failed, cancelled");
  s.reset();
  CHECK(query_int(d.file("o.db"), "select count(*) from runs") == 0);
}

TEST_CASE("every status column refuses a value the schema does not allow", "[store]") {
  TempDir d;
  auto fresh = [&] {
    std::string err;
    auto s = Store::open(d.file("o.db"), StoreOptions{}, &err);
    REQUIRE(s);
    return s;
  };
  {
    auto s = fresh();
    s->insert_run(run_row("R"));
    s->insert_node_attempt("R", "n", 1, "body", 1);
    s->commit();
    REQUIRE_FALSE(s->failed());
  }
  SECTION("run status") {
    auto s = fresh();
    s->set_run_status("R", "done", 2);
    CHECK(s->error().find("set status of run R: status 'done'") == 0);
  }
  SECTION("run end") {
    auto s = fresh();
    s->finish_run("R", "ok", "", "", "", "", false, 2);
    CHECK(s->error().find("finish run R: status 'ok'") == 0);
  }
  SECTION("node attempt") {
    auto s = fresh();
    NodeRunRow n;
    n.run_id = "R";
    n.node_id = "n";
    n.attempt = 1;
    n.status = "passed";
    s->finish_node_attempt(n);
    CHECK(s->error().find("finish node attempt n: status 'passed'") == 0);
  }
  SECTION("approval") {
    auto s = fresh();
    CHECK_FALSE(s->decide_approval("R", "n", 1, "maybe", "ann", "", 2));
    CHECK(s->error().find("decide approval n: status 'maybe'") == 0);
  }
  SECTION("incident") {
    auto s = fresh();
    IncidentIn a;
    a.fingerprint = "f";
    a.title = "t";
    a.severity = "warning";
    a.status = "burning";
    a.source = "test";
    a.labels = a.annotations = "{}";
    CHECK(s->record_incidents({a}, "R", "n", 1, 2).empty());
    CHECK(s->error().find("record incident f: status 'burning'") == 0);
  }
  // Nothing was written by the refused calls.
  CHECK(query_str(d.file("o.db"), "select status from runs where id='R'") == "running");
  CHECK(query_str(d.file("o.db"), "select status from node_runs where run_id='R'") == "running");
  CHECK(query_int(d.file("o.db"), "select count(*) from incidents") == 0);
}

TEST_CASE("other connections still get the schema's CHECK constraints", "[store]") {
  // orchrun's connection validates statuses in C++ and skips the CHECKs (an IN list costs a
  // temporary B-tree per row); a person with the sqlite3 shell is still stopped by them.
  TempDir d;
  open_ok(d.file("o.db"));
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(d.file("o.db").c_str(), &db) == SQLITE_OK);
  char* msg = nullptr;
  int rc = sqlite3_exec(db,
                        "INSERT INTO runs(id, trace_id, pipeline, version, status, source, "
                        "created_at) VALUES('X','t','p',1,'exploded','cli',1)",
                        nullptr, nullptr, &msg);
  CHECK(rc == SQLITE_CONSTRAINT);
  CHECK(std::string(msg ? msg : "").find("CHECK constraint failed") != std::string::npos);
  sqlite3_free(msg);
  sqlite3_close(db);
}

TEST_CASE("many processes opening a new database at once all succeed and one migrates", "[store]") {
  TempDir d;
  std::string path = d.file("race.db");
  std::vector<pid_t> kids;
  for (int i = 0; i < 8; i++) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      std::string err;
      auto s = Store::open(path, StoreOptions{}, &err);
      if (!s) fprintf(stderr, "child: %s\n", err.c_str());
      _exit(s ? 0 : 1);
    }
    kids.push_back(pid);
  }
  int failed = 0;
  for (pid_t k : kids) {
    int status = 0;
    waitpid(k, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
  }
  CHECK(failed == 0);
  CHECK(query_int(path, "pragma user_version") == static_cast<int>(store_migrations().size()));
}

TEST_CASE("events written for a stored run carry its incident (cancel of an orphan run)",
          "[store]") {
  TempDir d;
  auto s = open_ok(d.file("o.db"));
  s->insert_run(run_row("R1"));
  s->set_run_incident("R1", 7, "fp-7");
  s->commit();
  std::string err;
  auto stored = s->find_run("R1", &err);
  REQUIRE(stored);
  REQUIRE(s->cancel_orphan_run(*stored, "operator", 5));
  CHECK(query_str(d.file("o.db"), "select status from runs where id='R1'") == "cancelled");
  CHECK(query_str(
            d.file("o.db"),
            "select incident_id || ' ' || fingerprint from events where kind='run.cancelled'") ==
        "7 fp-7");
}

TEST_CASE("a node attempt is written once when it starts and ends in one transaction", "[store]") {
  TempDir d;
  auto s = open_ok(d.file("o.db"));
  s->insert_run(run_row("R"));
  s->commit();
  auto end_row = [](const char* node, const char* status) {
    NodeRunRow r;
    r.run_id = "R";
    r.node_id = node;
    r.attempt = 1;
    r.status = status;
    r.finished_at = 9;
    r.duration_ms = 1;
    r.output = "{\"ok\":true}";
    return r;
  };
  s->insert_node_attempt("R", "a", 1, "body", 5);
  s->insert_node_attempt("R", "b", 1, "body", 6);
  s->finish_node_attempt(end_row("b", "succeeded"));  // b ends first, in the same transaction
  // Reads in the open transaction see both, in the order they started.
  auto rows = s->node_runs("R");
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].node_id == "a");
  CHECK(rows[0].status == "running");
  CHECK(rows[1].node_id == "b");
  CHECK(rows[1].status == "succeeded");
  CHECK(rows[1].started_at == 6);
  CHECK(rows[1].output == "{\"ok\":true}");
  s->commit();
  // Another connection: a (still running, written at the commit) and b (written as it ended).
  CHECK(query_str(d.file("o.db"),
                  "select group_concat(node_id || '=' || status, ' ') from "
                  "(select * from node_runs order by seq)") == "a=running b=succeeded");
  // a ends in a later transaction: an update of its committed row.
  s->finish_node_attempt(end_row("a", "failed"));
  s->insert_node_attempt("R", "c", 1, "body", 10);
  CHECK(s->mark_interrupted("R", 11) == 1);  // c, started in this transaction, is seen
  s->commit();
  CHECK(query_str(d.file("o.db"),
                  "select group_concat(node_id || '=' || status, ' ') from "
                  "(select * from node_runs order by seq)") == "a=failed b=succeeded c=failed");
  CHECK(query_str(d.file("o.db"), "select error_type from node_runs where node_id='c'") ==
        "interrupted");
  CHECK_FALSE(s->failed());
}
