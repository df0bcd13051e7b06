// The statuses of runs, node attempts and approvals: enums in C++, text only where they meet
// SQL, JSON or a person (to_string / parse_* below are the one place the two meet).
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace orch {

// waiting: parked until a signal from outside arrives (o.wait); awaiting_approval: parked on a
// person's decision (a gate). Both are unfinished.
enum class RunStatus : uint8_t {
  queued,
  running,
  awaiting_approval,
  waiting,
  succeeded,
  failed,
  cancelled
};
enum class NodeStatus : uint8_t { pending, running, succeeded, failed, skipped, cancelled };
enum class ApprovalStatus : uint8_t { waiting, approved, rejected, timed_out, cancelled };

// Every value's text, in the enum's order (the schema's CHECK(status IN (...)) lists).
std::span<const char* const> status_names(RunStatus);
std::span<const char* const> status_names(NodeStatus);
std::span<const char* const> status_names(ApprovalStatus);

std::string_view to_string(RunStatus s);
std::string_view to_string(NodeStatus s);
std::string_view to_string(ApprovalStatus s);

// nullopt for text that names no value.
std::optional<RunStatus> parse_run_status(std::string_view text);
std::optional<NodeStatus> parse_node_status(std::string_view text);
std::optional<ApprovalStatus> parse_approval_status(std::string_view text);

// A run is over: succeeded, failed or cancelled.
bool is_finished(RunStatus s);
// A run is parked: no process needs to run it until a decision or a signal arrives
// (awaiting_approval or waiting).
bool is_parked(RunStatus s);

// A status as a row or a call carries it: one of E's values, or text that names none (read from
// a file, a request or a test), kept as it was so that the store can refuse it by name. The
// store writes only valid values (Store::allowed's message names the rest).
template <class E>
class StatusOf {
 public:
  StatusOf() = default;         // no status yet: ""
  StatusOf(E e) : value_(e) {}  // NOLINT(google-explicit-constructor): the usual way to set one
  StatusOf(std::string_view text) { *this = text; }                        // NOLINT: parsed
  StatusOf(const char* text) : StatusOf(std::string_view(text)) {}         // NOLINT
  StatusOf(const std::string& text) : StatusOf(std::string_view(text)) {}  // NOLINT

  StatusOf& operator=(std::string_view text) {
    value_ = parse(text);
    text_ = value_ ? std::string() : std::string(text);
    return *this;
  }
  StatusOf& operator=(const std::string& text) { return *this = std::string_view(text); }
  StatusOf& operator=(const char* text) { return *this = std::string_view(text); }

  bool valid() const { return value_.has_value(); }
  // The value; only for a valid status (check valid() for text from outside).
  E value() const { return *value_; }
  std::string str() const { return value_ ? std::string(to_string(*value_)) : text_; }
  std::string_view view() const { return value_ ? to_string(*value_) : std::string_view(text_); }
  bool empty() const { return !value_ && text_.empty(); }

  friend bool operator==(const StatusOf& a, E b) { return a.value_ == b; }
  friend bool operator==(const StatusOf& a, const StatusOf& b) { return a.view() == b.view(); }
  // Against text (tests, text from outside); orchrun's own code compares with the enum.
  friend bool operator==(const StatusOf& a, std::string_view b) { return a.view() == b; }
  friend bool operator==(const StatusOf& a, const char* b) { return a.view() == b; }
  friend bool operator==(const StatusOf& a, const std::string& b) { return a.view() == b; }

 private:
  static std::optional<E> parse(std::string_view text) {
    auto names = status_names(E{});
    for (size_t i = 0; i < names.size(); i++)
      if (text == names[i]) return static_cast<E>(i);
    return std::nullopt;
  }
  std::optional<E> value_;
  std::string text_;  // when value_ is empty
};

using RunStatusValue = StatusOf<RunStatus>;
using NodeStatusValue = StatusOf<NodeStatus>;
using ApprovalStatusValue = StatusOf<ApprovalStatus>;

inline bool is_finished(const RunStatusValue& s) {
  return s.valid() && is_finished(s.value());
}
inline bool is_parked(const RunStatusValue& s) {
  return s.valid() && is_parked(s.value());
}

// Text for messages and JSON (nlohmann's to_json, found by ADL).
template <class E>
std::string to_string(const StatusOf<E>& s) {
  return s.str();
}
template <class Json, class E>
void to_json(Json& j, const StatusOf<E>& s) {
  j = s.str();
}

}  // namespace orch
