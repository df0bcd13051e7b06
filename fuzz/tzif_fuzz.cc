// TZif data (RFC 8536, v1 to v4) as base/cron.cc reads zone files for o.schedule:
// TimeZone::from_tzif on arbitrary bytes (the same parser TimeZone::load runs on the file's
// contents), then the conversions CronExpr::next_after makes with the zone.
//
// Invariants: no crash or hang; a refused file has a reason; offsets stay within ±26 h; for
// wall-clock times over ±3000 years (next_after's range), utc_from_local never decreases and
// returns an instant whose clock shows that time, or a later one (the end of a gap).
#include <algorithm>
#include <climits>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "base/cron.h"

using namespace orch;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string err;
  auto tz = TimeZone::from_tzif("fuzz", orch::fuzz::bytes(data, size), &err);
  if (!tz) {
    FUZZ_CHECK(!err.empty(), "refused without a reason");
    return 0;
  }
  constexpr int64_t kDay = 86400, kYear = 365 * kDay + kDay / 4;
  constexpr int kMaxOffset = 26 * 3600;
  // Probes: every ~97 days over ±60 years around 1970 and 2026, then sparse out to ±3000
  // years, each also at ±1 h (either side of a change in a rule's year).
  std::vector<int64_t> probes;
  for (int64_t base : {int64_t{0}, 56 * kYear})
    for (int64_t t = base - 60 * kYear; t <= base + 60 * kYear; t += 97 * kDay + 3671)
      for (int64_t d : {-3600, 0, 3600}) probes.push_back(t + d);
  for (int64_t y = -3000; y <= 3000; y += 37) probes.push_back(y * kYear);
  int64_t prev_local = INT64_MIN, prev_utc = INT64_MIN;
  std::sort(probes.begin(), probes.end());
  for (int64_t t : probes) {
    const int off = tz->offset_at(t);
    FUZZ_CHECK(off >= -kMaxOffset && off <= kMaxOffset, "offset " + std::to_string(off));
    const int64_t u = tz->utc_from_local(t);
    FUZZ_CHECK(u + tz->offset_at(u) >= t, "utc_from_local(" + std::to_string(t) + ") = " +
                                              std::to_string(u) + " shows an earlier time");
    if (prev_local != INT64_MIN && t >= prev_local)
      FUZZ_CHECK(u >= prev_utc, "utc_from_local decreased: " + std::to_string(prev_local) + " -> " +
                                    std::to_string(prev_utc) + ", " + std::to_string(t) + " -> " +
                                    std::to_string(u));
    prev_local = t;
    prev_utc = u;
    (void)format_local(u * 1000, *tz);
  }
  return 0;
}
