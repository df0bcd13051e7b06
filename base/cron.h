// Cron expressions for o.schedule: five fields (minute hour day-of-month month day-of-week)
// or a macro (@yearly @annually @monthly @weekly @daily @midnight @hourly), evaluated in a
// time zone from the system's tz database (/usr/share/zoneinfo, Debian's tzdata).
//
// Fields: numbers, names (jan-dec, sun-sat; case-insensitive), ranges a-b, steps */n, a-b/n and
// a/n (= a-max/n), lists a,b,c, '*'; day-of-week 0-7 (0 and 7 are Sunday; a range ending in
// Sunday, like fri-sun or 5-0, runs to 7). As in Vixie cron (and cronie), a day-of-month or
// day-of-week field counts as '*' when it starts with '*' (so "*/2" does too): when neither
// does, a day matches if either field matches; otherwise both must (with a plain '*' that means
// only the other field counts).
//
// Daylight saving: next_after walks the matching local wall-clock times in increasing order,
// maps each to the earliest instant at which the zone's clock shows it, and returns the first
// instant after `after_ms`. Hence:
//   - a local time that does not exist (skipped by a spring-forward change) fires at the first
//     instant after the gap; several such times (e.g. 02:00, 02:15, 02:30 and 02:45 of
//     "*/15 * * * *" over a 02:00-03:00 gap) fire once, together, at the end of the gap;
//   - a local time that happens twice (fall back) fires once, at its first occurrence. Nothing
//     fires during the repeated stretch's second pass, even for "*/15 * * * *" or "0 * * * *":
//     every wall-clock time it shows has fired already.
#pragma once
#include <bitset>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace orch {

// A time zone read from a TZif file (or UTC). Converts between unix time and local time.
class TimeZone {
 public:
  // "UTC", "Etc/UTC", "" (= UTC) or an IANA name like "Europe/Paris". nullptr with *err when
  // unknown or unreadable.
  static std::shared_ptr<const TimeZone> load(const std::string& name, std::string* err);
  // A zone from the contents of a TZif file (RFC 8536, v1 to v4), named `name`. nullptr with
  // *err when the data is malformed or has leap seconds.
  static std::shared_ptr<const TimeZone> from_tzif(const std::string& name, std::string_view data,
                                                   std::string* err);
  const std::string& name() const { return name_; }
  // Offset from UTC in seconds at unix time t (seconds).
  int offset_at(int64_t t) const;
  // The earliest unix time (seconds) at which the local clock shows `local_s` (a wall-clock
  // time as seconds since 1970-01-01T00:00 local); when `local_s` does not exist (a gap left by
  // clocks moving forward), the instant the gap ends.
  int64_t utc_from_local(int64_t local_s) const;
  // ~TimeZone etc. are defaulted; the transition data is private.

  struct Transition {
    int64_t at;  // unix seconds
    int offset;  // seconds east of UTC from `at` on
  };
  // A POSIX TZ rule ("CET-1CEST,M3.5.0,M10.5.0/3"); defined and only usable in cron.cc.
  struct Rule;

 private:
  // The first instant after t at which the offset may change, if any.
  std::optional<int64_t> next_transition(int64_t t) const;

  std::string name_;
  std::vector<Transition> transitions_;  // sorted
  int initial_offset_ = 0;               // before the first transition
  // POSIX TZ rule for times after the last transition (the TZif v2+ footer), parsed.
  std::shared_ptr<const Rule> rule_;
  friend class TimeZoneLoader;
};

// "2026-03-29T03:00:00+02:00": unix ms as local time in `tz`, ISO 8601 with the offset
// (milliseconds dropped). An offset with seconds (local mean time before ~1900) prints them.
std::string format_local(int64_t unix_ms, const TimeZone& tz);

class CronExpr {
 public:
  // Parses `expr` evaluated in time zone `tz` ("" = UTC). nullopt with *err naming the field
  // and what is wrong (e.g. "minute: 75 is out of range 0-59").
  static std::optional<CronExpr> parse(const std::string& expr, const std::string& tz,
                                       std::string* err);
  // The first fire time strictly after unix ms `after_ms` (whole minutes of local time), or -1
  // if none within the next 5 years (e.g. "0 0 30 2 *") or after_ms is over 3000 years from 1970.
  int64_t next_after(int64_t after_ms) const;
  const std::string& expr() const { return expr_; }
  const std::string& tz_name() const;
  const TimeZone& tz() const { return *tz_; }

 private:
  bool day_matches(unsigned dom, unsigned dow) const;  // dow: 0..6, Sunday = 0

  std::string expr_;
  std::bitset<60> minute_;
  std::bitset<24> hour_;
  std::bitset<32> dom_;    // 1..31
  std::bitset<13> month_;  // 1..12
  std::bitset<7> dow_;     // 0..6, Sunday = 0
  bool dom_star_ = false, dow_star_ = false;
  std::shared_ptr<const TimeZone> tz_;
};

}  // namespace orch
