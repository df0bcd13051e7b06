// Hardening, finding 2: Lua code that keeps the CPU busy inside C functions must not outlive
// its timeout or SIGTERM, and must not hold orchrun serve. Through the real binary: the
// pattern bomb of the finding (string.rep("a", 3000):find(".-.-.-.-.-.-b") runs for minutes in
// LuaJIT's own matcher), a top-level endless loop sent to the API's validate, and Lua stuck in
// a C call (ffi) at SIGTERM.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "base/json_util.h"
#include "serve_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

std::string show(const HttpReply& r) {
  return "HTTP " + std::to_string(r.status) + " " + r.body.substr(0, 600) +
         (r.error.empty() ? "" : " (" + r.error + ")");
}

// The finding's pattern: minutes of backtracking in one C call.
const char* kBomb = R"(string.rep("a", 3000):find(".-.-.-.-.-.-b"))";

std::string bomb_pipeline(const std::string& name, const std::string& options,
                          const std::string& triggers = "") {
  return "local o = require 'orch'\nreturn o.pipeline '" + name + "' {\n" + triggers +
         "  o.node('bomb', function() return { r = " + kBomb + " } end" +
         (options.empty() ? "" : ", " + options) + "),\n}\n";
}

// Waits for the child `pid` at most timeout_s; its exit code (128+N for signal N), or -1 (then
// it is killed).
int wait_child(pid_t pid, double timeout_s) {
  auto t0 = Clock::now();
  while (since(t0) < timeout_s) {
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -1;
}

// Starts `orchrun FILE --db DB ARGS...` in the background and waits until its node runs.
pid_t start_one_shot(const TempDir& d, const std::string& file, std::vector<std::string> args) {
  std::vector<std::string> argv{orchrun_bin(), file, "--db", d.file("s.db"), "--progress", "none"};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t pid = spawn_quiet(argv);
  REQUIRE(pid > 0);
  // The node waits a little first, so that its start is committed (nothing is while it holds
  // the loop).
  bool started = eventually(
      [&] {
        return poll_int(d.file("s.db"), "SELECT count(*) FROM node_runs WHERE status='running'",
                        0) > 0;
      },
      10000);
  if (!started) kill(pid, SIGKILL);
  REQUIRE(started);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // well inside the C call
  return pid;
}

}  // namespace

TEST_CASE("a pattern bomb in a node with a timeout ends within the timeout + 1 s",
          "[hardening][cpu]") {
  TempDir d;
  write_file(d.file("bomb.lua"), bomb_pipeline("bomb", "{ timeout = '2s' }"));
  auto t0 = Clock::now();
  // Without the bound the node ran for 692 s: give up after 20.
  auto r =
      run_cmd({orchrun_bin(), d.file("bomb.lua"), "--db", d.file("s.db"), "--json"}, {}, "", 20);
  double took = since(t0);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 1);
  CHECK(took < 3.0);
  json j = parse_json(r.out, nullptr);
  REQUIRE(j.is_object());
  CHECK(j["status"] == "failed");
  std::string err =
      query_str(d.file("s.db"), "SELECT error_message FROM node_runs WHERE node_id='bomb'");
  CHECK(contains(err, "timed out after 2"));
  CHECK(contains(err, "bomb.lua:3"));  // the line of the find
}

TEST_CASE("pcall in a loop around a pattern bomb does not outlive the node's timeout",
          "[hardening][cpu]") {
  TempDir d;
  write_file(d.file("loop.lua"), std::string(R"(local o = require 'orch'
return o.pipeline 'loop' {
  o.node('spin', function()
    while true do pcall(function() return )") +
                                     kBomb + R"( end) end
  end, { timeout = '1s' }),
})");
  auto t0 = Clock::now();
  auto r = run_cmd({orchrun_bin(), d.file("loop.lua"), "--db", d.file("s.db")}, {}, "", 20);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 1);
  CHECK(since(t0) < 2.0);
  CHECK(contains(query_str(d.file("s.db"), "SELECT error_message FROM node_runs"),
                 "timed out after 1"));
}

TEST_CASE("SIGTERM ends a one-shot whose node is inside a pattern bomb, at once",
          "[hardening][cpu][signals]") {
  TempDir d;
  // No timeout at all.
  write_file(d.file("bomb.lua"), std::string(R"(local o = require 'orch'
return o.pipeline 'bomb' {
  o.node('bomb', function() o.sleep('100ms'); return { r = )") +
                                     kBomb + R"( } end),
})");
  pid_t pid = start_one_shot(d, d.file("bomb.lua"), {});
  auto t0 = Clock::now();
  kill(pid, SIGTERM);
  int code = wait_child(pid, 20);
  CHECK(code == 143);
  CHECK(since(t0) < 2.0);
  // Cancelled cleanly: the run is over, not left running.
  CHECK(query_str(d.file("s.db"), "SELECT status FROM runs") == "cancelled");
}

TEST_CASE("SIGTERM ends a one-shot stuck in a C call within its grace, and kills its children",
          "[hardening][cpu][signals]") {
  TempDir d;
  // A node that started a child process group, then a branch that blocks the loop in C code
  // (ffi: the count hook never runs there). Only the watchdog can end this process.
  write_file(d.file("stuck.lua"), R"(local o = require 'orch'
local ffi = require 'ffi'
ffi.cdef 'int pipe(int fds[2]); long read(int fd, void* buf, unsigned long n);'
return o.pipeline 'stuck' {
  o.parallel('both', {
    o.node('child', function() return o.exec { "sh", "-c", "echo $$ > child.pid; exec sleep 300" } end),
    o.node('block', function()
      o.sleep("300ms")
      -- read(2) on a pipe nobody writes: restarted after the signal handler (SA_RESTART)
      local fds, buf = ffi.new("int[2]"), ffi.new("char[1]")
      ffi.C.pipe(fds)
      ffi.C.read(fds[0], buf, 1)
    end),
  }),
})");
  std::vector<std::string> argv{
      orchrun_bin(), d.file("stuck.lua"), "--db", d.file("s.db"), "--allow",
      "ffi",         "--progress",        "none"};
  const ExecImage image(argv);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (chdir(d.path().c_str()) != 0) _exit(127);
    image.exec();
  }
  REQUIRE(eventually([&] { return !read_file(d.file("child.pid")).empty(); }, 10000));
  std::this_thread::sleep_for(std::chrono::milliseconds(800));  // block is in read(2) now
  pid_t child = std::stoi(read_file(d.file("child.pid")));
  REQUIRE(kill(child, 0) == 0);
  auto t0 = Clock::now();
  kill(pid, SIGTERM);
  int code = wait_child(pid, 30);
  double took = since(t0);
  CHECK(code == 143);
  CHECK(took < 12.0);  // the one-shot's grace is 10 s
  CHECK(took > 9.0);   // and the watchdog waited for it
  // The child process group went with it.
  CHECK(eventually([&] { return kill(child, 0) != 0; }, 3000));
}

TEST_CASE("serve: a pattern bomb in a webhook's node holds the server no longer than its timeout",
          "[hardening][cpu][serve]") {
  TempDir d;
  std::string dir = d.file("p");
  mkdir(dir.c_str(), 0755);
  write_file(dir + "/bomb.lua",
             bomb_pipeline("bomb", "{ timeout = '2s' }",
                           "  triggers = { o.webhook { path = '/hooks/bomb' } },\n"));
  write_file(dir + "/quick.lua", R"(local o = require 'orch'
return o.pipeline 'quick' { o.node('n', function() return { ok = true } end) }
)");
  ServeProcess srv(dir, d.file("s.db"));
  auto t0 = Clock::now();
  auto hook = srv.post("/hooks/bomb", "{}");
  INFO(show(hook));
  REQUIRE(hook.status == 202);
  // The server answers again once the node's deadline stopped it (without the bound: never).
  auto health = srv.request("GET", "/healthz", "", {}, 8000);
  INFO(show(health));
  CHECK(health.status == 200);
  CHECK(since(t0) < 3.0);
  auto quick = srv.post("/api/pipelines/quick/runs", "{}");
  REQUIRE(quick.status == 202);
  CHECK(srv.wait_run(quick.json_body()["run_id"], "succeeded")["status"] == "succeeded");
  std::string bomb_run = hook.json_body()["run_id"];
  json b = srv.wait_run(bomb_run, "failed");
  CHECK(b["status"] == "failed");
  CHECK(srv.stop() == 0);
  CHECK(srv.stop_seconds() < 3.0);
}

TEST_CASE("serve: validate loads a source off the loop; the server answers meanwhile",
          "[hardening][cpu][serve]") {
  TempDir d;
  std::string dir = d.file("p");
  mkdir(dir.c_str(), 0755);
  write_file(dir + "/quick.lua", R"(local o = require 'orch'
return o.pipeline 'quick' { o.node('n', function() return { ok = true } end) }
)");
  ServeProcess srv(dir, d.file("s.db"));
  const std::string spin = "while true do end";
  const std::string bomb = std::string("local x = ") + kBomb;
  // Four loads that never finish by themselves (the load limit, 10 s, ends them) ...
  std::vector<std::thread> clients;
  std::vector<HttpReply> replies(4);
  for (int i = 0; i < 4; i++)
    clients.emplace_back([&, i] {
      replies[i] = srv.request("POST", "/api/pipelines/v" + std::to_string(i) + "/validate",
                               i % 2 ? bomb : spin, {}, 20000);
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // ... while the server goes on: health, another run, and a fifth validate is refused.
  auto t0 = Clock::now();
  auto health = srv.get("/healthz");
  CHECK(health.status == 200);
  CHECK(since(t0) < 1.0);
  auto quick = srv.post("/api/pipelines/quick/runs", "{}");
  REQUIRE(quick.status == 202);
  CHECK(srv.wait_run(quick.json_body()["run_id"], "succeeded", 3000)["status"] == "succeeded");
  auto fifth = srv.request("POST", "/api/pipelines/v5/validate", spin);
  INFO(show(fifth));
  CHECK(fifth.status == 503);
  CHECK(fifth.header("retry-after") == "2");
  CHECK(fifth.error_code() == "busy");
  for (auto& t : clients) t.join();
  for (auto& r : replies) {
    INFO(show(r));
    CHECK(r.status == 422);
    CHECK(contains(r.body, "loading took longer than 10000 ms"));
  }
  // A valid source still validates (off the loop too).
  auto good = srv.request("POST", "/api/pipelines/quick/validate",
                          "local o = require 'orch'\nreturn o.pipeline 'quick' "
                          "{ o.node('n', function() end) }\n");
  INFO(show(good));
  CHECK(good.status == 200);
  CHECK(good.json_body()["valid"] == true);
}

TEST_CASE("serve: a shutdown does not wait for a validate that loops", "[hardening][cpu][serve]") {
  TempDir d;
  std::string dir = d.file("p");
  mkdir(dir.c_str(), 0755);
  ServeProcess srv(dir, d.file("s.db"));
  std::thread client(
      [&] { srv.request("POST", "/api/pipelines/x/validate", "while true do end"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(srv.stop() == 0);
  CHECK(srv.stop_seconds() < 3.0);
  client.join();
}
