#include "base/duration.h"

#include <catch2/catch.hpp>

using namespace orch;

TEST_CASE("durations parse from strings and seconds", "[duration]") {
  std::string err;
  CHECK(*parse_duration_ms("250ms", &err) == 250);
  CHECK(*parse_duration_ms("5s", &err) == 5000);
  CHECK(*parse_duration_ms("1.5s", &err) == 1500);
  CHECK(*parse_duration_ms("2m", &err) == 120000);
  CHECK(*parse_duration_ms("1h30m", &err) == 5400000);
  CHECK(*parse_duration_ms("1d", &err) == 86400000);
  CHECK(*parse_duration_ms("3", &err) == 3000);
  CHECK(*seconds_to_ms(0.25, &err) == 250);
  for (const char* bad : {"", "ms", "5x", "5 s", "-1s", "1.2.3s", "10s5"}) {
    INFO(bad);
    CHECK_FALSE(parse_duration_ms(bad, &err));
    CHECK(err.find("invalid duration") != std::string::npos);
  }
  CHECK_FALSE(seconds_to_ms(-1, &err));
  CHECK_FALSE(seconds_to_ms(1.0 / 0.0, &err));
}

TEST_CASE("durations format for people", "[duration]") {
  CHECK(format_duration_ms(45) == "45ms");
  CHECK(format_duration_ms(1234) == "1.23s");
  CHECK(format_duration_ms(125000) == "2m05s");
  CHECK(format_duration_ms(3 * 3600000 + 60000) == "3h01m");
}
