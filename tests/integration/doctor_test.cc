// orchrun doctor, GET /api/doctor and the doctor's lines in serve's log: through the real
// binary, on real files (a store made by a run, a foreign SQLite file, a damaged one, files of
// the wrong mode, an address already in use), each problem named with what to do, and nothing
// stored changed by looking.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "base/json_util.h"
#include "serve_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;
using namespace orch::test::serve;

namespace {

const char kHello[] = R"(local o = require "orch"
return o.pipeline "hello" { o.node("a", function() return { n = 1 } end) }
)";

// The check of that name in `orchrun doctor --json` / GET /api/doctor output (null if none).
json check_named(const json& report, const std::string& name) {
  for (const auto& c : report.at("checks"))
    if (c.at("name") == name) return c;
  return nullptr;
}

void exec_sql(const std::string& db, const std::string& sql) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(h, sql.c_str(), nullptr, nullptr, &err);
  INFO((err ? err : ""));
  sqlite3_free(err);
  sqlite3_close(h);
  REQUIRE(rc == SQLITE_OK);
}

json doctor_json(const std::vector<std::string>& args, const std::string& cwd, int* code) {
  std::vector<std::string> a = {"doctor", "--json", "--listen", "127.0.0.1:0"};
  a.insert(a.end(), args.begin(), args.end());
  auto r = orchrun(a, "", {}, cwd);
  INFO(r.out << r.err);
  *code = r.exit_code;
  json j = json::parse(r.out, nullptr, false);
  REQUIRE(j.is_object());
  return j;
}

}  // namespace

TEST_CASE("orchrun doctor: a healthy set-up passes; the text form says each check", "[doctor]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"hello.lua", kHello}});
  std::string db = tmp.file("state/orchrun.db");
  SECTION("before the first run the store is a warning, not a failure") {
    int code = -1;
    json j = doctor_json({dir, "--db", db}, tmp.path(), &code);
    CHECK(code == 0);
    CHECK(check_named(j, "store").at("status") == "warn");
    CHECK(has(check_named(j, "store").at("message").get<std::string>(), "does not exist yet"));
    CHECK(access(db.c_str(), F_OK) != 0);  // looking did not create it
  }
  REQUIRE(orchrun({dir + "/hello.lua", "--quiet"}, db).exit_code == 0);
  write_file(tmp.file("secrets"), "API_KEY=abc\n");
  chmod(tmp.file("secrets").c_str(), 0600);
  write_file(tmp.file("token"), "0123456789abcdef0123456789abcdef\n");
  chmod(tmp.file("token").c_str(), 0600);
  std::vector<std::string> args = {
      dir, "--db", db, "--secrets", tmp.file("secrets"), "--token-file", tmp.file("token")};
  int code = -1;
  json j = doctor_json(args, tmp.path(), &code);
  INFO(j.dump(2));
  CHECK(code == 0);
  CHECK(j.at("ok") == true);
  CHECK(j.at("failures") == 0);
  for (const char* name : {"store", "store.schema", "store.integrity", "store.mode", "secrets",
                           "pipelines", "listen", "token"})
    CHECK(check_named(j, name).value("status", "") == "ok");
  CHECK(has(check_named(j, "store.schema").at("message").get<std::string>(), "(current)"));
  CHECK(has(check_named(j, "pipelines").at("message").get<std::string>(), "1 pipeline(s)"));
  // What the machine has is reported, whatever it is.
  for (const char* name : {"disk.store", "libcurl", "tzdata"})
    CHECK(!check_named(j, name).is_null());
  // --full runs integrity_check instead of quick_check.
  json full = doctor_json({dir, "--db", db, "--full"}, tmp.path(), &code);
  CHECK(has(check_named(full, "store.integrity").at("message").get<std::string>(),
            "integrity_check passed"));

  std::vector<std::string> text_args = {"doctor", "--listen", "127.0.0.1:0"};
  text_args.insert(text_args.end(), args.begin(), args.end());
  auto r = orchrun(text_args, "", {}, tmp.path());
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(has(r.out, "ok    store.integrity    PRAGMA quick_check passed"));
  // "all N checks passed", or with a warning about this machine (little free space, no
  // tzdata), "N check(s): 0 failed, ...".
  CHECK((has(r.out, " checks passed") || has(r.out, ": 0 failed, ")));
  CHECK(!has(r.out, "\nfail "));
}

TEST_CASE("orchrun doctor: each problem fails with what to do; nothing stored changes",
          "[doctor]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"hello.lua", kHello}});
  std::string db = tmp.file("orchrun.db");
  REQUIRE(orchrun({dir + "/hello.lua", "--quiet"}, db).exit_code == 0);
  int code = -1;

  SECTION("a SQLite file of another application is refused and left as it was") {
    std::string other = tmp.file("other.db");
    exec_sql(other, "CREATE TABLE t(a); INSERT INTO t VALUES (1);");
    std::string before = read_file(other);
    json j = doctor_json({dir, "--db", other}, tmp.path(), &code);
    CHECK(code == 1);
    json s = check_named(j, "store");
    CHECK(s.at("status") == "fail");
    CHECK(has(s.at("message").get<std::string>(), "not an orchrun database"));
    CHECK(has(s.at("fix").get<std::string>(), "--db"));
    CHECK(read_file(other) == before);
  }
  SECTION("a damaged store fails quick_check, naming the pages") {
    std::string bad = tmp.file("damaged.db");
    {
      std::string bytes = read_file(db);
      REQUIRE(bytes.size() > 4096 * 6);
      for (size_t i = 4096 * 3; i < 4096 * 6; i++) bytes[i] = '\xff';
      write_file(bad, bytes);
    }
    json j = doctor_json({dir, "--db", bad}, tmp.path(), &code);
    CHECK(code == 1);
    json s = check_named(j, "store.integrity");
    INFO(j.dump(2));
    CHECK(s.at("status") == "fail");
    CHECK(has(s.at("message").get<std::string>(), "quick_check: "));
    CHECK(has(s.at("message").get<std::string>(), "Page "));
    CHECK(has(s.at("fix").get<std::string>(), "backup"));
  }
  SECTION("a store written by a newer orchrun") {
    std::string newer = tmp.file("newer.db");
    write_file(newer, read_file(db));
    exec_sql(newer, "PRAGMA user_version = 99;");
    json j = doctor_json({dir, "--db", newer}, tmp.path(), &code);
    CHECK(code == 1);
    CHECK(check_named(j, "store.schema").at("status") == "fail");
    CHECK(has(check_named(j, "store.schema").at("message").get<std::string>(),
              "version 99 is newer than this orchrun"));
  }
  SECTION("files others can read: the store warns, the secrets and the token fail") {
    chmod(db.c_str(), 0644);
    write_file(tmp.file("secrets"), "API_KEY=abc\n");
    chmod(tmp.file("secrets").c_str(), 0644);
    write_file(tmp.file("token"), "0123456789abcdef0123456789abcdef\n");
    chmod(tmp.file("token").c_str(), 0644);
    json j = doctor_json(
        {dir, "--db", db, "--secrets", tmp.file("secrets"), "--token-file", tmp.file("token")},
        tmp.path(), &code);
    INFO(j.dump(2));
    CHECK(code == 1);
    CHECK(check_named(j, "store.mode").at("status") == "warn");
    CHECK(check_named(j, "store.mode").at("fix") == "chmod 600 " + db);
    CHECK(check_named(j, "secrets").at("status") == "fail");
    CHECK(has(check_named(j, "secrets").at("message").get<std::string>(), "mode 0644"));
    CHECK(check_named(j, "token").at("status") == "fail");
    CHECK(check_named(j, "token").at("fix") == "chmod 600 " + tmp.file("token"));
    CHECK(j.at("failures") == 2);
  }
  SECTION("a short token") {
    write_file(tmp.file("token"), "short\n");
    chmod(tmp.file("token").c_str(), 0600);
    json j = doctor_json({dir, "--db", db, "--token-file", tmp.file("token")}, tmp.path(), &code);
    CHECK(code == 1);
    CHECK(has(check_named(j, "token").at("message").get<std::string>(), "5 characters"));
  }
  SECTION("invalid pipelines, with file:line, and a pipeline defined twice") {
    write_file(dir + "/bad.lua",
               "local o = require \"orch\"\nreturn o.pipeline \"bad\" {\n  o.node(\"a\", 42) }\n");
    write_file(
        dir + "/hello.json",
        R"({"version": "1.0", "nodes": [{"id": "a", "type": "notify", "config": {"driver": "console"}}]})");
    json j = doctor_json({dir, "--db", db}, tmp.path(), &code);
    INFO(j.dump(2));
    CHECK(code == 1);
    json b = check_named(j, "pipeline bad.lua");
    CHECK(b.at("status") == "fail");
    CHECK(has(b.at("message").get<std::string>(), dir + "/bad.lua:3: "));
    CHECK(has(b.at("fix").get<std::string>(), "orchrun validate " + dir + "/bad.lua"));
    json twice = check_named(j, "pipeline hello");
    CHECK(twice.at("status") == "fail");
    CHECK(has(twice.at("message").get<std::string>(), "define the same pipeline"));
    CHECK(check_named(j, "pipelines").is_null());  // no "all valid" line
  }
  SECTION("the listen address is in use") {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(listen(fd, 1) == 0);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    std::string addr = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
    json j = doctor_json({dir, "--db", db, "--listen", addr}, tmp.path(), &code);
    close(fd);
    CHECK(code == 1);
    CHECK(check_named(j, "listen").at("status") == "fail");
    CHECK(check_named(j, "listen").at("message") ==
          addr + " is in use (another orchrun serve, or another server)");
  }
  SECTION("a wide listen address without a token") {
    json j = doctor_json({dir, "--db", db, "--listen", "0.0.0.0:0"}, tmp.path(), &code);
    CHECK(code == 1);
    CHECK(check_named(j, "token").at("status") == "fail");
    CHECK(has(check_named(j, "token").at("fix").get<std::string>(), "--token-file"));
  }
  SECTION("a misspelt option is a usage error, not a check") {
    auto r = orchrun({"doctor", dir, "--outcome", "x"}, db, {}, tmp.path());
    CHECK(r.exit_code == 2);
    CHECK(has(r.err, "unknown option --outcome"));
  }
  // Whatever was found, the store orchrun made is as it was.
  CHECK(query_int(db, "SELECT count(*) FROM runs WHERE status = 'succeeded'") == 1);
}

TEST_CASE("serve: the doctor's problems are logged at start; GET /api/doctor answers them",
          "[doctor][serve]") {
  TempDir tmp;
  std::string dir = pipeline_dir(
      tmp, {{"hello.lua", kHello},
            {"bad.lua", "local o = require \"orch\"\nreturn o.pipeline \"bad\" {\n  nme = 1 }\n"}});
  std::string db = tmp.file("s.db");
  REQUIRE(orchrun({dir + "/hello.lua", "--quiet"}, db).exit_code == 0);
  chmod(db.c_str(), 0644);
  ServeProcess srv(dir, db);
  CHECK(has(srv.log(), "doctor: warn store.mode: " + db + " has mode 0644"));
  auto r = srv.get("/api/doctor");
  INFO(show(r));
  CHECK(r.status == 503);  // a pipeline fails to load
  json j = r.json_body();
  CHECK(j.at("ok") == false);
  CHECK(check_named(j, "pipeline " + dir + "/bad.lua").at("status") == "fail");
  CHECK(has(check_named(j, "pipeline " + dir + "/bad.lua").at("message").get<std::string>(),
            "bad.lua:"));
  CHECK(check_named(j, "store.integrity").at("status") == "ok");
  CHECK(check_named(j, "libcurl").is_object());
  CHECK(check_named(j, "listen").is_null());  // serve is the one listening
  // The file fixed, the registry reloads it and the doctor agrees.
  write_atomic(
      dir + "/bad.lua",
      "local o = require \"orch\"\nreturn o.pipeline \"bad\" { o.node(\"a\", function() end) }\n");
  chmod(db.c_str(), 0600);
  HttpReply last;
  CHECK(eventually(
      [&] {
        last = srv.get("/api/doctor");
        return last.status == 200;
      },
      8000, 50));
  INFO(show(last));
  CHECK(last.json_body().at("failures") == 0);
  CHECK(has(check_named(last.json_body(), "pipelines").at("message").get<std::string>(),
            "2 pipeline(s)"));
  CHECK(srv.stop() == 0);
}
