#include "server/registry.h"

#include <dirent.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/ids.h"
#include "base/json_util.h"
#include "drivers/loop.h"

namespace orch {
namespace {

bool ends_with(const std::string& s, const char* suffix) {
  size_t n = strlen(suffix);
  return s.size() > n && s.compare(s.size() - n, n, suffix) == 0;
}

// A pipeline file: Lua, or a JSON definition (engine/json_pipeline.h). Hidden files are not.
bool is_pipeline_file(const std::string& name) {
  return (ends_with(name, ".lua") || ends_with(name, ".json")) && name[0] != '.';
}

std::string join_diags(const std::vector<Diagnostic>& diags) {
  std::string out;
  for (auto& d : diags) out += (out.empty() ? "" : "\n") + d.str();
  return out.empty() ? "does not load" : out;
}

}  // namespace

Registry::Registry(uv_loop_t* loop, Store* store, std::string dir, LoadOptions lo, TaskHost* host)
    : loop_(loop), store_(store), dir_(std::move(dir)), lo_(std::move(lo)), host_(host) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
}

// One check_async load: its thread, and the async handle that brings the result back.
struct Registry::CheckJob {
  std::string file, source;
  LoadOptions lo;
  std::atomic<bool> abort{false};
  std::unique_ptr<Pipeline> result;
  std::vector<Diagnostic> diags;
  CheckDone done;
  uv_async_t* async = nullptr;
  std::thread thread;
};

bool Registry::check_async(const std::string& file, std::string source, CheckDone done) {
  if (checks_.size() >= kMaxChecks) return false;
  auto job = std::make_unique<CheckJob>();
  job->file = file;
  job->source = std::move(source);
  job->lo = lo_;
  job->lo.sandbox.abort = &job->abort;
  job->done = std::move(done);
  job->async = new uv_async_t;
  CheckJob* j = job.get();
  uv_async_init(loop_, j->async, [](uv_async_t* a) {
    auto* self = static_cast<Registry*>(a->data);
    if (!self) return;
    for (auto it = self->checks_.begin(); it != self->checks_.end(); ++it) {
      if ((*it)->async != a) continue;
      std::unique_ptr<CheckJob> job = std::move(*it);
      self->checks_.erase(it);
      job->thread.join();
      close_and_delete(job->async);
      // The engine was made on the job's thread; from here on only the loop uses it.
      if (job->result && self->check_extra) {
        std::string why = self->check_extra(*job->result, job->file);
        if (!why.empty()) {
          job->diags.push_back({job->file, 0, why});
          job->result.reset();
        }
      }
      job->done(std::move(job->result), std::move(job->diags));
      return;
    }
  });
  j->async->data = this;
  j->thread = std::thread([j] {
    j->result = load_pipeline_source(j->file, j->source, j->lo, &j->diags);
    uv_async_send(j->async);
  });
  checks_.push_back(std::move(job));
  return true;
}

Registry::~Registry() {
  // Loads still running are told to stop (the count hook raises) and joined.
  for (auto& j : checks_) j->abort = true;
  for (auto& j : checks_) {
    j->thread.join();
    close_and_delete(j->async);
  }
  checks_.clear();
  stop_watching();
  auto unhost = [](const std::shared_ptr<Pipeline>& p) {
    if (p) p->engine->set_host(nullptr);
  };
  for (auto& [f, e] : entries_) unhost(e.active);
  for (auto& p : retired_) unhost(p);
  for (auto& [k, p] : by_def_) unhost(p);
}

std::string Registry::stem(const std::string& file) const {
  std::string base = file.substr(file.rfind('/') + 1);
  if (ends_with(base, ".json")) return base.substr(0, base.size() - 5);
  return ends_with(base, ".lua") ? base.substr(0, base.size() - 4) : base;
}

bool Registry::load_all(std::string* err) {
  DIR* d = opendir(dir_.c_str());
  if (!d) {
    *err = "cannot read pipeline directory " + dir_ + ": " + strerror(errno);
    return false;
  }
  std::vector<std::string> files;
  while (dirent* de = readdir(d))
    if (is_pipeline_file(de->d_name)) files.push_back(dir_ + "/" + de->d_name);
  closedir(d);
  std::sort(files.begin(), files.end());
  for (auto& f : files) load_file(f, true);
  store_->commit();
  return true;
}

bool Registry::watch(std::string* err) {
  watch_ = std::make_unique<FsWatch>(loop_);
  bool ok = watch_->start(
      dir_, debounce_ms, [](const std::string& name) { return is_pipeline_file(name); },
      [this](std::set<std::string> names) {
        for (auto& name : names) reload(dir_ + "/" + name);
      },
      err);
  if (!ok) watch_.reset();
  return ok;
}

void Registry::stop_watching() {
  watch_.reset();
}

void Registry::for_each_trigger(
    const std::string& type,
    const std::function<void(const Pipeline&, const Trigger&, const json&)>& f) const {
  for (auto& [file, e] : entries_) {
    if (!e.active) continue;
    for (auto& t : e.active->triggers)
      if (t.type == type) f(*e.active, t, parse_json(t.spec, nullptr));
  }
}

void Registry::reload(const std::string& file) {
  load_file(file, false);
  store_->commit();
}

void Registry::retire(std::shared_ptr<Pipeline> p) {
  if (p) retired_.push_back(std::move(p));
}

void Registry::load_file(const std::string& file, bool initial) {
  int64_t now = wall_ms();
  auto it = entries_.find(file);
  struct stat st {};
  if (stat(file.c_str(), &st) != 0) {
    // Deleted (or renamed away): deactivate. Runs in flight keep their version.
    if (it == entries_.end() || it->second.removed) return;
    PipelineEntry& e = it->second;
    retire(std::move(e.active));
    e.active.reset();
    e.removed = true;
    e.error.clear();
    store_->insert_load({0, e.name, file, now, "removed", e.version, "", ""});
    if (on_change) on_change(e, "removed");
    // A file refused because this one had its name (x.lua beside x.json) takes over now.
    std::vector<std::string> waiting;
    for (auto& [f, other] : entries_)
      if (f != file && !other.active && !other.removed &&
          other.error.find("already used by " + file + " ") != std::string::npos)
        waiting.push_back(f);
    for (auto& f : waiting) load_file(f, false);
    return;
  }
  std::ifstream in(file, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string source = ss.str();
  if (it == entries_.end()) {
    PipelineEntry e;
    e.file = file;
    e.name = stem(file);
    it = entries_.emplace(file, std::move(e)).first;
  }
  PipelineEntry& e = it->second;
  std::string sha = sha256_hex(source);
  if (e.active && !e.removed && e.active->sha256 == sha) {
    // Same source (an editor touched it, or it came back after an invalid save).
    if (!e.error.empty()) {
      e.error.clear();
      store_->insert_load({0, e.name, file, now, "unchanged", e.version, sha, ""});
      if (on_change) on_change(e, "unchanged");
    }
    return;
  }
  std::vector<Diagnostic> diags;
  auto p = load_pipeline_source(file, source, lo_, &diags);
  if (p) {
    // A name must be unique among the files.
    for (auto& [f, other] : entries_)
      if (f != file && other.active && other.active->name == p->name) {
        // x.lua beside x.json is the likely case: said so, since neither file is wrong alone.
        std::string why = stem(f) == stem(file)
                              ? "; " + f + " and " + file +
                                    " define the same pipeline (Lua and JSON): remove one"
                              : "; rename one of them";
        diags.push_back({file, 0,
                         "pipeline name '" + p->name + "' is already used by " + f + " (served)" +
                             why});
        p.reset();
        break;
      }
  }
  if (p && check_extra) {
    std::string why = check_extra(*p, file);
    if (!why.empty()) {
      diags.push_back({file, 0, why});
      p.reset();
    }
  }
  if (!p) {
    e.error = join_diags(diags);
    e.error_at = now;
    store_->insert_load({0, e.active ? e.name : "", file, now, "invalid", 0, sha, e.error});
    if (on_error) on_error(e);
    if (on_change) on_change(e, "invalid");
    return;
  }
  auto def = store_->upsert_definition(p->name, p->sha256, p->source, p->file, now);
  if (!def) {
    e.error = "store error: " + store_->error();
    e.error_at = now;
    if (on_error) on_error(e);
    return;
  }
  p->engine->set_host(host_);
  retire(std::move(e.active));
  e.active = std::shared_ptr<Pipeline>(std::move(p));
  e.name = e.active->name;
  e.version = def->version;
  e.loaded_at = now;
  e.error.clear();
  e.error_at = 0;
  e.removed = false;
  store_->insert_load({0, e.name, file, now, "loaded", e.version, sha, ""});
  if (on_change) on_change(e, initial ? "initial" : "loaded");
}

const PipelineEntry* Registry::by_name(const std::string& name) const {
  const PipelineEntry* fallback = nullptr;
  for (auto& [f, e] : entries_) {
    if (e.active && e.active->name == name) return &e;
    if (!fallback && e.name == name) fallback = &e;
  }
  return fallback;
}

Pipeline* Registry::active(const std::string& name) const {
  const PipelineEntry* e = by_name(name);
  return e && e->active ? e->active.get() : nullptr;
}

std::unique_ptr<Pipeline> Registry::check(const std::string& file, const std::string& source,
                                          std::vector<Diagnostic>* diags) const {
  auto p = load_pipeline_source(file, source, lo_, diags);
  if (p && check_extra) {
    std::string why = check_extra(*p, file);
    if (!why.empty()) {
      diags->push_back({file, 0, why});
      p.reset();
    }
  }
  return p;
}

Pipeline* Registry::find(const std::string& target, const Pipeline& caller, std::string* err) {
  std::string name = target;
  if (ends_with(name, ".lua") || ends_with(name, ".json"))
    name = stem(name);  // o.call("x", "notify.lua") names the file of the directory
  if (Pipeline* p = active(name)) return p;
  for (auto& [f, e] : entries_)
    if (e.active && stem(f) == name) return e.active.get();
  *err = "no active pipeline '" + target + "' in " + dir_;
  return nullptr;
}

Pipeline* Registry::for_run(const RunRow& run, std::string* err) {
  for (auto& [f, e] : entries_)
    if (e.active && e.active->name == run.pipeline && e.version == run.version)
      return e.active.get();
  std::string k = run.pipeline + "@" + std::to_string(run.version);
  auto it = by_def_.find(k);
  if (it != by_def_.end()) return it->second.get();
  std::vector<Diagnostic> diags;
  bool missing = false;
  auto p = load_stored_definition(*store_, run.pipeline, run.version, lo_, &diags, &missing);
  if (!p) {
    *err =
        missing ? diags[0].message : "definition " + k + " no longer loads: " + join_diags(diags);
    return nullptr;
  }
  p->engine->set_host(host_);
  auto& slot = by_def_[k];
  slot = std::shared_ptr<Pipeline>(std::move(p));
  return slot.get();
}

void Registry::prune(const std::function<bool(const Pipeline*)>& in_use) {
  auto gone = [&](const std::shared_ptr<Pipeline>& p) {
    if (in_use(p.get())) return false;
    p->engine->set_host(nullptr);
    return true;
  };
  retired_.erase(std::remove_if(retired_.begin(), retired_.end(), gone), retired_.end());
  for (auto it = by_def_.begin(); it != by_def_.end();)
    it = gone(it->second) ? by_def_.erase(it) : std::next(it);
}

size_t Registry::versions_in_memory() const {
  size_t n = retired_.size() + by_def_.size();
  for (auto& [f, e] : entries_) n += e.active ? 1 : 0;
  return n;
}

}  // namespace orch
