// Cron expressions for o.schedule: five fields (minute hour day-of-month month day-of-week)
// or a macro (@yearly @annually @monthly @weekly @daily @midnight @hourly), evaluated in a
// time zone from the system's tz database (/usr/share/zoneinfo, Debian's tzdata).
//
// Fields: numbers, names (jan-dec, sun-sat; case-insensitive), ranges a-b, steps */n and a-b/n,
// lists a,b,c, '*'; day-of-week 0-7 (0 and 7 are Sunday). As in Vixie cron, when both
// day-of-month and day-of-week are restricted (neither is '*'), a day matches if either does.
//
// Daylight saving: a local time that does not exist (skipped by a spring-forward change) fires
// at the first instant after the gap; a local time that happens twice (fall back) fires once,
// at its first occurrence.
#pragma once
#include <bitset>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace orch {

// A time zone read from a TZif file (or UTC). Converts between unix time and local time.
class TimeZone {
 public:
  // "UTC", "" (= UTC) or an IANA name like "Europe/Paris". nullptr with *err when unknown.
  static std::shared_ptr<const TimeZone> load(const std::string& name, std::string* err);
  const std::string& name() const { return name_; }
  // Offset from UTC in seconds at unix time t (seconds).
  int offset_at(int64_t t) const;
  // ~TimeZone etc. are defaulted; the transition data is private.

  struct Transition {
    int64_t at;   // unix seconds
    int offset;   // seconds east of UTC from `at` on
  };

 private:
  std::string name_;
  std::vector<Transition> transitions_;  // sorted
  int initial_offset_ = 0;               // before the first transition
  // POSIX TZ rule for times after the last transition (the TZif v2+ footer), parsed.
  struct Rule;
  std::shared_ptr<Rule> rule_;
  friend class TimeZoneLoader;
};

class CronExpr {
 public:
  // Parses `expr` evaluated in time zone `tz` ("" = UTC). nullopt with *err naming the field
  // and what is wrong (e.g. "minute: 75 is out of range 0-59").
  static std::optional<CronExpr> parse(const std::string& expr, const std::string& tz,
                                       std::string* err);
  // The first fire time strictly after unix ms `after_ms` (whole minutes), or -1 if none
  // within the next 5 years (e.g. "0 0 30 2 *").
  int64_t next_after(int64_t after_ms) const;
  const std::string& expr() const { return expr_; }
  const std::string& tz_name() const;

 private:
  std::string expr_;
  std::bitset<60> minute_;
  std::bitset<24> hour_;
  std::bitset<32> dom_;  // 1..31
  std::bitset<13> month_;  // 1..12
  std::bitset<7> dow_;   // 0..6, Sunday = 0
  bool dom_star_ = false, dow_star_ = false;
  std::shared_ptr<const TimeZone> tz_;
};

}  // namespace orch
