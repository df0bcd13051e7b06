// The pipelines orchrun serve hosts: every *.lua file of a directory, loaded into its own Lua
// state, stored as a definition version, and reloaded when the file changes.
//
// A changed file is loaded and validated in a fresh state. Valid: it becomes the active
// version (a new definition version unless the source is the same), used by new runs; runs in
// flight keep the version they started with (their Pipeline object lives until they finish).
// Invalid: the previous version stays active; the error (file:line) is kept, stored and
// logged. Deleted: the pipeline is deactivated; its runs in flight still finish.
#pragma once
#include <uv.h>

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "drivers/fs_watch.h"
#include "engine/pipeline_loader.h"
#include "engine/scheduler.h"
#include "store/store.h"

namespace orch {

// One pipeline file of the directory.
struct PipelineEntry {
  std::string file;  // path as found in the directory (dir + "/" + name.lua)
  std::string name;  // the pipeline's name (of the active version; else the file's stem)
  std::shared_ptr<Pipeline> active;  // null: not loaded (invalid from the start, or deleted)
  int version = 0;
  int64_t loaded_at = 0;  // when the active version was loaded (unix ms)
  std::string error;      // the last load's errors, when it failed ("" otherwise)
  int64_t error_at = 0;
  bool removed = false;  // the file was deleted
};

class Registry : public PipelineSource {
 public:
  // `on_change(entry)`: an entry was (re)loaded, failed to load or was removed.
  Registry(uv_loop_t* loop, Store* store, std::string dir, LoadOptions lo, TaskHost* host);
  ~Registry() override;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  std::function<void(const PipelineEntry&, const std::string& outcome)> on_change;
  // Called with each load that failed (for the log).
  std::function<void(const PipelineEntry&)> on_error;
  // A check of the server's on a pipeline that loaded (e.g. a webhook path another pipeline
  // has): a non-empty answer makes the load fail with that message.
  std::function<std::string(const Pipeline&, const std::string& file)> check_extra;
  int64_t debounce_ms = 20;

  // Loads every *.lua file of the directory. False with *err when the directory cannot be read.
  bool load_all(std::string* err);
  // Watches the directory (drivers/fs_watch); changes are reloaded after the debounce.
  bool watch(std::string* err);
  void stop_watching();
  // Reloads one file now (also what the watcher does).
  void reload(const std::string& file);

  const std::string& dir() const { return dir_; }
  // By file path, in name order.
  const std::map<std::string, PipelineEntry>& entries() const { return entries_; }
  // The entry whose active pipeline (or, when none is active, whose file stem) is `name`.
  const PipelineEntry* by_name(const std::string& name) const;
  Pipeline* active(const std::string& name) const;
  // Calls f(pipeline, trigger, spec) for each trigger of `type` of the active pipelines, in
  // file order; spec is the trigger's options parsed.
  void for_each_trigger(
      const std::string& type,
      const std::function<void(const Pipeline&, const Trigger&, const json&)>& f) const;

  // Loads `source` as if it were the file of `name` (fresh state, nothing stored).
  std::unique_ptr<Pipeline> check(const std::string& file, const std::string& source,
                                  std::vector<Diagnostic>* diags) const;
  // The same on a thread of its own, for sources that come over the network (the API's
  // validate): a file that computes at its top level runs up to its load limit there, not on
  // the loop. `done` runs on the loop with the result (check_extra applied); it is not called
  // when the registry goes first (the load is told to stop, and joined). False, and `done` is
  // not called, when kMaxChecks loads already run.
  using CheckDone = std::function<void(std::unique_ptr<Pipeline>, std::vector<Diagnostic>)>;
  static constexpr size_t kMaxChecks = 4;
  bool check_async(const std::string& file, std::string source, CheckDone done);
  size_t checks_running() const { return checks_.size(); }

  // PipelineSource (o.call and resumed runs).
  Pipeline* find(const std::string& target, const Pipeline& caller, std::string* err) override;
  Pipeline* for_run(const RunRow& run, std::string* err) override;

  // Frees the versions that are no longer active once no run uses them.
  void prune(const std::function<bool(const Pipeline*)>& in_use);
  size_t versions_in_memory() const;

 private:
  void load_file(const std::string& file, bool initial);
  void retire(std::shared_ptr<Pipeline> p);
  std::string stem(const std::string& file) const;

  uv_loop_t* loop_;
  Store* store_;
  std::string dir_;
  LoadOptions lo_;
  TaskHost* host_;
  std::map<std::string, PipelineEntry> entries_;
  // Versions replaced or deactivated, and stored definitions loaded for resumed runs: alive
  // while runs use them.
  std::vector<std::shared_ptr<Pipeline>> retired_;
  std::map<std::string, std::shared_ptr<Pipeline>> by_def_;  // "name@version"
  std::unique_ptr<FsWatch> watch_;
  struct CheckJob;
  std::list<std::unique_ptr<CheckJob>> checks_;
};

}  // namespace orch
