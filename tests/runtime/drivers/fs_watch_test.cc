// The directory watcher on a bare loop: a write in a real temp dir is reported once, after
// the quiet period; the filter applies; stopping and destroying close the handle, so the loop
// closes with nothing left open.
#include "drivers/fs_watch.h"

#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <vector>

#include "drivers/loop.h"
#include "drivers/timer.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

// Runs the loop until `cond` holds or `limit_ms` passes; true when it held.
bool run_until(Loop& loop, const std::function<bool()>& cond, uint64_t limit_ms = 5000) {
  uint64_t deadline = loop.now_ms() + limit_ms;
  Timer tick(loop.get());
  tick.start(
      5, [] {}, 5);  // keeps the loop turning while nothing else happens
  while (!cond() && loop.now_ms() < deadline) uv_run(loop.get(), UV_RUN_ONCE);
  return cond();
}

}  // namespace

TEST_CASE("fs_watch: a write is seen once the directory is quiet, the loop closes clean",
          "[fs_watch]") {
  TempDir tmp;
  Loop loop;
  std::vector<std::set<std::string>> reports;
  {
    FsWatch w(loop.get());
    std::string err;
    REQUIRE(w.start(
        tmp.path(), 20, [](const std::string& name) { return name.rfind(".", 0) != 0; },
        [&](std::set<std::string> names) { reports.push_back(std::move(names)); }, &err));
    CHECK(err.empty());
    CHECK(w.watching());
    // Several writes in a row (as editors do) make one report.
    write_file(tmp.file("a.lua"), "one");
    write_file(tmp.file("a.lua"), "two");
    write_file(tmp.file(".hidden"), "filtered out");
    REQUIRE(run_until(loop, [&] { return !reports.empty(); }));
    CHECK(reports.size() == 1);
    CHECK(reports[0] == std::set<std::string>{"a.lua"});
    // Another write later is another report.
    write_file(tmp.file("b.lua"), "three");
    REQUIRE(run_until(loop, [&] { return reports.size() == 2; }));
    CHECK(reports[1].count("b.lua") == 1);
    CHECK(reports[1].count(".hidden") == 0);
    w.stop();
    CHECK_FALSE(w.watching());
    w.stop();  // twice is harmless
    // Stopped: a write is no longer reported.
    write_file(tmp.file("c.lua"), "four");
    run_until(
        loop, [] { return false; }, 100);
    CHECK(reports.size() == 2);
  }
  CHECK(loop.close().empty());
}

TEST_CASE("fs_watch: a watcher destroyed while a report is pending leaves nothing open",
          "[fs_watch]") {
  TempDir tmp;
  Loop loop;
  int reports = 0;
  {
    auto w = std::make_unique<FsWatch>(loop.get());
    std::string err;
    REQUIRE(w->start(
        tmp.path(), 10000, nullptr, [&](std::set<std::string>) { reports++; }, &err));
    write_file(tmp.file("x.lua"), "x");
    // The change arrives; its report waits for 10 s of quiet, and the watcher goes first.
    run_until(
        loop, [] { return false; }, 100);
    w.reset();
  }
  CHECK(reports == 0);
  CHECK(open_handles(loop.get()).empty());
  CHECK(loop.close().empty());
}

TEST_CASE("fs_watch: a directory that cannot be watched is an error, nothing left open",
          "[fs_watch]") {
  TempDir tmp;
  Loop loop;
  {
    FsWatch w(loop.get());
    std::string err;
    CHECK_FALSE(w.start(
        tmp.file("missing"), 20, nullptr, [](std::set<std::string>) {}, &err));
    CHECK(err.find("cannot watch " + tmp.file("missing") + ": ") == 0);
    CHECK_FALSE(w.watching());
  }
  CHECK(loop.close().empty());
}
