// What a node body records through the scheduler: its log lines, artifacts and incidents.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace orch {

struct Task;

class NodeServices {
 public:
  virtual ~NodeServices() = default;
  // ctx.log / o.log / print. `task` is null outside node bodies (e.g. at load time).
  virtual void log(Task* task, std::string_view level, std::string_view message,
                   const std::string& fields_json) = 0;
  // ctx:artifact: records a file of the task's run workspace (`rel`: its path in there); sets
  // *record to the artifact as JSON. ctx:use_artifact: finds an upstream artifact by name and
  // records the use. Both return false with *err when refused.
  virtual bool record_artifact(Task* task, const std::string& rel, const std::string& kind,
                               int64_t size, const std::string& sha256, std::string* record,
                               std::string* err) {
    *err = "artifacts are not available here";
    return false;
  }
  virtual bool use_artifact(Task* task, const std::string& name, std::string* record,
                            std::string* err) {
    *err = "artifacts are not available here";
    return false;
  }
  // o.ingest: records normalized alerts (a JSON list) as incidents of the task's run,
  // deduplicated by fingerprint; sets *records to the stored rows as a JSON list.
  virtual bool record_incidents(Task* task, const std::string& incidents_json, std::string* records,
                                std::string* err) {
    *err = "incidents are not available here";
    return false;
  }
};

}  // namespace orch
