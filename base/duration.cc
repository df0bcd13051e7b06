#include "base/duration.h"

#include <time.h>

#include <cctype>
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

bool parse_time_ms(const std::string& v, int64_t now, int64_t* out, std::string* err) {
  if (v.empty()) {
    *err = "empty";
    return false;
  }
  bool digits = true;
  for (char c : v) digits = digits && isdigit(static_cast<unsigned char>(c));
  if (digits) {
    if (v.size() > 15) {
      *err = "'" + v + "' is not a time";
      return false;
    }
    *out = std::stoll(v);
    return true;
  }
  if (v.size() >= 19 && v[4] == '-' && v[7] == '-' && (v[10] == 'T' || v[10] == ' ')) {
    struct tm tm {};
    const char* rest = strptime(v.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest) rest = strptime(v.c_str(), "%Y-%m-%d %H:%M:%S", &tm);
    if (!rest) {
      *err = "'" + v + "' is not an RFC 3339 time (2026-11-22T10:00:00Z)";
      return false;
    }
    int64_t ms = 0;
    if (*rest == '.') {
      rest++;
      int scale = 100;
      while (isdigit(static_cast<unsigned char>(*rest))) {
        ms += static_cast<int64_t>(*rest - '0') * scale;
        scale /= 10;
        rest++;
      }
    }
    int64_t offset = 0;
    if (*rest == 'Z' || *rest == 'z') {
      rest++;
    } else if (*rest == '+' || *rest == '-') {
      int sign = *rest == '-' ? -1 : 1;
      int hh = 0, mm = 0;
      if (sscanf(rest + 1, "%2d:%2d", &hh, &mm) != 2) {
        *err = "'" + v + "': bad UTC offset";
        return false;
      }
      offset = static_cast<int64_t>(sign) * (hh * 3600 + mm * 60);
      rest += 6;
    } else {
      *err = "'" + v + "' has no time zone (end it with Z or +HH:MM)";
      return false;
    }
    if (*rest) {
      *err = "'" + v + "' has trailing characters";
      return false;
    }
    *out = (static_cast<int64_t>(timegm(&tm)) - offset) * 1000 + ms;
    return true;
  }
  auto d = parse_duration_ms(v, err);
  if (!d) {
    *err = "'" + v + "' is not a time (RFC 3339, unix ms, or a duration ago like 24h)";
    return false;
  }
  *out = now - *d;
  return true;
}

}  // namespace orch
