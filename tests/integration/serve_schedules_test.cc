// orchrun serve's cron schedules (server/schedules.cc), in-process with an injected clock
// ([serve][cron]).
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "base/ids.h"
#include "base/json_util.h"
#include "drivers/loop.h"
#include "serve_util.h"
#include "server/server.h"
#include "store/store.h"
#include "test_util.h"

using namespace orch;
using namespace orch::test;
using namespace orch::test::serve;

// --- cron schedules, in-process with an injected clock -----------------------------------------

TEST_CASE("serve: cron schedules fire once per fire time, honour missed and restarts",
          "[serve][cron]") {
  TempDir tmp;
  std::string dir = pipeline_dir(tmp, {{"five.lua", R"(local o = require "orch"
return o.pipeline "five" {
  triggers = { o.schedule "*/5 * * * *" },
  o.node("n", function(ctx) return { input = ctx.input } end),
}
)"},
                                       {"hourly.lua", R"(local o = require "orch"
return o.pipeline "hourly" {
  triggers = { o.schedule { cron = "0 * * * *", missed = "run_once", input = { k = "v" } } },
  o.node("n", function(ctx) return { input = ctx.input } end),
}
)"},
                                       {"paris.lua", R"(local o = require "orch"
return o.pipeline "paris" {
  triggers = { o.schedule { cron = "30 2 * * *", tz = "Europe/Paris" } },
  o.node("n", function() return {} end),
}
)"},
                                       // Two schedules with one cron expression: each fires.
                                       {"regions.lua", R"(local o = require "orch"
return o.pipeline "regions" {
  triggers = {
    o.schedule { cron = "*/5 * * * *", input = { region = "eu" } },
    o.schedule { cron = "*/5 * * * *", input = { region = "us" } },
  },
  o.node("n", function(ctx) return { region = ctx.input.region } end),
}
)"}});
  std::string db = tmp.file("cron.db");
  std::string err;
  auto store = Store::open(db, StoreOptions{}, &err);
  INFO(err);
  REQUIRE(store);
  Loop loop;
  int64_t clock = utc_ms(2026, 3, 1, 1, 22, 0);
  ServeOptions so;
  so.dir = dir;
  so.port = 0;
  so.clock = [&clock] { return clock; };
  so.log = nullptr;
  auto server = std::make_unique<Server>(&loop, store.get(), so);
  REQUIRE(server->start(&err));
  REQUIRE(server->schedules().size() == 5);

  auto runs = [&](const std::string& pipeline) {
    return poll_int(db, "select count(*) from runs where pipeline=" + sql_literal(pipeline), 0);
  };
  auto unfinished = [&] {
    return poll_int(db, "select count(*) from runs where status not in ('succeeded','failed')", 0);
  };
  auto settle = [&] { REQUIRE(pump_until(loop, [&] { return unfinished() == 0; })); };
  auto advance = [&](int64_t to) {
    clock = to;
    server->check_schedules();
    pump_for(loop, 20);
    settle();
  };
  pump_for(loop, 20);
  // Never fired before: nothing is backfilled.
  CHECK(poll_int(db, "select count(*) from runs", 0) == 0);
  CHECK(poll_int(db, "select count(*) from schedule_fires", 0) == 5);

  advance(utc_ms(2026, 3, 1, 1, 25, 30));  // 01:25 is due (30 s ago: on time)
  CHECK(runs("five") == 1);
  CHECK(runs("hourly") == 0);
  CHECK(runs("paris") == 0);
  CHECK(runs("regions") == 2);
  CHECK(query_str(db,
                  "select group_concat(input, ' ') from (select input from runs where "
                  "pipeline='regions' order by input)") == R"({"region":"eu"} {"region":"us"})");
  advance(utc_ms(2026, 3, 1, 1, 25, 50));  // nothing new
  CHECK(runs("five") == 1);
  // 01:30 UTC is 02:30 in Paris (UTC+1 in March before the change).
  advance(utc_ms(2026, 3, 1, 1, 30, 20));
  CHECK(runs("five") == 2);
  CHECK(runs("paris") == 1);
  CHECK(runs("regions") == 4);
  std::string paris_key = query_str(db, "select idempotency_key from runs where pipeline='paris'");
  CHECK(paris_key.rfind("schedule:", 0) == 0);
  CHECK(has(paris_key, "30 2 * * *"));
  CHECK(has(paris_key, "@2026-03-01T01:30:00.000Z"));
  advance(utc_ms(2026, 3, 1, 1, 30, 40));
  CHECK(runs("five") == 2);
  CHECK(runs("paris") == 1);

  // A long gap (the clock jumps 3.5 hours): "skip" starts nothing for fire times that are over
  // a minute old; "run_once" starts one run, for the latest.
  advance(utc_ms(2026, 3, 1, 5, 3, 0));
  CHECK(runs("five") == 2);
  CHECK(runs("hourly") == 1);
  CHECK(has(query_str(db, "select idempotency_key from runs where pipeline='hourly'"),
            "@2026-03-01T05:00:00.000Z"));
  CHECK(runs("regions") == 4);
  CHECK(query_str(db, "select input from runs where pipeline='hourly'") == R"({"k":"v"})");
  CHECK(runs("paris") == 1);

  // Every scheduled run: source 'schedule', a distinct idempotency key, succeeded.
  CHECK(poll_int(db,
                 "select count(*) from runs where source<>'schedule' or idempotency_key is null "
                 "or idempotency_key='' or status<>'succeeded'",
                 -1) == 0);
  CHECK(poll_int(db, "select count(distinct pipeline || char(10) || idempotency_key) from runs",
                 0) == poll_int(db, "select count(*) from runs", -1));
  auto five_keys =
      query(db, "select idempotency_key from runs where pipeline='five' order by created_at");
  REQUIRE(five_keys.size() == 2);
  CHECK(has(five_keys[0][0], "@2026-03-01T01:25:00.000Z"));
  CHECK(has(five_keys[1][0], "@2026-03-01T01:30:00.000Z"));

  // Restart: a new server on the same store, later, picks up from schedule_fires.
  auto restart = [&](int64_t at) {
    bool closed = false;
    server->shutdown([&closed] { closed = true; });
    REQUIRE(pump_until(loop, [&] { return closed; }));
    server.reset();
    pump_for(loop, 10);
    clock = at;
    server = std::make_unique<Server>(&loop, store.get(), so);
    REQUIRE(server->start(&err));
    pump_for(loop, 20);
    settle();
  };
  restart(utc_ms(2026, 3, 1, 5, 3, 10));  // the same fire times: nothing again
  CHECK(poll_int(db, "select count(*) from runs", 0) == 8);
  restart(utc_ms(2026, 3, 1, 5, 5, 20));  // 05:05 is due: it fires once
  CHECK(runs("five") == 3);
  CHECK(runs("regions") == 6);
  CHECK(runs("hourly") == 1);
  restart(utc_ms(2026, 3, 1, 5, 5, 40));
  CHECK(runs("five") == 3);
  CHECK(runs("regions") == 6);
  // Even when schedule_fires lags (another server on the store fired it), the idempotency key
  // keeps it to one run per fire time.
  {
    bool closed = false;
    server->shutdown([&closed] { closed = true; });
    REQUIRE(pump_until(loop, [&] { return closed; }));
    server.reset();
    pump_for(loop, 10);
  }
  store->commit();
  {
    auto other = Store::open(db, StoreOptions{}, &err);
    REQUIRE(other);
    other->set_schedule_fire(
        "five", query_str(db, "select schedule from schedule_fires where pipeline='five'"),
        utc_ms(2026, 3, 1, 5, 4, 0));
    other->commit();
  }
  clock = utc_ms(2026, 3, 1, 5, 5, 50);
  server = std::make_unique<Server>(&loop, store.get(), so);
  REQUIRE(server->start(&err));
  pump_for(loop, 20);
  settle();
  CHECK(runs("five") == 3);
  CHECK(server->schedules().size() == 5);
  for (auto& s : server->schedules()) {
    INFO(s.pipeline);
    CHECK(s.next_fire > clock);
  }

  bool closed = false;
  server->shutdown([&closed] { closed = true; });
  REQUIRE(pump_until(loop, [&] { return closed; }));
  server.reset();
  pump_for(loop, 10);
  store.reset();
  auto leaked = loop.close();
  std::string names;
  for (auto& n : leaked) names += n + " ";
  INFO("handles left open: " << names);
  CHECK(leaked.empty());
}
