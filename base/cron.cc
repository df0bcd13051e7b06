#include "base/cron.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string_view>

namespace orch {

namespace {

constexpr int64_t kDay = 86400;
// TZif offsets must lie within about ±26 h (RFC 8536 allows -89999..93599 s); the bound lets
// utc_from_local look for an instant within two days of the wall-clock time.
constexpr int kMaxOffset = 26 * 3600;
constexpr const char* kZoneDir = "/usr/share/zoneinfo/";

int64_t floor_div(int64_t a, int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

// Days since 1970-01-01 of a proleptic Gregorian date, and back (Howard Hinnant's algorithms).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = floor_div(y, 400);
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

struct Civil {
  int64_t y;
  unsigned m, d;
};

Civil civil_from_days(int64_t z) {
  z += 719468;
  const int64_t era = floor_div(z, 146097);
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {static_cast<int64_t>(yoe) + era * 400 + (m <= 2), m, d};
}

bool is_leap(int64_t y) {
  return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
}

unsigned days_in_month(int64_t y, unsigned m) {
  static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : kDays[m - 1];
}

// 0 = Sunday; 1970-01-01 was a Thursday.
unsigned weekday(int64_t days) {
  return static_cast<unsigned>(days - floor_div(days + 4, 7) * 7 + 4);
}

}  // namespace

// --- the POSIX TZ rule of a TZif footer ----------------------------------------------------------

struct TimeZone::Rule {
  // When in a year daylight saving starts or ends: POSIX "Jn", "n" or "Mm.w.d", and the time of
  // day on the clock in effect before the change (may be negative or past 24 h in TZif v3).
  struct When {
    enum class Kind { kJulianNoLeap, kZeroBasedDay, kMonthWeekDay } kind = Kind::kMonthWeekDay;
    int day = 0;    // Jn: 1..365 (Feb 29 never counted); n: 0..365; Mm.w.d: d, 0..6 (Sunday = 0)
    int month = 0;  // Mm.w.d only
    int week = 0;   // Mm.w.d only; 5 = the last
    int time = 2 * 3600;

    // Local wall-clock seconds (since 1970-01-01T00:00 local) of the change in `year`.
    int64_t local_in(int64_t year) const {
      int64_t days;
      if (kind == Kind::kMonthWeekDay) {
        const auto m = static_cast<unsigned>(month);
        const int64_t first = days_from_civil(year, m, 1);
        days = first + (day - static_cast<int>(weekday(first)) + 7) % 7 + (week - 1) * 7;
        if (days >= first + days_in_month(year, m)) days -= 7;  // week 5 of a 4-week month
      } else {
        days = days_from_civil(year, 1, 1) + day;
        if (kind == Kind::kJulianNoLeap) days += (is_leap(year) && day >= 60) - 1;
      }
      return days * kDay + time;
    }
  };

  int std_offset = 0;             // seconds east of UTC
  std::optional<int> dst_offset;  // absent: no daylight saving
  When start, end;

  // A change's local time is on the clock in effect before it: standard time for the start,
  // daylight time for the end.
  int64_t start_in(int64_t year) const { return start.local_in(year) - std_offset; }
  int64_t end_in(int64_t year) const { return end.local_in(year) - *dst_offset; }

  // The year whose changes decide about t: its year in standard time. (glibc takes the UTC
  // year; the two differ only for rules with a change within hours of New Year.)
  int64_t year_of(int64_t t) const { return civil_from_days(floor_div(t + std_offset, kDay)).y; }

  int offset_at(int64_t t) const {
    if (!dst_offset) return std_offset;
    const int64_t y = year_of(t);
    const int64_t s = start_in(y), e = end_in(y);
    // Southern hemisphere rules (and Ireland's negative DST) start after they end in a year.
    const bool dst = s < e ? (s <= t && t < e) : !(e <= t && t < s);
    return dst ? *dst_offset : std_offset;
  }

  std::optional<int64_t> next_change(int64_t t) const {
    if (!dst_offset) return std::nullopt;
    std::optional<int64_t> best;
    const int64_t y = year_of(t);
    for (int64_t yy = y - 1; yy <= y + 1; ++yy)
      for (int64_t c : {start_in(yy), end_in(yy)})
        if (c > t && (!best || c < *best)) best = c;
    return best;
  }
};

namespace {

// Parses a POSIX TZ string as TZif footers write them: "CET-1CEST,M3.5.0,M10.5.0/3",
// "<+0330>-3:30", "IST-2IDT,M3.4.4/26,M10.5.0".
class TzStringParser {
 public:
  explicit TzStringParser(std::string_view s) : s_(s) {}

  bool parse(TimeZone::Rule* r) {
    int off;
    if (!name() || !offset(&off, 24)) return false;
    r->std_offset = -off;  // POSIX offsets are west of UTC
    if (done()) return true;
    if (!name()) return false;
    if (peek() != ',' && !done()) {
      if (!offset(&off, 24)) return false;
      r->dst_offset = -off;
    } else {
      r->dst_offset = r->std_offset + 3600;
    }
    if (done()) {
      // No rule given: POSIX leaves it to the implementation; glibc and tzcode use the US one.
      r->start = {TimeZone::Rule::When::Kind::kMonthWeekDay, 0, 3, 2};
      r->end = {TimeZone::Rule::When::Kind::kMonthWeekDay, 0, 11, 1};
      return true;
    }
    return take(',') && when(&r->start) && take(',') && when(&r->end) && done();
  }

 private:
  bool done() const { return i_ == s_.size(); }
  char peek() const { return done() ? '\0' : s_[i_]; }
  bool take(char c) {
    if (peek() != c) return false;
    ++i_;
    return true;
  }

  // An abbreviation: three or more letters, or anything but '>' within <...>.
  bool name() {
    const size_t start = i_;
    if (take('<')) {
      while (!done() && peek() != '>') ++i_;
      return i_ - start >= 4 && take('>');
    }
    while (isalpha(static_cast<unsigned char>(peek()))) ++i_;
    return i_ - start >= 3;
  }

  bool number(int* out, int max) {
    const size_t start = i_;
    int v = 0;
    while (isdigit(static_cast<unsigned char>(peek())) && i_ - start < 3)
      v = v * 10 + (s_[i_++] - '0');
    *out = v;
    return i_ > start && v <= max;
  }

  // [+-]hh[:mm[:ss]] in seconds; `max_hours` is 24 for offsets, 167 for change times (v3).
  bool offset(int* secs, int max_hours) {
    int sign = 1;
    if (take('-'))
      sign = -1;
    else
      take('+');
    int h, m = 0, s = 0;
    if (!number(&h, max_hours)) return false;
    if (take(':') && (!number(&m, 59) || (take(':') && !number(&s, 59)))) return false;
    *secs = sign * (h * 3600 + m * 60 + s);
    return true;
  }

  bool when(TimeZone::Rule::When* w) {
    using Kind = TimeZone::Rule::When::Kind;
    if (take('M')) {
      w->kind = Kind::kMonthWeekDay;
      if (!number(&w->month, 12) || w->month < 1 || !take('.') || !number(&w->week, 5) ||
          w->week < 1 || !take('.') || !number(&w->day, 6))
        return false;
    } else if (take('J')) {
      w->kind = Kind::kJulianNoLeap;
      if (!number(&w->day, 365) || w->day < 1) return false;
    } else {
      w->kind = Kind::kZeroBasedDay;
      if (!number(&w->day, 365)) return false;
    }
    w->time = 2 * 3600;
    return !take('/') || offset(&w->time, 167);
  }

  std::string_view s_;
  size_t i_ = 0;
};

// Big-endian reads over a TZif file's bytes.
class Bytes {
 public:
  explicit Bytes(std::string_view d) : d_(d) {}
  bool has(uint64_t n) const { return d_.size() - pos_ >= n; }
  void skip(uint64_t n) { pos_ += n; }
  uint8_t u8() { return static_cast<uint8_t>(d_[pos_++]); }
  uint32_t u32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = v << 8 | u8();
    return v;
  }
  int64_t i64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = v << 8 | u8();
    return static_cast<int64_t>(v);
  }
  std::string_view rest() const { return d_.substr(pos_); }

 private:
  std::string_view d_;
  size_t pos_ = 0;
};

struct TzifHeader {
  char version;  // '\0' (v1 only), '2', '3', ...
  uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;

  // Size of the data block that follows, with `time_size`-byte transition times.
  uint64_t block_size(uint64_t time_size) const {
    return timecnt * (time_size + 1) + typecnt * 6ull + charcnt + leapcnt * (time_size + 4) +
           isstdcnt + isutcnt;
  }
};

bool read_header(Bytes* b, TzifHeader* h) {
  if (!b->has(44) || b->rest().substr(0, 4) != "TZif") return false;
  b->skip(4);
  h->version = static_cast<char>(b->u8());
  b->skip(15);
  h->isutcnt = b->u32();
  h->isstdcnt = b->u32();
  h->leapcnt = b->u32();
  h->timecnt = b->u32();
  h->typecnt = b->u32();
  h->charcnt = b->u32();
  return true;
}

}  // namespace

// Builds TimeZones from TZif files (RFC 8536); a friend of TimeZone.
class TimeZoneLoader {
 public:
  static std::shared_ptr<const TimeZone> load(const std::string& name, std::string* err) {
    if (name.empty() || name == "UTC" || name == "Etc/UTC") {
      auto tz = std::make_shared<TimeZone>();
      tz->name_ = name.empty() ? "UTC" : name;
      return tz;
    }
    // The name becomes a path: keep it inside the zoneinfo directory.
    const bool ok_chars = std::all_of(name.begin(), name.end(), [](char c) {
      return isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '+' || c == '-' || c == '/';
    });
    if (!ok_chars || name[0] == '/' || name.find("..") != std::string::npos) {
      *err = "unknown time zone '" + name + "' (not a tz database name like Europe/Paris)";
      return nullptr;
    }
    const std::string path = kZoneDir + name;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
      *err = "unknown time zone '" + name + "' (" +
             (std::filesystem::exists(path, ec) ? path + " is not a zone file" : "no " + path) +
             ")";
      return nullptr;
    }
    std::ifstream in(path, std::ios::binary);
    std::ostringstream data;
    data << in.rdbuf();
    std::string why = "unreadable";
    auto tz = std::make_shared<TimeZone>();
    if (!in || !parse(data.str(), tz.get(), &why)) {
      *err = "time zone '" + name + "': " + path + " is not a usable TZif file (" + why + ")";
      return nullptr;
    }
    tz->name_ = name;
    return tz;
  }

  static std::shared_ptr<const TimeZone> from_tzif(const std::string& name, std::string_view data,
                                                   std::string* err) {
    auto tz = std::make_shared<TimeZone>();
    std::string why;
    if (!parse(data, tz.get(), &why)) {
      *err = "time zone '" + name + "': not usable TZif data (" + why + ")";
      return nullptr;
    }
    tz->name_ = name;
    return tz;
  }

 private:
  static bool parse(std::string_view data, TimeZone* tz, std::string* why) {
    Bytes b(data);
    TzifHeader h;
    if (!read_header(&b, &h)) return *why = "bad header", false;
    uint64_t time_size = 4;
    if (h.version != '\0') {
      // v2+: skip the 32-bit block; the 64-bit one follows with its own header.
      if (!b.has(h.block_size(4))) return *why = "truncated", false;
      b.skip(h.block_size(4));
      if (!read_header(&b, &h)) return *why = "bad second header", false;
      time_size = 8;
    }
    if (!b.has(h.block_size(time_size))) return *why = "truncated", false;
    // Leap-second zones ("right/...") count time differently from unix time.
    if (h.leapcnt != 0) return *why = "leap seconds are not supported", false;
    if (h.typecnt == 0) return *why = "no local time types", false;

    std::vector<int64_t> times(h.timecnt);
    for (auto& t : times) t = time_size == 8 ? b.i64() : static_cast<int32_t>(b.u32());
    const std::string_view type_of = b.rest().substr(0, h.timecnt);  // one byte each
    b.skip(h.timecnt);
    std::vector<int> offsets(h.typecnt);
    for (auto& o : offsets) {
      o = static_cast<int32_t>(b.u32());
      b.skip(2);  // isdst, abbreviation index: only offsets matter here
      if (o < -kMaxOffset || o > kMaxOffset) return *why = "offset out of range", false;
    }
    b.skip(h.charcnt + uint64_t{h.isstdcnt} + h.isutcnt);

    tz->initial_offset_ = offsets[0];  // RFC 8536: type 0 applies before the first transition
    for (uint32_t i = 0; i < h.timecnt; ++i) {
      const auto type = static_cast<uint8_t>(type_of[i]);
      if (type >= h.typecnt) return *why = "bad local time type index", false;
      if (i > 0 && times[i] <= times[i - 1]) return *why = "transitions out of order", false;
      tz->transitions_.push_back({times[i], offsets[type]});
    }

    if (h.version == '\0') return true;
    // The footer: "\n<POSIX TZ string>\n"; an empty string means no rule.
    std::string_view rest = b.rest();
    const size_t end = rest.find('\n', 1);
    if (rest.empty() || rest[0] != '\n' || end == std::string_view::npos)
      return *why = "bad footer", false;
    const std::string_view footer = rest.substr(1, end - 1);
    if (footer.empty()) return true;
    auto rule = std::make_shared<TimeZone::Rule>();
    if (!TzStringParser(footer).parse(rule.get()) || std::abs(rule->std_offset) > kMaxOffset ||
        std::abs(rule->dst_offset.value_or(0)) > kMaxOffset)
      return *why = "cannot parse its TZ rule '" + std::string(footer) + "'", false;
    tz->rule_ = std::move(rule);
    return true;
  }
};

// --- TimeZone ------------------------------------------------------------------------------------

std::shared_ptr<const TimeZone> TimeZone::load(const std::string& name, std::string* err) {
  return TimeZoneLoader::load(name, err);
}

std::shared_ptr<const TimeZone> TimeZone::from_tzif(const std::string& name, std::string_view data,
                                                    std::string* err) {
  return TimeZoneLoader::from_tzif(name, data, err);
}

int TimeZone::offset_at(int64_t t) const {
  if (rule_ && (transitions_.empty() || t >= transitions_.back().at)) return rule_->offset_at(t);
  auto it = std::upper_bound(transitions_.begin(), transitions_.end(), t,
                             [](int64_t v, const Transition& tr) { return v < tr.at; });
  return it == transitions_.begin() ? initial_offset_ : std::prev(it)->offset;
}

std::optional<int64_t> TimeZone::next_transition(int64_t t) const {
  if (!transitions_.empty() && t < transitions_.back().at)
    return std::upper_bound(transitions_.begin(), transitions_.end(), t,
                            [](int64_t v, const Transition& tr) { return v < tr.at; })
        ->at;
  if (rule_) return rule_->next_change(t);
  return std::nullopt;
}

int64_t TimeZone::utc_from_local(int64_t local_s) const {
  // Walk the stretches of constant offset from two days before (offsets stay within ±26 h):
  // the first stretch whose wall-clock range holds local_s has its earliest instant; a
  // stretch starting beyond local_s means local_s was skipped, and the gap ends where it starts.
  int64_t cur = local_s - 2 * kDay;
  int off = offset_at(cur);
  for (;;) {
    if (local_s < cur + off) return cur;
    const std::optional<int64_t> next = next_transition(cur);
    if (!next || local_s < *next + off) return local_s - off;
    cur = *next;
    off = offset_at(cur);
  }
}

std::string format_local(int64_t unix_ms, const TimeZone& tz) {
  const int64_t t = floor_div(unix_ms, 1000);
  const int off = tz.offset_at(t);
  const int64_t local = t + off;
  const int64_t days = floor_div(local, kDay);
  const Civil c = civil_from_days(days);
  const auto sod = static_cast<int>(local - days * kDay);
  const int a = std::abs(off);
  char buf[64];
  int n = snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02d:%02d:%02d%c%02d:%02d",
                   static_cast<long long>(c.y), c.m, c.d, sod / 3600, sod / 60 % 60, sod % 60,
                   off < 0 ? '-' : '+', a / 3600, a / 60 % 60);
  if (a % 60 != 0) snprintf(buf + n, sizeof buf - n, ":%02d", a % 60);
  return buf;
}

// --- CronExpr ------------------------------------------------------------------------------------

namespace {

struct Field {
  const char* name;
  int lo, hi;
  const char* const* names;  // names[i] stands for name_base + i; nullptr: numbers only
  int name_count, name_base;
  const char* hint;  // what a bad value should have been
};

constexpr const char* kMonthNames[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                       "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr const char* kDayNames[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

constexpr Field kFields[5] = {
    {"minute", 0, 59, nullptr, 0, 0, "0-59"},
    {"hour", 0, 23, nullptr, 0, 0, "0-23"},
    {"day-of-month", 1, 31, nullptr, 0, 0, "1-31"},
    {"month", 1, 12, kMonthNames, 12, 1, "1-12 or jan-dec"},
    {"day-of-week", 0, 7, kDayNames, 7, 0, "0-7 or sun-sat"},
};

constexpr std::pair<const char*, const char*> kMacros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

std::vector<std::string_view> split(std::string_view s, bool (*is_sep)(char)) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_sep(s[i])) ++i;
    const size_t start = i;
    while (i < s.size() && !is_sep(s[i])) ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
  return out;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Parses one field into a bit mask (bit i = value i). Sets *err on failure.
class FieldParser {
 public:
  FieldParser(const Field& f, std::string_view text, std::string* err)
      : f_(f), text_(text), err_(err) {}

  bool parse(uint64_t* bits) {
    *bits = 0;
    size_t start = 0;
    for (;;) {  // items separated by ','; empty ones are errors, so no split() here
      const size_t comma = text_.find(',', start);
      const std::string_view item = text_.substr(start, comma - start);
      if (!parse_item(item, bits)) return false;
      if (comma == std::string_view::npos) return true;
      start = comma + 1;
    }
  }

 private:
  bool fail(const std::string& what) {
    *err_ = std::string(f_.name) + ": " + what;
    return false;
  }

  bool value(std::string_view s, int* out) {
    if (s.empty()) return fail("missing value in '" + std::string(text_) + "'");
    if (all_digits(s)) {
      // Anything longer than four digits is out of range; stop before int overflows.
      *out = s.size() > 4 ? f_.hi + 1 : std::atoi(std::string(s).c_str());
      if (*out < f_.lo || *out > f_.hi)
        return fail(std::string(s) + " is out of range " + std::to_string(f_.lo) + "-" +
                    std::to_string(f_.hi));
      return true;
    }
    std::string lower(s);
    for (char& c : lower) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    for (int i = 0; i < f_.name_count; ++i) {
      if (lower == f_.names[i]) {
        *out = f_.name_base + i;
        return true;
      }
    }
    return fail("bad value '" + std::string(s) + "' (use " + f_.hint + ")");
  }

  bool parse_item(std::string_view item, uint64_t* bits) {
    std::string_view base = item;
    int step = 1;
    const size_t slash = item.find('/');
    if (slash != std::string_view::npos) {
      base = item.substr(0, slash);
      const std::string_view st = item.substr(slash + 1);
      // A step wider than the field is pointless but harmless ("*/60" is minute 0), as in cronie.
      if (!all_digits(st) || st.size() > 2 || (step = std::atoi(std::string(st).c_str())) < 1 ||
          step > f_.hi - f_.lo + 1)
        return fail("bad step '" + std::string(st) + "'");
    }
    int lo, hi;
    if (base == "*") {
      lo = f_.lo;
      hi = f_.hi;
    } else if (const size_t dash = base.find('-'); dash != std::string_view::npos) {
      if (!value(base.substr(0, dash), &lo) || !value(base.substr(dash + 1), &hi)) return false;
      if (f_.hi == 7 && hi == 0 && lo > 0) hi = 7;  // day-of-week "fri-sun": Sunday as 7
      if (lo > hi) return fail("bad range '" + std::string(base) + "' (start is after end)");
    } else {
      if (!value(base, &lo)) return false;
      hi = slash != std::string_view::npos ? f_.hi : lo;  // "a/n" means a-max/n
    }
    for (int v = lo; v <= hi; v += step) *bits |= uint64_t{1} << v;
    return true;
  }

  const Field& f_;
  std::string_view text_;
  std::string* err_;
};

bool is_space(char c) {
  return isspace(static_cast<unsigned char>(c)) != 0;
}

}  // namespace

std::optional<CronExpr> CronExpr::parse(const std::string& expr, const std::string& tz,
                                        std::string* err) {
  std::vector<std::string_view> fields = split(expr, is_space);
  if (!fields.empty() && fields[0][0] == '@') {
    const auto* m = std::find_if(std::begin(kMacros), std::end(kMacros),
                                 [&](const auto& p) { return fields[0] == p.first; });
    if (m == std::end(kMacros)) {
      *err = "unknown macro " + std::string(fields[0]) +
             " (use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)";
      return std::nullopt;
    }
    if (fields.size() != 1) {
      *err = std::string(m->first) + " takes no fields after it";
      return std::nullopt;
    }
    fields = split(m->second, is_space);
  }
  if (fields.size() != 5) {
    *err = "expected 5 fields (minute hour day-of-month month day-of-week), got " +
           std::to_string(fields.size());
    return std::nullopt;
  }
  uint64_t bits[5];
  for (int i = 0; i < 5; ++i)
    if (!FieldParser(kFields[i], fields[i], err).parse(&bits[i])) return std::nullopt;

  CronExpr c;
  c.tz_ = TimeZone::load(tz, err);
  if (!c.tz_) return std::nullopt;
  c.expr_ = expr;
  c.minute_ = std::bitset<60>(bits[0]);
  c.hour_ = std::bitset<24>(bits[1]);
  c.dom_ = std::bitset<32>(bits[2]);
  c.month_ = std::bitset<13>(bits[3]);
  c.dow_ = std::bitset<7>(bits[4] | (bits[4] >> 7));  // 7 is Sunday too
  c.dom_star_ = fields[2][0] == '*';
  c.dow_star_ = fields[4][0] == '*';
  return c;
}

const std::string& CronExpr::tz_name() const {
  return tz_->name();
}

bool CronExpr::day_matches(unsigned dom, unsigned dow) const {
  const bool dom_ok = dom_[dom], dow_ok = dow_[dow];
  return dom_star_ || dow_star_ ? dom_ok && dow_ok : dom_ok || dow_ok;
}

int64_t CronExpr::next_after(int64_t after_ms) const {
  // Beyond ±3000 years from 1970 there is no schedule to speak of (and day arithmetic on
  // anything near INT64 limits would overflow).
  constexpr int64_t kLimitMs = int64_t{3000} * 366 * kDay * 1000;
  if (after_ms < -kLimitMs || after_ms > kLimitMs) return -1;
  const int64_t after_s = floor_div(after_ms, 1000);
  // Candidates start at the first local minute after the wall clock at after_ms: earlier ones
  // map to instants no later than after_ms (see cron.h), so they cannot be the answer.
  const int64_t first = (floor_div(after_s + tz_->offset_at(after_s), 60) + 1) * 60;
  const int64_t first_day = floor_div(first, kDay);
  constexpr int64_t kSearchDays = 5 * 366;
  for (int64_t day = first_day; day <= first_day + kSearchDays; ++day) {
    const Civil c = civil_from_days(day);
    if (!month_[c.m] || !day_matches(c.d, weekday(day))) continue;
    for (int h = 0; h < 24; ++h) {
      if (!hour_[h]) continue;
      const int64_t hour_start = day * kDay + h * 3600;
      if (hour_start + 3600 <= first) continue;
      for (int m = 0; m < 60; ++m) {
        if (!minute_[m] || hour_start + m * 60 < first) continue;
        // utc_from_local never decreases with the wall-clock time, but when after_ms is in a
        // fall-back's second pass the times just after its wall clock first happened before it:
        // skip those until one maps after after_ms.
        const int64_t t_ms = tz_->utc_from_local(hour_start + m * 60) * 1000;
        if (t_ms > after_ms) return t_ms;
      }
    }
  }
  return -1;
}

}  // namespace orch
