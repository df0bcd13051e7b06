// Hardening, findings 3 and 4: what a dead orchrun leaves behind. Through the real binary,
// with kill -9: the o.exec process groups of the dead owner end before the run goes on
// (resume, cancel, a server's takeover), a pid now used by another orchrun is not taken for
// the owner, a running server notices dead owners within seconds, and runs/inspect say
// "orphaned".
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <sstream>
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

// A process that runs (zombies do not: a killed child of a dead orchrun waits for init).
bool running(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = s.rfind(')');
  if (close == std::string::npos || close + 2 >= s.size()) return false;
  char state = s[close + 2];
  return state != 'Z' && state != 'X';
}

std::vector<pid_t> pids_in(const std::string& file) {
  std::vector<pid_t> out;
  std::istringstream in(read_file(file));
  long p;
  while (in >> p) out.push_back(static_cast<pid_t>(p));
  return out;
}

// A node whose command notes its pid and then waits until `marker` exists (at most 300 s).
// Its child `sleep` keeps the group busy even after the shell is gone.
std::string waiting_pipeline(const TempDir& d, const std::string& name) {
  return "local o = require 'orch'\nreturn o.pipeline '" + name +
         "' {\n  o.node('work', function()\n"
         "    return o.exec { 'sh', '-c', 'echo $$ >> " +
         d.file("pids") + "; i=0; while [ ! -f " + d.file("marker") +
         " ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done', check = true }\n"
         "  end),\n}\n";
}

// Runs the pipeline in the background until its command has started `n` times in all, then
// kill -9 of orchrun. Returns the dead orchrun's pid.
pid_t start_and_kill(const TempDir& d, const std::string& file, size_t n) {
  pid_t pid = spawn_quiet({orchrun_bin(), file, "--db", d.file("s.db"), "--progress", "none"});
  REQUIRE(pid > 0);
  bool started = eventually([&] { return pids_in(d.file("pids")).size() >= n; }, 10000);
  // The kill lands once the groups are on record: orchrun commits a group right after its
  // spawn, and a loaded machine can let the command write its pid first. (A crash inside that
  // window, between posix_spawn and the commit, leaves a group the store does not know.)
  started = started && eventually(
                           [&] {
                             return query_int(d.file("s.db"),
                                              "SELECT count(*) FROM run_processes") >=
                                    static_cast<int64_t>(n);
                           },
                           10000);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  REQUIRE(started);
  return pid;
}

pid_t spawn_resume(const TempDir& d, const std::string& run_id) {
  return spawn_quiet(
      {orchrun_bin(), "resume", run_id, "--db", d.file("s.db"), "--progress", "none"});
}

int wait_exit(pid_t pid, int timeout_ms) {
  int code = -1;
  bool done = eventually(
      [&] {
        int st = 0;
        if (waitpid(pid, &st, WNOHANG) != pid) return false;
        code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return true;
      },
      timeout_ms);
  if (!done) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  return code;
}

}  // namespace

TEST_CASE("kill -9: resume ends the dead owner's process group before the node runs again",
          "[hardening][orphans]") {
  TempDir d;
  write_file(d.file("p.lua"), waiting_pipeline(d, "p"));
  pid_t dead = start_and_kill(d, d.file("p.lua"), 1);
  pid_t first = pids_in(d.file("pids"))[0];
  // The command outlived its orchrun.
  REQUIRE(running(first));
  std::string id = query_str(d.file("s.db"), "SELECT id FROM runs");
  CHECK(query_int(d.file("s.db"), "SELECT count(*) FROM run_processes WHERE ended_at IS NULL") ==
        1);

  // runs and inspect say what happened.
  auto runs = orchrun({"runs"}, d.file("s.db"));
  INFO(runs.out);
  CHECK(contains(runs.out, "orphaned"));
  CHECK(contains(runs.out, "its process " + std::to_string(dead) + " is gone"));
  auto insp = orchrun({"inspect", id}, d.file("s.db"));
  CHECK(contains(insp.out, "orphaned (running in the store; its process"));
  auto runs_json = parse_json(orchrun({"runs", "--json"}, d.file("s.db")).out, nullptr);
  REQUIRE(runs_json.is_array());
  CHECK(runs_json[0]["orphaned"] == true);
  CHECK(runs_json[0]["status"] == "running");

  // Resume: when the command starts again, the first copy is already gone.
  pid_t resumer = spawn_resume(d, id);
  REQUIRE(eventually([&] { return pids_in(d.file("pids")).size() >= 2; }, 10000));
  CHECK_FALSE(running(first));
  CHECK(query_str(d.file("s.db"), "SELECT ended_how FROM run_processes WHERE pgid=" +
                                      std::to_string(first)) == "terminated");
  // The next attempt's group is on record, open (written with the commit after the spawn:
  // the command may have written its pid before that under load).
  pid_t second = pids_in(d.file("pids"))[1];
  CHECK(eventually(
      [&] {
        return query_int(d.file("s.db"),
                         "SELECT count(*) FROM run_processes WHERE ended_at IS NULL AND pgid=" +
                             std::to_string(second)) == 1;
      },
      5000));
  write_file(d.file("marker"), "");
  CHECK(wait_exit(resumer, 10000) == 0);
  CHECK(query_str(d.file("s.db"), "SELECT status FROM runs") == "succeeded");
  // Its group ended normally, and the trace says what the resume did.
  CHECK(query_int(d.file("s.db"), "SELECT count(*) FROM run_processes WHERE ended_at IS NULL") ==
        0);
  std::string ev =
      query_str(d.file("s.db"), "SELECT data FROM events WHERE kind='run.orphans_ended'");
  CHECK(contains(ev, "ended by SIGTERM"));
  CHECK(contains(ev, "left by pid " + std::to_string(dead)));
}

TEST_CASE("kill -9: a group that ignores SIGTERM is killed after the grace; cancel ends it too",
          "[hardening][orphans]") {
  TempDir d;
  write_file(d.file("p.lua"), R"(local o = require 'orch'
return o.pipeline 'stubborn' {
  o.node('work', function()
    return o.exec { 'sh', '-c', 'trap "" TERM; echo $$ >> )" +
                                  d.file("pids") +
                                  R"(; while true; do sleep 0.1; done' }
  end),
})");
  start_and_kill(d, d.file("p.lua"), 1);
  pid_t first = pids_in(d.file("pids"))[0];
  REQUIRE(running(first));
  std::string id = query_str(d.file("s.db"), "SELECT id FROM runs");
  auto t0 = std::chrono::steady_clock::now();
  auto c = orchrun({"cancel", id}, d.file("s.db"));
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(c.out << c.err);
  CHECK(c.exit_code == 0);
  CHECK(contains(c.out, "1 process group(s) it left ended"));
  CHECK(contains(c.out, "SIGTERM, then SIGKILL after 2000 ms"));
  CHECK(took >= 1.9);  // it waited out the grace
  CHECK_FALSE(running(first));
  CHECK(query_str(d.file("s.db"), "SELECT status FROM runs") == "cancelled");
  CHECK(query_str(d.file("s.db"), "SELECT ended_how FROM run_processes") == "killed");
}

TEST_CASE("a dead owner's pid now used by another orchrun does not block resume",
          "[hardening][orphans]") {
  TempDir d;
  write_file(d.file("p.lua"), waiting_pipeline(d, "p"));
  start_and_kill(d, d.file("p.lua"), 1);
  pid_t first = pids_in(d.file("pids"))[0];
  std::string id = query_str(d.file("s.db"), "SELECT id FROM runs");
  // Another orchrun (a server on another database) now has a pid: pretend the dead owner had
  // it, as after pid reuse. Its identity (start time) is not the one the store recorded.
  std::string other_dir = d.file("other");
  mkdir(other_dir.c_str(), 0755);
  ServeProcess other(other_dir, d.file("other.db"));
  std::string recorded = query_str(d.file("s.db"), "SELECT owner_start FROM runs");
  REQUIRE(contains(recorded, ":"));
  query(d.file("s.db"), "UPDATE runs SET owner_pid=" + std::to_string(other.pid()) +
                            " WHERE id=" + sql_literal(id));
  // Shown as orphaned, and resumable.
  CHECK(contains(orchrun({"runs"}, d.file("s.db")).out, "orphaned"));
  write_file(d.file("marker"), "");
  auto r = run_cmd({orchrun_bin(), "resume", id, "--db", d.file("s.db"), "--progress", "none"}, {},
                   "", 30);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(query_str(d.file("s.db"), "SELECT status FROM runs") == "succeeded");
  CHECK_FALSE(running(first));
  // The other orchrun was not touched.
  CHECK(other.get("/healthz").status == 200);
  CHECK(other.stop() == 0);
}

TEST_CASE("serve notices a dead one-shot within seconds, ends its group and finishes the run",
          "[hardening][orphans][serve]") {
  TempDir d;
  std::string dir = d.file("pipelines");
  mkdir(dir.c_str(), 0755);
  write_file(dir + "/p.lua", waiting_pipeline(d, "p"));
  ServeProcess srv(dir, d.file("s.db"));
  // A one-shot of the same pipeline on the same store, killed while its command runs.
  start_and_kill(d, dir + "/p.lua", 1);
  pid_t first = pids_in(d.file("pids"))[0];
  std::string id = query_str(d.file("s.db"), "SELECT id FROM runs");
  // The server takes it over: the first copy is gone before the second starts.
  REQUIRE(eventually([&] { return pids_in(d.file("pids")).size() >= 2; }, 8000));
  CHECK_FALSE(running(first));
  write_file(d.file("marker"), "");
  json run = srv.wait_run(id, "succeeded", 10000);
  CHECK(run["status"] == "succeeded");
  CHECK(contains(srv.log(), "resumed 1 unfinished run(s)"));
  CHECK(srv.stop() == 0);
}

TEST_CASE("serve applies the timeout of a gate a one-shot parked, on time",
          "[hardening][orphans][serve]") {
  TempDir d;
  std::string dir = d.file("pipelines");
  mkdir(dir.c_str(), 0755);
  write_file(dir + "/gate.lua", R"(local o = require 'orch'
return o.pipeline 'gate' {
  o.approve('ok', { timeout = '2s', on_timeout = 'approve' }),
  o.node('after', function() return { done = true } end),
})");
  ServeProcess srv(dir, d.file("s.db"));
  auto r = orchrun({dir + "/gate.lua", "--progress", "none"}, d.file("s.db"));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 4);  // parked at the gate
  std::string id = query_str(d.file("s.db"), "SELECT id FROM runs");
  auto t0 = std::chrono::steady_clock::now();
  json run = srv.wait_run(id, "succeeded,failed", 10000);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(run["status"] == "succeeded");
  CHECK(took < 6.0);  // 2 s timeout + the 2 s check, with room
  CHECK(query_str(d.file("s.db"), "SELECT status FROM approvals") == "timed_out");
  CHECK(srv.stop() == 0);
}
