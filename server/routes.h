// A route table for the JSON API, in the way of Go's net/http muxes or Redis's command table:
// each route is {method, pattern, auth, handler}; one matcher finds the route of a request and
// the parameters of its path.
//
// A pattern is a path whose segments are literals, "{name}" (any one segment, possibly empty)
// or, last, "{name...}" (the rest of the path, slashes included, possibly empty).
#pragma once
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace orch {

class ApiCall;

// Who may call a route (see ServerContext::authorized).
enum class RouteAuth {
  kNone,   // anyone (GET /healthz)
  kRead,   // the token beyond loopback
  kWrite,  // a state-changing call: the token, or loopback when the server has none
};

struct Route {
  const char* method;  // a GET route answers HEAD too
  const char* pattern;
  RouteAuth auth;
  void (*handler)(ApiCall&);
};

// The parameters a pattern took from a path, in pattern order.
class RouteParams {
 public:
  // The value of {name}; "" when the pattern has none.
  const std::string& get(std::string_view name) const;
  void add(std::string name, std::string value);
  void clear() { values_.clear(); }
  size_t size() const { return values_.size(); }

 private:
  std::vector<std::pair<std::string, std::string>> values_;
};

// Whether `path` matches `pattern`; its parameters go to *params (cleared first).
bool match_pattern(std::string_view pattern, std::string_view path, RouteParams* params);

// The outcome of looking a request up in a table.
struct RouteMatch {
  const Route* route = nullptr;  // the route of the path and method; null: none
  // When no route has this method but some have this path: those routes (for 405 and Allow).
  std::vector<const Route*> path_routes;
  RouteParams params;
};
RouteMatch match_route(std::span<const Route> table, std::string_view method,
                       std::string_view path);
// "GET, POST": the methods of `routes`, each once, in table order (the Allow header of a 405).
std::string allowed_methods(const std::vector<const Route*>& routes);

}  // namespace orch
