#include "base/ids.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <random>

namespace orch {
namespace {

std::mt19937_64& rng() {
  // Seeded once from the OS; ids need uniqueness, not secrecy.
  static std::mt19937_64 gen([] {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }());
  return gen;
}

}  // namespace

std::string new_ulid(int64_t unix_ms) {
  static const char* kAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  std::string out(26, '0');
  uint64_t t = static_cast<uint64_t>(unix_ms);
  for (int i = 9; i >= 0; --i) {
    out[i] = kAlphabet[t & 31];
    t >>= 5;
  }
  uint64_t r1 = rng()(), r2 = rng()();
  for (int i = 10; i < 26; ++i) {
    uint64_t& r = i < 18 ? r1 : r2;
    out[i] = kAlphabet[r & 31];
    r >>= 5;
  }
  return out;
}

std::string new_trace_id() {
  char buf[33];
  snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()()),
           static_cast<unsigned long long>(rng()()));
  return buf;
}

int64_t wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

std::string iso8601_ms(int64_t unix_ms) {
  time_t secs = static_cast<time_t>(unix_ms / 1000);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  char buf[40];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(unix_ms % 1000));
  return buf;
}

}  // namespace orch
