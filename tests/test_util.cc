#include "test_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

extern char** environ;

namespace orch::test {

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/orchrun-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  char* p = mkdtemp(buf.data());
  REQUIRE(p != nullptr);
  path_ = p;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  REQUIRE(out.good());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string orchrun_bin() {
  return ORCHRUN_BIN;
}
std::string source_dir() {
  return ORCHRUN_SOURCE_DIR;
}

ExecImage::ExecImage(std::vector<std::string> argv, const std::vector<std::string>& env,
                     bool inherit)
    : argv_(std::move(argv)) {
  auto key_of = [](const std::string& kv) { return kv.substr(0, kv.find('=') + 1); };
  if (inherit)
    for (char** e = environ; *e; e++) env_.emplace_back(*e);
  for (const auto& kv : env) {
    std::string key = key_of(kv);
    std::erase_if(env_,
                  [&](const std::string& have) { return have.compare(0, key.size(), key) == 0; });
    env_.push_back(kv);
  }
  for (auto& s : argv_) a_.push_back(s.data());
  a_.push_back(nullptr);
  for (auto& s : env_) e_.push_back(s.data());
  e_.push_back(nullptr);
}

void ExecImage::exec() const {
  execvpe(a_[0], a_.data(), e_.data());
  _exit(127);
}

CmdResult run_cmd(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                  const std::string& cwd, int timeout_s) {
  CmdResult r;
  int outp[2], errp[2];
  REQUIRE(pipe2(outp, O_CLOEXEC) == 0);
  REQUIRE(pipe2(errp, O_CLOEXEC) == 0);
  const ExecImage image(argv, env);
  auto start = std::chrono::steady_clock::now();
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(outp[1], 1);
    dup2(errp[1], 2);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(126);
    image.exec();
  }
  close(outp[1]);
  close(errp[1]);
  pollfd fds[2] = {{outp[0], POLLIN, 0}, {errp[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[65536];
  auto deadline = start + std::chrono::seconds(timeout_s);
  bool killed = false;
  while (open_fds > 0) {
    int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  deadline - std::chrono::steady_clock::now())
                                  .count());
    if (ms <= 0) {
      kill(pid, SIGKILL);
      killed = true;
      break;
    }
    int n = poll(fds, 2, ms);
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t k = read(fds[i].fd, buf, sizeof buf);
      if (k > 0) {
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(k));
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        open_fds--;
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) close(f.fd);
  int status = 0;
  waitpid(pid, &status, 0);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (WIFEXITED(status))
    r.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status))
    r.exit_code = 128 + WTERMSIG(status);
  if (killed) FAIL("command timed out after " << timeout_s << "s: " << argv[0]);
  return r;
}

pid_t spawn_quiet(const std::vector<std::string>& argv) {
  const ExecImage image(argv);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    image.exec();
  }
  return pid;
}

CmdResult orchrun(std::vector<std::string> args, const std::string& db,
                  const std::vector<std::string>& env, const std::string& cwd) {
  args.insert(args.begin(), orchrun_bin());
  if (!db.empty()) {
    args.push_back("--db");
    args.push_back(db);
  }
  std::vector<std::string> e = env;
  e.push_back("NO_COLOR=1");
  return run_cmd(args, e, cwd);
}

std::vector<std::vector<std::string>> query(const std::string& db, const std::string& sql) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_busy_timeout(h, 5000);
  sqlite3_stmt* st = nullptr;
  INFO(sql);
  if (sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    std::string err = sqlite3_errmsg(h);
    sqlite3_close(h);
    FAIL("query failed: " << err);
  }
  std::vector<std::vector<std::string>> rows;
  while (sqlite3_step(st) == SQLITE_ROW) {
    std::vector<std::string> row;
    for (int i = 0; i < sqlite3_column_count(st); i++) {
      const unsigned char* t = sqlite3_column_text(st, i);
      row.emplace_back(t ? reinterpret_cast<const char*>(t) : "");
    }
    rows.push_back(std::move(row));
  }
  sqlite3_finalize(st);
  sqlite3_close(h);
  return rows;
}

int64_t poll_int(const std::string& db, const std::string& sql, int64_t fallback) {
  sqlite3* h = nullptr;
  int64_t v = fallback;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(h, 1000);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
      v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  sqlite3_close(h);
  return v;
}

int64_t query_int(const std::string& db, const std::string& sql) {
  auto rows = query(db, sql);
  REQUIRE(!rows.empty());
  return std::stoll(rows[0][0].empty() ? "0" : rows[0][0]);
}

std::string query_str(const std::string& db, const std::string& sql) {
  auto rows = query(db, sql);
  return rows.empty() ? "" : rows[0][0];
}

int EventLog::count(const std::string& kind, const std::string& node) const {
  int n = 0;
  for (const auto& e : events)
    if (e.kind == kind && (node.empty() || e.node == node)) n++;
  return n;
}

Harness::Harness() : db_path(dir.file("orchrun.db")), loop_(std::make_unique<Loop>()) {
  std::string err;
  store = Store::open(db_path, StoreOptions{}, &err);
  INFO(err);
  REQUIRE(store);
}

Harness::~Harness() {
  if (loop_ && !loop_->closed()) loop_->close();
}

std::vector<Diagnostic> Harness::diagnose(const std::string& source, const SandboxOptions& sb) {
  std::vector<Diagnostic> diags;
  LoadOptions lo;
  lo.sandbox = sb;
  auto p = load_pipeline_source("test.lua", source, lo, &diags);
  if (p) REQUIRE(diags.empty());
  return diags;
}

RunSummary Harness::run(const std::string& source, const std::string& input_json) {
  std::vector<Diagnostic> diags;
  auto p = load_pipeline_source("test.lua", source, load_options, &diags);
  std::string all;
  for (auto& d : diags) all += d.str() + "\n";
  INFO(all);
  REQUIRE(p);
  RunSummary out;
  bool done = false;
  auto start = std::chrono::steady_clock::now();
  {
    Scheduler sched(loop_.get(), store.get());
    p->engine->set_host(&sched);
    sched.add_sink(&log);
    sched.on_run_finished = [&](const RunSummary& s) {
      out = s;
      done = true;
    };
    RunOptions ro;
    ro.input_json = input_json;
    std::string err;
    std::string id = sched.start_run(p.get(), ro, &err);
    INFO(err);
    REQUIRE(!id.empty());
    if (on_started) on_started(sched, id);
    loop_->run();
    p->engine->set_host(nullptr);
  }
  // Let closed handles finish closing so the next run starts clean.
  uv_run(loop_->get(), UV_RUN_NOWAIT);
  last_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  REQUIRE(done);
  pipelines_.push_back(std::move(p));
  return out;
}

std::vector<std::string> Harness::close() {
  auto leaked = loop_->close();
  return leaked;
}

std::string sql_literal(const std::string& s) {
  std::string r = "'";
  for (char c : s) {
    if (c == '\'') r += '\'';
    r += c;
  }
  return r + "'";
}

}  // namespace orch::test
