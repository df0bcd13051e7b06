// Terminal output helpers: colours (only on a terminal, never with NO_COLOR), times, tables.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace orch::cli {

struct Style {
  bool color = false;
  std::string green(const std::string& s) const { return wrap("32", s); }
  std::string red(const std::string& s) const { return wrap("31", s); }
  std::string yellow(const std::string& s) const { return wrap("33", s); }
  std::string dim(const std::string& s) const { return wrap("2", s); }
  std::string bold(const std::string& s) const { return wrap("1", s); }
  std::string cyan(const std::string& s) const { return wrap("36", s); }
  std::string wrap(const char* code, const std::string& s) const {
    return color ? "\x1b[" + std::string(code) + "m" + s + "\x1b[0m" : s;
  }
  std::string status(const std::string& st) const;
};

Style style_for(FILE* f);
// "running" -> "●", "succeeded" -> "✓" ...
const char* status_symbol(const std::string& status);
std::string local_time(int64_t unix_ms);  // "2026-11-22 06:25:36"
// Pads/truncates to a display width (UTF-8 aware enough for our symbols).
std::string pad(const std::string& s, size_t width);
size_t display_width(const std::string& s);
std::string first_line(const std::string& s, size_t max = 160);

// Prints rows as aligned columns; the first row is the header.
void print_table(FILE* f, const std::vector<std::vector<std::string>>& rows, const Style& st);

// 1234 -> "1.2 KB"
std::string format_bytes(int64_t n);

}  // namespace orch::cli
