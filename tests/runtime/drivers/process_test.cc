// The process driver and timers on a bare loop (no Lua): capture, timeouts, process groups,
// detaching, and a loop that closes with nothing left open.
#include "drivers/process.h"

#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "drivers/timer.h"
#include "drivers/loop.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

TEST_CASE("capture keeps the head and the tail of a large stream", "[process]") {
  Capture c(10);
  c.append("0123456789", 10);
  c.append("abcdefghij", 10);
  CHECK(c.total() == 20);
  CHECK(c.truncated());
  CHECK(c.text() == "01234\n[... 10 bytes omitted ...]\nfghij");
  Capture small(100);
  small.append("hello", 5);
  CHECK_FALSE(small.truncated());
  CHECK(small.text() == "hello");
}

TEST_CASE("a process runs, its output and exit status come back, the loop closes clean",
          "[process]") {
  Loop loop;
  ProcessTable table;
  ProcessSpec spec;
  spec.argv = {"sh", "-c", "printf abc; printf err >&2; exit 7"};
  bool done = false;
  std::string err, code;
  auto* p = Process::spawn(
      loop.get(), &table, spec,
      [&](ProcessResult& r) {
        done = true;
        CHECK(r.exit_code == 7);
        CHECK(r.term_signal == 0);
        CHECK(r.out.text() == "abc");
        CHECK(r.err.text() == "err");
        CHECK_FALSE(r.timed_out);
      },
      &err, &code);
  REQUIRE(p);
  loop.run();
  CHECK(done);
  CHECK(table.size() == 0);
  CHECK(loop.close().empty());
}

TEST_CASE("spawn failures are reported, not thrown, and leak no handles", "[process]") {
  Loop loop;
  ProcessSpec spec;
  spec.argv = {"/definitely/not/here"};
  std::string err, code;
  CHECK(Process::spawn(
            loop.get(), nullptr, spec, [](ProcessResult&) {}, &err, &code) == nullptr);
  CHECK(code == "ENOENT");
  CHECK(err.find("no such file") != std::string::npos);
  uv_run(loop.get(), UV_RUN_DEFAULT);
  CHECK(loop.close().empty());
}

TEST_CASE("a timeout signals the whole process group", "[process]") {
  TempDir d;
  Loop loop;
  ProcessTable table;
  ProcessSpec spec;
  // The grandchild ignores nothing; TERM reaches it because it is in the same group.
  spec.argv = {"sh", "-c", "sleep 30 & echo $! > " + d.file("child") + "; wait"};
  spec.timeout_ms = 200;
  spec.kill_grace_ms = 100;
  bool done = false;
  std::string err, code;
  auto start = uv_hrtime();
  Process::spawn(
      loop.get(), &table, spec,
      [&](ProcessResult& r) {
        done = true;
        CHECK(r.timed_out);
        CHECK(r.term_signal != 0);
      },
      &err, &code);
  loop.run();
  CHECK(done);
  CHECK((uv_hrtime() - start) / 1e9 < 3);
  int child = std::stoi(read_file(d.file("child")));
  bool gone = false;
  for (int i = 0; i < 50 && !gone; i++) {
    auto st = read_file("/proc/" + std::to_string(child) + "/stat");
    gone = st.empty() || st.find(") Z ") != std::string::npos;
    if (!gone) usleep(100000);
  }
  CHECK(gone);
  CHECK(loop.close().empty());
}

TEST_CASE("a process that ignores SIGTERM is killed after the grace period", "[process]") {
  Loop loop;
  ProcessTable table;
  ProcessSpec spec;
  spec.argv = {"sh", "-c", "trap '' TERM; sleep 30"};
  spec.timeout_ms = 100;
  spec.kill_grace_ms = 200;
  ProcessResult got;
  std::string err, code;
  Process::spawn(
      loop.get(), &table, spec, [&](ProcessResult& r) { got.term_signal = r.term_signal; }, &err,
      &code);
  auto start = uv_hrtime();
  loop.run();
  double secs = (uv_hrtime() - start) / 1e9;
  CHECK(got.term_signal == SIGKILL);
  CHECK(secs >= 0.25);
  CHECK(secs < 3);
  CHECK(loop.close().empty());
}

TEST_CASE("a detached process is terminated and reaped without a callback", "[process]") {
  Loop loop;
  ProcessTable table;
  ProcessSpec spec;
  spec.argv = {"sleep", "30"};
  bool called = false;
  std::string err, code;
  auto* p = Process::spawn(
      loop.get(), &table, spec, [&](ProcessResult&) { called = true; }, &err, &code);
  REQUIRE(p);
  auto t = std::make_unique<Timer>(loop.get());
  t->start(50, [&] {
    p->detach(1000);
    t.reset();
  });
  loop.run();
  CHECK_FALSE(called);
  CHECK(table.size() == 0);
  CHECK(loop.close().empty());
}

TEST_CASE("a timer may destroy itself from its callback; an owner's destructor stops it",
          "[timer]") {
  Loop loop;
  int fired = 0;
  auto* self = new Timer(loop.get());
  self->start(1, [&] {
    fired++;
    delete self;
  });
  {
    Timer never(loop.get());
    never.start(1, [&] { fired += 100; });
  }  // destroyed before it fires
  loop.run();
  CHECK(fired == 1);
  CHECK(loop.close().empty());
}

TEST_CASE("closing a loop names the handles its owners left open", "[loop]") {
  Loop loop;
  auto* h = new uv_timer_t;
  uv_timer_init(loop.get(), h);
  auto leaked = loop.close();
  REQUIRE(leaked.size() == 1);
  CHECK(leaked[0] == "timer");
  delete h;
}
