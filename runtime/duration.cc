#include "runtime/duration.h"

#include <cmath>
#include <cstdio>

namespace orch {

std::optional<int64_t> seconds_to_ms(double seconds, std::string* err) {
  if (!std::isfinite(seconds) || seconds < 0) {
    *err = "duration must be a non-negative number of seconds";
    return std::nullopt;
  }
  if (seconds > 1e9) {
    *err = "duration is too large";
    return std::nullopt;
  }
  return static_cast<int64_t>(std::llround(seconds * 1000.0));
}

std::optional<int64_t> parse_duration_ms(std::string_view text, std::string* err) {
  auto fail = [&](const char* why) -> std::optional<int64_t> {
    *err = "invalid duration '" + std::string(text) + "': " + why +
           " (use e.g. 250ms, 5s, 2m, 1h30m or a number of seconds)";
    return std::nullopt;
  };
  if (text.empty()) return fail("empty");
  double total = 0;
  size_t i = 0;
  bool any = false;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && (isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) i++;
    if (i == start) return fail("expected a number");
    std::string num(text.substr(start, i - start));
    char* end = nullptr;
    double v = strtod(num.c_str(), &end);
    if (!end || *end != '\0') return fail("bad number");
    size_t ustart = i;
    while (i < text.size() && isalpha(static_cast<unsigned char>(text[i]))) i++;
    std::string_view unit = text.substr(ustart, i - ustart);
    double mult;
    if (unit == "ms")
      mult = 1;
    else if (unit == "s" || (unit.empty() && i == text.size() && !any))
      mult = 1000;  // a bare number in a string means seconds, like a bare Lua number
    else if (unit == "m" || unit == "min")
      mult = 60000;
    else if (unit == "h")
      mult = 3600000;
    else if (unit == "d")
      mult = 86400000;
    else if (unit.empty())
      return fail("missing unit");
    else
      return fail("unknown unit");
    total += v * mult;
    any = true;
  }
  if (total > 1e12) return fail("too large");
  return static_cast<int64_t>(std::llround(total));
}

std::string format_duration_ms(int64_t ms) {
  char buf[64];
  if (ms < 1000) {
    snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(ms));
  } else if (ms < 60000) {
    snprintf(buf, sizeof buf, "%.2fs", ms / 1000.0);
  } else if (ms < 3600000) {
    snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(ms / 60000),
             static_cast<long long>((ms / 1000) % 60));
  } else {
    snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(ms / 3600000),
             static_cast<long long>((ms / 60000) % 60));
  }
  return buf;
}

}  // namespace orch
