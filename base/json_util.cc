#include "base/json_util.h"

#include <vector>

namespace orch {
namespace {

// Builds the value as nlohmann's own DOM parser does (same cost, measured), through the public
// SAX interface, with two differences: a container deeper than max_depth stops the parse (the
// parser itself is iterative, but copying, dumping or converting such a value recurses once
// per level), and optionally integers beyond 64 bits stay exact as strings.
class BoundedBuilder {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  BoundedBuilder(int max_depth, bool big_integers_as_strings)
      : max_depth_(static_cast<size_t>(max_depth < 0 ? 0 : max_depth)),
        big_integers_as_strings_(big_integers_as_strings) {}

  json root;
  bool too_deep = false;
  bool failed = false;
  JsonError error;  // filled on a parse error (not on too_deep: the caller locates that)

  bool null() { return put(json(nullptr)); }
  bool boolean(bool v) { return put(json(v)); }
  bool number_integer(number_integer_t v) { return put(json(v)); }
  bool number_unsigned(number_unsigned_t v) { return put(json(v)); }
  bool number_float(number_float_t v, const string_t& text) {
    // nlohmann hands an integer too large for 64 bits over as a float; its text has no . e E.
    if (big_integers_as_strings_ && text.find_first_of(".eE") == string_t::npos)
      return put(json(text));
    return put(json(v));
  }
  bool string(string_t& v) { return put(json(std::move(v))); }
  bool binary(binary_t& v) { return put(json::binary(std::move(v))); }
  bool start_object(std::size_t) { return open(json::value_t::object); }
  bool key(string_t& k) {
    key_ = std::move(k);
    return true;
  }
  bool end_object() { return close(); }
  bool start_array(std::size_t) { return open(json::value_t::array); }
  bool end_array() { return close(); }

  template <class Exception>
  bool parse_error(std::size_t position, const std::string& token, const Exception& ex) {
    failed = true;
    // `position` counts the bytes read, the offending one included.
    error.offset = position > 0 ? position - 1 : 0;
    std::string what = ex.what();
    if (ex.id == 406) {  // out_of_range.406: "number overflow parsing '1e309'"
      // Here the token is the whole number: point at its first digit.
      error.offset = position >= token.size() ? position - token.size() : 0;
      std::string number = token.size() <= 40 ? token : token.substr(0, 32) + "...";
      error.why = "number " + number + " is beyond the range of a double";
      error.what = error.why + " at byte " + std::to_string(error.offset + 1);
      return false;
    }
    // "[json.exception.parse_error.101] parse error at line 1, column 5: <why>"
    size_t col = what.find(", column ");
    size_t colon = col == std::string::npos ? std::string::npos : what.find(": ", col);
    error.why = colon == std::string::npos ? what : what.substr(colon + 2);
    error.what = what;
    return false;
  }

 private:
  // Only the chain of open containers is held: nothing is added to a container while one of
  // its children is open, so these pointers stay valid.
  std::vector<json*> open_;
  string_t key_;
  size_t max_depth_;
  bool big_integers_as_strings_;

  json* place(json&& v) {
    if (open_.empty()) {
      root = std::move(v);
      return &root;
    }
    json& top = *open_.back();
    if (top.is_array()) {
      auto& a = top.get_ref<json::array_t&>();
      a.push_back(std::move(v));
      return &a.back();
    }
    json& slot = top.get_ref<json::object_t&>()[std::move(key_)];
    slot = std::move(v);
    return &slot;
  }
  bool put(json&& v) {
    place(std::move(v));
    return true;
  }
  bool open(json::value_t type) {
    if (open_.size() >= max_depth_) {
      too_deep = true;
      return false;
    }
    open_.push_back(place(json(type)));
    return true;
  }
  bool close() {
    open_.pop_back();
    return true;
  }
};

}  // namespace

std::string dump_json(const json& j, int indent) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

size_t json_too_deep_at(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); i++) {
    char c = text[i];
    if (in_string) {
      if (c == '\\')
        i++;  // the escaped character cannot end the string
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return i;
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  return std::string_view::npos;
}

bool parse_json_text(std::string_view text, json* out, JsonError* e, int max_depth,
                     bool big_integers_as_strings) {
  // nlohmann's lexer takes a NUL byte for the end of the input and ignores what follows it
  // ("[1]\0junk" parses as [1]). JSON text never holds a raw NUL (a string spells it \u0000).
  if (size_t nul = text.find('\0'); nul != std::string_view::npos) {
    if (e)
      *e = {kJsonNulMessage, nul,
            "parse error at byte " + std::to_string(nul + 1) + ": " + kJsonNulMessage};
    return false;
  }
  BoundedBuilder b(max_depth, big_integers_as_strings);
  bool ok;
  try {
    ok = json::sax_parse(text, &b) && !b.failed && !b.too_deep;
  } catch (const std::exception& ex) {  // not expected (the builder reports errors itself)
    b.error = {ex.what(), 0, ex.what()};
    ok = false;
  }
  if (ok) {
    *out = std::move(b.root);
    return true;
  }
  if (b.too_deep) {
    size_t at = json_too_deep_at(text, max_depth);
    b.error.offset = at == std::string_view::npos ? 0 : at;
    b.error.why = "nested deeper than " + std::to_string(max_depth) + " levels";
    b.error.what = "JSON " + b.error.why + " at byte " + std::to_string(b.error.offset + 1);
  }
  if (e) *e = std::move(b.error);
  return false;
}

json parse_json(std::string_view text, std::string* err, int max_depth) {
  json j;
  JsonError e;
  if (parse_json_text(text, &j, &e, max_depth)) return j;
  if (err) *err = std::move(e.what);
  return json(json::value_t::discarded);
}

}  // namespace orch
