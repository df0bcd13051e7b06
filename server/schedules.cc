#include "server/schedules.h"

#include <algorithm>

#include "base/ids.h"
#include "base/json_util.h"
#include "server/context.h"

namespace orch {
namespace {

void fire(ServerContext& c, Schedule& s, int64_t fire_at, int missed) {
  Pipeline* p = c.registry->active(s.pipeline);
  if (!p) return;
  RunOptions ro;
  ro.source = "schedule";
  json input = parse_json(s.input_json, nullptr);
  if (!input.is_object()) input = json::object();
  ro.input_json = dump_json(input);
  // One run per schedule and fire time, even with several servers on one store. A schedule
  // is its whole spec (cron, tz, input...), as in schedule_fires: two schedules of a pipeline
  // with the same expression (e.g. one per input) are two schedules, each with its run.
  ro.idempotency_key = "schedule:" + s.key + "@" + iso8601_ms(fire_at);
  std::string err;
  std::string id = c.sched->start_run(p, ro, &err);
  if (id.empty()) {
    if (err != "duplicate idempotency key")
      c.log("pipeline %s: scheduled run not started: %s", s.pipeline.c_str(), err.c_str());
    return;
  }
  c.log("pipeline %s: scheduled run %s (%s, due %s%s)", s.pipeline.c_str(), id.c_str(),
        s.cron->expr().c_str(), iso8601_ms(fire_at).c_str(),
        missed ? (", " + std::to_string(missed) + " missed before").c_str() : "");
}

}  // namespace

std::vector<Schedule> build_schedules(ServerContext& c) {
  std::vector<Schedule> scheds;
  c.registry->for_each_trigger(
      "schedule", [&](const Pipeline& p, const Trigger& t, const json& spec) {
        Schedule s;
        s.pipeline = p.name;
        s.key = t.spec;
        std::string cerr;
        s.cron = CronExpr::parse(spec.value("cron", ""), spec.value("tz", ""), &cerr);
        if (!s.cron) {
          c.log("pipeline %s: schedule %s: %s", s.pipeline.c_str(), t.spec.c_str(), cerr.c_str());
          return;
        }
        s.run_once_if_missed = spec.value("missed", "skip") == "run_once";
        if (spec.contains("input")) s.input_json = dump_json(spec["input"]);
        // Keep what we know of a schedule that was there before the reload.
        for (auto& old : c.schedules)
          if (old.pipeline == s.pipeline && old.key == s.key) s.last_fire = old.last_fire;
        if (s.last_fire == 0) {
          s.last_fire = c.store->schedule_last_fire(s.pipeline, s.key);
          if (s.last_fire == 0) {
            // Never fired: it starts from now (no backfill of the past).
            s.last_fire = c.now();
            c.store->set_schedule_fire(s.pipeline, s.key, s.last_fire);
          }
        }
        scheds.push_back(std::move(s));
      });
  return scheds;
}

void arm_schedule_timer(ServerContext& c) {
  if (c.shutting_down) return;
  if (!c.schedule_timer) c.schedule_timer = std::make_unique<Timer>(c.loop->get());
  check_schedules(c);
}

void check_schedules(ServerContext& c) {
  if (c.shutting_down) return;
  int64_t t = c.now();
  // A fire time counts as on time while it is less than a minute old; older ones were missed
  // (the server was down, or the loop was held up).
  constexpr int64_t kLate = 60000;
  int64_t soonest = -1;
  for (auto& s : c.schedules) {
    int64_t due = s.cron->next_after(s.last_fire);
    int64_t latest = -1;
    int missed = 0, steps = 0;
    bool many = false;
    while (due > 0 && due <= t) {
      if (latest > 0) missed++;
      latest = due;
      if (++steps == 10000 && t - latest > 25 * 3600 * 1000LL) {
        // Down for a long time with a frequent schedule: only the last day matters now.
        many = true;
        due = s.cron->next_after(t - 25 * 3600 * 1000LL);
        continue;
      }
      due = s.cron->next_after(due);
    }
    if (latest > 0) {
      bool on_time = t - latest < kLate;
      if (!on_time) missed++;
      if (on_time || s.run_once_if_missed)
        fire(c, s, latest, missed);
      else
        c.log(
            "pipeline %s: schedule %s missed %s%d fire time(s) up to %s; skipped (missed = "
            "\"skip\")",
            s.pipeline.c_str(), s.cron->expr().c_str(), many ? "more than " : "", missed,
            iso8601_ms(latest).c_str());
      s.last_fire = latest;
      c.store->set_schedule_fire(s.pipeline, s.key, latest);
    }
    s.next_fire = due;
    if (due > 0 && (soonest < 0 || due < soonest)) soonest = due;
  }
  c.store->commit();
  if (!c.schedule_timer) return;
  if (soonest < 0) {
    c.schedule_timer->stop();
    return;
  }
  // Wake at the next fire time, and at least once a minute (the wall clock may jump).
  int64_t wait = std::clamp<int64_t>(soonest - c.now(), 0, 60000);
  ServerContext* cp = &c;
  c.schedule_timer->start(static_cast<uint64_t>(wait) + 1, [cp] { check_schedules(*cp); });
  c.schedule_timer->unref();
}

}  // namespace orch
