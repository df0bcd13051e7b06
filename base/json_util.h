// Small helpers around nlohmann::json for the runtime's own records.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace orch {

using json = nlohmann::json;

// The deepest nesting of arrays and objects a JSON value may have: what comes in from outside
// (HTTP bodies, --input, o.json.decode) and what a pipeline builds (o.json.encode, outputs).
// "[[]]" is 2 deep. Deep enough for real data; the bound is what keeps every recursive walk
// (nlohmann's copy, dump and compare, the conversions to and from Lua) a few KB of C stack.
constexpr int kMaxJsonDepth = 200;
// Records the runtime writes wrap such a value in a few levels of its own (a webhook's
// {"body": ...} envelope, a gate's review) and read it back: they may be that much deeper.
constexpr int kMaxRecordJsonDepth = kMaxJsonDepth + 16;

// Serialises with invalid UTF-8 replaced (U+FFFD) rather than throwing: stored records must
// never fail to be written because a process printed binary garbage.
std::string dump_json(const json& j, int indent = -1);

constexpr const char* kJsonNulMessage = "a NUL byte (0x00) cannot appear in JSON text";

// Why a text did not parse.
struct JsonError {
  std::string why;    // what is wrong, without the position: "nested deeper than 200 levels"
  size_t offset = 0;  // 0-based byte offset of the offending token
  std::string what;   // one line with both, for a message: "JSON nested deeper ... at byte 201"
};

// Parses text into *out; false (and *e filled) on a syntax error, a number beyond the range of
// a double, or nesting deeper than max_depth. The depth is checked while parsing, so a hostile
// text costs no more than its length. With big_integers_as_strings, integers too large even
// for 64 bits are kept as the string of their digits (nlohmann would make them inexact doubles).
bool parse_json_text(std::string_view text, json* out, JsonError* e,
                     int max_depth = kMaxRecordJsonDepth, bool big_integers_as_strings = false);
// Parses text; returns a discarded value (is_discarded()) on error and sets *err (e.what).
// Input from outside passes max_depth = kMaxJsonDepth; records read back keep the default.
json parse_json(std::string_view text, std::string* err, int max_depth = kMaxRecordJsonDepth);
// The byte offset of the first '[' or '{' (outside strings) that opens a level deeper than
// max_depth, or npos. Exact for valid JSON (where parse_json_text stops on depth).
size_t json_too_deep_at(std::string_view text, int max_depth);

}  // namespace orch
