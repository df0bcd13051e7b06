#include "cli/format.h"

#include <unistd.h>

#include <cstdlib>
#include <ctime>

namespace orch::cli {

Style style_for(FILE* f) {
  Style s;
  const char* nc = getenv("NO_COLOR");
  const char* term = getenv("TERM");
  s.color = isatty(fileno(f)) && !(nc && *nc) && !(term && std::string(term) == "dumb");
  return s;
}

std::string Style::status(const std::string& st) const {
  if (st == "succeeded") return green(st);
  if (st == "failed") return red(st);
  if (st == "cancelled" || st == "skipped") return yellow(st);
  if (st == "running") return cyan(st);
  if (st == "awaiting_approval" || st == "waiting") return yellow(st);
  if (st == "orphaned") return red(st);
  return st;
}

const char* status_symbol(const std::string& status) {
  if (status == "succeeded") return "✓";
  if (status == "failed") return "✗";
  if (status == "skipped") return "↷";
  if (status == "cancelled") return "⊘";
  if (status == "running") return "●";
  if (status == "retrying") return "↻";
  if (status == "orphaned") return "⚠";
  if (status == "waiting" || status == "awaiting_approval") return "⏸";
  return "·";
}

std::string local_time(int64_t unix_ms) {
  time_t t = static_cast<time_t>(unix_ms / 1000);
  struct tm tm {};
  localtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

size_t display_width(const std::string& s) {
  size_t w = 0;
  bool esc = false;
  for (unsigned char c : s) {
    if (esc) {
      if (c == 'm') esc = false;
      continue;
    }
    if (c == 0x1b) {
      esc = true;
      continue;
    }
    if ((c & 0xC0) != 0x80) w++;  // count code points, not continuation bytes
  }
  return w;
}

std::string pad(const std::string& s, size_t width) {
  size_t w = display_width(s);
  return w >= width ? s : s + std::string(width - w, ' ');
}

std::string first_line(const std::string& s, size_t max) {
  std::string l = s.substr(0, s.find('\n'));
  if (l.size() > max) l = l.substr(0, max - 3) + "...";
  return l;
}

void print_table(FILE* f, const std::vector<std::vector<std::string>>& rows, const Style& st) {
  if (rows.empty()) return;
  std::vector<size_t> widths;
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); i++) {
      if (widths.size() <= i) widths.push_back(0);
      widths[i] = std::max(widths[i], display_width(r[i]));
    }
  for (size_t ri = 0; ri < rows.size(); ri++) {
    std::string line;
    for (size_t i = 0; i < rows[ri].size(); i++) {
      bool last = i + 1 == rows[ri].size();
      line += last ? rows[ri][i] : pad(rows[ri][i], widths[i] + 2);
    }
    if (ri == 0) line = st.bold(line);
    fprintf(f, "%s\n", line.c_str());
  }
}

std::string format_bytes(int64_t n) {
  char buf[32];
  if (n < 1024)
    snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(n));
  else if (n < 1024 * 1024)
    snprintf(buf, sizeof buf, "%.1f KB", static_cast<double>(n) / 1024);
  else
    snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(n) / (1024 * 1024));
  return buf;
}

}  // namespace orch::cli
