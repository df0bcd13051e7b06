// Dynamic steps through the real binary: o.map (fan-out over a list known at run time), o.loop
// (iterations decided by `done` or by verdicts, escalation when exhausted), verdicts on plain
// nodes, o.call (child runs), artifacts in per-run workspaces, concurrency keys across
// processes, and what `orchrun validate` says about them. Checked row by row in the store.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "base/json_util.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;

namespace {

bool has(const std::string& s, const std::string& sub) {
  return s.find(sub) != std::string::npos;
}

// Replaces every `key` in `s` with `val`.
std::string sub(std::string s, const std::string& key, const std::string& val) {
  for (size_t at = s.find(key); at != std::string::npos; at = s.find(key, at + val.size()))
    s.replace(at, key.size(), val);
  return s;
}

json parse(const std::string& s) {
  json j = parse_json(s, nullptr);
  return j;
}

// The output of the (single) row of `node` with `kind` in the store, parsed.
json row_output(const std::string& db, const std::string& node, const std::string& kind = "body",
                const std::string& run = "") {
  std::string sql = "select output from node_runs where node_id='" + node + "' and kind='" + kind +
                    "' and status='succeeded'";
  if (!run.empty()) sql += " and run_id='" + run + "'";
  return parse(query_str(db, sql));
}

struct Interval {
  int64_t start = 0, end = 0;
};

std::vector<Interval> intervals(const std::string& db, const std::string& where) {
  std::vector<Interval> out;
  for (auto& r : query(db, "select started_at, finished_at from node_runs where " + where))
    out.push_back({std::stoll(r[0]), r[1].empty() ? INT64_MAX : std::stoll(r[1])});
  return out;
}

// The most intervals that hold at once. An interval that ends within `slop` ms of another's
// start does not count as overlapping it (rows written in the same millisecond).
int max_overlap(const std::vector<Interval>& v, int64_t slop = 2) {
  int best = 0;
  for (const auto& a : v) {
    int n = 0;
    for (const auto& b : v)
      if (b.start <= a.start && a.start < b.end - slop) n++;
    best = std::max(best, n);
  }
  return best;
}

// Polls until `sql` returns at least `want` (or ~timeout_ms passed).
bool wait_for(const std::string& db, const std::string& sql, int64_t want, int timeout_ms = 8000) {
  for (int waited = 0; waited < timeout_ms; waited += 10) {
    if (poll_int(db, sql) >= want) return true;
    usleep(10000);
  }
  return false;
}

// Waits for a process started with spawn_quiet; returns its exit code (128+N when killed by N),
// killing it after timeout_ms.
int reap(pid_t pid, int timeout_ms = 9000) {
  int status = 0;
  for (int waited = 0; waited < timeout_ms; waited += 5) {
    if (waitpid(pid, &status, WNOHANG) == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    usleep(5000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

std::string sha256_of(const std::string& path) {
  auto r = run_cmd({"sha256sum", path});
  return r.out.substr(0, r.out.find(' '));
}

}  // namespace

// ------------------------------------------------------------------------------------------
// o.map

TEST_CASE("o.map runs one instance per item in item order with at most max at once", "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("m.db"), file = tmp.file("fan.lua");
  write_file(file, R"LUA(local o = require "orch"
return o.pipeline "fan" {
  o.node("plan", function() return { n = 4 } end),
  -- Item i sleeps (5 - i) * 60 ms: later items finish first.
  o.map("work", function(ctx, input)
    local t = {}
    for i = 1, input.n do t[i] = { name = "i" .. i, ms = (5 - i) * 60 } end
    return t
  end, function(ctx, item)
    o.sleep(item.ms .. "ms")
    return { name = item.name, index = ctx.index }
  end, { max = 2 }),
  o.map("static", { "x", "y" }, o.node("up", function(ctx, item)
    return { v = item:upper(), index = ctx.index }
  end)),
  o.map("none", {}, function() return { never = true } end),
  o.node("after", function(ctx)
    return { work = ctx.outputs.work, static = ctx.outputs.static,
             none = o.json.encode(ctx.outputs.none) }
  end),
}
)LUA");
  auto r = orchrun({file, "--quiet"}, db);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(query_str(db, "select status from runs") == "succeeded");

  // One succeeded attempt per item, named id[i].
  CHECK(query_str(db,
                  "select group_concat(node_id || ':' || attempt || ':' || status, ' ') from "
                  "(select * from node_runs where node_id like 'work[%' order by node_id)") ==
        "work[1]:1:succeeded work[2]:1:succeeded work[3]:1:succeeded work[4]:1:succeeded");
  // The list was recorded once, as a decision at the map's id.
  CHECK(query_int(db, "select count(*) from node_runs where node_id='work' and kind='decision'") ==
        1);
  json items = row_output(db, "work", "decision");
  REQUIRE(items.contains("items"));
  REQUIRE(items["items"].size() == 4);
  CHECK(items["items"][0]["name"] == "i1");
  CHECK(items["items"][3]["ms"] == 60);

  // At most two at once, and two did run at once.
  auto iv = intervals(db, "node_id like 'work[%'");
  REQUIRE(iv.size() == 4);
  CHECK(max_overlap(iv) == 2);
  // Item 2 finished before item 1, yet the output keeps the items' order.
  CHECK(query_int(db, "select finished_at from node_runs where node_id='work[2]'") <
        query_int(db, "select finished_at from node_runs where node_id='work[1]'"));
  json after = row_output(db, "after");
  REQUIRE(after["work"].is_array());
  REQUIRE(after["work"].size() == 4);
  for (int i = 0; i < 4; i++) {
    CHECK(after["work"][i]["name"] == "i" + std::to_string(i + 1));
    CHECK(after["work"][i]["index"] == i + 1);
  }

  // A named step inside the map is id[i]/name, and gets the item as its input.
  CHECK(query_str(db,
                  "select group_concat(node_id, ' ') from (select node_id from node_runs where "
                  "node_id like 'static%' and kind='body' order by node_id)") ==
        "static[1]/up static[2]/up");
  CHECK(after["static"] == parse(R"([{"v":"X","index":1},{"v":"Y","index":2}])"));

  // An empty list: nothing runs, the output is [].
  CHECK(after["none"] == "[]");
  CHECK(query_int(db, "select count(*) from node_runs where node_id like 'none[%'") == 0);
  CHECK(row_output(db, "none", "decision") == parse(R"({"items":[]})"));
}

TEST_CASE("o.map with items that are not a list fails the run naming the map", "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("b.db");
  SECTION("a table with keys") {
    std::string file = tmp.file("keys.lua");
    write_file(file, R"LUA(local o = require "orch"
return o.pipeline "keys" {
  o.map("fanout", function() return { a = 1 } end, function() return {} end),
  o.node("after", function() return {} end),
}
)LUA");
    auto r = orchrun({file, "--quiet"}, db);
    CHECK(r.exit_code == 1);
    CHECK(query_str(db, "select status || '|' || error_type from runs") == "failed|bad_items");
    std::string msg = query_str(db, "select error_message from runs");
    CHECK(has(msg, "map 'fanout'"));
    CHECK(has(msg, "items must be a list"));
    CHECK(query_int(db, "select count(*) from node_runs where node_id like 'fanout[%'") == 0);
    CHECK(query_int(db, "select count(*) from node_runs where node_id='after'") == 0);
  }
  SECTION("a number from the items function") {
    std::string file = tmp.file("num.lua");
    write_file(file, R"LUA(local o = require "orch"
return o.pipeline "num" {
  o.map("fanout", function() return 42 end, function() return {} end),
}
)LUA");
    auto r = orchrun({file, "--quiet"}, db);
    CHECK(r.exit_code == 1);
    CHECK(query_str(db, "select error_type from runs") == "bad_items");
    std::string msg = query_str(db, "select error_message from runs");
    CHECK(has(msg, "map 'fanout'"));
    CHECK(has(msg, "got a number"));
  }
  SECTION("an items function that raises") {
    std::string file = tmp.file("raise.lua");
    write_file(file, R"LUA(local o = require "orch"
return o.pipeline "raise" {
  o.map("fanout", function() error("no list today") end, function() return {} end),
}
)LUA");
    auto r = orchrun({file, "--quiet"}, db);
    CHECK(r.exit_code == 1);
    CHECK(query_str(db, "select error_type from runs") == "error");
    std::string msg = query_str(db, "select error_message from runs");
    CHECK(has(msg, "map 'fanout': items failed: "));
    CHECK(has(msg, "no list today"));
  }
}

TEST_CASE("a failing o.map item fails the map and cancels the items still running", "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("mf.db"), file = tmp.file("mapfail.lua");
  write_file(file, R"LUA(local o = require "orch"
return o.pipeline "mapfail" {
  o.map("m", { 1, 2, 3 }, function(ctx, item)
    if item == 2 then
      o.sleep("50ms")
      o.fail("item two broke")
    end
    o.sleep("20s")
    return { item = item }
  end),
  o.node("after", function() return {} end),
}
)LUA");
  auto r = orchrun({file, "--quiet"}, db);
  CHECK(r.exit_code == 1);
  CHECK(query_str(db, "select status || '|' || error_node from runs") == "failed|m[2]");
  CHECK(has(query_str(db, "select error_message from runs"), "item two broke"));
  CHECK(query_str(db,
                  "select group_concat(node_id || ':' || status, ' ') from (select * from "
                  "node_runs where node_id like 'm[%' order by node_id)") ==
        "m[1]:cancelled m[2]:failed m[3]:cancelled");
  CHECK(query_int(db, "select count(*) from node_runs where node_id='after'") == 0);
}

TEST_CASE("a resumed o.map reuses its recorded items and the items that succeeded", "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("r.db"), file = tmp.file("resume.lua"), flag = tmp.file("flag");
  // The items depend on the clock: evaluated twice, they would differ.
  write_file(file, sub(R"LUA(local o = require "orch"
return o.pipeline "resumable" {
  o.map("m", function()
    local t0 = o.now_ms()
    return { t0, t0 + 1, t0 + 2 }
  end, function(ctx, item)
    if ctx.index > 1 and not o.fs.read("FLAG") then o.sleep("20s") end
    return { item = item, index = ctx.index }
  end),
  o.node("after", function(ctx) return { all = ctx.outputs.m } end),
}
)LUA",
                       "FLAG", flag));
  pid_t p = spawn_quiet({orchrun_bin(), file, "--db", db});
  bool ready = wait_for(db,
                        "select count(*) from node_runs where node_id='m[1]' and "
                        "status='succeeded'",
                        1) &&
               wait_for(db,
                        "select count(*) from node_runs where node_id in ('m[2]','m[3]') and "
                        "status='running'",
                        2);
  kill(p, SIGKILL);
  waitpid(p, nullptr, 0);
  REQUIRE(ready);
  std::string id = query_str(db, "select id from runs");
  CHECK(query_str(db, "select status from runs") == "running");
  write_file(flag, "go");

  auto r = orchrun({"resume", id, "--quiet"}, db);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(query_str(db, "select status from runs") == "succeeded");
  // The list was not asked for again.
  CHECK(query_int(db, "select count(*) from node_runs where node_id='m' and kind='decision'") == 1);
  // m[1] was reused (one attempt); the interrupted items ran again, once.
  CHECK(query_int(db, "select count(*) from node_runs where node_id='m[1]'") == 1);
  for (std::string n : {"m[2]", "m[3]"}) {
    INFO(n);
    CHECK(query_str(db,
                    "select group_concat(attempt || ':' || status || ':' || "
                    "ifnull(error_type, ''), ' ') from (select * from node_runs where "
                    "node_id='" +
                        n + "' order by attempt)") == "1:failed:interrupted 2:succeeded:");
  }
  json items = row_output(db, "m", "decision")["items"];
  json all = row_output(db, "after")["all"];
  REQUIRE(items.size() == 3);
  REQUIRE(all.size() == 3);
  for (int i = 0; i < 3; i++) {
    CHECK(all[i]["item"] == items[i]);
    CHECK(all[i]["index"] == i + 1);
  }
}

// ------------------------------------------------------------------------------------------
// o.loop

TEST_CASE("o.loop with done runs iterations that each get the previous output", "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("l.db"), file = tmp.file("loop.lua");
  write_file(file, R"LUA(local o = require "orch"
return o.pipeline "loopy" {
  o.node("seed", function() return { n = 10 } end),
  o.loop("fix", { max = 5, done = function(ctx, out) return out.n >= 13 end }, o.seq {
    o.node("patch", function(ctx, input) return { n = input.n + 1, it = ctx.iteration } end),
    o.node("test", function(ctx, input)
      return { n = input.n, it = ctx.iteration, saw = ctx.outputs.patch.n }
    end),
  }),
  o.node("after", function(ctx) return ctx.outputs.fix end),
}
)LUA");
  auto r = orchrun({file, "--quiet"}, db);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(query_str(db,
                  "select group_concat(node_id || ':' || status, ' ') from (select * from "
                  "node_runs where node_id like 'fix#%' and kind='body' order by seq)") ==
        "fix#1/patch:succeeded fix#1/test:succeeded fix#2/patch:succeeded "
        "fix#2/test:succeeded fix#3/patch:succeeded fix#3/test:succeeded");
  // Iteration k sees ctx.iteration = k and the output of iteration k-1 (the loop's input first).
  CHECK(row_output(db, "fix#1/patch") == parse(R"({"n":11,"it":1})"));
  CHECK(row_output(db, "fix#2/patch") == parse(R"({"n":12,"it":2})"));
  CHECK(row_output(db, "fix#3/test") == parse(R"({"n":13,"it":3,"saw":13})"));
  // One decision per iteration: rows of the loop itself, numbered by iteration.
  auto d = query(db,
                 "select attempt, output from node_runs where kind='decision' and node_id='fix' "
                 "order by seq");
  REQUIRE(d.size() == 3);
  CHECK(d[0][0] == "1");
  CHECK(parse(d[0][1])["done"] == false);
  CHECK(d[1][0] == "2");
  CHECK(parse(d[1][1])["done"] == false);
  CHECK(d[2][0] == "3");
  CHECK(parse(d[2][1])["done"] == true);
  CHECK(query_int(db, "select count(*) from node_runs where node_id like 'fix#4%'") == 0);
  CHECK(row_output(db, "after") == parse(R"({"n":13,"it":3,"saw":13})"));
}

TEST_CASE("o.loop without done follows verdicts after the node's own retries", "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("v.db"), file = tmp.file("verdicts.lua");
  write_file(file, R"LUA(local o = require "orch"
return o.pipeline "reviewed" {
  o.loop("review", { max = 4 }, o.seq {
    o.node("work", function(ctx, input) return { tries = (input.tries or 0) + 1 } end),
    o.node("test", function(ctx, input)
      if input.tries < 2 then
        return o.verdict.retryable("tests_failed", { tries = input.tries })
      end
      return o.verdict.pass { tries = input.tries }
    end, { retry = { max = 2, base = "10ms" } }),
  }),
  o.node("after", function(ctx) return ctx.outputs.review end),
}
)LUA");
  auto r = orchrun({file, "--quiet"}, db);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  // Iteration 1: the node retried by itself once, then succeeded with its retryable verdict,
  // which went to the loop.
  CHECK(query_str(db,
                  "select group_concat(attempt || ':' || status || ':' || verdict || ':' || "
                  "verdict_reason || ':' || ifnull(error_type, ''), ' ') from (select * from "
                  "node_runs where node_id='review#1/test' order by attempt)") ==
        "1:failed:retryable:tests_failed:verdict 2:succeeded:retryable:tests_failed:");
  CHECK(query_str(db,
                  "select group_concat(status || ':' || verdict) from node_runs where "
                  "node_id='review#2/test'") == "succeeded:pass");
  json d1 = parse(query_str(db,
                            "select output from node_runs where node_id='review' and "
                            "kind='decision' and attempt=1"));
  CHECK(d1["done"] == false);
  CHECK(d1["verdict"] == "retryable");
  CHECK(d1["reason"] == "tests_failed");
  CHECK(parse(query_str(db,
                        "select output from node_runs where node_id='review' and "
                        "kind='decision' and attempt=2"))["done"] == true);
  CHECK(query_int(db, "select count(*) from node_runs where node_id like 'review#3%'") == 0);
  CHECK(row_output(db, "after") == parse(R"({"tries":2,"verdict":"pass"})"));
  CHECK(query_int(db, "select count(*) from approvals") == 0);
}

TEST_CASE("an exhausted o.loop escalates and approving accepts the last iteration", "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("e.db"), file = tmp.file("polish.lua");
  write_file(file, R"LUA(local o = require "orch"
return o.pipeline "polish" {
  o.loop("polish", { max = 2 }, o.node("try", function(ctx, input)
    return o.verdict.retryable("not_yet", { k = ctx.iteration })
  end)),
  o.node("after", function(ctx)
    local p = ctx.outputs.polish
    return { k = p.k, by = p.review.by, approved = p.review.approved, comment = p.review.comment }
  end),
}
)LUA");
  auto first = orchrun({file}, db);
  INFO(first.out << first.err);
  CHECK(first.exit_code == 4);
  std::string id = query_str(db, "select id from runs");
  CHECK(query_str(db, "select status from runs") == "awaiting_approval");
  CHECK(query_str(db, "select node_id || '|' || kind || '|' || status from approvals") ==
        "polish|escalation|waiting");
  CHECK(has(query_str(db, "select message from approvals"), "not done after 2 iterations"));
  CHECK(query_int(db, "select count(*) from node_runs where node_id like 'polish#%/try'") == 2);
  CHECK(query_int(db, "select count(*) from node_runs where node_id='after'") == 0);
  CHECK(has(first.out, "orchrun approve " + id + " polish"));

  auto ok = orchrun({"approve", id, "polish", "--as", "alice", "--comment", "good enough"}, db);
  CHECK(ok.exit_code == 0);
  auto res = orchrun({"resume", id, "--quiet"}, db);
  INFO(res.out << res.err);
  CHECK(res.exit_code == 0);
  CHECK(query_str(db, "select status from runs") == "succeeded");
  // The iterations were not run again.
  CHECK(query_int(db, "select count(*) from node_runs where node_id like 'polish#%/try'") == 2);
  CHECK(query_str(db, "select status from node_runs where node_id='polish' and kind='approval'") ==
        "succeeded");
  json out = row_output(db, "polish", "approval");
  CHECK(out["k"] == 2);
  CHECK(out["review"]["approved"] == true);
  CHECK(out["review"]["by"] == "alice");
  CHECK(out["review"]["comment"] == "good enough");
  CHECK(row_output(db, "after") ==
        parse(R"({"k":2,"by":"alice","approved":true,"comment":"good enough"})"));
}

TEST_CASE("o.loop failures are rejected, loop_exhausted and no_verdict", "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("f.db");
  SECTION("a rejected escalation") {
    std::string file = tmp.file("rej.lua");
    write_file(file, R"LUA(local o = require "orch"
return o.pipeline "rej" {
  o.loop("polish", { max = 1 }, o.node("try", function() return o.verdict.retryable("meh") end)),
  o.node("after", function() return {} end),
}
)LUA");
    CHECK(orchrun({file, "--quiet"}, db).exit_code == 4);
    std::string id = query_str(db, "select id from runs");
    CHECK(query_str(db, "select kind from approvals") == "escalation");
    CHECK(orchrun({"reject", id, "polish", "--as", "bob"}, db).exit_code == 0);
    auto res = orchrun({"resume", id, "--quiet"}, db);
    CHECK(res.exit_code == 1);
    CHECK(query_str(db, "select status || '|' || error_type || '|' || error_node from runs") ==
          "failed|rejected|polish");
    CHECK(has(query_str(db, "select error_message from runs"), "bob"));
    CHECK(query_int(db, "select count(*) from node_runs where node_id='after'") == 0);
    CHECK(query_int(db, "select count(*) from node_runs where node_id like 'polish#%/try'") == 1);
  }
  SECTION("escalate = false") {
    std::string file = tmp.file("noesc.lua");
    write_file(file, R"LUA(local o = require "orch"
return o.pipeline "noesc" {
  o.loop("polish", { max = 2, escalate = false },
    o.node("try", function() return o.verdict.retryable("still_red") end)),
}
)LUA");
    auto r = orchrun({file, "--quiet"}, db);
    CHECK(r.exit_code == 1);
    CHECK(query_str(db, "select status || '|' || error_type from runs") == "failed|loop_exhausted");
    std::string msg = query_str(db, "select error_message from runs");
    CHECK(has(msg, "loop 'polish'"));
    CHECK(has(msg, "still_red"));
    CHECK(query_int(db, "select count(*) from approvals") == 0);
    CHECK(query_int(db, "select count(*) from node_runs where node_id like 'polish#%/try'") == 2);
  }
  SECTION("no verdict and no done") {
    std::string file = tmp.file("nov.lua");
    write_file(file, R"LUA(local o = require "orch"
return o.pipeline "nov" {
  o.loop("spin", { max = 3 }, o.node("step", function() return { x = 1 } end)),
}
)LUA");
    auto r = orchrun({file, "--quiet"}, db);
    CHECK(r.exit_code == 1);
    CHECK(query_str(db, "select status || '|' || error_type from runs") == "failed|no_verdict");
    CHECK(has(query_str(db, "select error_message from runs"), "returned no verdict"));
    CHECK(query_int(db, "select count(*) from node_runs where node_id like 'spin#%/step'") == 1);
    CHECK(query_str(db,
                    "select status || '|' || error_type from node_runs where "
                    "node_id='spin' and attempt=1 and kind='decision'") == "failed|no_verdict");
  }
}

// Regression: a loop's decision for iteration k used to be written at `id#k` — the path of a
// function body's node — and hit the node_runs primary key. Decisions are now rows of the loop
// itself (node_id = id, attempt = k).
TEST_CASE("o.loop with a plain function body records its iterations and decisions", "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("p.db"), file = tmp.file("fn.lua");
  write_file(file, R"LUA(local o = require "orch"
return o.pipeline "fnloop" {
  o.loop("count", { max = 5, done = function(ctx, out) return out.n >= 3 end },
    function(ctx, input) return { n = (input.n or 0) + 1, it = ctx.iteration } end),
  o.node("after", function(ctx) return ctx.outputs.count end),
}
)LUA");
  auto r = orchrun({file, "--quiet"}, db);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(query_str(db, "select status || '|' || ifnull(error_message, '') from runs") ==
        "succeeded|");
  CHECK(query_int(db,
                  "select count(*) from node_runs where node_id like 'count#%' and "
                  "kind='body' and status='succeeded'") == 3);
  CHECK(query_int(db,
                  "select count(*) from node_runs where node_id='count' and "
                  "kind='decision'") == 3);
  CHECK(row_output(db, "after") == parse(R"({"n":3,"it":3})"));
}

// ------------------------------------------------------------------------------------------
// Verdicts on plain nodes

TEST_CASE("a retryable verdict retries the node then escalates and approval lets it continue",
          "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("n.db"), file = tmp.file("flaky.lua");
  write_file(file, R"LUA(local o = require "orch"
return o.pipeline "flaky" {
  o.node("flaky", function(ctx)
    return o.verdict.retryable("flaky", { attempt = ctx.attempt })
  end, { retry = { max = 3, base = "10ms" } }),
  o.node("after", function(ctx)
    return { by = ctx.outputs.flaky.review.by, attempt = ctx.outputs.flaky.attempt }
  end),
}
)LUA");
  auto first = orchrun({file}, db);
  INFO(first.out << first.err);
  CHECK(first.exit_code == 4);
  std::string id = query_str(db, "select id from runs");
  CHECK(query_str(db, "select status from runs") == "awaiting_approval");
  CHECK(query_str(db,
                  "select group_concat(attempt || ':' || kind || ':' || status || ':' || "
                  "ifnull(verdict, '') || ':' || ifnull(verdict_reason, '') || ':' || "
                  "ifnull(error_type, ''), ' ') from (select * from node_runs where "
                  "node_id='flaky' order by attempt)") ==
        "1:body:failed:retryable:flaky:verdict 2:body:failed:retryable:flaky:verdict "
        "3:body:failed:retryable:flaky:verdict 4:approval:running:::");
  CHECK(query_str(db, "select node_id || '|' || kind || '|' || status from approvals") ==
        "flaky|escalation|waiting");
  CHECK(query_int(db, "select count(*) from node_runs where node_id='after'") == 0);

  json j = parse(orchrun({"inspect", id, "--json"}, db).out);
  REQUIRE(j.contains("approvals"));
  REQUIRE(j["approvals"].size() == 1);
  CHECK(j["approvals"][0]["kind"] == "escalation");
  CHECK(j["approvals"][0]["node"] == "flaky");
  int with_verdict = 0;
  for (auto& n : j["nodes"])
    if (n.contains("verdict")) {
      with_verdict++;
      CHECK(n["verdict"]["verdict"] == "retryable");
      CHECK(n["verdict"]["reason"] == "flaky");
    }
  CHECK(with_verdict == 3);

  CHECK(orchrun({"approve", id, "flaky", "--as", "carol", "--comment", "known flake"}, db)
            .exit_code == 0);
  auto res = orchrun({"resume", id, "--quiet"}, db);
  INFO(res.out << res.err);
  CHECK(res.exit_code == 0);
  CHECK(query_str(db, "select status from runs") == "succeeded");
  CHECK(query_int(db, "select count(*) from node_runs where node_id='flaky' and kind='body'") == 3);
  json acc = row_output(db, "flaky", "approval");
  CHECK(acc["attempt"] == 3);
  CHECK(acc["verdict"] == "retryable");
  CHECK(acc["review"]["by"] == "carol");
  CHECK(acc["review"]["approved"] == true);
  CHECK(row_output(db, "after") == parse(R"({"by":"carol","attempt":3})"));
}

TEST_CASE("needs_human_review escalates at once and a rejection fails the node", "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("h.db"), file = tmp.file("risky.lua");
  write_file(file, R"LUA(local o = require "orch"
return o.pipeline "risky" {
  o.node("check", function()
    return o.verdict.needs_human_review("risky_change", { files = 12 })
  end, { retry = { max = 3, base = "10ms" } }),
  o.node("after", function() return {} end),
}
)LUA");
  CHECK(orchrun({file, "--quiet"}, db).exit_code == 4);
  std::string id = query_str(db, "select id from runs");
  CHECK(query_str(db,
                  "select group_concat(attempt || ':' || kind || ':' || status || ':' || "
                  "ifnull(verdict, ''), ' ') from (select * from node_runs where node_id='check' "
                  "order by attempt)") == "1:body:failed:needs_human_review 2:approval:running:");
  CHECK(query_str(db, "select kind || '|' || status from approvals") == "escalation|waiting");
  CHECK(has(query_str(db, "select message from approvals"), "risky_change"));
  CHECK(orchrun({"reject", id, "check", "--as", "bob", "--comment", "too big"}, db).exit_code == 0);
  auto res = orchrun({"resume", id, "--quiet"}, db);
  CHECK(res.exit_code == 1);
  CHECK(query_str(db, "select status || '|' || error_type || '|' || error_node from runs") ==
        "failed|rejected|check");
  CHECK(query_int(db, "select count(*) from node_runs where node_id='check' and kind='body'") == 1);
  CHECK(query_int(db, "select count(*) from node_runs where node_id='after'") == 0);
}

TEST_CASE("verdicts without escalation fail the node and unknown verdicts are bad output",
          "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("x.db");
  SECTION("escalate = false") {
    std::string file = tmp.file("noesc.lua");
    write_file(file, R"LUA(local o = require "orch"
return o.pipeline "noesc" {
  o.node("gate", function() return o.verdict.retryable("red") end,
         { retry = { max = 2, base = "10ms" }, escalate = false }),
}
)LUA");
    CHECK(orchrun({file, "--quiet"}, db).exit_code == 1);
    CHECK(query_str(db, "select status || '|' || error_type from runs") == "failed|verdict");
    CHECK(query_int(db, "select count(*) from node_runs where node_id='gate' and kind='body'") ==
          2);
    CHECK(query_int(db, "select count(*) from approvals") == 0);
  }
  SECTION("an unknown verdict") {
    std::string file = tmp.file("maybe.lua");
    write_file(file, R"LUA(local o = require "orch"
return o.pipeline "maybe" {
  o.node("judge", function() return { verdict = "maybe" } end, { retry = { max = 3, base = "10ms" } }),
}
)LUA");
    CHECK(orchrun({file, "--quiet"}, db).exit_code == 1);
    CHECK(query_str(db, "select status || '|' || error_type from runs") == "failed|bad_output");
    std::string msg = query_str(db, "select error_message from runs");
    CHECK(has(msg, "'maybe'"));
    CHECK(has(msg, "\"pass\""));
    CHECK(has(msg, "\"retryable\""));
    CHECK(has(msg, "\"needs_human_review\""));
    // Not retryable: one attempt.
    CHECK(query_int(db, "select count(*) from node_runs where node_id='judge'") == 1);
  }
}

// ------------------------------------------------------------------------------------------
// o.call

namespace {
const char* kChild = R"LUA(local o = require "orch"
return o.pipeline "child" {
  o.node("double", function(ctx, input)
    return { doubled = input.x * 2, trace = ctx.trace_id }
  end),
}
)LUA";
}  // namespace

TEST_CASE("o.call runs the pipeline beside the caller as a linked child run", "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("c.db"), file = tmp.file("parent.lua");
  write_file(tmp.file("child.lua"), kChild);
  write_file(file, R"LUA(local o = require "orch"
return o.pipeline "parent" {
  o.node("prep", function() return { x = 21 } end),
  o.call("kid", "child", function(ctx, input) return { x = ctx.outputs.prep.x } end),
  o.node("after", function(ctx) return { got = ctx.outputs.kid.doubled } end),
}
)LUA");
  auto r = orchrun({file, "--quiet"}, db);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE(query_int(db, "select count(*) from runs") == 2);
  std::string parent = query_str(db, "select id from runs where parent_run is null");
  std::string child = query_str(db, "select id from runs where parent_run is not null");
  CHECK(query_str(db,
                  "select pipeline || '|' || parent_run || '|' || parent_node || '|' || "
                  "status from runs where id='" +
                      child + "'") == "child|" + parent + "|kid|succeeded");
  std::string trace = query_str(db, "select trace_id from runs where id='" + parent + "'");
  CHECK(query_str(db, "select trace_id from runs where id='" + child + "'") == trace);
  CHECK(query_str(db,
                  "select run_id || '|' || kind || '|' || status from node_runs where "
                  "node_id='kid'") == parent + "|call|succeeded");
  json kid = row_output(db, "kid", "call");
  CHECK(kid["doubled"] == 42);
  CHECK(kid["trace"] == trace);
  CHECK(row_output(db, "after") == parse(R"({"got":42})"));
  CHECK(query_int(db, "select count(*) from node_runs where run_id='" + child +
                          "' and node_id='double' and status='succeeded'") == 1);
  json j = parse(orchrun({"inspect", parent, "--json"}, db).out);
  REQUIRE(j.contains("child_runs"));
  REQUIRE(j["child_runs"].size() == 1);
  CHECK(j["child_runs"][0]["run_id"] == child);
  CHECK(j["child_runs"][0]["node"] == "kid");
  CHECK(j["child_runs"][0]["status"] == "succeeded");
}

TEST_CASE("o.call fails with child_failed or call_failed naming the child or the file",
          "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("cf.db");
  SECTION("a failing child") {
    write_file(tmp.file("broken.lua"), R"LUA(local o = require "orch"
return o.pipeline "broken" {
  o.node("boom", function() o.fail("disk full") end),
}
)LUA");
    std::string file = tmp.file("caller.lua");
    write_file(file, R"LUA(local o = require "orch"
return o.pipeline "caller" {
  o.call("kid", "broken", { x = 1 }),
  o.node("after", function() return {} end),
}
)LUA");
    CHECK(orchrun({file, "--quiet"}, db).exit_code == 1);
    std::string child = query_str(db, "select id from runs where parent_run is not null");
    REQUIRE(!child.empty());
    CHECK(query_str(db, "select status from runs where id='" + child + "'") == "failed");
    CHECK(query_str(db,
                    "select kind || '|' || status || '|' || error_type from node_runs where "
                    "node_id='kid'") == "call|failed|child_failed");
    std::string msg = query_str(db, "select error_message from node_runs where node_id='kid'");
    CHECK(has(msg, child));
    CHECK(has(msg, "disk full"));
    CHECK(query_str(db, "select error_type from runs where parent_run is null") == "child_failed");
    CHECK(query_int(db, "select count(*) from node_runs where node_id='after'") == 0);
  }
  SECTION("a missing target") {
    std::string file = tmp.file("caller.lua");
    write_file(file, R"LUA(local o = require "orch"
return o.pipeline "caller" {
  o.call("kid", "nosuch", { x = 1 }),
}
)LUA");
    CHECK(orchrun({file, "--quiet"}, db).exit_code == 1);
    CHECK(query_int(db, "select count(*) from runs") == 1);
    CHECK(query_str(db,
                    "select kind || '|' || status || '|' || error_type from node_runs where "
                    "node_id='kid'") == "call|failed|call_failed");
    std::string msg = query_str(db, "select error_message from node_runs where node_id='kid'");
    CHECK(has(msg, tmp.file("nosuch.lua")));
  }
}

namespace {
const char* kGatedChild = R"LUA(local o = require "orch"
return o.pipeline "gated" {
  o.node("build", function(ctx, input) return { v = input.v } end),
  o.approve("gate", { message = "ship the child?" }),
  o.node("ship", function(ctx) return { v = ctx.outputs.build.v, by = ctx.outputs.gate.by } end),
}
)LUA";
const char* kGatedParent = R"LUA(local o = require "orch"
return o.pipeline "outer" {
  o.call("kid", "gated", { v = 7 }),
  o.node("after", function(ctx) return { v = ctx.outputs.kid.v, by = ctx.outputs.kid.by } end),
}
)LUA";
}  // namespace

TEST_CASE("a child run waiting at a gate parks its parent and both resume through the parent",
          "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("g.db"), file = tmp.file("outer.lua");
  write_file(tmp.file("gated.lua"), kGatedChild);
  write_file(file, kGatedParent);
  auto first = orchrun({file}, db);
  INFO(first.out << first.err);
  CHECK(first.exit_code == 4);
  std::string parent = query_str(db, "select id from runs where parent_run is null");
  std::string child = query_str(db, "select id from runs where parent_run is not null");
  REQUIRE(!child.empty());
  CHECK(query_str(db, "select group_concat(status) from runs") ==
        "awaiting_approval,awaiting_approval");
  CHECK(has(first.out, "orchrun approve " + child + " gate"));
  CHECK(query_str(db, "select run_id || '|' || node_id || '|' || kind from approvals") ==
        child + "|gate|gate");

  // The child is resumed by its parent only.
  auto own = orchrun({"resume", child}, db);
  CHECK(own.exit_code == 2);
  CHECK(has(own.err, parent));
  CHECK(has(orchrun({"resume", "--all"}, db).out, "nothing to resume"));
  CHECK(query_str(db, "select group_concat(status) from runs") ==
        "awaiting_approval,awaiting_approval");

  CHECK(orchrun({"approve", child, "gate", "--as", "dana"}, db).exit_code == 0);
  auto own2 = orchrun({"resume", child}, db);
  CHECK(own2.exit_code == 2);
  auto res = orchrun({"resume", parent, "--quiet"}, db);
  INFO(res.out << res.err);
  CHECK(res.exit_code == 0);
  CHECK(query_str(db, "select group_concat(status) from runs") == "succeeded,succeeded");
  CHECK(query_int(db, "select count(*) from runs") == 2);
  CHECK(row_output(db, "after") == parse(R"({"v":7,"by":"dana"})"));
  CHECK(query_int(db, "select count(*) from node_runs where node_id='build'") == 1);
  CHECK(query_str(db,
                  "select status from node_runs where node_id='kid' and kind='call' and "
                  "status='succeeded'") == "succeeded");
}

// Regression: `orchrun resume --all` used to take an awaiting_approval run only once one of its
// own approvals was decided; a parent parked on its child's gate has none.
TEST_CASE("resume all continues a parent once its child's gate is decided", "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("ga.db"), file = tmp.file("outer.lua");
  write_file(tmp.file("gated.lua"), kGatedChild);
  write_file(file, kGatedParent);
  CHECK(orchrun({file, "--quiet"}, db).exit_code == 4);
  std::string child = query_str(db, "select id from runs where parent_run is not null");
  REQUIRE(!child.empty());
  CHECK(orchrun({"approve", child, "gate", "--as", "dana"}, db).exit_code == 0);
  // Someone decided: like a run waiting at its own gate, the parent is ready to continue.
  auto all = orchrun({"resume", "--all", "--quiet"}, db);
  INFO(all.out << all.err);
  CHECK(all.exit_code == 0);
  CHECK(!has(all.out, "nothing to resume"));
  CHECK(query_str(db, "select group_concat(status) from runs") == "succeeded,succeeded");
}

// ------------------------------------------------------------------------------------------
// Artifacts

TEST_CASE("artifacts are recorded with size and sha256 in the run workspace and uses tracked",
          "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("a.db"), file = tmp.file("art.lua");
  write_file(file, R"LUA(local o = require "orch"
return o.pipeline "art" {
  o.node("produce", function(ctx)
    local text = "# Report\n\nall green\n"
    assert(o.fs.write(ctx.workspace .. "/out/report.md", text, { mkdirs = true }))
    local a = ctx:artifact("out/report.md", { kind = "report" })
    return { name = a.name, size = a.size, sha = a.sha256, ws = ctx.workspace, path = a.path }
  end),
  o.node("consume", function(ctx)
    local seen = ctx.artifacts["out/report.md"]
    local a = ctx:use_artifact("out/report.md")
    return { seen = seen ~= nil, from = a.node, kind = a.kind, text = o.fs.read(a.path) }
  end),
}
)LUA");
  auto r = orchrun({file, "--quiet"}, db);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  std::string id = query_str(db, "select id from runs");
  std::string ws = query_str(db, "select workspace from runs");
  CHECK(ws == tmp.path() + "/workspaces/" + id);
  CHECK(ws.front() == '/');
  std::string report = ws + "/out/report.md";
  CHECK(read_file(report) == "# Report\n\nall green\n");
  std::string sha = sha256_of(report);
  REQUIRE(sha.size() == 64);
  CHECK(query_str(db,
                  "select node_id || '|' || attempt || '|' || path || '|' || kind || '|' || size "
                  "|| '|' || sha256 from artifacts") == "produce|1|out/report.md|report|20|" + sha);
  json prod = row_output(db, "produce");
  CHECK(prod["name"] == "out/report.md");
  CHECK(prod["size"] == 20);
  CHECK(prod["sha"] == sha);
  CHECK(prod["ws"] == ws);
  CHECK(prod["path"] == report);
  CHECK(
      row_output(db, "consume") ==
      parse(R"({"seen":true,"from":"produce","kind":"report","text":"# Report\n\nall green\n"})"));
  CHECK(query_str(db,
                  "select u.node_id || '|' || u.attempt || '|' || a.path from artifact_uses u "
                  "join artifacts a on a.id = u.artifact_id") == "consume|1|out/report.md");
  json j = parse(orchrun({"inspect", id, "--json"}, db).out);
  REQUIRE(j.contains("artifacts"));
  REQUIRE(j["artifacts"].size() == 1);
  CHECK(j["artifacts"][0]["name"] == "out/report.md");
  CHECK(j["artifacts"][0]["sha256"] == sha);
  CHECK(j["artifacts"][0]["used_by"] == parse(R"(["consume#1"])"));
  CHECK(j["artifacts"][0]["path"] == report);
}

TEST_CASE("artifacts outside the workspace are refused and unknown artifacts are named",
          "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("o.db");
  std::string outside = tmp.file("outside.txt");
  write_file(outside, "secret\n");
  auto expect_refused = [&](const std::string& call, const std::string& want) {
    INFO(call);
    std::string file = tmp.file("esc.lua");
    write_file(file, sub(sub(R"LUA(local o = require "orch"
return o.pipeline "esc" {
  o.node("leak", function(ctx)
    assert(o.fs.write(ctx.workspace .. "/inside.txt", "in", {}))
    o.exec { "ln", "-s", "OUTSIDE", ctx.workspace .. "/link.txt", check = true }
    CALL
    return {}
  end, { retry = { max = 3, base = "10ms" } }),
}
)LUA",
                             "CALL", call),
                         "OUTSIDE", outside));
    auto r = orchrun({file, "--quiet"}, db);
    CHECK(r.exit_code == 1);
    std::string run =
        query_str(db, "select id from runs order by created_at desc, rowid desc limit 1");
    // Not retryable: one attempt.
    CHECK(query_str(db,
                    "select group_concat(status || '|' || error_type || '|' || retryable) from "
                    "node_runs where run_id='" +
                        run + "'") == "failed|artifact|0");
    CHECK(
        has(query_str(db, "select error_message from node_runs where run_id='" + run + "'"), want));
    CHECK(query_int(db, "select count(*) from artifacts where run_id='" + run + "'") == 0);
  };
  expect_refused(R"(ctx:artifact("../escape.txt"))", "outside the run's workspace");
  expect_refused(R"(ctx:artifact("/etc/hostname"))", "outside the run's workspace");
  expect_refused(R"(ctx:artifact("sub/../../x.txt"))", "outside the run's workspace");
  // A symlink inside the workspace that points outside.
  expect_refused(R"(ctx:artifact("link.txt"))", "outside the run's workspace");
  // Unknown upstream artifact: the message lists the known ones.
  std::string file = tmp.file("use.lua");
  write_file(file, R"LUA(local o = require "orch"
return o.pipeline "use" {
  o.node("make", function(ctx)
    assert(o.fs.write(ctx.workspace .. "/a.txt", "a", {}))
    ctx:artifact("a.txt")
    return {}
  end),
  o.node("want", function(ctx) ctx:use_artifact("nope") return {} end),
}
)LUA");
  CHECK(orchrun({file, "--quiet"}, db).exit_code == 1);
  CHECK(query_str(db, "select error_type from node_runs where node_id='want'") == "artifact");
  std::string msg = query_str(db, "select error_message from node_runs where node_id='want'");
  CHECK(has(msg, "'nope'"));
  CHECK(has(msg, "a.txt"));
}

// ------------------------------------------------------------------------------------------
// Concurrency keys

namespace {
const char* kDeploy = R"LUA(local o = require "orch"
return o.pipeline "deployer" {
  o.node("build", function() return {} end),
  o.node("deploy", function() o.sleep("SLEEP") return {} end, { concurrency_key = "deploy"LIMIT }),
}
)LUA";
}  // namespace

TEST_CASE("a node concurrency key keeps two processes on one db from overlapping", "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("k.db"), file = tmp.file("deploy.lua");
  write_file(file, sub(sub(kDeploy, "SLEEP", "600ms"), "LIMIT", ""));
  pid_t a = spawn_quiet({orchrun_bin(), file, "--db", db});
  pid_t b = spawn_quiet({orchrun_bin(), file, "--db", db});
  CHECK(reap(a) == 0);
  CHECK(reap(b) == 0);
  CHECK(query_int(db, "select count(*) from runs where status='succeeded'") == 2);
  auto iv = intervals(db, "node_id='deploy' and status='succeeded'");
  REQUIRE(iv.size() == 2);
  CHECK(max_overlap(iv, 0) == 1);
  CHECK(query_int(db, "select count(*) from node_runs where node_id='deploy'") == 2);
  CHECK(query_int(
            db, "select count(*) from events where kind='node.queued' and node_id='deploy'") == 1);
  CHECK(query_int(db, "select count(*) from concurrency_slots") == 0);
}

TEST_CASE("concurrency 2 lets at most two of three processes hold the key", "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("k2.db"), file = tmp.file("deploy.lua");
  write_file(file, sub(sub(kDeploy, "SLEEP", "600ms"), "LIMIT", ", concurrency = 2"));
  std::vector<pid_t> pids;
  for (int i = 0; i < 3; i++) pids.push_back(spawn_quiet({orchrun_bin(), file, "--db", db}));
  for (pid_t p : pids) CHECK(reap(p) == 0);
  CHECK(query_int(db, "select count(*) from runs where status='succeeded'") == 3);
  auto iv = intervals(db, "node_id='deploy' and status='succeeded'");
  REQUIRE(iv.size() == 3);
  CHECK(max_overlap(iv, 0) <= 2);
  CHECK(query_int(db, "select count(*) from concurrency_slots") == 0);
}

// Regression: a pipeline-level slot (node_id "") used to be bound as NULL, so the row was never
// stored and every run "acquired" the slot at once.
TEST_CASE("a pipeline concurrency key queues the second run until the first finishes",
          "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("q.db"), file = tmp.file("solo.lua");
  write_file(file, R"LUA(local o = require "orch"
return o.pipeline "solo" {
  concurrency_key = "solo",
  o.node("work", function() o.sleep("900ms") return { t = o.now_ms() } end),
}
)LUA");
  pid_t a = spawn_quiet({orchrun_bin(), file, "--db", db});
  REQUIRE(
      wait_for(db, "select count(*) from node_runs where node_id='work' and status='running'", 1));
  std::string first = query_str(db, "select id from runs");
  pid_t b = spawn_quiet({orchrun_bin(), file, "--db", db});
  // Watch for the second run to be queued, until it ends.
  bool saw_queued = false;
  int b_exit = -1;
  for (int i = 0; i < 800 && !saw_queued && b_exit < 0; i++) {
    if (poll_int(db, "select count(*) from runs where status='queued'", 0) > 0) {
      saw_queued = true;
      break;
    }
    int status = 0;
    if (waitpid(b, &status, WNOHANG) == b) b_exit = WIFEXITED(status) ? WEXITSTATUS(status) : 99;
    usleep(10000);
  }
  if (b_exit < 0) b_exit = reap(b);
  CHECK(reap(a) == 0);
  CHECK(b_exit == 0);
  CHECK(saw_queued);
  std::string second = query_str(db, "select id from runs where id != '" + first + "'");
  REQUIRE(!second.empty());
  CHECK(query_int(db, "select count(*) from runs where status='succeeded'") == 2);
  CHECK(query_int(db, "select count(*) from events where kind='run.queued' and run_id='" + second +
                          "'") == 1);
  CHECK(query_int(db, "select count(*) from events where kind='run.queued' and run_id='" + first +
                          "'") == 0);
  CHECK(query_int(db, "select count(*) from events where kind='run.dequeued' and run_id='" +
                          second + "'") == 1);
  // The second run's node started after the first run's node finished.
  CHECK(query_int(db, "select started_at from node_runs where run_id='" + second + "'") >=
        query_int(db, "select finished_at from node_runs where run_id='" + first + "'"));
  CHECK(query_int(db, "select count(*) from concurrency_slots") == 0);
}

TEST_CASE("a slot held by a process killed with SIGKILL is reaped by the next run", "[dynamic]") {
  TempDir tmp;
  std::string db = tmp.file("dead.db"), slow = tmp.file("slow.lua"), fast = tmp.file("fast.lua");
  write_file(slow, sub(sub(kDeploy, "SLEEP", "30s"), "LIMIT", ""));
  write_file(fast, sub(sub(kDeploy, "SLEEP", "10ms"), "LIMIT", ""));
  pid_t a = spawn_quiet({orchrun_bin(), slow, "--db", db});
  bool holding =
      wait_for(db, "select count(*) from concurrency_slots where acquired_at is not null", 1) &&
      wait_for(db, "select count(*) from node_runs where node_id='deploy' and status='running'", 1);
  kill(a, SIGKILL);
  waitpid(a, nullptr, 0);
  REQUIRE(holding);
  CHECK(query_int(db, "select count(*) from concurrency_slots") == 1);
  auto r = run_cmd({orchrun_bin(), fast, "--db", db, "--quiet"}, {}, "", 8);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(query_int(db, "select count(*) from runs where status='succeeded'") == 1);
  CHECK(query_int(db, "select count(*) from concurrency_slots") == 0);
}

// ------------------------------------------------------------------------------------------
// Validation

TEST_CASE("orchrun validate reports dynamic step mistakes with file and line", "[dynamic]") {
  TempDir tmp;
  struct Case {
    const char* name;
    const char* step;  // written on line 3
    const char* want;
  };
  const Case cases[] = {
      {"map_items", R"(o.map("m", 42, function() return {} end),)",
       "items must be a list or a function"},
      {"loop_max",
       R"(o.loop("l", { done = function() return true end }, function() return {} end),)",
       "max (the most iterations) is required"},
      {"call_dots", R"(o.call("c", "../other", {}),)", "no '..'"},
      {"conc_nokey", R"(o.node("n", function() return {} end, { concurrency = 2 }),)",
       "concurrency is given without a concurrency_key"},
      {"loop_opt", R"(o.loop("l", { max = 2, until_done = true }, function() return {} end),)",
       "unknown option 'until_done'"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    std::string file = tmp.file(std::string(c.name) + ".lua");
    write_file(file, std::string("local o = require \"orch\"\nreturn o.pipeline \"v\" {\n  ") +
                         c.step + "\n}\n");
    auto r = orchrun({"validate", file}, "");
    INFO(r.out << r.err);
    CHECK(r.exit_code == 2);
    CHECK(has(r.err, file + ":3: "));
    CHECK(has(r.err, c.want));
  }
}
