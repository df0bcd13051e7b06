// orchrun doctor: what is wrong with this set-up, each problem with what to do about it.
// Also GET /api/doctor, and run by orchrun serve at start (each problem logged).
#pragma once
#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/json_util.h"
#include "engine/pipeline_loader.h"
#include "store/store.h"

namespace orch {

enum class CheckLevel { kOk, kWarn, kFail };
const char* check_level_name(CheckLevel l);  // "ok" | "warn" | "fail"

struct DoctorCheck {
  std::string name;  // "store", "store.schema", "disk.store", "pipelines", ...
  CheckLevel level = CheckLevel::kOk;
  std::string message;  // what was found
  std::string fix;      // what to do (empty when ok)
};

struct DoctorInputs {
  std::string db_path;     // the store's file
  Store* store = nullptr;  // already open (serve, the API); else doctor opens db_path read-only
  bool full_integrity = false;  // PRAGMA integrity_check instead of quick_check
  std::string workspace_root;   // "" = "workspaces" beside the store
  std::string pipelines_dir;    // "" = no pipeline check
  // Load errors of the pipelines already loaded (serve): file -> error text. When set, the
  // pipelines are not loaded again.
  bool have_load_errors = false;
  std::vector<std::pair<std::string, std::string>> load_errors;
  size_t pipelines_loaded = 0;
  LoadOptions load;
  std::string secrets_file;  // "" = none configured
  std::string token_file;    // "" = none configured
  std::string listen_host;   // with listen_port >= 0: check that the address can be bound
  int listen_port = -1;
  // Free space below which a filesystem is a warning (and a failure at a tenth of it).
  uint64_t min_free_bytes = 1ull << 30;
  // libcurl's first load initialises it, which must not happen off the loop thread while the
  // loop may use it: a runner off the loop leaves this check to its caller.
  bool check_libcurl = true;
};

std::vector<DoctorCheck> run_doctor(const DoctorInputs& in);
json doctor_json(const std::vector<DoctorCheck>& checks);
// True when one check failed.
bool doctor_failed(const std::vector<DoctorCheck>& checks);

// The libcurl check alone (run_doctor includes it unless told not to).
DoctorCheck libcurl_check();

// Runs the doctor on a thread of its own (the integrity check reads the whole file; the
// pipelines' top level may compute) and calls `done` on the loop. One at a time.
class DoctorRunner {
 public:
  explicit DoctorRunner(uv_loop_t* loop);
  ~DoctorRunner();  // waits for a check in progress (its result is dropped)
  DoctorRunner(const DoctorRunner&) = delete;
  DoctorRunner& operator=(const DoctorRunner&) = delete;
  // False when a check is already running.
  bool start(DoctorInputs in, std::function<void(std::vector<DoctorCheck>)> done);

 private:
  struct Job;
  uv_loop_t* loop_;
  std::unique_ptr<Job> job_;
};

}  // namespace orch
