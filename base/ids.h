// Identifiers: run ids are ULIDs (time-ordered, 26 chars), trace ids are W3C trace-context ids
// (32 lowercase hex chars), so a trace can be handed to and from other tracing systems.
#pragma once
#include <cstdint>
#include <string>

namespace orch {

std::string new_ulid(int64_t unix_ms);
std::string new_trace_id();
// Milliseconds since the Unix epoch, from the system clock.
int64_t wall_ms();
// "2026-11-22T06:25:36.123Z"
std::string iso8601_ms(int64_t unix_ms);

}  // namespace orch
