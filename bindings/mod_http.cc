// core.http_request: an HTTP(S) request from a node body. The coroutine yields while the loop's
// HttpClient (libcurl multi on libuv) runs the transfer. Options are checked before anything
// starts (misuse raises, naming the field); a transfer that fails returns nil, message, code.
#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>
#include <vector>

#include "base/duration.h"
#include "bindings/async_op.h"
#include "bindings/convert.h"
#include "bindings/lua_state.h"
#include "drivers/http_client.h"

namespace orch {
namespace {

constexpr const char* kKnown =
    "method, url, headers, query, body, json, timeout, follow_redirects, max_body";

bool has_ctl(std::string_view s) {
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); i++)
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  return true;
}

// A string or a number at idx, as text; false for anything else.
bool scalar_text(lua_State* L, int idx, std::string* out) {
  int t = lua_type(L, idx);
  if (t == LUA_TSTRING || t == LUA_TNUMBER) {
    size_t n;
    const char* s = lua_tolstring(L, idx, &n);
    out->assign(s, n);
    return true;
  }
  if (t == LUA_TBOOLEAN) {
    *out = lua_toboolean(L, idx) ? "true" : "false";
    return true;
  }
  return false;
}

// Read the option at the top of the stack (popping it is the caller's job).
bool read_headers(lua_State* L, HttpRequest* req, std::string* err) {
  if (!lua_istable(L, -1)) {
    *err = std::string("'headers' must be a table of name = value, got ") + luaL_typename(L, -1);
    return false;
  }
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    std::string name, value;
    if (lua_type(L, -2) != LUA_TSTRING) {
      *err = "'headers' keys must be header names (strings)";
    } else {
      name = lua_tostring(L, -2);
      if (!scalar_text(L, -1, &value))
        *err = "header '" + name + "' must be a string or a number, got " + luaL_typename(L, -1);
      else if (name.empty() || name.find_first_of(": \t") != std::string::npos || has_ctl(name))
        *err = "'headers': invalid header name '" + name + "'";
      else if (has_ctl(value))
        *err = "header '" + name + "' contains a control character (CR/LF are not allowed)";
    }
    lua_pop(L, 1);
    if (!err->empty()) return false;
    req->headers.emplace_back(std::move(name), std::move(value));
  }
  // Table order is arbitrary; sorted, the request is the same every time.
  std::sort(req->headers.begin(), req->headers.end());
  return true;
}

// query = { q = "x", tag = { "a", "b" } } -> "q=x&tag=a&tag=b" (keys sorted).
bool read_query(lua_State* L, std::string* out, std::string* err) {
  if (!lua_istable(L, -1)) {
    *err = std::string("'query' must be a table of name = value, got ") + luaL_typename(L, -1);
    return false;
  }
  std::vector<std::pair<std::string, std::string>> params;
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    std::string name, value;
    if (lua_type(L, -2) != LUA_TSTRING) {
      *err = "'query' keys must be strings";
    } else {
      name = lua_tostring(L, -2);
      if (lua_istable(L, -1)) {
        int n = static_cast<int>(lua_objlen(L, -1));
        for (int i = 1; i <= n && err->empty(); i++) {
          lua_rawgeti(L, -1, i);
          if (scalar_text(L, -1, &value))
            params.emplace_back(name, value);
          else
            *err = "query parameter '" + name + "' must hold strings, numbers or booleans";
          lua_pop(L, 1);
        }
      } else if (scalar_text(L, -1, &value)) {
        params.emplace_back(name, value);
      } else {
        *err = "query parameter '" + name +
               "' must be a string, a number, a boolean or a list, got " + luaL_typename(L, -1);
      }
    }
    lua_pop(L, 1);
    if (!err->empty()) return false;
  }
  std::stable_sort(params.begin(), params.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [k, v] : params) {
    if (!out->empty()) out->push_back('&');
    *out += url_escape(k) + "=" + url_escape(v);
  }
  return true;
}

bool read_duration(lua_State* L, int64_t* ms, std::string* err) {
  std::optional<int64_t> v;
  if (lua_type(L, -1) == LUA_TNUMBER)
    v = seconds_to_ms(lua_tonumber(L, -1), err);
  else if (lua_type(L, -1) == LUA_TSTRING)
    v = parse_duration_ms(lua_tostring(L, -1), err);
  else
    *err = std::string("expected a duration (seconds or a string like \"5s\"), got ") +
           luaL_typename(L, -1);
  if (v && *v <= 0) *err = "must be more than 0";
  if (!v || !err->empty()) {
    *err = "'timeout': " + *err;
    return false;
  }
  *ms = *v;
  return true;
}

// Fills req from the options table at index 1; false with *err (without the "o.http.request: "
// prefix) on misuse. On failure the stack may hold leftovers: the caller resets it.
bool read_request(lua_State* L, HttpRequest* req, std::string* err) {
  // Known keys only: a typo ("timout", "header") must not be silently ignored.
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) {
      *err = std::string("option keys must be strings, got ") + luaL_typename(L, -1) +
             " (known: " + kKnown + ")";
      return false;
    }
    std::string k = lua_tostring(L, -1);
    std::string padded = std::string(" ") + kKnown + ",";
    if (padded.find(" " + k + ",") == std::string::npos) {
      *err = "unknown option '" + k + "' (known: " + kKnown + ")";
      return false;
    }
  }
  // Pushes the option; true when it is set.
  auto field = [&](const char* name) {
    lua_getfield(L, 1, name);
    return !lua_isnil(L, -1);
  };

  if (!field("url")) {
    *err = "'url' is required";
    return false;
  }
  if (lua_type(L, -1) != LUA_TSTRING) {
    *err = std::string("'url' must be a string, got ") + luaL_typename(L, -1);
    return false;
  }
  req->url = lua_tostring(L, -1);
  lua_pop(L, 1);
  if (!starts_with_nocase(req->url, "http://") && !starts_with_nocase(req->url, "https://")) {
    *err = "'url' must start with http:// or https://, got '" + req->url + "'";
    return false;
  }
  if (req->url.find(' ') != std::string::npos || has_ctl(req->url)) {
    *err = "'url' contains spaces or control characters (pass parameters in 'query')";
    return false;
  }

  bool has_body = field("body");
  if (has_body) {
    if (lua_type(L, -1) != LUA_TSTRING) {
      *err = std::string("'body' must be a string, got ") + luaL_typename(L, -1) +
             " (use 'json' to send a table as JSON)";
      return false;
    }
    size_t n;
    const char* s = lua_tolstring(L, -1, &n);
    req->body.assign(s, n);
  }
  lua_pop(L, 1);
  bool has_json = field("json");
  if (has_json) {
    if (has_body) {
      *err = "'body' and 'json' cannot be used together";
      return false;
    }
    json j;
    std::string jerr;
    if (!lua_to_json(L, lua_gettop(L), &j, &jerr)) {
      *err = "'json': " + jerr;
      return false;
    }
    req->body = dump_json(j);
  }
  lua_pop(L, 1);
  req->has_body = has_body || has_json;

  if (field("method")) {
    if (lua_type(L, -1) != LUA_TSTRING) {
      *err = std::string("'method' must be a string, got ") + luaL_typename(L, -1);
      return false;
    }
    std::string m = lua_tostring(L, -1);
    bool word = !m.empty() && std::all_of(m.begin(), m.end(), [](char c) {
      return std::isalpha(static_cast<unsigned char>(c)) != 0;
    });
    if (!word) {
      *err = "'method' must be a word like GET or POST, got '" + m + "'";
      return false;
    }
    for (char& c : m) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    req->method = m;
  } else {
    req->method = req->has_body ? "POST" : "GET";  // as curl -d does
  }
  lua_pop(L, 1);

  if (field("headers") && !read_headers(L, req, err)) return false;
  lua_pop(L, 1);
  if (has_json) {
    bool has_ct = std::any_of(req->headers.begin(), req->headers.end(), [](const auto& h) {
      return strcasecmp(h.first.c_str(), "content-type") == 0;
    });
    if (!has_ct) req->headers.emplace_back("Content-Type", "application/json");
  }

  if (field("query")) {
    std::string q;
    if (!read_query(L, &q, err)) return false;
    if (!q.empty()) {
      // After any query already in the URL, before any fragment.
      size_t hash = req->url.find('#');
      std::string frag = hash == std::string::npos ? "" : req->url.substr(hash);
      std::string base = req->url.substr(0, hash);
      if (base.find('?') == std::string::npos)
        base += '?';
      else if (base.back() != '?' && base.back() != '&')
        base += '&';
      req->url = base + q + frag;
    }
  }
  lua_pop(L, 1);

  if (field("timeout") && !read_duration(L, &req->timeout_ms, err)) return false;
  lua_pop(L, 1);

  if (field("follow_redirects")) {
    if (lua_type(L, -1) != LUA_TBOOLEAN) {
      *err = std::string("'follow_redirects' must be a boolean, got ") + luaL_typename(L, -1);
      return false;
    }
    req->follow_redirects = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);

  if (field("max_body")) {
    double v = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || !(v >= 0) || v > 9.0e15 ||
        v != static_cast<double>(static_cast<int64_t>(v))) {
      *err = "'max_body' must be a whole number of bytes >= 0";
      return false;
    }
    req->max_body = static_cast<uint64_t>(v);
  }
  lua_pop(L, 1);
  return true;
}

bool is_json_type(const std::string* content_type) {
  if (!content_type) return false;
  std::string t = content_type->substr(0, content_type->find(';'));
  while (!t.empty() && t.back() == ' ') t.pop_back();
  for (char& c : t) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return t == "application/json" || (t.size() > 5 && t.compare(t.size() - 5, 5, "+json") == 0);
}

void push_response(lua_State* co, HttpResponse& r) {
  lua_createtable(co, 0, 8);
  lua_pushinteger(co, static_cast<lua_Integer>(r.status));
  lua_setfield(co, -2, "status");
  lua_pushboolean(co, r.status >= 200 && r.status < 300);
  lua_setfield(co, -2, "ok");
  lua_createtable(co, 0, static_cast<int>(r.headers.size()));
  for (auto& [k, v] : r.headers) {
    lua_pushlstring(co, v.data(), v.size());
    lua_setfield(co, -2, k.c_str());
  }
  lua_setfield(co, -2, "headers");
  lua_pushlstring(co, r.body.data(), r.body.size());
  lua_setfield(co, -2, "body");
  if (is_json_type(r.header("content-type"))) {
    json j = parse_json(r.body, nullptr);
    if (!j.is_discarded()) {
      push_json(co, j);
      lua_setfield(co, -2, "json");
    }
  }
  lua_pushnumber(co, static_cast<lua_Number>(r.duration_ms));
  lua_setfield(co, -2, "duration_ms");
  lua_pushlstring(co, r.url.data(), r.url.size());
  lua_setfield(co, -2, "url");
}

// Everything with C++ locals happens here, so that the caller raises or yields only once they
// are gone. Leaves the message on the Lua stack when it does not start.
Start start_request(lua_State* L, const AsyncOp& op, HttpClient** client, HttpClient::Id* id) {
  TaskHost* host = op.host();
  std::string err;
  HttpRequest req;
  if (!read_request(L, &req, &err)) {
    lua_settop(L, 1);
    push_user_where(L);
    err = "o.http.request: " + err;
    lua_pushlstring(L, err.data(), err.size());
    lua_concat(L, 2);
    return Start::Misuse;
  }
  *client = host->http();
  if (!*client) {
    lua_pushliteral(L, "o.http.request is not available in this host");
    return Start::Misuse;
  }
  if (!http_available(&err)) {  // libcurl could not be loaded: the reason, as it is
    push_failure(L, err, "error");
    return Start::Failed;
  }
  host->before_effect();
  *id = (*client)->start(
      req,
      [op](HttpResponse& r) {
        if (!r.ok()) {
          op.fail(r.error, r.code);
          return;
        }
        op.complete([&r](lua_State* co) {
          push_response(co, r);
          return 1;
        });
      },
      &err);
  if (!*id) {
    push_failure(L, req.method + " " + req.url.substr(0, req.url.find('?')) + ": " + err, "error");
    return Start::Failed;
  }
  return Start::Started;
}

int l_http_request(lua_State* L) {
  if (!lua_istable(L, 1)) {
    push_user_where(L);
    lua_pushfstring(L,
                    "o.http.request expects a table {url = ..., method = ..., ...}, got %s "
                    "(or use o.http.get(url, opts))",
                    luaL_typename(L, 1));
    lua_concat(L, 2);
    return lua_error(L);
  }
  lua_settop(L, 1);
  AsyncOp op = AsyncOp::begin(L, "o.http.request");
  HttpClient* client = nullptr;
  HttpClient::Id id = 0;
  Start started = start_request(L, op, &client, &id);
  if (started == Start::Misuse) return lua_error(L);
  if (started == Start::Failed) return 3;
  // The node's timeout or a cancel aborts the transfer at once.
  return op.yield(L, [client, id] { client->cancel(id); });
}

}  // namespace

void register_http(lua_State* L) {
  lua_pushcfunction(L, l_http_request);
  lua_setfield(L, -2, "http_request");
}

}  // namespace orch
