#include "server/doctor.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "base/cron.h"
#include "base/secrets.h"
#include "drivers/http_client.h"
#include "drivers/uv_handle.h"

namespace orch {
namespace {

std::string mode_str(mode_t m) {
  char b[8];
  snprintf(b, sizeof b, "%04o", static_cast<unsigned>(m & 07777));
  return b;
}

std::string size_str(uint64_t bytes) {
  char b[32];
  if (bytes >= (1ull << 30))
    snprintf(b, sizeof b, "%.1f GiB", static_cast<double>(bytes) / (1ull << 30));
  else
    snprintf(b, sizeof b, "%.0f MiB", static_cast<double>(bytes) / (1ull << 20));
  return b;
}

std::string parent_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// The nearest directory of `path` (itself or an ancestor) that exists.
std::string existing_dir(std::string path) {
  struct stat st {};
  for (int i = 0; i < 64; i++) {
    if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return path;
    if (path == "/" || path == ".") return path;
    path = parent_of(path);
  }
  return path;
}

struct Checks {
  std::vector<DoctorCheck> list;
  void ok(std::string name, std::string msg) {
    list.push_back({std::move(name), CheckLevel::kOk, std::move(msg), ""});
  }
  void warn(std::string name, std::string msg, std::string fix) {
    list.push_back({std::move(name), CheckLevel::kWarn, std::move(msg), std::move(fix)});
  }
  void fail(std::string name, std::string msg, std::string fix) {
    list.push_back({std::move(name), CheckLevel::kFail, std::move(msg), std::move(fix)});
  }
};

void check_store_rows(Checks& c, Store* s, bool full, const std::string& path) {
  int v = s->schema_version(), latest = s->latest_schema_version();
  c.ok("store", path + ": orchrun's database");
  if (v == latest) {
    c.ok("store.schema", "schema version " + std::to_string(v) + " (current)");
  } else if (v < latest) {
    c.warn("store.schema",
           "schema version " + std::to_string(v) + ", this orchrun's is " + std::to_string(latest),
           "the next orchrun that opens it for writing (a run, serve) migrates it; take a "
           "copy first if you may go back to the older orchrun");
  } else {
    c.fail("store.schema",
           "schema version " + std::to_string(v) + " is newer than this orchrun's (" +
               std::to_string(latest) + ")",
           "upgrade orchrun to the version that wrote it");
  }
  const char* what = full ? "integrity_check" : "quick_check";
  std::string problems = s->check_integrity(full);
  if (problems.empty())
    c.ok("store.integrity", std::string("PRAGMA ") + what + " passed");
  else
    c.fail("store.integrity", std::string("PRAGMA ") + what + ": " + problems,
           "stop orchrun, keep a copy of the file, and restore a backup (or `sqlite3 " + path +
               " .recover`)");
}

void check_mode(Checks& c, const std::string& path) {
  struct stat st {};
  if (path == ":memory:" || stat(path.c_str(), &st) != 0) return;
  if (st.st_mode & 077)
    c.warn("store.mode",
           path + " has mode " + mode_str(st.st_mode) +
               ": others can read the runs' inputs, outputs and logs",
           "chmod 600 " + path);
  else
    c.ok("store.mode", path + " has mode " + mode_str(st.st_mode));
}

void check_store(Checks& c, const DoctorInputs& in) {
  const std::string& path = in.db_path;
  struct stat st {};
  if (in.store) {
    check_store_rows(c, in.store, in.full_integrity, path);
    return check_mode(c, path);
  }
  if (path != ":memory:" && stat(path.c_str(), &st) != 0) {
    std::string dir = existing_dir(parent_of(path));
    if (access(dir.c_str(), W_OK) != 0)
      c.fail("store",
             path + " does not exist and " + dir + " is not writable (" + strerror(errno) + ")",
             "give --db a path orchrun may create, or create its directory");
    else
      c.warn("store", path + " does not exist yet", "the first run creates it (mode 0600)");
    return;
  }
  std::string err;
  StoreOptions so;
  so.read_only = true;
  auto s = Store::open(path, so, &err);
  if (!s) {
    c.fail("store", err, "point --db (or ORCHRUN_DB) at orchrun's database");
    return;
  }
  check_store_rows(c, s.get(), in.full_integrity, path);
  check_mode(c, path);
}

void check_disk(Checks& c, const std::string& name, const std::string& what,
                const std::string& path, uint64_t min_free) {
  std::string dir = existing_dir(path);
  struct statvfs vs {};
  if (statvfs(dir.c_str(), &vs) != 0) {
    c.warn(name, "cannot read the free space of " + dir + ": " + strerror(errno), "");
    return;
  }
  uint64_t free_b = static_cast<uint64_t>(vs.f_bavail) * vs.f_frsize;
  uint64_t total = static_cast<uint64_t>(vs.f_blocks) * vs.f_frsize;
  std::string msg = size_str(free_b) + " free of " + size_str(total) + " on the filesystem of " +
                    what + " (" + dir + ")";
  bool few_inodes = vs.f_files > 0 && vs.f_favail < 1000;
  if (few_inodes) msg += ", " + std::to_string(vs.f_favail) + " inodes left";
  if (free_b < min_free / 10 || (vs.f_files > 0 && vs.f_favail < 100))
    c.fail(name, msg,
           "free space: a full disk stops new runs (orchrun holds writes until there is room); "
           "prune old runs and workspaces");
  else if (free_b < min_free || few_inodes)
    c.warn(name, msg, "free space before it fills: prune old runs and workspaces");
  else
    c.ok(name, msg);
}

void check_pipelines(Checks& c, const DoctorInputs& in) {
  if (in.have_load_errors) {
    for (auto& [file, e] : in.load_errors)
      c.fail("pipeline " + file, e, "fix the file; `orchrun validate " + file + "` says the same");
    if (in.load_errors.empty())
      c.ok("pipelines", std::to_string(in.pipelines_loaded) + " pipeline(s) of " +
                            in.pipelines_dir + " loaded, none invalid");
    return;
  }
  DIR* d = opendir(in.pipelines_dir.c_str());
  if (!d) {
    c.fail("pipelines", in.pipelines_dir + ": " + strerror(errno),
           "give orchrun doctor (and serve) the directory of your pipelines");
    return;
  }
  std::vector<std::string> files;
  while (dirent* de = readdir(d)) {
    std::string n = de->d_name;
    bool lua = n.size() > 4 && n.compare(n.size() - 4, 4, ".lua") == 0;
    bool js = n.size() > 5 && n.compare(n.size() - 5, 5, ".json") == 0;
    if ((lua || js) && n[0] != '.') files.push_back(n);
  }
  closedir(d);
  std::sort(files.begin(), files.end());
  std::map<std::string, std::vector<std::string>> by_stem;
  size_t good = 0, bad = 0;
  for (const auto& n : files) {
    by_stem[n.substr(0, n.rfind('.'))].push_back(n);
    std::string path = in.pipelines_dir + "/" + n;
    std::vector<Diagnostic> diags;
    auto p = load_pipeline_file(path, in.load, &diags);
    if (p) {
      good++;
      continue;
    }
    bad++;
    std::string msg;
    for (size_t i = 0; i < diags.size() && i < 5; i++) {
      const auto& dg = diags[i];
      if (!msg.empty()) msg += "; ";
      msg += dg.file + (dg.line > 0 ? ":" + std::to_string(dg.line) : "") +
             (dg.column > 0 ? ":" + std::to_string(dg.column) : "") + ": " + dg.message;
    }
    if (diags.size() > 5) msg += " (" + std::to_string(diags.size() - 5) + " more)";
    c.fail("pipeline " + n, msg.empty() ? path + ": invalid" : msg,
           "fix the file; `orchrun validate " + path + "` says the same");
  }
  for (auto& [stem, names] : by_stem)
    if (names.size() > 1)
      c.fail("pipeline " + stem, names[0] + " and " + names[1] + " define the same pipeline",
             "keep one of them");
  if (!bad) {
    if (files.empty())
      c.warn("pipelines", "no *.lua or *.json file in " + in.pipelines_dir,
             "put your pipelines there (orchrun serve hosts them)");
    else
      c.ok("pipelines",
           std::to_string(good) + " pipeline(s) in " + in.pipelines_dir + ", all valid");
  }
}

void check_listen(Checks& c, const DoctorInputs& in) {
  const std::string addr =
      (in.listen_host.find(':') != std::string::npos ? "[" + in.listen_host + "]"
                                                     : in.listen_host) +
      ":" + std::to_string(in.listen_port);
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, in.listen_host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(in.listen_port));
    len = sizeof *v4;
  } else if (inet_pton(AF_INET6, in.listen_host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(in.listen_port));
    len = sizeof *v6;
  } else {
    c.fail("listen", addr + ": not an IP address",
           "give --listen an address such as 127.0.0.1:8080");
    return;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    c.warn("listen", std::string("cannot open a socket: ") + strerror(errno), "");
    return;
  }
  int one = 1;  // as libuv binds: a port in TIME_WAIT is free
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int rc = bind(fd, reinterpret_cast<sockaddr*>(&ss), len);
  int e = errno;
  if (rc == 0) rc = listen(fd, 1), e = errno;
  close(fd);
  if (rc == 0)
    c.ok("listen", addr + " is free");
  else if (e == EADDRINUSE)
    c.fail("listen", addr + " is in use (another orchrun serve, or another server)",
           "stop what listens there (`ss -ltnp`), or choose another --listen");
  else
    c.fail("listen", "cannot listen on " + addr + ": " + strerror(e),
           e == EACCES ? "ports below 1024 need privileges: choose a port above 1024"
                       : "choose an address of this machine");
}

void check_token(Checks& c, const DoctorInputs& in) {
  if (in.token_file.empty()) {
    bool loopback =
        in.listen_host.empty() || in.listen_host == "127.0.0.1" || in.listen_host == "::1";
    if (loopback)
      c.ok("token", "no API token: state-changing calls are accepted from loopback only");
    else
      c.fail("token", "no API token, and the address " + in.listen_host + " is beyond loopback",
             "create a token file (openssl rand -hex 32 > F; chmod 600 F) and pass --token-file F");
    return;
  }
  struct stat st {};
  if (stat(in.token_file.c_str(), &st) != 0) {
    c.fail("token", in.token_file + ": " + strerror(errno), "create it, or fix --token-file");
    return;
  }
  if (st.st_mode & 077) {
    c.fail("token",
           in.token_file + " has mode " + mode_str(st.st_mode) +
               ": a token others can read is not a secret",
           "chmod 600 " + in.token_file);
    return;
  }
  std::ifstream f(in.token_file);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string t = ss.str();
  while (!t.empty() && isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  if (t.size() < 16)
    c.fail("token", in.token_file + " holds a token of " + std::to_string(t.size()) + " characters",
           "use at least 16 (openssl rand -hex 32)");
  else
    c.ok("token", in.token_file + " has mode " + mode_str(st.st_mode));
}

}  // namespace

const char* check_level_name(CheckLevel l) {
  return l == CheckLevel::kOk ? "ok" : l == CheckLevel::kWarn ? "warn" : "fail";
}

std::vector<DoctorCheck> run_doctor(const DoctorInputs& in) {
  Checks c;
  check_store(c, in);
  std::string ws =
      in.workspace_root.empty() ? parent_of(in.db_path) + "/workspaces" : in.workspace_root;
  if (in.db_path != ":memory:") {
    std::string store_dir = existing_dir(parent_of(in.db_path));
    std::string ws_dir = existing_dir(ws);
    struct stat a {
    }, b{};
    check_disk(c, "disk.store", "the store", parent_of(in.db_path), in.min_free_bytes);
    // One filesystem: one line says it.
    if (stat(store_dir.c_str(), &a) != 0 || stat(ws_dir.c_str(), &b) != 0 || a.st_dev != b.st_dev)
      check_disk(c, "disk.workspaces", "the workspaces", ws, in.min_free_bytes);
  }
  if (in.secrets_file.empty()) {
    c.ok("secrets", "no secrets file (o.secret reads $ORCHRUN_SECRET_<NAME>)");
  } else {
    std::map<std::string, std::string> values;
    std::string err;
    if (load_secrets_file(in.secrets_file, &values, &err))
      c.ok("secrets",
           in.secrets_file + ": " + std::to_string(values.size()) + " secret(s), owner-only");
    else
      c.fail("secrets", err,
             err.find("chmod") != std::string::npos ? "" : "fix the lines named, or --secrets");
  }
  std::string err;
  if (in.check_libcurl) c.list.push_back(libcurl_check());
  if (TimeZone::load("Europe/Paris", &err))
    c.ok("tzdata", "the time-zone database is installed (/usr/share/zoneinfo)");
  else
    c.warn("tzdata",
           "no time-zone database: " + err + "; schedules with a tz other than UTC do not load",
           "apt-get install tzdata");
  if (!in.pipelines_dir.empty()) check_pipelines(c, in);
  if (in.listen_port >= 0) check_listen(c, in);
  if (in.listen_port >= 0 || !in.token_file.empty()) check_token(c, in);
  return c.list;
}

DoctorCheck libcurl_check() {
  std::string err;
  if (http_available(&err))
    return {"libcurl", CheckLevel::kOk, "libcurl.so.4 loads (o.http, o.notify)", ""};
  return {"libcurl", CheckLevel::kWarn, err + ": o.http and o.notify fail in every pipeline",
          "apt-get install libcurl4"};
}

struct DoctorRunner::Job {
  DoctorInputs in;
  std::vector<DoctorCheck> out;
  std::function<void(std::vector<DoctorCheck>)> done;
  uv_async_t* async = nullptr;
  std::thread thread;
};

DoctorRunner::DoctorRunner(uv_loop_t* loop) : loop_(loop) {}

DoctorRunner::~DoctorRunner() {
  if (!job_) return;
  job_->thread.join();
  close_and_delete(job_->async);
}

bool DoctorRunner::start(DoctorInputs in, std::function<void(std::vector<DoctorCheck>)> done) {
  if (job_) return false;
  job_ = std::make_unique<Job>();
  job_->in = std::move(in);
  job_->done = std::move(done);
  job_->async = new uv_async_t;
  job_->async->data = this;
  uv_async_init(loop_, job_->async, [](uv_async_t* a) {
    auto* self = static_cast<DoctorRunner*>(a->data);
    std::unique_ptr<Job> job = std::move(self->job_);
    job->thread.join();
    close_and_delete(job->async);
    job->done(std::move(job->out));
  });
  Job* j = job_.get();
  j->thread = std::thread([j] {
    j->out = run_doctor(j->in);
    uv_async_send(j->async);
  });
  return true;
}

bool doctor_failed(const std::vector<DoctorCheck>& checks) {
  for (auto& k : checks)
    if (k.level == CheckLevel::kFail) return true;
  return false;
}

json doctor_json(const std::vector<DoctorCheck>& checks) {
  json arr = json::array();
  size_t warn = 0, fail = 0;
  for (auto& k : checks) {
    json j{{"name", k.name}, {"status", check_level_name(k.level)}, {"message", k.message}};
    if (!k.fix.empty()) j["fix"] = k.fix;
    arr.push_back(std::move(j));
    warn += k.level == CheckLevel::kWarn;
    fail += k.level == CheckLevel::kFail;
  }
  return json{{"ok", fail == 0}, {"warnings", warn}, {"failures", fail}, {"checks", arr}};
}

}  // namespace orch
