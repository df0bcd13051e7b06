// The cron schedules of the active pipelines: built from their triggers at each (re)load, fired
// by a timer at each fire time, with missed fire times skipped or run once (missed = "run_once").
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/cron.h"

namespace orch {

struct ServerContext;

// A schedule of an active pipeline.
struct Schedule {
  std::string pipeline, key;  // key: the trigger's spec (cron, tz, ...), as JSON
  std::optional<CronExpr> cron;
  bool run_once_if_missed = false;
  std::string input_json = "{}";
  int64_t last_fire = 0;  // unix ms of the last fire time handled
  int64_t next_fire = -1;
};

// The schedules of the registry's active pipelines; what was known of a schedule that was there
// before (its last fire time) is kept, one never fired starts from now (no backfill).
std::vector<Schedule> build_schedules(ServerContext& c);
// Creates the schedule timer (once) and fires what is due.
void arm_schedule_timer(ServerContext& c);
// Fires the schedules that are due at c.now() and sets the timer for the next fire time.
void check_schedules(ServerContext& c);

}  // namespace orch
