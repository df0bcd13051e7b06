// The real orchrun binary, end to end: exit codes, messages, and the rows it leaves in SQLite.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "base/json_util.h"
#include "engine/pipeline_loader.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;
namespace fs = std::filesystem;

namespace {

std::string src(const std::string& rel) {
  return source_dir() + "/" + rel;
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

json parse_or_fail(const std::string& text) {
  std::string err;
  json j = parse_json(text, &err);
  INFO("output was: " << text);
  INFO("parse error: " << err);
  REQUIRE(!j.is_discarded());
  return j;
}

// Runs FILE with --json and returns the parsed summary (REQUIREs exit `want_exit`).
json run_json(const std::string& file, const std::string& db, const std::string& input = "",
              const std::string& cwd = "", int want_exit = 0) {
  std::vector<std::string> args = {file, "--json"};
  if (!input.empty()) {
    args.push_back("--input");
    args.push_back(input);
  }
  auto r = orchrun(args, db, {}, cwd);
  INFO("file: " << file << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err);
  REQUIRE(r.exit_code == want_exit);
  json j = parse_or_fail(r.out);
  REQUIRE(j.contains("run_id"));
  return j;
}

// Every (table) row of the store that belongs to the given runs, as text, for before/after checks.
std::vector<std::vector<std::string>> snapshot(const std::string& db,
                                               const std::vector<std::string>& run_ids) {
  std::string in;
  for (auto& id : run_ids) in += (in.empty() ? "" : ",") + sql_literal(id);
  std::vector<std::vector<std::string>> all;
  for (const char* sql :
       {"select * from runs where id in (%s) order by id",
        "select * from node_runs where run_id in (%s) order by run_id, node_id, attempt",
        "select * from events where run_id in (%s) order by id"}) {
    std::string s = sql;
    s.replace(s.find("%s"), 2, in);
    auto rows = query(db, s);
    all.push_back({"-- " + s});
    all.insert(all.end(), rows.begin(), rows.end());
  }
  all.push_back({"-- definitions"});
  auto defs = query(db,
                    "select * from definitions where name in (select pipeline from runs "
                    "where id in (" +
                        in + ")) order by id");
  all.insert(all.end(), defs.begin(), defs.end());
  return all;
}

// A query that may legitimately fail (the database is still being created): -1 then.
int64_t try_query_int(const std::string& db, const std::string& sql) {
  if (access(db.c_str(), F_OK) != 0) return -1;
  sqlite3* h = nullptr;
  int64_t v = -1;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(h, 500);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) == SQLITE_OK) {
      if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
      sqlite3_finalize(st);
    }
  }
  sqlite3_close(h);
  return v;
}

// True when pid no longer runs (gone, or a zombie nobody reaped yet).
bool process_gone(pid_t pid) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  if (stat.empty()) return true;
  auto close_paren = stat.rfind(')');
  return close_paren != std::string::npos && close_paren + 2 < stat.size() &&
         stat[close_paren + 2] == 'Z';
}

// Children of `parent` whose command is `comm`, found through /proc.
std::vector<pid_t> children_named(pid_t parent, const std::string& comm) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    if (!isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;
    std::string stat = read_file(std::string("/proc/") + e->d_name + "/stat");
    auto open_paren = stat.find('('), close_paren = stat.rfind(')');
    if (open_paren == std::string::npos || close_paren == std::string::npos) continue;
    std::string name = stat.substr(open_paren + 1, close_paren - open_paren - 1);
    char state = 0;
    int ppid = 0;
    if (sscanf(stat.c_str() + close_paren + 1, " %c %d", &state, &ppid) != 2) continue;
    if (ppid == parent && name == comm && state != 'Z') out.push_back(atoi(e->d_name));
  }
  closedir(d);
  return out;
}

const char kFailing[] = R"(local o = require "orch"
return o.pipeline "will-fail" {
  o.node("fine", function() return { ok = true } end),
  o.node("boom", function(ctx)
    error("kaboom: the disk is on fire")
  end),
  o.node("after", function() return { never = true } end),
}
)";

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("every example and shipped pipeline runs, and its run is fully recorded", "[cli]") {
  TempDir tmp;
  std::string db = tmp.file("all.db");
  std::vector<std::string> files;
  for (const char* dir : {"examples", "pipelines"})
    for (auto& e : fs::directory_iterator(src(dir)))
      if (e.is_regular_file() && (e.path().extension() == ".lua" || e.path().extension() == ".json"))
        files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  // The enumeration itself must have found the known files.
  REQUIRE(files.size() >= 6);
  REQUIRE(std::count(files.begin(), files.end(), src("examples/hello.lua")) == 1);
  REQUIRE(std::count(files.begin(), files.end(), src("pipelines/health-check.lua")) == 1);
  REQUIRE(std::count(files.begin(), files.end(), src("examples/alert-triage.json")) == 1);

  std::set<std::string> run_ids;
  for (const auto& file : files) {
    INFO("pipeline file: " << file);
    bool health = fs::path(file).filename() == "health-check.lua";
    std::string report = tmp.file("r.md");
    std::string input, cwd;
    if (health) {
      // fail_on=never: the verdict depends on this machine's disk, memory and load; the point
      // here is that the pipeline runs end to end.
      input = R"({"report":")" + report + R"(","fail_on":"never"})";
      cwd = tmp.path();
    }
    if (fs::path(file).extension() == ".json") {
      // A JSON definition has no sample of its own: an Alertmanager payload (a critical alert,
      // so that its page is written too, under the working directory).
      input = "@" + src("tests/fixtures/alertmanager_v4.json");
      cwd = tmp.path();
    }
    // Gates: o.approve, or a review that escalates with its default input.
    bool gated = contains(read_file(file), "o.approve(");
    json sum = run_json(file, db, input, cwd, gated ? 4 : 0);
    if (gated) {
      // It stopped at its gate(s): approve every waiting gate, then resume to the end.
      CHECK(sum.at("status") == "awaiting_approval");
      std::string rid = sum.at("run_id").get<std::string>();
      for (auto& g : query(db, "select node_id from approvals where status='waiting' and run_id=" +
                                   sql_literal(rid)))
        REQUIRE(orchrun({"approve", rid, g[0], "--as", "ci"}, db).exit_code == 0);
      auto r = orchrun({"resume", rid, "--json"}, db, {}, cwd);
      INFO(r.out << r.err);
      REQUIRE(r.exit_code == 0);
      sum = parse_or_fail(r.out).at(0);
    }
    std::string id = sum.at("run_id").get<std::string>();
    std::string trace = sum.at("trace_id").get<std::string>();
    CHECK(sum.at("status") == "succeeded");
    CHECK(run_ids.insert(id).second);  // a new run every time
    std::string w = " where run_id=" + sql_literal(id);

    // The runs row.
    auto run = query(db,
                     "select status, trace_id, pipeline, version, finished_at is not null, "
                     "error_type from runs where id=" +
                         sql_literal(id));
    REQUIRE(run.size() == 1);
    CHECK(run[0][0] == "succeeded");
    CHECK(run[0][1] == trace);
    CHECK(run[0][2] == sum.at("pipeline").get<std::string>());
    CHECK(run[0][3] == std::to_string(sum.at("version").get<int>()));
    CHECK(run[0][4] == "1");
    CHECK(run[0][5] == "");

    // One node_runs row per attempt: as many executed rows as attempts and node.started events,
    // and every started attempt has its row, finished.
    int attempts = sum.at("attempts").get<int>();
    CHECK(attempts > 0);
    CHECK(query_int(db, "select count(*) from node_runs" + w +
                            " and kind != 'decision' and status != 'skipped'") == attempts);
    CHECK(query_int(db, "select count(*) from events" + w + " and kind='node.started'") ==
          attempts);
    CHECK(query_int(db, "select count(*) from events e" + w +
                            " and kind='node.started' and not exists (select 1 from node_runs n "
                            "where n.run_id=e.run_id and n.node_id=e.node_id and "
                            "n.attempt=e.attempt)") == 0);
    CHECK(query_int(db, "select count(*) from node_runs" + w +
                            " and status in ('pending','running')") == 0);
    CHECK(query_int(db, "select count(*) from node_runs" + w +
                            " and status != 'skipped' and finished_at is null") == 0);

    // Events: all carry the run's trace id; the run started and succeeded exactly once.
    CHECK(query_int(db, "select count(*) from events" + w) > 2);
    CHECK(query_int(db, "select count(*) from events" + w +
                            " and trace_id != " + sql_literal(trace)) == 0);
    CHECK(query_int(db, "select count(*) from events" + w + " and kind='run.started'") == 1);
    CHECK(query_int(db, "select count(*) from events" + w + " and kind='run.succeeded'") == 1);
    CHECK(query_int(db, "select count(*) from events" + w + " and kind='run.failed'") == 0);

    // The definition the run used is this exact file content.
    CHECK(query_str(db,
                    "select d.sha256 from definitions d join runs r on r.pipeline=d.name and "
                    "r.version=d.version where r.id=" +
                        sql_literal(id)) == sha256_hex(read_file(file)));

    if (health) {
      REQUIRE(fs::exists(report));
      CHECK(contains(read_file(report), "# Health check"));
      CHECK(contains(read_file(report), id));
    }
  }
  CHECK(query_int(db, "select count(*) from runs where parent_run is null") ==
        static_cast<int64_t>(files.size()));
  // Child runs (o.call) finished with their parents, linked to them.
  CHECK(query_int(db,
                  "select count(*) from runs c where parent_run is not null and (status != "
                  "'succeeded' or not exists (select 1 from runs p where p.id=c.parent_run and "
                  "p.trace_id=c.trace_id))") == 0);
}

TEST_CASE("retries, fallback and timeout are recorded attempt by attempt", "[cli]") {
  TempDir tmp;
  std::string db = tmp.file("r.db");
  json sum = run_json(src("examples/retries.lua"), db);
  std::string id = sum.at("run_id").get<std::string>();
  CHECK(sum.at("status") == "succeeded");
  CHECK(sum.at("output").value("flaky", 0) == 3);
  CHECK(sum.at("output").value("cached", "") == "cache");

  auto rows = [&](const std::string& node) {
    return query(db,
                 "select attempt, kind, status, error_type, retryable from node_runs where "
                 "run_id=" +
                     sql_literal(id) + " and node_id=" + sql_literal(node) + " order by attempt");
  };
  auto flaky = rows("flaky");
  REQUIRE(flaky.size() == 3);
  for (int i = 0; i < 2; i++) {
    CHECK(flaky[i][0] == std::to_string(i + 1));
    CHECK(flaky[i][1] == "body");
    CHECK(flaky[i][2] == "failed");
    CHECK(flaky[i][4] == "1");
  }
  CHECK(flaky[2][0] == "3");
  CHECK(flaky[2][2] == "succeeded");
  CHECK(query_str(db, "select error_message from node_runs where run_id=" + sql_literal(id) +
                          " and node_id='flaky' and attempt=2")
            .find("upstream unavailable (attempt 2)") != std::string::npos);

  auto down = rows("always_down");
  REQUIRE(down.size() == 3);
  CHECK(down[0][1] == "body");
  CHECK(down[0][2] == "failed");
  CHECK(down[1][1] == "body");
  CHECK(down[1][2] == "failed");
  CHECK(down[2][0] == "3");
  CHECK(down[2][1] == "fallback");
  CHECK(down[2][2] == "succeeded");
  CHECK(query_str(db, "select output from node_runs where run_id=" + sql_literal(id) +
                          " and node_id='always_down' and kind='fallback'") ==
        R"({"reason":"service is gone","source":"cache"})");

  auto nice = rows("nice_to_have");
  REQUIRE(nice.size() == 1);
  CHECK(nice[0][2] == "failed");
  CHECK(nice[0][4] == "0");

  auto slow = rows("slow");
  REQUIRE(slow.size() == 1);
  CHECK(slow[0][2] == "failed");
  CHECK(slow[0][3] == "timeout");
  // The 5 s sleep was cut at 200 ms.
  CHECK(query_int(db, "select duration_ms from node_runs where run_id=" + sql_literal(id) +
                          " and node_id='slow'") < 2000);
  CHECK(rows("done").size() == 1);
  CHECK(rows("done")[0][2] == "succeeded");
}

TEST_CASE("conditions route through when/switch and skip_if, recorded as skipped", "[cli]") {
  TempDir tmp;
  std::string db = tmp.file("c.db");
  auto status = [&](const std::string& id, const std::string& node) {
    auto r = query(db, "select status from node_runs where run_id=" + sql_literal(id) +
                           " and node_id=" + sql_literal(node));
    INFO("node " << node);
    REQUIRE(r.size() == 1);
    return r[0][0];
  };

  SECTION("critical goes to route/page") {
    json sum = run_json(src("examples/conditions.lua"), db, R"({"severity":"critical"})");
    std::string id = sum.at("run_id");
    CHECK(status(id, "route/page") == "succeeded");
    CHECK(status(id, "route/ticket") == "skipped");
    CHECK(status(id, "route/note") == "skipped");
    CHECK(status(id, "audit") == "succeeded");
    CHECK(status(id, "busy/carry_on") == "succeeded");
    CHECK(status(id, "busy/shed_load") == "skipped");
    CHECK(query_str(db, "select output from node_runs where run_id=" + sql_literal(id) +
                            " and node_id='route' and kind='decision'")
              .find("\"critical\"") != std::string::npos);
    CHECK(sum.at("output").value("routed", "") == "on-call");
    CHECK(query_int(db, "select count(*) from events where run_id=" + sql_literal(id) +
                            " and kind='node.skipped'") == 3);
  }
  SECTION("no_audit skips audit; default severity goes to the ticket") {
    json sum = run_json(src("examples/conditions.lua"), db, R"({"no_audit":true})");
    std::string id = sum.at("run_id");
    CHECK(status(id, "audit") == "skipped");
    CHECK(status(id, "route/ticket") == "succeeded");
    CHECK(status(id, "route/page") == "skipped");
    CHECK(query_str(db, "select status from runs where id=" + sql_literal(id)) == "succeeded");
    CHECK(query_int(db, "select count(*) from events where run_id=" + sql_literal(id) +
                            " and kind='node.skipped' and node_id='audit'") == 1);
  }
}

TEST_CASE("a failing pipeline exits 1, records the error, and leaves earlier runs alone", "[cli]") {
  TempDir tmp;
  std::string db = tmp.file("f.db");
  std::string failing = tmp.file("failing.lua");
  write_file(failing, kFailing);

  std::vector<std::string> earlier = {
      run_json(src("examples/hello.lua"), db).at("run_id"),
      run_json(src("examples/conditions.lua"), db, R"({"severity":"critical"})").at("run_id")};
  auto before = snapshot(db, earlier);
  REQUIRE(before.size() > 10);

  auto r = orchrun({failing}, db);
  INFO("stdout:\n" << r.out << "\nstderr:\n" << r.err);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.out + r.err, "kaboom"));
  CHECK(contains(r.out + r.err, "boom"));

  auto run = query(db,
                   "select id, status, error_node, error_type, error_message, trace_id from "
                   "runs where pipeline='will-fail'");
  REQUIRE(run.size() == 1);
  std::string id = run[0][0];
  CHECK(run[0][1] == "failed");
  CHECK(run[0][2] == "boom");
  CHECK(!run[0][3].empty());
  CHECK(contains(run[0][4], "kaboom: the disk is on fire"));

  auto boom = query(db, "select status, traceback, error_message from node_runs where run_id=" +
                            sql_literal(id) + " and node_id='boom'");
  REQUIRE(boom.size() == 1);  // no retry configured: one attempt
  CHECK(boom[0][0] == "failed");
  CHECK(contains(boom[0][1], "failing.lua"));
  CHECK(contains(boom[0][2], "kaboom"));
  CHECK(query_str(db, "select status from node_runs where run_id=" + sql_literal(id) +
                          " and node_id='fine'") == "succeeded");
  CHECK(query_int(db, "select count(*) from node_runs where run_id=" + sql_literal(id) +
                          " and node_id='after' and status != 'skipped'") == 0);
  CHECK(query_int(db, "select count(*) from events where run_id=" + sql_literal(id) +
                          " and kind='run.failed'") == 1);
  CHECK(query_int(db, "select count(*) from events where run_id=" + sql_literal(id) +
                          " and kind='run.succeeded'") == 0);
  CHECK(query_int(db, "select count(*) from events where run_id=" + sql_literal(id) +
                          " and trace_id != " + sql_literal(run[0][5])) == 0);

  // Earlier runs: byte-for-byte the same rows.
  CHECK(snapshot(db, earlier) == before);
  CHECK(query_int(db, "select count(*) from runs") == 3);

  // --json on a failure: still exit 1, with the error in the summary.
  auto rj = orchrun({failing, "--json"}, db);
  CHECK(rj.exit_code == 1);
  json j = parse_or_fail(rj.out);
  CHECK(j.at("status") == "failed");
  CHECK(j.at("error").at("node") == "boom");
}

TEST_CASE("bad command lines and bad pipelines exit 2 and write nothing", "[cli]") {
  TempDir tmp;
  std::string db = tmp.file("b.db");
  std::string hello = src("examples/hello.lua");
  // One good run first, so the database exists and has something to compare against.
  run_json(hello, db);
  auto runs_count = [&] { return query_int(db, "select count(*) from runs"); };
  auto defs_count = [&] { return query_int(db, "select count(*) from definitions"); };
  REQUIRE(runs_count() == 1);
  int64_t defs = defs_count();

  SECTION("missing pipeline file") {
    std::string missing = tmp.file("no-such-pipeline.lua");
    auto r = orchrun({missing}, db);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, missing));
  }
  SECTION("a directory instead of a file") {
    auto r = orchrun({tmp.path()}, db);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, tmp.path()));
  }
  SECTION("malformed --input JSON") {
    auto r = orchrun({hello, "--input", R"({"name": )"}, db);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "--input"));
    CHECK(contains(r.err, "not valid JSON"));
  }
  SECTION("--input @file that does not exist") {
    std::string missing = tmp.file("missing.json");
    auto r = orchrun({hello, "--input", "@" + missing}, db);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, missing));
  }
  SECTION("--input @file with bad JSON names the file") {
    std::string bad = tmp.file("bad.json");
    write_file(bad, "{oops");
    auto r = orchrun({hello, "--input", "@" + bad}, db);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, bad));
  }
  SECTION("a Lua syntax error") {
    std::string f = tmp.file("syntax.lua");
    write_file(f,
               "local o = require \"orch\"\nreturn o.pipeline \"x\" {\n  o.node(\"a\", function() "
               "return {} end\n}\n");
    auto r = orchrun({f}, db);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "syntax.lua:"));
    // The message carries a line number right after the file name.
    auto at = r.err.find("syntax.lua:");
    REQUIRE(at != std::string::npos);
    CHECK(isdigit(static_cast<unsigned char>(r.err[at + 11])));
  }
  SECTION("an unknown node option") {
    std::string f = tmp.file("unknown_opt.lua");
    write_file(f,
               "local o = require \"orch\"\nreturn o.pipeline \"x\" {\n"
               "  o.node(\"a\", function() return {} end),\n"
               "  o.node(\"b\", function() return {} end, { retyr = 3 }),\n}\n");
    auto r = orchrun({f}, db);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "unknown_opt.lua:4:"));
    CHECK(contains(r.err, "retyr"));
  }
  SECTION("an unknown command-line option") {
    auto r = orchrun({hello, "--frobnicate"}, db);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "--frobnicate"));
  }
  SECTION("an option without its value") {
    auto r = orchrun({hello, "--db"}, "");
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "--db"));
  }
  SECTION("an empty --db path") {
    // SQLite would quietly use a throw-away temporary database: the run must not "succeed".
    for (auto args :
         {std::vector<std::string>{hello, "--db="}, std::vector<std::string>{hello, "--db", ""}}) {
      auto r = orchrun(args, "");
      INFO(r.out << r.err);
      CHECK(r.exit_code == 2);
      CHECK(contains(r.err, "--db"));
    }
  }
  SECTION("two pipeline files") {
    auto r = orchrun({hello, hello}, db);
    CHECK(r.exit_code == 2);
  }
  SECTION("a bad --progress mode") {
    auto r = orchrun({hello, "--progress", "fancy"}, db);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "--progress"));
  }
  // Whatever went wrong, nothing was written.
  CHECK(runs_count() == 1);
  CHECK(defs_count() == defs);
}

TEST_CASE("an invalid pipeline does not even create the database", "[cli]") {
  TempDir tmp;
  std::string db = tmp.file("fresh.db");
  std::string f = tmp.file("bad.lua");
  write_file(f, "local o = require \"orch\"\nreturn o.pipeline \"x\" {\n  o.node(\"a\", 42),\n}\n");
  auto r = orchrun({f}, db);
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "bad.lua:3:"));
  CHECK(!fs::exists(db));
}

TEST_CASE("a --db that is not an orchrun database is refused and left untouched", "[cli]") {
  TempDir tmp;
  std::string hello = src("examples/hello.lua");

  SECTION("garbage bytes") {
    std::string db = tmp.file("garbage.db");
    std::string garbage;
    for (int i = 0; i < 4096; i++) garbage += static_cast<char>((i * 7919 + 13) % 251);
    write_file(db, garbage);
    auto r = orchrun({hello}, db);
    INFO(r.err);
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "not an orchrun database"));
    CHECK(contains(r.err, db));
    CHECK(read_file(db) == garbage);
    CHECK(!fs::exists(db + "-wal"));
    // Reading commands refuse it too.
    auto rr = orchrun({"runs"}, db);
    INFO(rr.err);
    CHECK(rr.exit_code == 3);
    CHECK(contains(rr.err, "not an orchrun database"));
    CHECK(read_file(db) == garbage);
  }
  SECTION("another application's SQLite database") {
    std::string db = tmp.file("other.db");
    sqlite3* h = nullptr;
    REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
    REQUIRE(sqlite3_exec(h, "CREATE TABLE foo(x TEXT); INSERT INTO foo VALUES ('keep me');",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(h);
    std::string bytes = read_file(db);
    auto r = orchrun({hello}, db);
    INFO(r.err);
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, "not an orchrun database"));
    CHECK(read_file(db) == bytes);
    CHECK(query_str(db, "select x from foo") == "keep me");
    CHECK(query_int(db, "select count(*) from sqlite_master where name='runs'") == 0);
    CHECK(query_int(db, "pragma user_version") == 0);
  }
}

TEST_CASE("validate reports good and bad files", "[cli]") {
  TempDir tmp;
  std::string good = tmp.file("good.lua"), bad = tmp.file("bad.lua");
  write_file(good, read_file(src("examples/hello.lua")));
  write_file(bad,
             "local o = require \"orch\"\nreturn o.pipeline \"b\" {\n"
             "  o.node(\"a\", function() return {} end),\n"
             "  o.node(\"a\", function() return {} end),\n"
             "  o.node(\"c\", function() return {} end, { timeout = \"soon\" }),\n}\n");

  SECTION("human output") {
    auto r = orchrun({"validate", good, bad}, "");
    INFO("stdout:\n" << r.out << "\nstderr:\n" << r.err);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.out, good));
    CHECK(contains(r.out, "hello"));
    CHECK(!contains(r.out, bad));
    CHECK(contains(r.err, bad + ":5:"));
    CHECK(contains(r.err, "1 of 2"));
  }
  SECTION("--json") {
    auto r = orchrun({"validate", "--json", good, bad}, "");
    INFO("stdout:\n" << r.out << "\nstderr:\n" << r.err);
    CHECK(r.exit_code == 2);
    json j = parse_or_fail(r.out);
    REQUIRE(j.is_array());
    REQUIRE(j.size() == 2);
    CHECK(j[0].at("file") == good);
    CHECK(j[0].at("valid") == true);
    CHECK(j[0].at("pipeline") == "hello");
    CHECK(j[0].at("sha256") == sha256_hex(read_file(good)));
    CHECK(j[0].at("errors").empty());
    CHECK(j[1].at("file") == bad);
    CHECK(j[1].at("valid") == false);
    REQUIRE(!j[1].at("errors").empty());
    std::set<int> lines;
    for (auto& e : j[1].at("errors")) lines.insert(e.at("line").get<int>());
    CHECK(lines.count(5) == 1);
  }
  SECTION("every shipped file is valid") {
    std::vector<std::string> args = {"validate"};
    for (const char* dir : {"examples", "pipelines"})
      for (auto& e : fs::directory_iterator(src(dir)))
        if (e.path().extension() == ".lua" || e.path().extension() == ".json")
          args.push_back(e.path().string());
    auto r = orchrun(args, "");
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.err.empty());
  }
  SECTION("nothing to validate") {
    CHECK(orchrun({"validate"}, "").exit_code == 2);
  }
}

TEST_CASE("runs and inspect read back what was stored", "[cli]") {
  TempDir tmp;
  std::string db = tmp.file("ri.db");
  std::string hello_id = run_json(src("examples/hello.lua"), db).at("run_id");
  json rsum = run_json(src("examples/retries.lua"), db);
  std::string retries_id = rsum.at("run_id");
  std::string trace = rsum.at("trace_id");
  std::string failing = tmp.file("failing.lua");
  write_file(failing, kFailing);
  std::string failed_id = run_json(failing, db, "", "", 1).at("run_id");

  SECTION("runs --json lists every run, newest first") {
    auto r = orchrun({"runs", "--json"}, db);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    json j = parse_or_fail(r.out);
    REQUIRE(j.is_array());
    REQUIRE(j.size() == 3);
    CHECK(j[0].at("id") == failed_id);
    CHECK(j[0].at("status") == "failed");
    CHECK(j[0].at("error").at("node") == "boom");
    CHECK(j[1].at("id") == retries_id);
    CHECK(j[1].at("trace_id") == trace);
    CHECK(j[1].at("pipeline") == "retries-demo");
    CHECK(j[1].at("status") == "succeeded");
    CHECK(j[2].at("id") == hello_id);
  }
  SECTION("runs filters") {
    auto r = orchrun({"runs", "--json", "--status", "failed"}, db);
    REQUIRE(r.exit_code == 0);
    json j = parse_or_fail(r.out);
    REQUIRE(j.size() == 1);
    CHECK(j[0].at("id") == failed_id);
    r = orchrun({"runs", "--json", "--pipeline", "hello"}, db);
    j = parse_or_fail(r.out);
    REQUIRE(j.size() == 1);
    CHECK(j[0].at("id") == hello_id);
    r = orchrun({"runs", "--json", "--limit", "2"}, db);
    CHECK(parse_or_fail(r.out).size() == 2);
    r = orchrun({"runs", "--json", "--since", "1h"}, db);
    CHECK(parse_or_fail(r.out).size() == 3);
    // The same forms as the API's ?since=: RFC 3339 and unix ms too.
    r = orchrun({"runs", "--json", "--since", "2000-01-01T00:00:00Z"}, db);
    CHECK(parse_or_fail(r.out).size() == 3);
    r = orchrun({"runs", "--json", "--since", "2099-12-31T23:00:00+01:00"}, db);
    CHECK(parse_or_fail(r.out).empty());
    r = orchrun({"runs", "--json", "--since", "4102444800000"}, db);
    CHECK(parse_or_fail(r.out).empty());
    r = orchrun({"runs"}, db);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, retries_id));
    CHECK(contains(r.out, "retries-demo"));
  }
  SECTION("bad runs options exit 2") {
    auto r = orchrun({"runs", "--status", "bogus"}, db);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "--status"));
    CHECK(orchrun({"runs", "--limit", "0"}, db).exit_code == 2);
    r = orchrun({"runs", "--since", "yesterday-ish"}, db);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err,
                   "--since: 'yesterday-ish' is not a time (RFC 3339, unix ms, or a duration"));
  }
  SECTION("inspect --json has the run, its attempts and its events") {
    auto r = orchrun({"inspect", retries_id, "--json"}, db);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    json j = parse_or_fail(r.out);
    CHECK(j.at("id") == retries_id);
    CHECK(j.at("status") == "succeeded");
    CHECK(j.at("trace_id") == trace);
    const json& nodes = j.at("nodes");
    CHECK(static_cast<int64_t>(nodes.size()) ==
          query_int(db, "select count(*) from node_runs where run_id=" + sql_literal(retries_id)));
    std::vector<int> flaky_attempts;
    bool saw_fallback = false, saw_timeout = false;
    for (auto& n : nodes) {
      if (n.at("node") == "flaky") flaky_attempts.push_back(n.at("attempt"));
      if (n.at("node") == "always_down" && n.at("kind") == "fallback") saw_fallback = true;
      if (n.at("node") == "slow" && n.contains("error") && n["error"].at("type") == "timeout")
        saw_timeout = true;
    }
    std::sort(flaky_attempts.begin(), flaky_attempts.end());
    CHECK(flaky_attempts == std::vector<int>{1, 2, 3});
    CHECK(saw_fallback);
    CHECK(saw_timeout);
    const json& events = j.at("events");
    CHECK(static_cast<int64_t>(events.size()) ==
          query_int(db, "select count(*) from events where run_id=" + sql_literal(retries_id)));
    int started = 0, succeeded = 0;
    for (auto& e : events) {
      CHECK(e.at("trace_id") == trace);
      if (e.at("kind") == "run.started") started++;
      if (e.at("kind") == "run.succeeded") succeeded++;
    }
    CHECK(started == 1);
    CHECK(succeeded == 1);
  }
  SECTION("inspect of a failed run shows the traceback") {
    auto r = orchrun({"inspect", failed_id}, db);
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.out, "boom"));
    CHECK(contains(r.out, "kaboom"));
    CHECK(contains(r.out, "failing.lua"));
  }
  SECTION("inspect by a unique prefix") {
    // The shortest prefix that tells this run apart from the other two.
    size_t n = 1;
    for (const auto& other : {hello_id, failed_id}) {
      size_t k = 0;
      while (k < other.size() && other[k] == retries_id[k]) k++;
      n = std::max(n, k + 1);
    }
    std::string prefix = retries_id.substr(0, std::max<size_t>(n, 4));
    REQUIRE(prefix.size() < retries_id.size());
    auto r = orchrun({"inspect", prefix, "--json"}, db);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(parse_or_fail(r.out).at("id") == retries_id);
    r = orchrun({"inspect", prefix}, db);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, retries_id));
    CHECK(contains(r.out, "flaky"));
  }
  SECTION("inspect by a lowercase prefix, and an ambiguous prefix") {
    std::string lower = retries_id;
    for (auto& c : lower) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    auto r = orchrun({"inspect", lower.substr(0, lower.size() - 1), "--json"}, db);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    if (r.exit_code == 0) CHECK(parse_or_fail(r.out).at("id") == retries_id);
    // Runs made within the same second share their leading (time) characters.
    size_t k = 0;
    while (k < hello_id.size() && hello_id[k] == retries_id[k]) k++;
    REQUIRE(k >= 1);
    r = orchrun({"inspect", retries_id.substr(0, k)}, db);
    INFO(r.err);
    CHECK(r.exit_code != 0);
    CHECK(r.out.empty());
    CHECK(contains(r.err, "ambiguous"));
  }
  SECTION("inspect of an unknown id") {
    auto r = orchrun({"inspect", "NOSUCHRUN0000"}, db);
    INFO(r.err);
    CHECK(r.exit_code != 0);
    CHECK(r.out.empty());
    CHECK(contains(r.err, "NOSUCHRUN0000"));
  }
  SECTION("reading a database that does not exist") {
    std::string none = tmp.file("none.db");
    auto r = orchrun({"runs"}, none);
    INFO(r.err);
    CHECK(r.exit_code == 3);
    CHECK(contains(r.err, none));
    CHECK(!fs::exists(none));
  }
}

TEST_CASE("ORCHRUN_DB is used when --db is absent, and --db wins over it", "[cli]") {
  TempDir tmp;
  std::string envdb = tmp.file("x.db"), flagdb = tmp.file("flag.db");
  std::vector<std::string> env = {"ORCHRUN_DB=" + envdb};
  auto r = orchrun({src("examples/hello.lua"), "--json"}, "", env);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::string id = parse_or_fail(r.out).at("run_id");
  REQUIRE(fs::exists(envdb));
  CHECK(query_str(envdb, "select id from runs") == id);

  auto l = orchrun({"runs", "--json"}, "", env);
  REQUIRE(l.exit_code == 0);
  json j = parse_or_fail(l.out);
  REQUIRE(j.size() == 1);
  CHECK(j[0].at("id") == id);
  CHECK(orchrun({"inspect", id}, "", env).exit_code == 0);

  r = orchrun({src("examples/hello.lua")}, flagdb, env);
  CHECK(r.exit_code == 0);
  CHECK(query_int(flagdb, "select count(*) from runs") == 1);
  CHECK(query_int(envdb, "select count(*) from runs") == 1);
}

// bench/run.sh measures the chain with persistence off this way: SQLite's in-memory database,
// the same code path, and nothing written to disk.
TEST_CASE("a run with --db :memory: succeeds and writes no file", "[cli]") {
  TempDir tmp;
  auto r = orchrun({src("examples/hello.lua"), "--json"}, ":memory:", {}, tmp.path());
  INFO("stdout:\n" << r.out << "\nstderr:\n" << r.err);
  REQUIRE(r.exit_code == 0);
  json j = parse_or_fail(r.out);
  CHECK(j.at("status") == "succeeded");
  CHECK(j.at("nodes_succeeded") == 2);
  CHECK(j.at("db") == ":memory:");
  CHECK(fs::is_empty(tmp.path()));
}

TEST_CASE("the version and help flags, and no arguments", "[cli]") {
  auto v = orchrun({"--version"}, "");
  CHECK(v.exit_code == 0);
  CHECK(v.out == std::string("orchrun ") + ORCHRUN_VERSION + "\n");
  auto h = orchrun({"--help"}, "");
  CHECK(h.exit_code == 0);
  CHECK(contains(h.out, "Usage:"));
  CHECK(contains(h.out, "orchrun validate"));
  CHECK(orchrun({"-h"}, "").exit_code == 0);
  auto none = orchrun({}, "");
  CHECK(none.exit_code == 2);
  CHECK(contains(none.err, "Usage:"));
}

TEST_CASE("Ctrl-C cancels the run, records it, kills its processes and exits 130", "[cli]") {
  TempDir tmp;
  std::string db = tmp.file("slow.db"), pidfile = tmp.file("sh.pid"), file = tmp.file("slow.lua");
  write_file(file, R"(local o = require "orch"
return o.pipeline "slow" {
  o.parallel("wait", {
    o.node("argv", function() return o.exec { "sleep", "30" } end),
    o.node("shell", function() return o.exec { sh = "echo $$ > )" +
                       pidfile + R"(; exec sleep 30" } end),
    o.node("nap", function() o.sleep("30s"); return {} end),
  }),
  o.node("after", function() return {} end),
}
)");
  std::string out = tmp.file("out.txt"), err = tmp.file("err.txt");
  const ExecImage image({orchrun_bin(), file, "--db", db, "--progress", "plain"}, {"NO_COLOR=1"});
  auto start = std::chrono::steady_clock::now();
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int n = open("/dev/null", O_RDONLY);
    dup2(n, 0);
    dup2(o, 1);
    dup2(e, 2);
    image.exec();
  }
  // Whatever happens below, do not leave the child behind.
  struct Reaper {
    pid_t pid;
    bool reaped = false;
    ~Reaper() {
      if (!reaped) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
  } reaper{pid};

  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  // Wait (bounded) until the run is recorded as running with all three attempts started.
  bool ready = false;
  std::vector<pid_t> sleeps;
  while (elapsed() < 5) {
    if (try_query_int(db, "select count(*) from runs where status='running'") == 1 &&
        try_query_int(db, "select count(*) from node_runs where status='running'") == 3 &&
        !read_file(pidfile).empty()) {
      sleeps = children_named(pid, "sleep");
      if (sleeps.size() == 2) {
        ready = true;
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  INFO("stderr so far:\n" << read_file(err));
  REQUIRE(ready);
  pid_t sh_pid = atoi(read_file(pidfile).c_str());
  REQUIRE(sh_pid > 0);
  CHECK(std::count(sleeps.begin(), sleeps.end(), sh_pid) == 1);  // `exec sleep` kept the pid
  for (pid_t p : sleeps) REQUIRE(!process_gone(p));

  REQUIRE(kill(pid, SIGINT) == 0);
  auto sent = std::chrono::steady_clock::now();
  int status = 0;
  bool exited = false;
  while (std::chrono::steady_clock::now() - sent < std::chrono::seconds(5)) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) {
      exited = true;
      reaper.reaped = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  INFO("stdout:\n" << read_file(out) << "\nstderr:\n" << read_file(err));
  REQUIRE(exited);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
  CHECK(took < 3);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  CHECK(contains(read_file(err), "cancelling"));

  auto run = query(db, "select id, status, finished_at is not null from runs");
  REQUIRE(run.size() == 1);
  CHECK(run[0][1] == "cancelled");
  CHECK(run[0][2] == "1");
  std::string w = " where run_id=" + sql_literal(run[0][0]);
  for (const char* node : {"wait/argv", "wait/shell", "wait/nap"}) {
    INFO("node " << node);
    CHECK(query_str(db, std::string("select status from node_runs") + w + " and node_id='" + node +
                            "'") == "cancelled");
  }
  CHECK(query_int(db, "select count(*) from node_runs" + w +
                          " and status in ('running','pending','succeeded')") == 0);
  CHECK(query_int(db, "select count(*) from events" + w + " and kind='run.cancelled'") == 1);

  // The processes the nodes started are gone (allow a moment for the kernel to reap them).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (pid_t p : sleeps) {
    while (!process_gone(p) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    INFO("sleep pid " << p);
    CHECK(process_gone(p));
    if (!process_gone(p)) kill(p, SIGKILL);
  }
}

TEST_CASE("graph prints Mermaid and DOT", "[cli]") {
  std::string file = src("examples/conditions.lua");
  auto m = orchrun({"graph", file}, "");
  INFO(m.out << m.err);
  REQUIRE(m.exit_code == 0);
  CHECK(m.out.rfind("flowchart", 0) == 0);
  for (const char* id : {"classify", "shed_load", "carry_on", "page", "ticket", "note", "audit"})
    CHECK(contains(m.out, std::string("\"") + id + "\""));
  CHECK(contains(m.out, "-- critical -->"));
  CHECK(contains(m.out, "conditions-demo"));
  CHECK(m.err.empty());

  auto d = orchrun({"graph", file, "--format", "dot"}, "");
  INFO(d.out << d.err);
  REQUIRE(d.exit_code == 0);
  CHECK(d.out.rfind("digraph", 0) == 0);
  CHECK(contains(d.out, "->"));
  CHECK(!contains(d.out, "-->"));
  CHECK(contains(d.out, "label=\"critical\""));
  for (const char* id : {"classify", "page", "ticket", "note", "audit"})
    CHECK(contains(d.out, std::string("label=\"") + id + "\""));
  CHECK(std::count(d.out.begin(), d.out.end(), '{') == std::count(d.out.begin(), d.out.end(), '}'));
  CHECK(d.out.substr(d.out.size() - 2) == "}\n");

  CHECK(orchrun({"graph", file, "--format", "png"}, "").exit_code == 2);
  CHECK(orchrun({"graph", "/nonexistent/pipeline.lua"}, "").exit_code == 2);
}
