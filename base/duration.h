// Durations as pipelines write them: 1.5 (seconds), "250ms", "5s", "2m", "1h", "1h30m"; and
// points in time as the API and the CLI take them.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace orch {

// Parses a duration string into milliseconds. Returns nullopt and sets *err on bad input.
std::optional<int64_t> parse_duration_ms(std::string_view text, std::string* err);
// Seconds as a number (from Lua) to milliseconds; negative or non-finite is an error.
std::optional<int64_t> seconds_to_ms(double seconds, std::string* err);
// 1234 -> "1.23s", 45 -> "45ms", 125000 -> "2m05s".
std::string format_duration_ms(int64_t ms);
// A point in time as the API's ?since= and the CLI's --since take it: RFC 3339
// ("2026-11-22T10:00:00Z", "...+01:00"), unix ms, or a duration before `now` ("24h"), as unix
// ms. False with *err.
bool parse_time_ms(const std::string& v, int64_t now, int64_t* out, std::string* err);

}  // namespace orch
