#include "engine/json_pipeline.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <regex>
#include <set>
#include <string_view>

#include "base/duration.h"
#include "base/json_util.h"
#include "base/secrets.h"
#include "engine/compile.h"

namespace orch {

bool is_json_definition_file(const std::string& path) {
  return path.size() > 5 && path.compare(path.size() - 5, 5, ".json") == 0;
}

namespace {

// As the compiler checks them (engine/compile.cc): said here first, with the JSON path.
const std::regex kIdRe("^[A-Za-z_][A-Za-z0-9_-]*$");
const std::regex kNameRe("^[A-Za-z0-9][A-Za-z0-9_.-]*$");

using Positions = std::unordered_map<std::string, std::pair<int, int>>;

// Bounds that keep a definition's checks and its generated Lua far from any stack or parser
// limit (LuaJIT refuses a chunk nested ~200 levels deep; each condition nests two).
constexpr size_t kMaxNodes = 10000;
constexpr int kMaxConditionDepth = 40;

// Where each value of a valid JSON text starts, by path ("nodes[2].config.provider"; indexes
// from 0, as in jq), and the keys an object has twice (nlohmann keeps the last one silently,
// which would hide a mistake such as two "next").
class PositionScanner {
 public:
  PositionScanner(std::string_view text, Positions* at) : t_(text), at_(at) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < t_.size(); i++)
      if (t_[i] == '\n') line_starts_.push_back(i + 1);
  }
  void run() {
    size_t i = 0;
    value(i, "");
  }
  std::pair<int, int> line_col(size_t off) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), off);
    size_t line = static_cast<size_t>(it - line_starts_.begin());
    return {static_cast<int>(line), static_cast<int>(off - line_starts_[line - 1] + 1)};
  }
  std::vector<std::pair<std::string, size_t>> duplicates;

 private:
  char at(size_t i) const { return i < t_.size() ? t_[i] : '\0'; }
  void ws(size_t& i) const {
    while (i < t_.size() && (t_[i] == ' ' || t_[i] == '\t' || t_[i] == '\n' || t_[i] == '\r'))
      i++;
  }
  void skip_string(size_t& i) const {
    for (i++; i < t_.size() && t_[i] != '"'; i++)
      if (t_[i] == '\\') i++;
    i++;
  }
  void value(size_t& i, const std::string& path) {
    ws(i);
    at_->emplace(path, line_col(i));
    char c = at(i);
    if (c == '{') {
      i++;
      ws(i);
      if (at(i) == '}') {
        i++;
        return;
      }
      while (i < t_.size()) {
        ws(i);
        size_t s = i;
        skip_string(i);
        std::string key;
        try {
          key = json::parse(t_.substr(s, i - s)).get<std::string>();
        } catch (const std::exception&) {
          key = std::string(t_.substr(s + 1, i - s - 2));
        }
        ws(i);
        i++;  // ':'
        std::string child = path.empty() ? key : path + "." + key;
        ws(i);
        if (at_->count(child)) duplicates.emplace_back(child, i);
        value(i, child);
        ws(i);
        if (at(i++) != ',') return;  // '}'
      }
    } else if (c == '[') {
      i++;
      ws(i);
      if (at(i) == ']') {
        i++;
        return;
      }
      for (int k = 0; i < t_.size(); k++) {
        value(i, path + "[" + std::to_string(k) + "]");
        ws(i);
        if (at(i++) != ',') return;  // ']'
      }
    } else if (c == '"') {
      skip_string(i);
    } else {
      while (i < t_.size() && !strchr(",]} \t\r\n", t_[i])) i++;
    }
  }

  std::string_view t_;
  Positions* at_;
  std::vector<size_t> line_starts_;
};

std::string type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return "a number";
    default: return "an unknown value";
  }
}

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

bool is_lua_keyword(const std::string& s) {
  static const std::set<std::string> kw = {
      "and", "break", "do",  "else", "elseif", "end",    "false", "for",  "function", "goto",
      "if",  "in",    "local", "nil", "not",   "or",     "repeat", "return", "then",  "true",
      "until", "while"};
  return kw.count(s) > 0;
}

// A Lua string literal of s (bytes kept; quotes, backslashes and control characters escaped).
std::string lua_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\%03d", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// The Lua value of a JSON value: arrays stay arrays (o.json.array), null is o.json.null.
std::string lua_value(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "o.json.null";
    case json::value_t::boolean: return v.get<bool>() ? "true" : "false";
    case json::value_t::string: return lua_quote(v.get<std::string>());
    case json::value_t::number_integer: return std::to_string(v.get<int64_t>());
    case json::value_t::number_unsigned: return std::to_string(v.get<uint64_t>());
    case json::value_t::number_float: {
      char buf[40];
      snprintf(buf, sizeof buf, "%.17g", v.get<double>());
      return buf;
    }
    case json::value_t::array: {
      std::string s = "o.json.array { ";
      bool first = true;
      for (const auto& x : v) {
        s += (first ? "" : ", ") + lua_value(x);
        first = false;
      }
      return s + (first ? "}" : " }");
    }
    case json::value_t::object: {
      if (v.empty()) return "{}";
      std::string s = "{ ";
      bool first = true;
      for (const auto& [k, x] : v.items()) {
        static const std::regex ident("^[A-Za-z_][A-Za-z0-9_]*$");
        std::string key =
            std::regex_match(k, ident) && !is_lua_keyword(k) ? k : "[" + lua_quote(k) + "]";
        s += (first ? "" : ", ") + key + " = " + lua_value(x);
        first = false;
      }
      return s + " }";
    }
    default: return "nil";
  }
}

// A path into the outputs as the stdlib's o.transform reads it: a head (a node id or `input`)
// and then .key, [n] (from 1) or ["key"] segments. Empty when valid, else why not.
std::string path_syntax_error(const std::string& p, std::string* head) {
  size_t i = 0, n = p.size();
  while (i < n && p[i] != '.' && p[i] != '[') i++;
  *head = p.substr(0, i);
  if (head->empty()) return "a path starts with a node id (or input), e.g. \"analyze.severity\"";
  while (i < n) {
    if (p[i] == '.') {
      size_t j = ++i;
      while (i < n && p[i] != '.' && p[i] != '[' && p[i] != ']') i++;
      if (i == j) return "expected a key after '.' at column " + std::to_string(j + 1);
    } else if (p[i] == '[') {
      size_t j = i + 1;
      if (j < n && (p[j] == '"' || p[j] == '\'')) {
        size_t close = p.find(p[j], j + 1);
        if (close == std::string::npos || close + 1 >= n || p[close + 1] != ']')
          return "expected [\"key\"] at column " + std::to_string(i + 1);
        i = close + 2;
      } else {
        size_t k = j;
        if (k < n && p[k] == '-') k++;
        size_t digits = k;
        while (k < n && isdigit(static_cast<unsigned char>(p[k]))) k++;
        if (k == digits || k >= n || p[k] != ']')
          return "expected [number] or [\"key\"] at column " + std::to_string(i + 1);
        if (p.substr(j, k - j) == "0" || p.substr(j, k - j) == "-0")
          return "index [0] at column " + std::to_string(i + 1) + " (indexes start at 1)";
        i = k + 1;
      }
    } else {
      return "expected '.' or '[' at column " + std::to_string(i + 1);
    }
  }
  return "";
}

// What each node type's config may hold. kinds: string, bool, number, duration (a string like
// "10s" or a number of seconds), strings (a list of strings), string_or_strings, object,
// string_map (an object of strings), any, path (into the outputs), node (a node id),
// secret (the NAME of a secret).
struct Field {
  const char* key;
  const char* kind;
};
using Fields = std::vector<Field>;

const char* const kTypes[] = {"ingest", "context", "intelligence", "transform", "notify",
                              "condition"};
const char* const kNotifyDrivers[] = {"slack", "email", "pagerduty", "webhook", "console",
                                      "file"};

const Fields& type_fields(const std::string& type) {
  static const std::unordered_map<std::string, Fields> t = {
      {"ingest", {{"driver", "string"}, {"payload_from", "path"}, {"store", "bool"}}},
      {"context", {{"include", "strings"}, {"interval", "duration"}, {"paths", "strings"}}},
      {"intelligence",
       {{"provider", "string"},
        {"incidents_from", "path"},
        {"context_from", "path"},
        {"model", "string"},
        {"base_url", "string"},
        {"api_key_secret", "secret"},
        {"prompt", "string"},
        {"system", "string"},
        {"max_tokens", "number"},
        {"temperature", "number"},
        {"fallback", "bool"}}},
      {"transform",
       {{"source_node", "node"},
        {"extract", "string"},
        {"filter_priority", "string_or_strings"},
        {"mapping", "string_map"}}},
      {"condition", {{"when", "any"}, {"then", "node"}, {"else", "node"}}},
  };
  static const Fields none;
  auto it = t.find(type);
  return it == t.end() ? none : it->second;
}

// notify: the fields every driver takes, then each driver's own (o.notify's options, with the
// credentials named as secrets rather than written into the file).
const Fields& notify_fields(const std::string& driver) {
  static const std::unordered_map<std::string, Fields> t = {
      {"slack",
       {{"webhook_url", "string"},
        {"webhook_url_secret", "secret"},
        {"channel", "string"},
        {"username", "string"},
        {"icon_emoji", "string"},
        {"text", "string"},
        {"timeout", "duration"},
        {"raise", "bool"}}},
      {"webhook",
       {{"url", "string"},
        {"url_secret", "secret"},
        {"method", "string"},
        {"headers", "string_map"},
        {"json", "any"},
        {"body", "string"},
        {"secret", "secret"},
        {"signature_header", "string"},
        {"timestamp_header", "string"},
        {"timeout", "duration"},
        {"raise", "bool"}}},
      {"pagerduty",
       {{"routing_key_secret", "secret"},
        {"action", "string"},
        {"dedup_key", "string"},
        {"summary", "string"},
        {"source", "string"},
        {"severity", "string"},
        {"component", "string"},
        {"group", "string"},
        {"class", "string"},
        {"base_url", "string"},
        {"timeout", "duration"},
        {"raise", "bool"}}},
      {"email",
       {{"smtp_url", "string"},
        {"from", "string"},
        {"to", "string_or_strings"},
        {"cc", "string_or_strings"},
        {"bcc", "string_or_strings"},
        {"reply_to", "string"},
        {"subject", "string"},
        {"text", "string"},
        {"html", "string"},
        {"username", "string"},
        {"password_secret", "secret"},
        {"starttls", "string"},
        {"timeout", "duration"},
        {"raise", "bool"}}},
      {"console",
       {{"text", "string"},
        {"title", "string"},
        {"severity", "string"},
        {"level", "string"},
        {"fields", "object"}}},
      {"file",
       {{"path", "string"},
        {"text", "string"},
        {"title", "string"},
        {"severity", "string"},
        {"fields", "object"},
        {"json", "any"},
        {"mkdirs", "bool"},
        {"raise", "bool"}}},
  };
  static const Fields none;
  auto it = t.find(driver);
  return it == t.end() ? none : it->second;
}

struct JNode {
  int index = 0;
  std::string path;  // nodes[i]
  std::string id, type;
  const json* j = nullptr;
  json config = json::object();
  std::string next, then_, else_;
  bool has_else = false;
};

// A step of the translated flow: a node, or a condition with its two branches.
struct Item {
  int node = -1;
  std::vector<Item> then_, else_;
};

class Translator {
 public:
  Translator(const std::string& file, const std::string& text, JsonTranslation* out,
             std::vector<Diagnostic>* diags)
      : file_(file), text_(text), out_(out), diags_(diags) {}

  bool run() {
    json root;
    JsonError e;
    if (!parse_json_text(text_, &root, &e, kMaxJsonDepth)) {
      PositionScanner s(text_, &out_->positions);
      auto [l, c] = s.line_col(std::min(e.offset, text_.empty() ? 0 : text_.size() - 1));
      if (text_.empty()) l = 0;
      diags_->push_back({file_, l, "invalid JSON: " + e.why, c});
      return false;
    }
    PositionScanner scan(text_, &out_->positions);
    scan.run();
    for (auto& [p, off] : scan.duplicates) {
      auto [l, c] = scan.line_col(off);
      diags_->push_back({file_, l, p + ": given twice (a JSON object's keys must be unique)", c});
    }
    if (!root.is_object()) {
      err("", "a JSON pipeline definition is an object {\"version\": \"1.0\", \"nodes\": [...]}, "
              "got " + type_name(root));
      return false;
    }
    check_keys(root, "", {"version", "name", "description", "tags", "triggers", "defaults",
                          "nodes"});
    if (!root.contains("version"))
      err("", "\"version\" is required (\"1.0\")");
    else if (root["version"] != "1.0")
      err("version", "unsupported version " + root["version"].dump() + " (expected \"1.0\")");
    read_header(root);
    read_nodes(root);
    if (!diags_->empty()) return false;
    std::vector<Item> flow = build_flow();
    if (!diags_->empty()) return false;
    generate(root, flow);
    return diags_->empty();
  }

 private:
  // --- diagnostics ---------------------------------------------------------------------------
  std::pair<int, int> pos(std::string p) const {
    while (true) {
      auto it = out_->positions.find(p);
      if (it != out_->positions.end()) return it->second;
      if (p.empty()) return {1, 1};
      size_t dot = p.rfind('.'), br = p.rfind('[');
      size_t cut = dot == std::string::npos ? br : br == std::string::npos ? dot : std::max(dot, br);
      p = cut == std::string::npos ? "" : p.substr(0, cut);
    }
  }
  void err(const std::string& path, const std::string& msg) {
    auto [l, c] = pos(path);
    diags_->push_back({file_, l, (path.empty() ? "" : path + ": ") + msg, c});
  }
  static std::string at(const std::string& base, const std::string& key) {
    return base.empty() ? key : base + "." + key;
  }

  void check_keys(const json& obj, const std::string& path, const std::vector<std::string>& known,
                  const std::string& hint = "") {
    for (auto& [k, v] : obj.items()) {
      if (std::find(known.begin(), known.end(), k) != known.end()) continue;
      std::string dym = did_you_mean(k, known);
      err(at(path, k), "unknown field \"" + k + "\"" +
                           (dym.empty() ? "" : " (did you mean \"" + dym + "\"?)") + hint +
                           " (known: " + join(known) + ")");
    }
  }

  // Checks obj[key] against `kind`; false (said) when it is wrong.
  bool check_kind(const json& v, const std::string& path, const std::string& kind) {
    auto wrong = [&](const std::string& want) {
      err(path, "must be " + want + ", got " + type_name(v));
      return false;
    };
    if (kind == "any") return true;
    if (kind == "string" || kind == "path" || kind == "node" || kind == "secret") {
      if (!v.is_string()) return wrong("a string");
      if (kind == "secret" && !valid_secret_name(v.get<std::string>())) {
        err(path, "is the NAME of a secret (letters, digits, _; set as ORCHRUN_SECRET_<NAME> or "
                  "in the secrets file), got \"" + v.get<std::string>() + "\"");
        return false;
      }
      return true;
    }
    if (kind == "bool") return v.is_boolean() ? true : wrong("true or false");
    if (kind == "number") return v.is_number() ? true : wrong("a number");
    if (kind == "object") return v.is_object() ? true : wrong("an object");
    if (kind == "duration") return check_duration(v, path);
    if (kind == "strings" || kind == "string_or_strings") {
      if (kind == "string_or_strings" && v.is_string()) return true;
      const char* want = kind == "strings" ? "a list of strings" : "a string or a list of strings";
      if (!v.is_array()) return wrong(want);
      for (size_t i = 0; i < v.size(); i++)
        if (!v[i].is_string()) {
          err(path + "[" + std::to_string(i) + "]", "must be a string, got " + type_name(v[i]));
          return false;
        }
      return true;
    }
    if (kind == "string_map") {
      if (!v.is_object()) return wrong("an object of name: string");
      for (auto& [k, x] : v.items())
        if (!x.is_string()) {
          err(at(path, k), "must be a string, got " + type_name(x));
          return false;
        }
      return true;
    }
    return true;
  }

  bool check_duration(const json& v, const std::string& path) {
    std::string e;
    std::optional<int64_t> ms;
    if (v.is_number())
      ms = seconds_to_ms(v.get<double>(), &e);
    else if (v.is_string())
      ms = parse_duration_ms(v.get<std::string>(), &e);
    else
      e = "expected a duration like \"30s\" or a number of seconds, got " + type_name(v);
    if (!ms) {
      err(path, e);
      return false;
    }
    if (*ms == 0) {
      err(path, "must be greater than zero");
      return false;
    }
    return true;
  }

  // retry: a number of attempts, or {max, backoff, base, cap, jitter} (as in Lua).
  void check_retry(const json& v, const std::string& path) {
    auto attempts = [&](const json& n, const std::string& p) {
      if (!n.is_number() || n.get<double>() < 1 || n.get<double>() > 1000 ||
          std::floor(n.get<double>()) != n.get<double>())
        err(p, "must be a whole number of attempts between 1 and 1000, got " + n.dump());
    };
    if (v.is_number()) return attempts(v, path);
    if (!v.is_object()) {
      err(path, "must be a number of attempts or an object {max, backoff, base, cap, jitter}, got " +
                    type_name(v));
      return;
    }
    check_keys(v, path, {"max", "backoff", "base", "cap", "jitter"});
    if (v.contains("max")) attempts(v["max"], path + ".max");
    if (v.contains("backoff") && v["backoff"] != "exponential" && v["backoff"] != "fixed")
      err(path + ".backoff", "must be \"exponential\" or \"fixed\", got " + v["backoff"].dump());
    for (const char* k : {"base", "cap"})
      if (v.contains(k)) check_duration(v[k], path + "." + k);
    if (v.contains("jitter")) check_kind(v["jitter"], path + ".jitter", "bool");
  }

  // --- the top level -------------------------------------------------------------------------
  void read_header(const json& root) {
    if (root.contains("name")) {
      if (check_kind(root["name"], "name", "string")) {
        name_ = root["name"].get<std::string>();
        if (!std::regex_match(name_, kNameRe))
          err("name", "invalid pipeline name \"" + name_ +
                          "\" (use letters, digits, '_', '-' and '.')");
      }
    } else {
      std::string base = file_.substr(file_.rfind('/') + 1);
      name_ = base.substr(0, base.size() - 5);
      if (!std::regex_match(name_, kNameRe))
        err("", "the pipeline is named after its file, but \"" + name_ +
                    "\" is not a valid name (letters, digits, '_', '-' and '.'): give \"name\"");
    }
    if (root.contains("description")) check_kind(root["description"], "description", "string");
    if (root.contains("tags")) check_kind(root["tags"], "tags", "strings");
    if (root.contains("defaults")) {
      const json& d = root["defaults"];
      if (check_kind(d, "defaults", "object")) {
        check_keys(d, "defaults", {"timeout", "retry"});
        if (d.contains("timeout")) check_duration(d["timeout"], "defaults.timeout");
        if (d.contains("retry")) check_retry(d["retry"], "defaults.retry");
      }
    }
    if (root.contains("triggers")) {
      const json& t = root["triggers"];
      if (!t.is_array()) {
        err("triggers", "must be a list, e.g. [{\"webhook\": {\"path\": \"/hooks/x\"}}], got " +
                            type_name(t));
        return;
      }
      for (size_t i = 0; i < t.size(); i++) {
        std::string p = "triggers[" + std::to_string(i) + "]";
        const json& x = t[i];
        if (!x.is_object() || x.size() != 1) {
          err(p, "a trigger is an object with one field: {\"webhook\": {\"path\": ...}}, "
                 "{\"cron\": \"0 2 * * *\"}, {\"schedule\": {\"cron\": ...}} or {\"manual\": {}}");
          continue;
        }
        const std::string& k = x.begin().key();
        const json& v = x.begin().value();
        if (k == "cron")
          check_kind(v, p + ".cron", "string");
        else if (k == "webhook" || k == "schedule" || k == "manual")
          check_kind(v, p + "." + k, "object");
        else
          check_keys(x, p, {"webhook", "cron", "schedule", "manual"});
      }
    }
  }

  void read_nodes(const json& root) {
    if (!root.contains("nodes")) {
      err("", "\"nodes\" is required (a list of {\"id\", \"type\", \"config\", \"next\"})");
      return;
    }
    const json& ns = root["nodes"];
    if (!ns.is_array() || ns.empty()) {
      err("nodes", "must be a non-empty list of nodes, got " +
                       (ns.is_array() ? std::string("an empty list") : type_name(ns)));
      return;
    }
    if (ns.size() > kMaxNodes) {
      err("nodes", "has " + std::to_string(ns.size()) + " nodes; a JSON definition has at most " +
                       std::to_string(kMaxNodes) + " (split it, or use o.call between pipelines)");
      return;
    }
    const std::vector<std::string> types(std::begin(kTypes), std::end(kTypes));
    for (size_t i = 0; i < ns.size(); i++) {
      JNode n;
      n.index = static_cast<int>(i);
      n.path = "nodes[" + std::to_string(i) + "]";
      n.j = &ns[i];
      const json& j = ns[i];
      if (!j.is_object()) {
        err(n.path, "a node is an object {\"id\", \"type\", \"config\", \"next\"}, got " +
                        type_name(j));
        continue;
      }
      check_keys(j, n.path,
                 {"id", "type", "config", "next", "description", "retry", "timeout", "optional"});
      if (!j.contains("id")) {
        err(n.path, "\"id\" is required");
      } else if (check_kind(j["id"], n.path + ".id", "string")) {
        n.id = j["id"].get<std::string>();
        if (!std::regex_match(n.id, kIdRe))
          err(n.path + ".id", "invalid id \"" + n.id +
                                  "\" (use letters, digits, '_' and '-', starting with a letter)");
        else if (n.id == "input")
          err(n.path + ".id", "\"input\" is reserved: paths name the run's input with it");
        else if (ids_.count(n.id))
          err(n.path + ".id", "duplicate id \"" + n.id + "\" (first used by " +
                                  nodes_[ids_[n.id]].path + "); ids must be unique");
      }
      if (!j.contains("type")) {
        err(n.path, "\"type\" is required (one of " + join(types) + ")");
      } else if (check_kind(j["type"], n.path + ".type", "string")) {
        n.type = j["type"].get<std::string>();
        if (std::find(types.begin(), types.end(), n.type) == types.end()) {
          std::string dym = did_you_mean(n.type, types);
          err(n.path + ".type", "unknown node type \"" + n.type + "\"" +
                                    (dym.empty() ? "" : " (did you mean \"" + dym + "\"?)") +
                                    " (expected " + join(types) + ")");
          n.type.clear();
        }
      }
      if (j.contains("config")) {
        if (check_kind(j["config"], n.path + ".config", "object")) n.config = j["config"];
      }
      if (j.contains("next") && check_kind(j["next"], n.path + ".next", "string"))
        n.next = j["next"].get<std::string>();
      if (j.contains("description")) check_kind(j["description"], n.path + ".description", "string");
      if (n.type == "condition") {
        for (const char* k : {"retry", "timeout", "optional"})
          if (j.contains(k))
            err(n.path + "." + k, std::string("a condition runs no code of its own: ") + k +
                                      " does not apply to it");
      } else {
        if (j.contains("retry")) check_retry(j["retry"], n.path + ".retry");
        if (j.contains("timeout")) check_duration(j["timeout"], n.path + ".timeout");
        if (j.contains("optional")) check_kind(j["optional"], n.path + ".optional", "bool");
      }
      if (!n.id.empty() && !ids_.count(n.id)) ids_[n.id] = static_cast<int>(nodes_.size());
      nodes_.push_back(std::move(n));
    }
    for (auto& n : nodes_)
      if (n.type == "ingest") by_type_["ingest"].push_back(n.id);
      else if (n.type == "context") by_type_["context"].push_back(n.id);
      else if (n.type == "intelligence") by_type_["intelligence"].push_back(n.id);
    for (auto& n : nodes_) check_config(n);
    for (auto& n : nodes_) {
      if (!n.next.empty()) check_ref(n.next, n.path + ".next");
      if (!n.then_.empty()) check_ref(n.then_, n.path + ".config.then");
      if (n.has_else) check_ref(n.else_, n.path + ".config.else");
    }
  }

  bool check_ref(const std::string& id, const std::string& path) {
    if (ids_.count(id)) return true;
    std::vector<std::string> all;
    for (auto& n : nodes_) all.push_back(n.id);
    std::string dym = did_you_mean(id, all);
    err(path, "no node has the id \"" + id + "\"" +
                  (dym.empty() ? "" : " (did you mean \"" + dym + "\"?)"));
    return false;
  }

  // A path into the outputs: valid syntax, and a head that is a node id or `input`.
  void check_path(const std::string& p, const std::string& path) {
    std::string head;
    std::string why = path_syntax_error(p, &head);
    if (!why.empty()) {
      err(path, "invalid path \"" + p + "\": " + why);
      return;
    }
    if (head == "input" || ids_.count(head)) return;
    std::vector<std::string> all{"input"};
    for (auto& n : nodes_) all.push_back(n.id);
    std::string dym = did_you_mean(head, all);
    err(path, "the path \"" + p + "\" starts with \"" + head +
                  "\", which is no node id (nor input)" +
                  (dym.empty() ? "" : "; did you mean \"" + dym + "\"?"));
  }

  void check_enum(const json& cfg, const std::string& key, const std::string& path,
                  const std::vector<std::string>& allowed, const std::string& what,
                  bool required) {
    if (!cfg.contains(key)) {
      if (required) err(at(path, key), "required (one of " + join(allowed) + ")");
      return;
    }
    if (!cfg[key].is_string()) return;  // said by check_kind
    std::string v = cfg[key].get<std::string>();
    if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return;
    std::string dym = did_you_mean(v, allowed);
    err(at(path, key), "unknown " + what + " \"" + v + "\"" +
                           (dym.empty() ? "" : " (did you mean \"" + dym + "\"?)") +
                           " (expected " + join(allowed) + ")");
  }

  // The only node of a type, for a default ("" when there is none; said when there are more).
  std::string only(const std::string& type, const std::string& path, const std::string& field) {
    auto& v = by_type_[type];
    if (v.size() == 1) return v[0];
    if (v.size() > 1)
      err(path, "the pipeline has " + std::to_string(v.size()) + " " + type + " nodes (" +
                    join(v) + "): say which with \"" + field + "\"");
    return "";
  }

  void check_fields(const json& cfg, const std::string& path, const Fields& fields,
                    const std::string& hint = "") {
    std::vector<std::string> known;
    for (auto& f : fields) known.push_back(f.key);
    check_keys(cfg, path, known, hint);
    for (auto& f : fields) {
      if (!cfg.contains(f.key)) continue;
      std::string p = at(path, f.key);
      if (!check_kind(cfg[f.key], p, f.kind)) continue;
      if (std::string(f.kind) == "path") check_path(cfg[f.key].get<std::string>(), p);
      if (std::string(f.kind) == "node") check_ref(cfg[f.key].get<std::string>(), p);
    }
  }

  void check_config(JNode& n) {
    if (n.type.empty()) return;
    const std::string cp = n.path + ".config";
    json& c = n.config;
    if (n.type == "notify") return check_notify(n);
    if (n.type == "condition") return check_condition(n);
    check_fields(c, cp, type_fields(n.type));
    if (n.type == "ingest") {
      check_enum(c, "driver", cp, {"alertmanager", "grafana", "generic"}, "driver", true);
    } else if (n.type == "context") {
      static const std::vector<std::string> facets = {"cpu", "memory", "disk", "load",
                                                      "processes"};
      if (c.contains("include") && c["include"].is_array()) {
        if (c["include"].empty()) err(cp + ".include", "must name at least one of " + join(facets));
        for (size_t i = 0; i < c["include"].size(); i++) {
          const json& f = c["include"][i];
          if (f.is_string() &&
              std::find(facets.begin(), facets.end(), f.get<std::string>()) == facets.end())
            err(cp + ".include[" + std::to_string(i) + "]",
                "unknown fact \"" + f.get<std::string>() + "\" (expected " + join(facets) + ")");
        }
      }
      if (!c.contains("include")) c["include"] = json::array({"cpu", "memory", "disk", "load"});
    } else if (n.type == "intelligence") {
      check_enum(c, "provider", cp, {"local", "openai", "anthropic"}, "provider", false);
      std::string provider = c.contains("provider") && c["provider"].is_string()
                                 ? c["provider"].get<std::string>()
                                 : "local";
      c["provider"] = provider;
      if (provider == "local") {
        for (const char* k : {"model", "base_url", "api_key_secret", "prompt", "system",
                              "max_tokens", "temperature", "fallback"})
          if (c.contains(k))
            err(cp + "." + k, std::string("applies to the openai and anthropic providers; the "
                                          "local provider is the rules analyzer (o.ai.rules)"));
      } else if ((provider == "openai" || provider == "anthropic") && !c.contains("model")) {
        err(cp, "\"model\" is required with the " + provider + " provider");
      }
      if (!c.contains("incidents_from")) {
        std::string ing = only("ingest", cp, "incidents_from");
        if (!ing.empty())
          c["incidents_from"] = ing + ".incidents";
        else if (by_type_["ingest"].empty())
          err(cp, "needs incidents to analyze: add an ingest node, or give \"incidents_from\" "
                  "(a path, e.g. \"input.incidents\")");
      }
      if (!c.contains("context_from")) {
        std::string ctx = only("context", cp, "context_from");
        if (!ctx.empty()) c["context_from"] = ctx;
      }
    } else if (n.type == "transform") {
      if (c.contains("extract") && c["extract"].is_string()) {
        std::string head;
        std::string p = "x." + c["extract"].get<std::string>();
        std::string why = path_syntax_error(p, &head);
        if (!why.empty() || c["extract"].get<std::string>().empty())
          err(cp + ".extract", "invalid path \"" + c["extract"].get<std::string>() + "\"");
      }
      if (c.contains("mapping") && c["mapping"].is_object())
        for (auto& [k, v] : c["mapping"].items()) {
          std::string head;
          if (v.is_string() && (v.get<std::string>().empty() ||
                                !path_syntax_error("x." + v.get<std::string>(), &head).empty()))
            err(cp + ".mapping." + k, "invalid path \"" + v.get<std::string>() + "\"");
        }
    }
  }

  void check_notify(JNode& n) {
    const std::string cp = n.path + ".config";
    json& c = n.config;
    const std::vector<std::string> drivers(std::begin(kNotifyDrivers), std::end(kNotifyDrivers));
    check_enum(c, "driver", cp, drivers, "driver", true);
    if (c.contains("driver") && !c["driver"].is_string()) check_kind(c["driver"], cp + ".driver", "string");
    std::string d = c.contains("driver") && c["driver"].is_string() ? c["driver"].get<std::string>()
                                                                     : "";
    if (std::find(drivers.begin(), drivers.end(), d) == drivers.end()) return;
    Fields fields = {{"driver", "string"}, {"incident_from", "path"}, {"analysis_from", "path"}};
    for (auto& f : notify_fields(d)) fields.push_back(f);
    check_fields(c, cp, fields, " for the " + d + " driver");
    auto has = [&](const char* k) { return c.contains(k); };
    auto need = [&](const char* k) {
      if (!has(k)) err(cp, std::string("\"") + k + "\" is required by the " + d + " driver");
    };
    bool incident = has("incident_from") || !by_type_["ingest"].empty();
    if (d == "webhook") {
      if (has("url") == has("url_secret"))
        err(cp, "give one of \"url\" (the URL) or \"url_secret\" (the name of a secret holding it)");
      if (has("json") && has("body")) err(cp + ".body", "\"json\" and \"body\" cannot be used together");
    } else if (d == "slack") {
      if (has("webhook_url") && has("webhook_url_secret"))
        err(cp, "give one of \"webhook_url\" or \"webhook_url_secret\"");
      if (!has("text") && !incident)
        err(cp, "\"text\" is required when the pipeline has no ingest node (nor incident_from)");
    } else if (d == "email") {
      need("smtp_url");
      need("from");
      need("to");
    } else if (d == "pagerduty") {
      if (!incident && (!has("summary") || !has("severity")))
        err(cp, "\"summary\" and \"severity\" are required when the pipeline has no ingest node "
                "(nor incident_from)");
    } else if (d == "file") {
      need("path");
      if (!incident && !has("text") && !has("title") && !has("json"))
        err(cp, "one of \"text\", \"title\" or \"json\" is required when the pipeline has no "
                "ingest node (nor incident_from)");
    } else if (d == "console") {
      if (!incident && !has("text") && !has("title"))
        err(cp, "one of \"text\" or \"title\" is required when the pipeline has no ingest node "
                "(nor incident_from)");
    }
    if (!has("incident_from")) {
      std::string ing = only("ingest", cp, "incident_from");
      if (!ing.empty()) c["incident_from"] = ing + ".incidents[1]";
    }
    if (!has("analysis_from")) {
      std::string a = only("intelligence", cp, "analysis_from");
      if (!a.empty()) c["analysis_from"] = a;
    }
  }

  void check_condition(JNode& n) {
    const std::string cp = n.path + ".config";
    json& c = n.config;
    check_fields(c, cp, type_fields("condition"));
    if (!c.contains("when")) err(cp, "\"when\" is required (a path, or {\"path\", \"equals\": ...})");
    if (!c.contains("then")) err(cp, "\"then\" is required (the id of the node to run when the "
                                     "condition holds)");
    if (c.contains("then") && c["then"].is_string()) n.then_ = c["then"].get<std::string>();
    if (c.contains("else") && c["else"].is_string()) {
      n.else_ = c["else"].get<std::string>();
      n.has_else = true;
    }
    if (!c.contains("when")) return;
    const json& w = c["when"];
    const std::string wp = cp + ".when";
    if (w.is_string()) {
      check_path(w.get<std::string>(), wp);
      return;
    }
    if (!w.is_object()) {
      err(wp, "must be a path (\"analyze.escalate\": whether it is true) or an object "
              "{\"path\", and one of equals, not_equals, in, exists, gt, gte, lt, lte}, got " +
                  type_name(w));
      return;
    }
    const std::vector<std::string> ops = {"equals", "not_equals", "in", "exists",
                                          "gt",     "gte",        "lt", "lte"};
    std::vector<std::string> known = ops;
    known.insert(known.begin(), "path");
    check_keys(w, wp, known);
    if (!w.contains("path"))
      err(wp, "\"path\" is required");
    else if (check_kind(w["path"], wp + ".path", "string"))
      check_path(w["path"].get<std::string>(), wp + ".path");
    std::vector<std::string> given;
    for (auto& op : ops)
      if (w.contains(op)) given.push_back(op);
    if (given.size() > 1) err(wp, "give one test, not " + join(given, " and "));
    for (auto& op : given) {
      const json& v = w[op];
      std::string p = wp + "." + op;
      if (op == "equals" || op == "not_equals") {
        if (!v.is_string() && !v.is_number() && !v.is_boolean())
          err(p, "must be a string, a number or a boolean, got " + type_name(v));
      } else if (op == "in") {
        if (!v.is_array())
          err(p, "must be a list of values, got " + type_name(v));
        else
          for (size_t i = 0; i < v.size(); i++)
            if (!v[i].is_string() && !v[i].is_number() && !v[i].is_boolean())
              err(p + "[" + std::to_string(i) + "]",
                  "must be a string, a number or a boolean, got " + type_name(v[i]));
      } else if (op == "exists") {
        check_kind(v, p, "bool");
      } else {
        check_kind(v, p, "number");
      }
    }
  }

  // --- the flow --------------------------------------------------------------------------------
  int idx(const std::string& id) const {
    auto it = ids_.find(id);
    return it == ids_.end() ? -1 : it->second;
  }
  bool is_cond(int i) const { return nodes_[i].type == "condition"; }

  // A cycle through next/then/else: printed step by step ("a -> b -> a"). The walk keeps its
  // own stack: a definition of many nodes in a chain cannot exhaust the thread's.
  bool find_cycle() {
    std::vector<int> color(nodes_.size(), 0), stack;
    std::vector<std::pair<int, int>> work;  // node, next edge to look at (0..2)
    auto edge = [&](int u, int k) -> int {
      const JNode& n = nodes_[u];
      const std::string& e = k == 0 ? n.next : k == 1 ? n.then_ : n.else_;
      return e.empty() ? -1 : idx(e);
    };
    for (size_t i = 0; i < nodes_.size(); i++) {
      if (color[i] != 0) continue;
      work.push_back({static_cast<int>(i), 0});
      color[i] = 1;
      stack.push_back(static_cast<int>(i));
      while (!work.empty()) {
        auto& [u, k] = work.back();
        if (k == 3) {
          color[u] = 2;
          stack.pop_back();
          work.pop_back();
          continue;
        }
        int v = edge(u, k++);
        if (v < 0 || color[v] == 2) continue;
        if (color[v] == 1) {
          std::vector<std::string> cyc;
          auto from = std::find(stack.begin(), stack.end(), v);
          for (auto it = from; it != stack.end(); ++it) cyc.push_back(nodes_[*it].id);
          cyc.push_back(nodes_[v].id);
          if (cyc.size() > 12) {  // a long one: its ends, and how many between
            size_t between = cyc.size() - 10;
            cyc.erase(cyc.begin() + 5, cyc.end() - 5);
            cyc.insert(cyc.begin() + 5, "(" + std::to_string(between) + " more)");
          }
          err(nodes_[v].path, "a cycle through next/then/else: " + join(cyc, " -> ") +
                                  " (a pipeline's flow cannot go back; use a Lua o.loop to "
                                  "repeat steps)");
          return true;
        }
        color[v] = 1;
        stack.push_back(v);
        work.push_back({v, 0});
      }
    }
    return false;
  }

  // The nodes met from x along next, jumping over each condition to where its branches rejoin.
  std::vector<int> line(int x) {
    std::vector<int> out;
    while (x >= 0) {
      out.push_back(x);
      x = is_cond(x) ? join_of(x) : idx(nodes_[x].next);
    }
    return out;
  }

  // Where a condition's branches rejoin: its "next" when given (each branch must reach it),
  // else the first node of the then branch's line that the else branch's line reaches too;
  // -1 when they do not meet (each runs to its end, and the flow ends there).
  int join_of(int c) {
    auto memo = joins_.find(c);
    if (memo != joins_.end()) return memo->second;
    // Each nested condition costs a level of this walk (and of the generated Lua): bounded.
    if (join_depth_ > kMaxConditionDepth) {
      err(nodes_[c].path, "conditions are nested more than " +
                              std::to_string(kMaxConditionDepth) +
                              " deep here; flatten the flow (or write it in Lua)");
      joins_[c] = -1;
      return -1;
    }
    struct Depth {
      int& d;
      explicit Depth(int& x) : d(x) { d++; }
      ~Depth() { d--; }
    } depth(join_depth_);
    const JNode& n = nodes_[c];
    int j = -1;
    int t = idx(n.then_), e = n.has_else ? idx(n.else_) : -1;
    if (!n.next.empty()) {
      j = idx(n.next);
      for (auto [start, which] : {std::pair{t, "then"}, std::pair{e, "else"}}) {
        if (start < 0) continue;
        auto l = line(start);
        if (std::find(l.begin(), l.end(), j) == l.end())
          err(n.path + ".config." + which,
              std::string("the ") + which + " branch (from \"" + nodes_[start].id + "\" to \"" +
                  nodes_[l.back()].id + "\") ends without reaching \"" + n.next +
                  "\", where the condition continues; end it with \"next\": \"" + n.next + "\"");
      }
    } else if (e >= 0 && t >= 0) {
      auto lt = line(t), le = line(e);
      std::set<int> se(le.begin(), le.end());
      for (int x : lt)
        if (se.count(x)) {
          j = x;
          break;
        }
    }
    joins_[c] = j;
    return j;
  }

  std::vector<Item> build(int x, int stop, std::string from, int depth = 0) {
    std::vector<Item> out;
    if (depth > kMaxConditionDepth) {
      err(nodes_[x].path, "conditions are nested more than " +
                              std::to_string(kMaxConditionDepth) +
                              " deep here; flatten the flow (or write it in Lua)");
      return out;
    }
    while (x >= 0 && x != stop) {
      JNode& n = nodes_[x];
      if (!placed_[x].empty()) {
        err(n.path, "node \"" + n.id + "\" is reached from two places (" + placed_[x] + ", and " +
                        from + ") that do not rejoin before it; a node has one place in the flow");
        return out;
      }
      placed_[x] = from;
      Item it;
      it.node = x;
      if (is_cond(x)) {
        int j = join_of(x);
        int t = idx(n.then_), e = n.has_else ? idx(n.else_) : -1;
        if (t == j) {
          err(n.path + ".config.then",
              "the then branch is empty: \"" + n.then_ +
                  "\" is where the branches rejoin; swap then and else and invert the test");
          return out;
        }
        it.then_ = build(t, j, "as the then of \"" + n.id + "\"", depth + 1);
        if (!diags_->empty()) return out;
        if (e >= 0 && e != j)
          it.else_ = build(e, j, "as the else of \"" + n.id + "\"", depth + 1);
        from = "where the branches of \"" + n.id + "\" rejoin";
        x = j;
      } else {
        from = "after \"" + n.id + "\"";
        x = idx(n.next);
      }
      out.push_back(std::move(it));
    }
    return out;
  }

  std::vector<Item> build_flow() {
    if (find_cycle()) return {};
    placed_.assign(nodes_.size(), "");
    auto flow = build(0, -1, "as the first node");
    if (!diags_->empty()) return flow;
    for (size_t i = 0; i < nodes_.size(); i++)
      if (placed_[i].empty())
        err(nodes_[i].path,
            "node \"" + nodes_[i].id + "\" is not reached from the first node (\"" +
                nodes_[0].id +
                "\") through next/then/else: link it or remove it (the flow starts at nodes[0] "
                "and follows \"next\", not the order of the list)");
    return flow;
  }

  // --- the Lua -----------------------------------------------------------------------------------
  void emit(const std::string& text, const std::string& path) {
    out_->lua += text + "\n";
    out_->line_paths.push_back(path);
  }

  std::string node_options(const JNode& n, const std::string& extra) {
    const json& j = *n.j;
    std::vector<std::string> o;
    for (const char* k : {"retry", "timeout", "optional", "description"})
      if (j.contains(k)) o.push_back(std::string(k) + " = " + lua_value(j[k]));
    if (!extra.empty()) o.push_back(extra);
    return o.empty() ? "" : ", { " + join(o) + " }";
  }

  std::string node_call(const JNode& n) {
    const json& c = n.config;
    std::string body, extra;
    if (n.type == "notify") {
      std::string d = c["driver"].get<std::string>();
      json opts = json::object(), secrets = json::object();
      for (auto& [k, v] : c.items()) {
        if (k == "driver" || k == "incident_from" || k == "analysis_from") continue;
        if (k == "secret" && d == "webhook")
          secrets["secret"] = v;
        else if (k.size() > 7 && k.compare(k.size() - 7, 7, "_secret") == 0)
          secrets[k.substr(0, k.size() - 7)] = v;
        else
          opts[k] = v;
      }
      if (d == "slack" && !c.contains("webhook_url") && !c.contains("webhook_url_secret"))
        secrets["webhook_url"] = "SLACK_WEBHOOK_URL";
      if (d == "pagerduty" && !c.contains("routing_key_secret"))
        secrets["routing_key"] = "PAGERDUTY_ROUTING_KEY";
      json refs = json::object();
      if (c.contains("incident_from")) refs["incident"] = c["incident_from"];
      if (c.contains("analysis_from")) refs["analysis"] = c["analysis_from"];
      if (!secrets.empty()) refs["secrets"] = secrets;
      body = "J.notify(" + lua_quote(d) + ", " + lua_value(opts) + ", " + lua_value(refs) + ")";
    } else if (n.type == "intelligence") {
      json cfg = c;
      bool fallback = cfg.value("fallback", true);
      cfg.erase("fallback");
      body = "J.intelligence(" + lua_value(cfg) + ")";
      if (cfg["provider"] != "local" && fallback)
        extra = "fallback = J.rules_fallback(" + lua_value(cfg) + ")";
    } else {
      body = "J." + n.type + "(" + lua_value(c) + ")";
    }
    return "o.node(" + lua_quote(n.id) + ", " + body + node_options(n, extra) + ")";
  }

  void emit_step(const Item& it, const std::string& indent, const std::string& suffix) {
    const JNode& n = nodes_[it.node];
    if (!is_cond(it.node)) {
      emit(indent + node_call(n) + suffix, n.path);
      return;
    }
    json when = n.config["when"];
    if (when.is_string()) when = json{{"path", when}};
    emit(indent + "o.when(" + lua_quote(n.id) + ", J.when(" + lua_value(when) + "),", n.path);
    emit_branch(it.then_, indent + "  ", it.else_.empty() ? "" : ",", n.path);
    if (!it.else_.empty()) emit_branch(it.else_, indent + "  ", "", n.path);
    emit(indent + ")" + suffix, n.path);
  }

  void emit_branch(const std::vector<Item>& items, const std::string& indent,
                   const std::string& suffix, const std::string& path) {
    if (items.size() == 1) return emit_step(items[0], indent, suffix);
    emit(indent + "o.seq {", path);
    for (auto& it : items) emit_step(it, indent + "  ", ",");
    emit(indent + "}" + suffix, path);
  }

  void generate(const json& root, const std::vector<Item>& flow) {
    emit("-- Generated by orchrun from " + file_.substr(file_.rfind('/') + 1) +
             " (a JSON pipeline definition; engine/json_pipeline.cc).",
         "");
    emit("local o = require \"orch\"", "");
    emit("local J = require \"orch.jsondef\"", "");
    emit("return o.pipeline(" + lua_quote(name_) + ") {", "");
    if (root.contains("description"))
      emit("  description = " + lua_value(root["description"]) + ",", "description");
    if (root.contains("tags")) emit("  tags = " + lua_value(root["tags"]) + ",", "tags");
    if (root.contains("triggers")) {
      emit("  triggers = {", "triggers");
      const json& t = root["triggers"];
      for (size_t i = 0; i < t.size(); i++) {
        const std::string& k = t[i].begin().key();
        const json& v = t[i].begin().value();
        std::string call = k == "webhook"    ? "o.webhook(" + lua_value(v) + ")"
                           : k == "manual"   ? "o.manual(" + lua_value(v) + ")"
                                             : "o.schedule(" + lua_value(v) + ")";
        emit("    " + call + ",", "triggers[" + std::to_string(i) + "]");
      }
      emit("  },", "triggers");
    }
    if (root.contains("defaults"))
      emit("  defaults = " + lua_value(root["defaults"]) + ",", "defaults");
    for (auto& it : flow) emit_step(it, "  ", ",");
    emit("}", "");
    for (auto& n : nodes_) out_->node_paths[n.id] = n.path;
  }

  std::string file_;
  const std::string& text_;
  JsonTranslation* out_;
  std::vector<Diagnostic>* diags_;
  std::string name_;
  std::vector<JNode> nodes_;
  std::unordered_map<std::string, int> ids_;
  std::unordered_map<std::string, std::vector<std::string>> by_type_;
  std::unordered_map<int, int> joins_;
  int join_depth_ = 0;
  std::vector<std::string> placed_;  // how each node was reached ("" = not yet)
};

}  // namespace

bool translate_json_pipeline(const std::string& path, const std::string& text,
                             JsonTranslation* out, std::vector<Diagnostic>* diags) {
  size_t before = diags->size();
  std::vector<Diagnostic> mine;
  Translator t(path, text, out, &mine);
  t.run();
  std::stable_sort(mine.begin(), mine.end(), [](const Diagnostic& a, const Diagnostic& b) {
    return a.line != b.line ? a.line < b.line : a.column < b.column;
  });
  // A problem met along two walks of the flow (a condition's rejoin is looked for from each
  // branch) is said once.
  mine.erase(std::unique(mine.begin(), mine.end(),
                         [](const Diagnostic& a, const Diagnostic& b) {
                           return a.line == b.line && a.column == b.column &&
                                  a.message == b.message;
                         }),
             mine.end());
  diags->insert(diags->end(), mine.begin(), mine.end());
  return diags->size() == before;
}

Diagnostic json_diagnostic(const JsonTranslation& t, Diagnostic d) {
  if (d.line <= 0 || d.line > static_cast<int>(t.line_paths.size())) return d;
  std::string p = t.line_paths[d.line - 1];
  if (!p.empty()) d.message = p + ": " + d.message;
  while (true) {
    auto it = t.positions.find(p);
    if (it != t.positions.end()) {
      d.line = it->second.first;
      d.column = it->second.second;
      return d;
    }
    if (p.empty()) {
      d.line = 1;
      return d;
    }
    size_t cut = p.find_last_of(".[");
    p = cut == std::string::npos ? "" : p.substr(0, cut);
  }
}

void set_json_lines(const JsonTranslation& t, Pipeline* p) {
  auto line_of = [&](const std::string& path) {
    auto it = t.positions.find(path);
    return it == t.positions.end() ? 0 : it->second.first;
  };
  for (auto& [path, s] : p->by_path) {
    auto n = t.node_paths.find(s->id);
    if (n != t.node_paths.end()) s->line = line_of(n->second);
  }
  if (p->root) p->root->line = std::max(1, line_of(""));
  for (size_t i = 0; i < p->triggers.size(); i++)
    p->triggers[i].line = line_of("triggers[" + std::to_string(i) + "]");
}

}  // namespace orch
