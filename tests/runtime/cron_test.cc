#include "base/cron.h"

#include <time.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "test_util.h"

using namespace orch;

namespace {

int64_t utc_ms(int y, int mo, int d, int h = 0, int mi = 0, int s = 0) {
  struct tm tm = {};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

std::shared_ptr<const TimeZone> zone(const std::string& name) {
  std::string err;
  auto tz = TimeZone::load(name, &err);
  INFO(err);
  REQUIRE(tz);
  return tz;
}

CronExpr cron(const std::string& expr, const std::string& tz = "") {
  std::string err;
  auto c = CronExpr::parse(expr, tz, &err);
  INFO(expr << ": " << err);
  REQUIRE(c);
  return *c;
}

// The first n fire times after `from`, as local times ("none" when there is no next one).
std::vector<std::string> fires(const std::string& expr, const std::string& tz, int64_t from,
                               int n = 1) {
  const CronExpr c = cron(expr, tz);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    from = c.next_after(from);
    if (from < 0) {
      out.push_back("none");
      break;
    }
    out.push_back(format_local(from, c.tz()));
  }
  return out;
}

std::string parse_error(const std::string& expr, const std::string& tz = "") {
  std::string err;
  auto c = CronExpr::parse(expr, tz, &err);
  INFO(expr);
  CHECK_FALSE(c);
  return err;
}

using Strings = std::vector<std::string>;

const int64_t kSat = utc_ms(2026, 3, 28, 10, 17);  // Saturday 2026-03-28 10:17 UTC

}  // namespace

TEST_CASE("cron: numbers, ranges, steps and lists", "[cron]") {
  CHECK(fires("5 * * * *", "", kSat, 3) == Strings{"2026-03-28T11:05:00+00:00",
                                                   "2026-03-28T12:05:00+00:00",
                                                   "2026-03-28T13:05:00+00:00"});
  CHECK(fires("*/20 * * * *", "", kSat, 3) == Strings{"2026-03-28T10:20:00+00:00",
                                                      "2026-03-28T10:40:00+00:00",
                                                      "2026-03-28T11:00:00+00:00"});
  CHECK(fires("*/25 * * * *", "", kSat, 3) == Strings{"2026-03-28T10:25:00+00:00",
                                                      "2026-03-28T10:50:00+00:00",
                                                      "2026-03-28T11:00:00+00:00"});
  CHECK(fires("*/60 * * * *", "", kSat, 2) ==
        Strings{"2026-03-28T11:00:00+00:00", "2026-03-28T12:00:00+00:00"});
  CHECK(fires("10-30/10 * * * *", "", kSat, 3) == Strings{"2026-03-28T10:20:00+00:00",
                                                          "2026-03-28T10:30:00+00:00",
                                                          "2026-03-28T11:10:00+00:00"});
  // a/n is a-max/n.
  CHECK(fires("50/5 * * * *", "", kSat, 3) == Strings{"2026-03-28T10:50:00+00:00",
                                                      "2026-03-28T10:55:00+00:00",
                                                      "2026-03-28T11:50:00+00:00"});
  CHECK(fires("0,30-32 * * * *", "", kSat, 4) ==
        Strings{"2026-03-28T10:30:00+00:00", "2026-03-28T10:31:00+00:00",
                "2026-03-28T10:32:00+00:00", "2026-03-28T11:00:00+00:00"});
  CHECK(fires("30 */6 * * *", "", kSat, 3) == Strings{"2026-03-28T12:30:00+00:00",
                                                      "2026-03-28T18:30:00+00:00",
                                                      "2026-03-29T00:30:00+00:00"});
  CHECK(fires("59 23 31 12 *", "", kSat) == Strings{"2026-12-31T23:59:00+00:00"});
  // Months without a 31st are skipped.
  CHECK(fires("0 0 31 * *", "", kSat, 4) ==
        Strings{"2026-03-31T00:00:00+00:00", "2026-05-31T00:00:00+00:00",
                "2026-07-31T00:00:00+00:00", "2026-08-31T00:00:00+00:00"});
  // Any amount of whitespace separates fields.
  CHECK(fires("  0 \t 12   * *    *  ", "", kSat, 2) ==
        Strings{"2026-03-28T12:00:00+00:00", "2026-03-29T12:00:00+00:00"});
  CHECK(cron(" 0 12 * * * ").expr() == " 0 12 * * * ");
}

TEST_CASE("cron: month and weekday names, Sunday as 0 or 7", "[cron]") {
  // 2026-07-01 is a Wednesday.
  CHECK(fires("0 12 * jan,JUL mon-fri", "", kSat, 4) ==
        Strings{"2026-07-01T12:00:00+00:00", "2026-07-02T12:00:00+00:00",
                "2026-07-03T12:00:00+00:00", "2026-07-06T12:00:00+00:00"});
  CHECK(fires("0 0 1 Jan-MAR *", "", kSat, 3) == Strings{"2027-01-01T00:00:00+00:00",
                                                         "2027-02-01T00:00:00+00:00",
                                                         "2027-03-01T00:00:00+00:00"});
  CHECK(fires("0 0 1 jan-dec/4 *", "", kSat, 3) == Strings{"2026-05-01T00:00:00+00:00",
                                                           "2026-09-01T00:00:00+00:00",
                                                           "2027-01-01T00:00:00+00:00"});
  const Strings sundays = {"2026-03-29T00:00:00+00:00", "2026-04-05T00:00:00+00:00"};
  CHECK(fires("0 0 * * 0", "", kSat, 2) == sundays);
  CHECK(fires("0 0 * * 7", "", kSat, 2) == sundays);
  CHECK(fires("0 0 * * Sun", "", kSat, 2) == sundays);
  const Strings weekend = {"2026-03-29T00:00:00+00:00", "2026-04-03T00:00:00+00:00",
                           "2026-04-04T00:00:00+00:00", "2026-04-05T00:00:00+00:00"};
  CHECK(fires("0 0 * * 5-7", "", kSat, 4) == weekend);
  CHECK(fires("0 0 * * fri-sun", "", kSat, 4) == weekend);
  CHECK(fires("0 0 * * 5-0", "", kSat, 4) == weekend);
  CHECK(fires("0 9 * * 1-5/2", "", kSat, 3) == Strings{"2026-03-30T09:00:00+00:00",
                                                       "2026-04-01T09:00:00+00:00",
                                                       "2026-04-03T09:00:00+00:00"});
}

TEST_CASE("cron: macros", "[cron]") {
  CHECK(fires("@hourly", "", kSat, 2) ==
        Strings{"2026-03-28T11:00:00+00:00", "2026-03-28T12:00:00+00:00"});
  const Strings midnights = {"2026-03-29T00:00:00+00:00", "2026-03-30T00:00:00+00:00"};
  CHECK(fires("@daily", "", kSat, 2) == midnights);
  CHECK(fires("@midnight", "", kSat, 2) == midnights);
  CHECK(fires("@weekly", "", kSat, 2) ==
        Strings{"2026-03-29T00:00:00+00:00", "2026-04-05T00:00:00+00:00"});
  CHECK(fires("@monthly", "", kSat, 2) ==
        Strings{"2026-04-01T00:00:00+00:00", "2026-05-01T00:00:00+00:00"});
  const Strings new_years = {"2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"};
  CHECK(fires("@yearly", "", kSat, 2) == new_years);
  CHECK(fires("@annually", "", kSat, 2) == new_years);
  CHECK(fires("  @daily ", "Europe/Paris", kSat) == Strings{"2026-03-29T00:00:00+01:00"});
}

TEST_CASE("cron: day-of-month and day-of-week match either when both are restricted", "[cron]") {
  // Fridays and every 13th; 2026-02-13 and 2026-03-13 are Fridays.
  CHECK(
      fires("0 0 13 * 5", "", utc_ms(2026, 2, 1), 11) ==
      Strings{"2026-02-06T00:00:00+00:00", "2026-02-13T00:00:00+00:00", "2026-02-20T00:00:00+00:00",
              "2026-02-27T00:00:00+00:00", "2026-03-06T00:00:00+00:00", "2026-03-13T00:00:00+00:00",
              "2026-03-20T00:00:00+00:00", "2026-03-27T00:00:00+00:00", "2026-04-03T00:00:00+00:00",
              "2026-04-10T00:00:00+00:00", "2026-04-13T00:00:00+00:00"});
  // With one field '*' only the other counts.
  CHECK(fires("0 0 13 * *", "", utc_ms(2026, 2, 1), 2) ==
        Strings{"2026-02-13T00:00:00+00:00", "2026-03-13T00:00:00+00:00"});
  CHECK(fires("0 0 * * 5", "", utc_ms(2026, 2, 1), 2) ==
        Strings{"2026-02-06T00:00:00+00:00", "2026-02-13T00:00:00+00:00"});
  // A field starting with '*' counts as '*' (cronie): "*/1" leaves only the Mondays...
  CHECK(fires("0 0 */1 * 1", "", kSat, 2) ==
        Strings{"2026-03-30T00:00:00+00:00", "2026-04-06T00:00:00+00:00"});
  // ...and "*/2" requires both: odd days that are Mondays.
  CHECK(fires("0 0 */2 * mon", "", kSat, 2) ==
        Strings{"2026-04-13T00:00:00+00:00", "2026-04-27T00:00:00+00:00"});
  // "1-31" is a restriction: every day matches it, so every day fires.
  CHECK(fires("0 0 1-31 * 1", "", kSat, 3) == Strings{"2026-03-29T00:00:00+00:00",
                                                      "2026-03-30T00:00:00+00:00",
                                                      "2026-03-31T00:00:00+00:00"});
}

TEST_CASE("cron: February 29 and impossible dates", "[cron]") {
  CHECK(fires("0 0 29 2 *", "", kSat, 2) ==
        Strings{"2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"});
  CHECK(fires("0 0 29 2 *", "Asia/Kolkata", kSat) == Strings{"2028-02-29T00:00:00+05:30"});
  CHECK(cron("0 0 30 2 *").next_after(kSat) == -1);
  CHECK(cron("* * 31 4,6,9,11 *", "Europe/Paris").next_after(kSat) == -1);
  // Beyond ±3000 years of 1970 nothing fires.
  CHECK(cron("* * * * *").next_after(INT64_MAX) == -1);
  CHECK(cron("* * * * *").next_after(INT64_MIN) == -1);
}

TEST_CASE("cron: next_after is strictly after, at whole minutes", "[cron]") {
  const CronExpr every = cron("* * * * *");
  const int64_t noon = utc_ms(2026, 5, 1, 12);
  CHECK(every.next_after(noon) == noon + 60000);
  CHECK(every.next_after(noon - 1) == noon);
  CHECK(every.next_after(noon + 500) == noon + 60000);
  CHECK(every.next_after(noon + 59999) == noon + 60000);
  // Before 1970 too.
  CHECK(cron("0 0 1 1 *").next_after(utc_ms(1969, 6, 1)) == 0);
  CHECK(cron("0 0 1 1 *").next_after(-1) == 0);
  CHECK(cron("30 23 * * *").next_after(-1) == utc_ms(1969, 12, 31, 23, 30) + 86400000);
}

TEST_CASE("cron: syntax errors name the field and the problem", "[cron]") {
  CHECK(parse_error("75 * * * *") == "minute: 75 is out of range 0-59");
  CHECK(parse_error("0 24 * * *") == "hour: 24 is out of range 0-23");
  CHECK(parse_error("0 0 0 * *") == "day-of-month: 0 is out of range 1-31");
  CHECK(parse_error("0 0 32 * *") == "day-of-month: 32 is out of range 1-31");
  CHECK(parse_error("0 0 * 13 *") == "month: 13 is out of range 1-12");
  CHECK(parse_error("0 0 * * 8") == "day-of-week: 8 is out of range 0-7");
  CHECK(parse_error("1-75 * * * *") == "minute: 75 is out of range 0-59");
  CHECK(parse_error("99999999999 * * * *") == "minute: 99999999999 is out of range 0-59");
  CHECK(parse_error("0 */0 * * *") == "hour: bad step '0'");
  CHECK(parse_error("*/ * * * *") == "minute: bad step ''");
  CHECK(parse_error("*/x * * * *") == "minute: bad step 'x'");
  CHECK(parse_error("*/61 * * * *") == "minute: bad step '61'");
  CHECK(parse_error("1/2/3 * * * *") == "minute: bad step '2/3'");
  CHECK(parse_error("0 5-2 * * *") == "hour: bad range '5-2' (start is after end)");
  CHECK(parse_error("0 0 * * fri-mon") == "day-of-week: bad range 'fri-mon' (start is after end)");
  CHECK(parse_error("0 0 * * 0-0/0") == "day-of-week: bad step '0'");
  CHECK(parse_error("1,,2 * * * *") == "minute: missing value in '1,,2'");
  CHECK(parse_error("5- * * * *") == "minute: missing value in '5-'");
  CHECK(parse_error("-5 * * * *") == "minute: missing value in '-5'");
  CHECK(parse_error("mon * * * *") == "minute: bad value 'mon' (use 0-59)");
  CHECK(parse_error("0 0 * foo *") == "month: bad value 'foo' (use 1-12 or jan-dec)");
  CHECK(parse_error("0 0 * * funday") == "day-of-week: bad value 'funday' (use 0-7 or sun-sat)");
  CHECK(parse_error("0 0 * * jan") == "day-of-week: bad value 'jan' (use 0-7 or sun-sat)");
  CHECK(parse_error("*5 * * * *") == "minute: bad value '*5' (use 0-59)");
  CHECK(parse_error("*/5 * * *") ==
        "expected 5 fields (minute hour day-of-month month day-of-week), got 4");
  CHECK(parse_error("0 0 * * * *") ==
        "expected 5 fields (minute hour day-of-month month day-of-week), got 6");
  CHECK(parse_error("  ") ==
        "expected 5 fields (minute hour day-of-month month day-of-week), got 0");
  CHECK(parse_error("@sometimes") ==
        "unknown macro @sometimes (use @yearly, @annually, @monthly, @weekly, @daily, @midnight "
        "or @hourly)");
  CHECK(parse_error("@reboot").rfind("unknown macro @reboot (", 0) == 0);
  CHECK(parse_error("@DAILY").rfind("unknown macro @DAILY (", 0) == 0);
  CHECK(parse_error("@daily 5") == "@daily takes no fields after it");
  CHECK(parse_error("0 0 * * *", "Mars/Olympus") ==
        "unknown time zone 'Mars/Olympus' (no /usr/share/zoneinfo/Mars/Olympus)");
}

TEST_CASE("cron: time zones load from the tz database", "[cron]") {
  std::string err;
  CHECK(zone("")->name() == "UTC");
  CHECK(zone("UTC")->offset_at(0) == 0);
  CHECK(zone("Etc/UTC")->name() == "Etc/UTC");
  CHECK(zone("Etc/GMT+5")->offset_at(utc_ms(2026, 1, 1) / 1000) == -5 * 3600);
  CHECK(cron("0 0 * * *", "Asia/Kolkata").tz_name() == "Asia/Kolkata");
  CHECK(cron("0 0 * * *").tz_name() == "UTC");
  for (const char* bad : {"../../etc/passwd", "/etc/localtime", "Europe/Paris;rm", "Europe Paris",
                          "Europe/../UTC", "zone.tab"}) {
    INFO(bad);
    CHECK_FALSE(TimeZone::load(bad, &err));
    CHECK(err == "unknown time zone '" + std::string(bad) +
                     "' (not a tz database name like Europe/Paris)");
  }
  CHECK_FALSE(TimeZone::load("Europe", &err));
  CHECK(err == "unknown time zone 'Europe' (/usr/share/zoneinfo/Europe is not a zone file)");
  CHECK_FALSE(TimeZone::load("leapseconds", &err));  // a text file
  CHECK(err ==
        "time zone 'leapseconds': /usr/share/zoneinfo/leapseconds is not a usable TZif file (bad "
        "header)");
  CHECK_FALSE(TimeZone::load("right/Europe/Paris", &err));
  CHECK(err.find("(leap seconds are not supported)") != std::string::npos);
}

TEST_CASE("cron: local times are formatted with their offset", "[cron]") {
  CHECK(format_local(utc_ms(2026, 3, 29, 1), *zone("Europe/Paris")) == "2026-03-29T03:00:00+02:00");
  CHECK(format_local(utc_ms(2026, 3, 29, 0, 59, 59) + 999, *zone("Europe/Paris")) ==
        "2026-03-29T01:59:59+01:00");
  CHECK(format_local(utc_ms(2026, 1, 1), *zone("America/New_York")) == "2025-12-31T19:00:00-05:00");
  CHECK(format_local(utc_ms(2026, 1, 1), *zone("Asia/Kolkata")) == "2026-01-01T05:30:00+05:30");
  CHECK(format_local(-1, *zone("UTC")) == "1969-12-31T23:59:59+00:00");
  // Paris kept local mean time until 1891.
  CHECK(format_local(utc_ms(1800, 1, 1), *zone("Europe/Paris")) == "1800-01-01T00:09:21+00:09:21");
}

TEST_CASE("cron: daylight saving in Europe/Paris", "[cron]") {
  // Spring forward 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 does not exist and fires at 03:00.
  const int64_t sat = utc_ms(2026, 3, 28, 12);
  CHECK(fires("30 2 * * *", "", sat) == Strings{"2026-03-29T02:30:00+00:00"});
  CHECK(cron("30 2 * * *", "Europe/Paris").next_after(sat) == utc_ms(2026, 3, 29, 1));
  CHECK(fires("30 2 * * *", "Europe/Paris", sat, 2) ==
        Strings{"2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"});
  // Every skipped quarter hour fires once, together, when the gap ends.
  CHECK(fires("*/15 * * * *", "Europe/Paris", utc_ms(2026, 3, 29, 0, 50), 3) ==
        Strings{"2026-03-29T03:00:00+02:00", "2026-03-29T03:15:00+02:00",
                "2026-03-29T03:30:00+02:00"});
  CHECK(fires("0 3 * * *", "Europe/Paris", sat) == Strings{"2026-03-29T03:00:00+02:00"});

  // Fall back 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice and fires the first time.
  CHECK(cron("30 2 * * *", "Europe/Paris").next_after(utc_ms(2026, 10, 24, 12)) ==
        utc_ms(2026, 10, 25, 0, 30));
  CHECK(fires("30 2 * * *", "Europe/Paris", utc_ms(2026, 10, 24, 12), 2) ==
        Strings{"2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"});
  // The repeated hour's second pass does not fire again.
  CHECK(fires("*/15 * * * *", "Europe/Paris", utc_ms(2026, 10, 25, 0, 40), 3) ==
        Strings{"2026-10-25T02:45:00+02:00", "2026-10-25T03:00:00+01:00",
                "2026-10-25T03:15:00+01:00"});
  CHECK(fires("*/15 * * * *", "Europe/Paris", utc_ms(2026, 10, 25, 1, 10)) ==
        Strings{"2026-10-25T03:00:00+01:00"});
  // The far future follows the footer rule: 2040's last Sundays are March 25 and October 28.
  CHECK(fires("30 2 * * *", "Europe/Paris", utc_ms(2040, 3, 24, 12), 2) ==
        Strings{"2040-03-25T03:00:00+02:00", "2040-03-26T02:30:00+02:00"});
  CHECK(fires("30 2 * * *", "Europe/Paris", utc_ms(2040, 10, 27, 12), 2) ==
        Strings{"2040-10-28T02:30:00+02:00", "2040-10-29T02:30:00+01:00"});
}

TEST_CASE("cron: daylight saving in America/New_York", "[cron]") {
  // 2026-03-08 02:00 EST -> 03:00 EDT.
  CHECK(fires("30 2 * * *", "America/New_York", utc_ms(2026, 3, 7, 12), 2) ==
        Strings{"2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"});
  CHECK(cron("30 2 * * *", "America/New_York").next_after(utc_ms(2026, 3, 7, 12)) ==
        utc_ms(2026, 3, 8, 7));
  // 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 fires once, 02:30 as usual.
  CHECK(fires("30 1 * * *", "America/New_York", utc_ms(2026, 10, 31, 12), 2) ==
        Strings{"2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"});
  CHECK(cron("30 1 * * *", "America/New_York").next_after(utc_ms(2026, 10, 31, 12)) ==
        utc_ms(2026, 11, 1, 5, 30));
  CHECK(fires("30 2 * * *", "America/New_York", utc_ms(2026, 10, 31, 12)) ==
        Strings{"2026-11-01T02:30:00-05:00"});
  CHECK(fires("@hourly", "America/New_York", utc_ms(2026, 11, 1, 4, 30), 3) ==
        Strings{"2026-11-01T01:00:00-04:00", "2026-11-01T02:00:00-05:00",
                "2026-11-01T03:00:00-05:00"});
}

TEST_CASE("cron: southern and half-hour zones", "[cron]") {
  // Sydney: AEDT from 2026-10-04 02:00 AEST (-> 03:00) until 2026-04-05 03:00 AEDT (-> 02:00).
  CHECK(fires("30 2 * * *", "Australia/Sydney", utc_ms(2026, 10, 3), 2) ==
        Strings{"2026-10-04T03:00:00+11:00", "2026-10-05T02:30:00+11:00"});
  CHECK(fires("30 2 * * *", "Australia/Sydney", utc_ms(2026, 4, 4), 2) ==
        Strings{"2026-04-05T02:30:00+11:00", "2026-04-06T02:30:00+10:00"});
  CHECK(fires("0 12 * * *", "Australia/Sydney", utc_ms(2040, 1, 15), 1) ==
        Strings{"2040-01-15T12:00:00+11:00"});
  CHECK(fires("0 12 * * *", "Australia/Sydney", utc_ms(2040, 7, 15), 1) ==
        Strings{"2040-07-15T12:00:00+10:00"});
  CHECK(cron("30 2 * * *", "Asia/Kolkata").next_after(utc_ms(2026, 3, 28, 12)) ==
        utc_ms(2026, 3, 28, 21));
  CHECK(fires("30 2 * * *", "Asia/Kolkata", utc_ms(2026, 3, 28, 12)) ==
        Strings{"2026-03-29T02:30:00+05:30"});
}

// --- comparisons with the C library's reading of the same zones ----------------------------------

namespace {

// Sets TZ for the C library for the scope, restoring the previous value afterwards.
class ScopedTz {
 public:
  explicit ScopedTz(const std::string& tz) {
    if (const char* old = getenv("TZ")) saved_ = old;
    setenv("TZ", tz.c_str(), 1);
    tzset();
  }
  ~ScopedTz() {
    if (saved_)
      setenv("TZ", saved_->c_str(), 1);
    else
      unsetenv("TZ");
    tzset();
  }

 private:
  std::optional<std::string> saved_;
};

int system_offset(int64_t t) {
  const auto tt = static_cast<time_t>(t);
  struct tm tm;
  localtime_r(&tt, &tm);
  return static_cast<int>(tm.tm_gmtoff);
}

// Compares tz's offsets with the C library's under TZ=tz_env every 6 hours from 2024 to 2041,
// and at the exact second of every change; checks utc_from_local against offset_at on the way.
// Returns the number of changes seen.
int compare_with_system(const TimeZone& tz, const std::string& tz_env) {
  ScopedTz scoped(tz_env);
  std::vector<std::string> problems;
  // Checks tz at t and returns the C library's offset there.
  auto check = [&](int64_t t) {
    const int ours = tz.offset_at(t), sys = system_offset(t);
    if (ours != sys)
      problems.push_back(format_local(t * 1000, tz) + ": offset " + std::to_string(ours) +
                         ", C library " + std::to_string(sys));
    const int64_t local = t + ours;
    const int64_t back = tz.utc_from_local(local);
    if (back > t || back + tz.offset_at(back) != local)
      problems.push_back(format_local(t * 1000, tz) + ": utc_from_local gives " +
                         std::to_string(back));
    return sys;
  };
  const int64_t step = 6 * 3600, from = utc_ms(2024, 1, 1) / 1000, to = utc_ms(2041, 1, 1) / 1000;
  int changes = 0;
  int prev = check(from);
  for (int64_t t = from + step; t <= to; t += step) {
    const int sys = check(t);
    if (sys != prev) {
      // Find the C library's change instant and check both sides of it.
      int64_t lo = t - step, hi = t;
      while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        (system_offset(mid) == prev ? lo : hi) = mid;
      }
      check(lo);
      check(hi);
      ++changes;
    }
    prev = sys;
  }
  INFO(tz_env << ": " << changes << " changes");
  CHECK(problems.size() == 0);
  for (size_t i = 0; i < problems.size() && i < 5; ++i) WARN(problems[i]);
  return changes;
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::string be64(int64_t v) {
  return be32(static_cast<uint32_t>(static_cast<uint64_t>(v) >> 32)) +
         be32(static_cast<uint32_t>(v));
}

// A TZif file: local time types with the given offsets, transitions (time, type), and for
// version '2' and up the footer.
std::string tzif(char version, const std::vector<int>& offsets,
                 const std::vector<std::pair<int64_t, uint8_t>>& transitions,
                 const std::string& footer) {
  auto header = [&] {
    std::string h = "TZif" + std::string(1, version) + std::string(15, '\0');
    for (uint32_t n : {0u, 0u, 0u, static_cast<uint32_t>(transitions.size()),
                       static_cast<uint32_t>(offsets.size()), 4u})
      h += be32(n);
    return h;
  };
  auto block = [&](bool wide) {
    std::string b;
    for (const auto& tr : transitions)
      b += wide ? be64(tr.first) : be32(static_cast<uint32_t>(tr.first));
    for (const auto& tr : transitions) b += static_cast<char>(tr.second);
    for (int o : offsets) b += be32(static_cast<uint32_t>(o)) + std::string(2, '\0');
    return b + std::string("ABC\0", 4);
  };
  std::string out = header() + block(false);
  if (version != '\0') out += header() + block(true) + "\n" + footer + "\n";
  return out;
}

}  // namespace

TEST_CASE("cron: zone offsets agree with the C library, 2024-2041", "[cron]") {
  // The machine's zoneinfo, read by both: only agreement is checked here. How many changes a
  // zone has depends on the tzdata release installed (Casablanca's Ramadan rules, Nuuk's 2023
  // change...), so exact counts are checked only on TZif data this file builds itself (below).
  const char* zones[] = {"Europe/Paris",     "America/New_York", "Australia/Sydney",
                         "Asia/Kolkata",     "Europe/Dublin",    "America/Santiago",
                         "Asia/Jerusalem",   "America/Nuuk",     "Pacific/Chatham",
                         "Antarctica/Troll", "Asia/Tehran",      "Africa/Casablanca"};
  for (const char* name : zones) {
    INFO(name);
    auto tz = zone(name);
    if (!tz) ORCH_SKIP("time zone " << name << " is not installed (tzdata)");
    compare_with_system(*tz, name);
  }
}

TEST_CASE("cron: offsets of a built TZif zone with transitions and a rule, 2024-2041", "[cron]") {
  // Explicit transitions up to mid-2030 (an extra change in 2026 and 2027, like a zone that
  // suspends DST for a month), then the footer's EU rule: the count is fixed by this data.
  const int64_t t0 = utc_ms(2026, 4, 10) / 1000, t1 = utc_ms(2026, 5, 10) / 1000;
  const int64_t t2 = utc_ms(2027, 4, 10) / 1000, t3 = utc_ms(2027, 5, 10) / 1000;
  std::string err;
  auto tz = TimeZone::from_tzif(
      "built", tzif('2', {3600, 7200}, {{t0, 0}, {t1, 1}, {t2, 0}, {t3, 1}},
                    "CET-1CEST,M3.5.0,M10.5.0/3"),
      &err);
  INFO(err);
  REQUIRE(tz);
  CHECK(tz->offset_at(t0) == 3600);
  CHECK(tz->offset_at(t1 - 1) == 3600);
  CHECK(tz->offset_at(t1) == 7200);
  // The C library reads the same bytes from a file: TZ=/path/to/file.
  test::TempDir d;
  test::write_file(d.file("built"), tzif('2', {3600, 7200}, {{t0, 0}, {t1, 1}, {t2, 0}, {t3, 1}},
                                   "CET-1CEST,M3.5.0,M10.5.0/3"));
  // Before t0 the first type (+1h) holds, so t0 changes nothing: 3 explicit changes (t1, t2,
  // t3), then the rule: October 2027, and two a year in 2028-2040.
  CHECK(compare_with_system(*tz, ":" + d.file("built")) == 3 + 1 + 26);
}

TEST_CASE("cron: POSIX TZ rules agree with the C library", "[cron]") {
  const char* rules[] = {
      "XXX3YYY,J60/2,J300/3",              // Jn: 1-365, February 29 never counted
      "XXX3YYY,59/2,299/3",                // n: 0-365, February 29 counted
      "AAA-10BBB,M10.1.0,M4.1.0/3",        // southern hemisphere
      "IST-1GMT0,M10.5.0,M3.5.0/1",        // negative DST (Ireland)
      "<-03>3<-02>,M3.5.0/-2,M10.5.0/-1",  // negative change times (v3)
      "IST-2IDT,M3.4.4/26,M10.5.0",        // change times past 24 h (v3)
      "AAA+4:30BBB+3:15:10,M4.5.6/23:59:59,M9.5.6/1:02:03",
      "EST5EDT,M3.2.0,M11.1.0",
      "EST5EDT",  // US rules by default
  };
  for (const char* rule : rules) {
    INFO(rule);
    std::string err;
    auto tz = TimeZone::from_tzif("test", tzif('2', {0}, {}, rule), &err);
    INFO(err);
    REQUIRE(tz);
    CHECK(compare_with_system(*tz, rule) == 34);
  }
  std::string err;
  auto fixed = TimeZone::from_tzif("test", tzif('2', {0}, {}, "<+0330>-3:30"), &err);
  REQUIRE(fixed);
  CHECK(compare_with_system(*fixed, "<+0330>-3:30") == 0);
  CHECK(fixed->offset_at(0) == 12600);
  // Daylight saving all year (tzfile(5)'s example): glibc briefly shows standard time around
  // each New Year, as it applies the rule of the UTC year; the rule of the local year does not.
  auto always = TimeZone::from_tzif("test", tzif('2', {0}, {}, "EST5EDT,0/0,J365/25"), &err);
  REQUIRE(always);
  for (int64_t t = utc_ms(2039, 12, 31) / 1000; t < utc_ms(2040, 1, 2) / 1000; t += 600) {
    INFO(t);
    CHECK(always->offset_at(t) == -4 * 3600);
  }
}

TEST_CASE("cron: TZif data of each version, and malformed data", "[cron]") {
  std::string err;
  // Version 1 (32-bit times, no footer): the last offset holds forever.
  auto v1 =
      TimeZone::from_tzif("v1", tzif('\0', {100, 3600, 7200}, {{1000, 1}, {2000, 2}}, ""), &err);
  REQUIRE(v1);
  CHECK(v1->name() == "v1");
  CHECK(v1->offset_at(-5000000000) == 100);  // type 0 before the first transition
  CHECK(v1->offset_at(999) == 100);
  CHECK(v1->offset_at(1000) == 3600);
  CHECK(v1->offset_at(1999) == 3600);
  CHECK(v1->offset_at(2000) == 7200);
  CHECK(v1->offset_at(5000000000) == 7200);
  // Version 2 with transitions, then the footer's rule after the last one.
  const int64_t mid2030 = utc_ms(2030, 6, 1) / 1000;
  auto v2 = TimeZone::from_tzif(
      "v2", tzif('2', {-18000, -14400}, {{-5000000000, 0}, {mid2030, 1}}, "EST5EDT,M3.2.0,M11.1.0"),
      &err);
  REQUIRE(v2);
  CHECK(v2->offset_at(utc_ms(2030, 1, 1) / 1000) == -18000);
  CHECK(v2->offset_at(mid2030) == -14400);
  CHECK(v2->offset_at(utc_ms(2030, 12, 1) / 1000) == -18000);
  CHECK(v2->offset_at(utc_ms(2031, 7, 1) / 1000) == -14400);
  // An empty footer: no rule.
  auto none = TimeZone::from_tzif("none", tzif('3', {0, 3600}, {{1000, 1}}, ""), &err);
  REQUIRE(none);
  CHECK(none->offset_at(utc_ms(2040, 1, 1) / 1000) == 3600);
  // Gaps and overlaps from utc_from_local.
  CHECK(v1->utc_from_local(1000 + 100 - 1) == 999);  // just before the first change
  CHECK(v1->utc_from_local(1000 + 100) == 1000);     // in the gap: where it ends
  CHECK(v1->utc_from_local(1000 + 3600 - 1) == 1000);
  CHECK(v1->utc_from_local(1000 + 3600) == 1000);
  auto back = TimeZone::from_tzif("back", tzif('2', {3600, 0}, {{1000, 1}}, ""), &err);
  REQUIRE(back);
  CHECK(back->utc_from_local(1000) == -2600);  // shown twice: at -2600 (+1h) and at 1000 (+0)
  CHECK(back->utc_from_local(4599) == 999);
  CHECK(back->utc_from_local(4600) == 4600);

  auto bad = [&](const std::string& data) {
    CHECK_FALSE(TimeZone::from_tzif("bad", data, &err));
    return err;
  };
  CHECK(bad("garbage") == "time zone 'bad': not usable TZif data (bad header)");
  const std::string good = tzif('2', {0, 3600}, {{1000, 1}}, "CET-1CEST,M3.5.0,M10.5.0/3");
  CHECK(bad(good.substr(0, 60)) == "time zone 'bad': not usable TZif data (truncated)");
  CHECK(bad(good.substr(0, good.size() - 1)) ==
        "time zone 'bad': not usable TZif data (bad footer)");
  CHECK(bad(tzif('2', {0}, {}, "CET-1CEST,M13.5.0,M10.5.0")) ==
        "time zone 'bad': not usable TZif data (cannot parse its TZ rule "
        "'CET-1CEST,M13.5.0,M10.5.0')");
  CHECK(bad(tzif('2', {0}, {}, "CET-1CEST,M3.5.0")).find("cannot parse") != std::string::npos);
  CHECK(bad(tzif('2', {0}, {}, "C-1")).find("cannot parse") != std::string::npos);
  CHECK(bad(tzif('2', {0}, {{1000, 1}}, "")) ==
        "time zone 'bad': not usable TZif data (bad local time type index)");
  CHECK(bad(tzif('2', {0}, {{2000, 0}, {1000, 0}}, "")) ==
        "time zone 'bad': not usable TZif data (transitions out of order)");
  CHECK(bad(tzif('2', {27 * 3600}, {}, "")) ==
        "time zone 'bad': not usable TZif data (offset out of range)");
  CHECK(bad(tzif('2', {}, {}, "")) ==
        "time zone 'bad': not usable TZif data (no local time types)");
}
