#include "server/routes.h"

#include <algorithm>

namespace orch {
namespace {

// The next segment of `s` from `*pos` (up to '/' or the end); *pos moves past the '/'.
std::string_view next_segment(std::string_view s, size_t* pos) {
  size_t end = s.find('/', *pos);
  if (end == std::string_view::npos) end = s.size();
  std::string_view seg = s.substr(*pos, end - *pos);
  *pos = end + 1;
  return seg;
}

}  // namespace

const std::string& RouteParams::get(std::string_view name) const {
  static const std::string kEmpty;
  for (auto& [k, v] : values_)
    if (k == name) return v;
  return kEmpty;
}

void RouteParams::add(std::string name, std::string value) {
  values_.emplace_back(std::move(name), std::move(value));
}

bool match_pattern(std::string_view pattern, std::string_view path, RouteParams* params) {
  params->clear();
  size_t pp = 0, sp = 0;
  // Both are split at every '/': "/a/" is the segments "", "a", "".
  while (pp <= pattern.size()) {
    std::string_view want = next_segment(pattern, &pp);
    bool param = want.size() >= 2 && want.front() == '{' && want.back() == '}';
    if (param && want.size() > 5 && want.substr(want.size() - 4) == "...}") {
      if (sp > path.size()) return false;  // the path ended before this segment
      params->add(std::string(want.substr(1, want.size() - 5)), std::string(path.substr(sp)));
      return true;
    }
    if (sp > path.size()) return false;
    std::string_view got = next_segment(path, &sp);
    if (param)
      params->add(std::string(want.substr(1, want.size() - 2)), std::string(got));
    else if (want != got)
      return false;
  }
  return sp > path.size();  // the path has no segment left over
}

RouteMatch match_route(std::span<const Route> table, std::string_view method,
                       std::string_view path) {
  RouteMatch m;
  RouteParams params;
  for (const Route& r : table) {
    if (!match_pattern(r.pattern, path, &params)) continue;
    if (method == r.method || (method == "HEAD" && std::string_view(r.method) == "GET")) {
      m.route = &r;
      m.params = std::move(params);
      m.path_routes.clear();
      return m;
    }
    m.path_routes.push_back(&r);
  }
  return m;
}

std::string allowed_methods(const std::vector<const Route*>& routes) {
  std::vector<std::string_view> seen;
  std::string out;
  for (const Route* r : routes) {
    std::string_view m = r->method;
    if (std::find(seen.begin(), seen.end(), m) != seen.end()) continue;
    seen.push_back(m);
    if (!out.empty()) out += ", ";
    out += m;
  }
  return out;
}

}  // namespace orch
