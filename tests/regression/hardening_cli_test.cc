// Hardening findings of the command line and the store's files, through the real binary:
// credentials kept from child processes, file modes under umask 022, a gate whose timeout has
// passed shown as decided, Last-Event-ID: 0, logs --follow with no server, unknown commands.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "base/json_util.h"
#include "serve_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

int mode_of(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 07777);
}

const char* kToken = "tok-7f3a9c1e5b2d4806a1c3e5f7";

}  // namespace

TEST_CASE("o.exec children do not inherit ORCHRUN_TOKEN, and the token is redacted",
          "[hardening][secrets]") {
  TempDir d;
  write_file(d.file("env.lua"), R"(
local o = require "orch"
return o.pipeline "env" {
  o.node("child_env", function() return { env = o.exec { "env", check = true }.stdout } end),
  o.node("read", function() return { token = os.getenv("ORCHRUN_TOKEN") } end),
})");
  auto r = orchrun({d.file("env.lua"), "--json", "--allow", "os"}, d.file("s.db"),
                   {std::string("ORCHRUN_TOKEN=") + kToken, "ORCHRUN_SECRET_X=hidden-value-1"});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  const std::string stored =
      query_str(d.file("s.db"), "SELECT group_concat(output, '|') FROM node_runs");
  INFO(stored);
  CHECK_FALSE(contains(stored, "ORCHRUN_TOKEN="));  // not inherited by the child
  CHECK_FALSE(contains(stored, "ORCHRUN_SECRET_X"));
  CHECK(contains(stored, "PATH="));       // the rest of the environment is
  CHECK_FALSE(contains(stored, kToken));  // read by the node: stored redacted
  CHECK(contains(stored, "\"token\":\"***\""));
  CHECK_FALSE(contains(r.out, kToken));
}

TEST_CASE("the store and workspaces are created for their owner only under umask 022",
          "[hardening][files]") {
  TempDir d;
  write_file(d.file("ws.lua"), R"(
local o = require "orch"
return o.pipeline "ws" {
  o.node("write", function(ctx)
    o.fs.write(ctx.workspace .. "/out.txt", "x")
    return { ws = ctx.workspace }
  end),
})");
  const std::string db = d.file("state/sub/orchrun.db");
  auto r = run_cmd({"sh", "-c", "umask 022 && exec \"$0\" \"$@\"", orchrun_bin(), d.file("ws.lua"),
                    "--json", "--db", db});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(mode_of(db) == 0600);
  CHECK(mode_of(d.file("state/sub")) == 0700);  // the directory it made
  const std::string ws = query_str(db, "SELECT workspace FROM runs");
  REQUIRE_FALSE(ws.empty());
  CHECK(mode_of(ws) == 0700);
  CHECK(mode_of(d.file("state/sub/workspaces")) == 0700);
  // An existing database keeps the mode its operator gave it.
  REQUIRE(chmod(db.c_str(), 0640) == 0);
  auto again = orchrun({d.file("ws.lua"), "--json"}, db);
  REQUIRE(again.exit_code == 0);
  CHECK(mode_of(db) == 0640);
}

TEST_CASE("a gate whose timeout passed shows as timed out before anyone resumes the run",
          "[hardening][approval]") {
  TempDir d;
  write_file(d.file("gate.lua"), R"(
local o = require "orch"
return o.pipeline "gate" {
  o.approve("ok", { message = "go?", timeout = "1s", on_timeout = "reject" }),
  o.node("after", function() return { v = 1 } end),
})");
  const std::string db = d.file("g.db");
  auto r = orchrun({d.file("gate.lua"), "--json"}, db);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 4);  // awaiting approval
  const std::string id = query_str(db, "SELECT id FROM runs");
  auto before = orchrun({"inspect", id, "--json"}, db);
  json b = parse_json(before.out, nullptr);
  REQUIRE(b["approvals"].size() == 1);
  CHECK(b["approvals"][0]["status"] == "waiting");
  CHECK_FALSE(b["approvals"][0].contains("pending"));

  std::this_thread::sleep_for(std::chrono::milliseconds(1300));
  auto after = orchrun({"inspect", id, "--json"}, db);
  json a = parse_json(after.out, nullptr);
  INFO(after.out);
  CHECK(a["approvals"][0]["status"] == "timed_out");
  CHECK(a["approvals"][0]["decided_by"] == "timeout");
  CHECK(a["approvals"][0]["pending"] == true);
  auto text = orchrun({"inspect", id}, db);
  CHECK(contains(text.out, "timed_out by timeout"));
  CHECK(contains(text.out, "applied when the run resumes"));
  auto runs = orchrun({"runs"}, db);
  INFO(runs.out);
  CHECK(contains(runs.out, "ok: gate timed out at"));
  auto runs_json = orchrun({"runs", "--json"}, db);
  json rj = parse_json(runs_json.out, nullptr);
  REQUIRE(rj.size() == 1);
  CHECK(rj[0]["gates_timed_out"] == json::array({"ok"}));
  // Nothing was written by reading: the run applies it when resumed, and fails (reject).
  CHECK(query_str(db, "SELECT status FROM approvals") == "waiting");
  auto res = orchrun({"resume", id, "--json"}, db);
  INFO(res.out << res.err);
  CHECK(res.exit_code == 1);
  CHECK(query_str(db, "SELECT status FROM approvals") == "timed_out");
  json done = parse_json(orchrun({"inspect", id, "--json"}, db).out, nullptr);
  CHECK_FALSE(done["approvals"][0].contains("pending"));
}

TEST_CASE("serve: Last-Event-ID: 0 replays from the first event", "[hardening][serve][sse]") {
  TempDir d;
  const std::string dir = d.file("p");
  REQUIRE(mkdir(dir.c_str(), 0755) == 0);
  write_file(dir + "/one.lua", R"(
local o = require "orch"
return o.pipeline "one" { o.node("a", function() return { v = 1 } end) })");
  ServeProcess srv(dir, d.file("s.db"));
  auto st = srv.post("/api/pipelines/one/runs", R"({"input":{}})");
  REQUIRE(st.status == 202);
  const std::string id = st.json_body()["run_id"];
  srv.wait_run(id, "succeeded");
  {
    SseReader sse(srv.port(), "/api/events", {{"Last-Event-ID", "0"}});
    REQUIRE(sse.status() == 200);
    auto first = sse.next(3000);
    REQUIRE(first);
    CHECK(first->id == 1);
    CHECK(first->event == "run.started");
  }
  {
    // No position: from now on (nothing replayed).
    SseReader sse(srv.port(), "/api/events");
    REQUIRE(sse.status() == 200);
    CHECK_FALSE(sse.next(500));
  }
  CHECK(srv.stop() == 0);
}

TEST_CASE("logs --follow with no server reachable says so within seconds", "[hardening][cli]") {
  TempDir d;
  // Port 9 (discard): nothing listens on it here.
  auto r = run_cmd({orchrun_bin(), "logs", "01ABCDEFGHJKMNPQRSTVWXYZ00", "--follow", "--server",
                    "http://127.0.0.1:9", "--db", d.file("none.db")},
                   {}, "", 20);
  INFO(r.out << r.err);
  CHECK(r.exit_code != 0);
  CHECK(contains(r.err, "cannot reach the server at http://127.0.0.1:9"));
  CHECK(contains(r.err, "giving up"));
  CHECK(r.seconds < 10);
}

TEST_CASE("an unknown subcommand says unknown command", "[hardening][cli]") {
  TempDir d;
  auto r = run_cmd({orchrun_bin(), "doctr"}, {}, d.path());
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "unknown command 'doctr'"));
  CHECK_FALSE(contains(r.err, "cannot read pipeline file"));
  // A path (or a name with an extension) is still a pipeline file.
  auto f = run_cmd({orchrun_bin(), "missing.lua"}, {}, d.path());
  CHECK(f.exit_code == 2);
  CHECK(contains(f.err, "cannot read pipeline file"));
  // A file named like a word, present in the directory, is run.
  write_file(d.file("hello"), R"(
local o = require "orch"
return o.pipeline "w" { o.node("a", function() return { v = 1 } end) })");
  auto w = run_cmd({orchrun_bin(), "hello", "--db", d.file("w.db")}, {}, d.path());
  INFO(w.out << w.err);
  CHECK(w.exit_code == 0);
}
