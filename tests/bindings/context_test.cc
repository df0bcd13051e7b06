// o.context.system (bindings/mod_context.cc) in real runs: values checked against the kernel's
// own answers, facets and options, the loop kept free during the CPU interval, cancellation.
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

#include "base/json_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

double meminfo_kb(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1));
  FAIL("no " << key << " in /proc/meminfo");
  return 0;
}

json output_of(Harness& h, const RunSummary& s) {
  INFO(s.error_message);
  REQUIRE(s.status == "succeeded");
  return parse_json(s.output_json, nullptr);
}

}  // namespace

TEST_CASE("o.context.system returns sane values that match the kernel's", "[stdlib][context]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "sys" {
      o.node("facts", function() return o.context.system { interval = "50ms" } end),
    })");
  json out = output_of(h, s);
  INFO(out.dump(2));
  // Memory: the same total as /proc/meminfo and sysinfo(2).
  struct sysinfo si {};
  REQUIRE(sysinfo(&si) == 0);
  double total = out["memory"]["total_bytes"].get<double>();
  CHECK(total == meminfo_kb("MemTotal") * 1024);
  CHECK(total == static_cast<double>(si.totalram) * si.mem_unit);
  double avail = out["memory"]["available_bytes"].get<double>();
  CHECK(avail > 0);
  CHECK(avail <= total);
  CHECK(out["memory"]["used_percent"].get<double>() >= 0);
  CHECK(out["memory"]["used_percent"].get<double>() <= 100);
  // CPU: a percentage of the whole machine, cores as the kernel counts them online.
  int cores = out["cpu"]["cores"].get<int>();
  CHECK(cores == sysconf(_SC_NPROCESSORS_ONLN));
  double pct = out["cpu"]["percent"].get<double>();
  CHECK(pct >= 0);
  CHECK(pct <= 100.0 * cores);
  CHECK(out["cpu"]["interval_ms"] == 50);
  // Disk: "/" by default, as statvfs sees it.
  REQUIRE(out["disk"].is_array());
  REQUIRE(out["disk"].size() == 1);
  struct statvfs st {};
  REQUIRE(statvfs("/", &st) == 0);
  CHECK(out["disk"][0]["path"] == "/");
  CHECK(out["disk"][0]["total_bytes"].get<double>() ==
        static_cast<double>(st.f_blocks) * static_cast<double>(st.f_frsize));
  CHECK(out["disk"][0]["used_percent"].get<double>() >= 0);
  CHECK(out["disk"][0]["used_percent"].get<double>() <= 100);
  // Load, processes, host.
  CHECK(out["load"]["one"].get<double>() >= 0);
  CHECK(out["load"]["fifteen"].get<double>() >= 0);
  CHECK(out["processes"]["total"].get<int>() >= 1);  // this test process at least
  CHECK(out["processes"]["running"].get<int>() >= 1);
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  CHECK(out["hostname"] == host);
  CHECK(out["uptime_s"].get<double>() > 0);
  CHECK(out["collected_at"].get<double>() > 1.6e12);
  CHECK(h.close().empty());
}

TEST_CASE("o.context.system: chosen facets only, disk paths, per-path errors",
          "[stdlib][context]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "sys" {
      o.node("mem", function() return o.context.system { "memory" } end),
      o.node("one", function() return o.context.system "load" end),
      o.node("disks", function()
        return o.context.system { "disk", paths = { "/", "/proc", "/no/such/mount" } }
      end),
    })");
  REQUIRE(s.status == "succeeded");
  json mem =
      parse_json(query_str(h.db_path, "select output from node_runs where node_id='mem'"), nullptr);
  std::vector<std::string> keys;
  for (auto& [k, v] : mem.items()) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{"collected_at", "hostname", "memory", "uptime_s"});
  json one =
      parse_json(query_str(h.db_path, "select output from node_runs where node_id='one'"), nullptr);
  CHECK(one.contains("load"));
  CHECK_FALSE(one.contains("cpu"));
  json disks = parse_json(
      query_str(h.db_path, "select output from node_runs where node_id='disks'"), nullptr);
  REQUIRE(disks["disk"].size() == 3);
  CHECK(disks["disk"][1]["path"] == "/proc");
  CHECK(disks["disk"][2]["error"] == "statvfs /no/such/mount: No such file or directory");
  CHECK(h.close().empty());
}

TEST_CASE("o.context.system: unknown facets and options raise, listing what is known",
          "[stdlib][context]") {
  Harness h;
  auto run_body = [&](const std::string& body) {
    auto s = h.run("local o = require 'orch'\nreturn o.pipeline 'bad' { o.node('n', function() " +
                   body + " end) }");
    CHECK(s.status == "failed");
    return s.error_message;
  };
  CHECK(contains(run_body("return o.context.system { 'cpu', 'gpu' }"),
                 "o.context.system: unknown facet 'gpu' (known: cpu, memory, disk, load, "
                 "processes)"));
  CHECK(contains(run_body("return o.context.system { 'cpu', intervall = 1 }"),
                 "o.context.system: unknown option 'intervall' (known: interval, paths)"));
  CHECK(contains(run_body("return o.context.system { interval = '2h' }"),
                 "option 'interval' must be a duration from 10ms to 60s"));
  CHECK(contains(run_body("return o.context.system { 'disk', paths = { 1 } }"),
                 "option 'paths' must be a list of mount points (strings)"));
  CHECK(contains(run_body("return o.context.system(42)"),
                 "expected a list of facets (cpu, memory, disk, load, processes) or nothing, got "
                 "number"));
  // Outside a node body (at load time) it cannot wait.
  auto diags = Harness::diagnose(
      "local o = require 'orch'\nlocal f = o.context.system()\nreturn o.pipeline 'x' {}");
  REQUIRE(diags.size() == 1);
  CHECK(contains(diags[0].str(), "o.context.system can only be called inside a node body"));
  CHECK(h.close().empty());
}

TEST_CASE("o.context.system does not hold the loop during the CPU interval", "[stdlib][context]") {
  Harness h;
  // The ticker counts its wake-ups that happen while the other node waits for its CPU sample.
  // Were the interval a blocking sleep, no tick could land inside it.
  auto s = h.run(R"(
    local o = require "orch"
    local waiting, finished, ticks_inside = false, false, 0
    return o.pipeline "free" {
      o.parallel("p", {
        o.node("sys", function()
          waiting = true
          local f = o.context.system { "cpu", interval = "400ms" }
          waiting, finished = false, true
          return { percent = f.cpu.percent }
        end),
        o.node("ticker", function()
          while not finished do
            o.sleep("10ms")
            if waiting then ticks_inside = ticks_inside + 1 end
          end
          return { ticks_inside = ticks_inside }
        end),
      }),
    })");
  json out = output_of(h, s);
  INFO(out.dump());
  CHECK(out["ticker"]["ticks_inside"].get<int>() >= 3);
  CHECK(h.close().empty());
}

TEST_CASE("o.context.system is cancel-safe: a timeout stops the interval, nothing leaks",
          "[stdlib][context]") {
  Harness h;
  auto s = h.run(R"(
    local o = require "orch"
    return o.pipeline "cancel" {
      o.node("slow", function() return o.context.system { "cpu", interval = "30s" } end,
             { timeout = "100ms" }),
    })");
  CHECK(s.status == "failed");
  CHECK(s.error_type == "timeout");
  CHECK(h.last_seconds < 10);  // not the 30 s interval
  // Cancelled by the run (join = any) while its first reads may still be in the pool.
  auto s2 = h.run(R"(
    local o = require "orch"
    return o.pipeline "race" {
      o.parallel("p", {
        o.node("fast", function() return {} end),
        o.node("sys", function() return o.context.system { interval = "30s" } end),
      }, { join = "any" }),
    })");
  CHECK(s2.status == "succeeded");
  CHECK(query_str(h.db_path, "select status from node_runs where node_id='p/sys'") == "cancelled");
  CHECK(h.close().empty());
}
