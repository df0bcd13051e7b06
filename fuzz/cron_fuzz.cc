// Cron expressions of o.schedule (base/cron.cc): CronExpr::parse, then next_after from a
// few starting points, in a zone of the system's tz database.
//
// Input: "<expression>\n<zone name>\n<start>" — the zone as written (names are checked before
// they become a path under /usr/share/zoneinfo), the start as decimal unix milliseconds
// (default 2026-01-01T00:00Z).
//
// Invariants: no crash; a parse error names what is wrong; each fire time is after the time it
// was asked for, a whole second, less than ~5 years and a day later, and the
// next one after it is later still.
#include <cstdlib>
#include <string>

#include "fuzz/fuzz_util.h"
#include "base/cron.h"

using namespace orch;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in = orch::fuzz::bytes(data, size);
  auto next_line = [&in] {
    size_t nl = in.find('\n');
    std::string line(in.substr(0, nl));
    in = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
    return line;
  };
  const std::string expr = next_line(), zone = next_line(), start = next_line();
  int64_t t = 1767225600000;  // 2026-01-01T00:00:00Z
  if (!start.empty()) t = strtoll(start.c_str(), nullptr, 10);

  std::string err;
  std::optional<CronExpr> c = CronExpr::parse(expr, zone, &err);
  if (!c) {
    FUZZ_CHECK(!err.empty(), "a refused expression without a message: " + expr);
    return 0;
  }
  constexpr int64_t kDayMs = 86400000;
  for (int i = 0; i < 4; i++) {
    const int64_t next = c->next_after(t);
    if (next == -1) break;
    FUZZ_CHECK(next > t, "next_after(" + std::to_string(t) + ") = " + std::to_string(next) +
                             " for '" + expr + "' in " + zone);
    FUZZ_CHECK(next - t <= (5 * 366 + 2) * kDayMs, "a fire time more than 5 years ahead");
    FUZZ_CHECK(next % 1000 == 0, "a fire time with milliseconds");
    (void)format_local(next, c->tz());
    t = next;
  }
  return 0;
}
