#include "store/status.h"

namespace orch {
namespace {

constexpr const char* kRun[] = {"queued",    "running", "awaiting_approval", "waiting",
                                "succeeded", "failed",  "cancelled"};
constexpr const char* kNode[] = {"pending", "running", "succeeded",
                                 "failed",  "skipped", "cancelled"};
constexpr const char* kApproval[] = {"waiting", "approved", "rejected", "timed_out", "cancelled"};

template <class E, size_t N>
std::optional<E> parse(const char* const (&names)[N], std::string_view text) {
  for (size_t i = 0; i < N; i++)
    if (text == names[i]) return static_cast<E>(i);
  return std::nullopt;
}

}  // namespace

std::span<const char* const> status_names(RunStatus) {
  return kRun;
}
std::span<const char* const> status_names(NodeStatus) {
  return kNode;
}
std::span<const char* const> status_names(ApprovalStatus) {
  return kApproval;
}

std::string_view to_string(RunStatus s) {
  return kRun[static_cast<size_t>(s)];
}
std::string_view to_string(NodeStatus s) {
  return kNode[static_cast<size_t>(s)];
}
std::string_view to_string(ApprovalStatus s) {
  return kApproval[static_cast<size_t>(s)];
}

std::optional<RunStatus> parse_run_status(std::string_view text) {
  return parse<RunStatus>(kRun, text);
}
std::optional<NodeStatus> parse_node_status(std::string_view text) {
  return parse<NodeStatus>(kNode, text);
}
std::optional<ApprovalStatus> parse_approval_status(std::string_view text) {
  return parse<ApprovalStatus>(kApproval, text);
}

bool is_finished(RunStatus s) {
  return s == RunStatus::succeeded || s == RunStatus::failed || s == RunStatus::cancelled;
}

bool is_parked(RunStatus s) {
  return s == RunStatus::awaiting_approval || s == RunStatus::waiting;
}

}  // namespace orch
