#include "serve_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <ctime>
#include <regex>
#include <thread>

#include "drivers/loop.h"
#include "test_util.h"

extern char** environ;

namespace orch::test {
namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  return s;
}

// A connected TCP socket to 127.0.0.1:port, or -1.
int connect_local(int port, int timeout_ms, std::string* err) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *err = std::string("socket: ") + strerror(errno);
    return -1;
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (errno != EINPROGRESS) {
      *err = std::string("connect: ") + strerror(errno);
      close(fd);
      return -1;
    }
    pollfd p{fd, POLLOUT, 0};
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (poll(&p, 1, timeout_ms) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 ||
        soerr != 0) {
      *err = std::string("connect: ") + (soerr ? strerror(soerr) : "timed out");
      close(fd);
      return -1;
    }
  }
  return fd;
}

// Writes all of `data` before `deadline`. False when the peer closed or time ran out (the
// server may answer early, e.g. 413/431, and stop reading).
bool write_all(int fd, const std::string& data, int64_t deadline) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int64_t left = deadline - mono_ms();
      if (left <= 0) return false;
      pollfd p{fd, POLLOUT, 0};
      poll(&p, 1, static_cast<int>(left));
      continue;
    }
    return false;
  }
  return true;
}

// Reads what is there (waiting at most until deadline). >0 bytes read, 0 EOF, -1 timeout or
// error.
ssize_t read_some(int fd, std::string* buf, int64_t deadline) {
  char chunk[65536];
  for (;;) {
    ssize_t n = recv(fd, chunk, sizeof chunk, 0);
    if (n > 0) {
      buf->append(chunk, static_cast<size_t>(n));
      return n;
    }
    if (n == 0) return 0;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return errno == ECONNRESET ? 0 : -1;
    int64_t left = deadline - mono_ms();
    if (left <= 0) return -1;
    pollfd p{fd, POLLIN, 0};
    poll(&p, 1, static_cast<int>(left));
  }
}

// Parses the status line and headers of `raw` up to the blank line. False when incomplete.
bool parse_head(const std::string& raw, size_t* body_start, int* status, std::string* reason,
                HeaderList* headers) {
  size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos) return false;
  std::string head = raw.substr(0, end);
  size_t eol = head.find("\r\n");
  std::string line = head.substr(0, eol);
  // "HTTP/1.1 200 OK"
  if (line.rfind("HTTP/1.", 0) != 0 || line.size() < 12) return false;
  *status = atoi(line.substr(9, 3).c_str());
  *reason = line.size() > 13 ? line.substr(13) : "";
  headers->clear();
  size_t pos = eol == std::string::npos ? head.size() : eol + 2;
  while (pos < head.size()) {
    size_t next = head.find("\r\n", pos);
    if (next == std::string::npos) next = head.size();
    std::string h = head.substr(pos, next - pos);
    size_t colon = h.find(':');
    if (colon != std::string::npos) {
      std::string v = h.substr(colon + 1);
      while (!v.empty() && v.front() == ' ') v.erase(0, 1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.pop_back();
      headers->emplace_back(lower(h.substr(0, colon)), v);
    }
    pos = next + 2;
  }
  *body_start = end + 4;
  return true;
}

std::string find_header(const HeaderList& hs, const std::string& name) {
  std::string n = lower(name);
  for (auto& [k, v] : hs)
    if (k == n) return v;
  return "";
}

// Decodes a chunked body; false while it is incomplete.
bool dechunk(const std::string& in, std::string* out) {
  out->clear();
  size_t pos = 0;
  for (;;) {
    size_t eol = in.find("\r\n", pos);
    if (eol == std::string::npos) return false;
    size_t n = strtoul(in.substr(pos, eol - pos).c_str(), nullptr, 16);
    pos = eol + 2;
    if (n == 0) return in.find("\r\n", pos) != std::string::npos;
    if (in.size() < pos + n + 2) return false;
    out->append(in, pos, n);
    pos += n + 2;
  }
}

}  // namespace

int64_t mono_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string HttpReply::header(const std::string& name) const {
  return find_header(headers, name);
}

json HttpReply::json_body() const {
  return parse_json(body, nullptr);
}

std::string HttpReply::error_code() const {
  json j = json_body();
  if (j.is_object() && j.contains("error") && j["error"].is_object() &&
      j["error"].contains("code") && j["error"]["code"].is_string())
    return j["error"]["code"].get<std::string>();
  return "";
}

namespace {

// Reads one answer from fd: until it is complete (Content-Length / chunked) or the server
// closes the connection, at most until deadline.
HttpReply read_reply(int fd, int64_t deadline, int timeout_ms) {
  HttpReply r;
  size_t body_start = 0;
  bool head = false;
  for (;;) {
    if (!head) head = parse_head(r.raw, &body_start, &r.status, &r.reason, &r.headers);
    if (head) {
      // 1xx answers (100 Continue) come before the real one.
      if (r.status >= 100 && r.status < 200) {
        r.raw.erase(0, body_start);
        head = false;
        continue;
      }
      std::string rest = r.raw.substr(body_start);
      std::string cl = find_header(r.headers, "content-length");
      if (lower(find_header(r.headers, "transfer-encoding")) == "chunked") {
        if (dechunk(rest, &r.body)) break;
      } else if (!cl.empty() && rest.size() >= std::stoul(cl)) {
        r.body = rest.substr(0, std::stoul(cl));
        break;
      }
    }
    ssize_t n = read_some(fd, &r.raw, deadline);
    if (n == 0) {  // closed: whatever came is the answer
      if (head && r.body.empty()) r.body = r.raw.substr(body_start);
      break;
    }
    if (n < 0) {
      r.error = "timed out after " + std::to_string(timeout_ms) + " ms";
      break;
    }
  }
  if (!head) {
    if (r.error.empty()) r.error = "no HTTP answer";
    r.status = 0;
  }
  return r;
}

std::string format_request(int port, const std::string& method, const std::string& target,
                           const std::string& body, const HeaderList& headers, bool close) {
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                    "\r\n" + (close ? "Connection: close\r\n" : "");
  bool has_ct = false;
  for (auto& [k, v] : headers) {
    req += k + ": " + v + "\r\n";
    has_ct = has_ct || lower(k) == "content-type";
  }
  if (!body.empty() || method == "POST" || method == "PUT") {
    if (!has_ct) req += "Content-Type: application/json\r\n";
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  return req + "\r\n" + body;
}

}  // namespace

HttpReply http_raw(int port, const std::string& bytes, int timeout_ms) {
  std::string err;
  int64_t deadline = mono_ms() + timeout_ms;
  int fd = connect_local(port, timeout_ms, &err);
  if (fd < 0) {
    HttpReply r;
    r.error = err;
    return r;
  }
  write_all(fd, bytes, deadline);  // an early answer may come before all is sent
  HttpReply r = read_reply(fd, deadline, timeout_ms);
  close(fd);
  return r;
}

HttpReply http_request(int port, const std::string& method, const std::string& target,
                       const std::string& body, const HeaderList& headers, int timeout_ms) {
  return http_raw(port, format_request(port, method, target, body, headers, true), timeout_ms);
}

HttpConnection::HttpConnection(int port, int timeout_ms) : port_(port) {
  std::string err;
  fd_ = connect_local(port, timeout_ms, &err);
}

HttpConnection::~HttpConnection() {
  if (fd_ >= 0) close(fd_);
}

HttpReply HttpConnection::request(const std::string& method, const std::string& target,
                                  const std::string& body, const HeaderList& headers,
                                  int timeout_ms) {
  HttpReply r;
  if (fd_ < 0) {
    r.error = "not connected";
    return r;
  }
  int64_t deadline = mono_ms() + timeout_ms;
  if (!write_all(fd_, format_request(port_, method, target, body, headers, false), deadline)) {
    r.error = "cannot send";
    return r;
  }
  return read_reply(fd_, deadline, timeout_ms);
}

bool eventually(const std::function<bool()>& cond, int timeout_ms, int step_ms) {
  int64_t deadline = mono_ms() + timeout_ms;
  for (;;) {
    if (cond()) return true;
    if (mono_ms() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(step_ms));
  }
}

// --- ServeProcess ----------------------------------------------------------------------------

ServeProcess::ServeProcess(const std::string& dir, const std::string& db,
                           std::vector<std::string> args, std::vector<std::string> env,
                           const std::string& listen) {
  static std::atomic<int> counter{0};
  log_path_ = db + ".serve" + std::to_string(++counter) + ".log";
  std::vector<std::string> argv = {orchrun_bin(), "serve", dir, "--listen", listen, "--db", db};
  argv.insert(argv.end(), args.begin(), args.end());
  // The environment: ours without ORCHRUN_* (a developer's token or database must not leak
  // in), plus `env`.
  std::vector<std::string> envv;
  for (char** e = environ; *e; e++)
    if (strncmp(*e, "ORCHRUN_", 8) != 0) envv.emplace_back(*e);
  envv.push_back("NO_COLOR=1");
  for (auto& e : env) envv.push_back(e);
  int logfd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(logfd >= 0);
  const ExecImage image(argv, envv, /*inherit=*/false);
  pid_t parent = getpid();
  pid_ = fork();
  REQUIRE(pid_ >= 0);
  if (pid_ == 0) {
    // If the test process dies, the server goes with it.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int null = open("/dev/null", O_RDONLY);
    dup2(null, 0);
    dup2(logfd, 1);
    dup2(logfd, 2);
    image.exec();
  }
  close(logfd);
  static const std::regex kListening(R"(listening on http://(\[[^\]]*\]|[0-9.]+):(\d+))");
  int64_t deadline = mono_ms() + 10000;
  std::smatch m;
  std::string text;
  while (mono_ms() < deadline) {
    text = read_file(log_path_);
    if (std::regex_search(text, m, kListening)) {
      port_ = std::stoi(m[2].str());
      break;
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  INFO("orchrun serve log:\n" << read_file(log_path_));
  INFO("exit code: " << exit_code_);
  REQUIRE(port_ > 0);
}

ServeProcess::~ServeProcess() {
  stop(SIGTERM, 15000);
}

std::string ServeProcess::log() const {
  return read_file(log_path_);
}

HttpReply ServeProcess::request(const std::string& method, const std::string& target,
                                const std::string& body, const HeaderList& headers,
                                int timeout_ms) const {
  return http_request(port_, method, target, body, headers, timeout_ms);
}

HttpReply ServeProcess::post(const std::string& target, const std::string& body) const {
  HeaderList h;
  if (!token_.empty()) h.emplace_back("Authorization", "Bearer " + token_);
  return request("POST", target, body, h);
}

json ServeProcess::wait_run(const std::string& id, const std::string& statuses,
                            int timeout_ms) const {
  json last;
  std::string want = "," + statuses + ",";
  eventually(
      [&] {
        auto r = get("/api/runs/" + id);
        last = r.json_body();
        return r.status == 200 && last.is_object() && last.contains("status") &&
               want.find("," + last["status"].get<std::string>() + ",") != std::string::npos;
      },
      timeout_ms, 15);
  return last;
}

int ServeProcess::stop(int sig, int timeout_ms) {
  if (pid_ <= 0) return exit_code_;
  signal(sig);
  return wait_exit(timeout_ms);
}

void ServeProcess::signal(int sig) {
  if (pid_ <= 0) return;
  signalled_at_ = mono_ms();
  kill(pid_, sig);
}

int ServeProcess::wait_exit(int timeout_ms) {
  if (pid_ <= 0) return exit_code_;
  int64_t start = mono_ms();
  int status = 0;
  bool done = false;
  while (mono_ms() - start < timeout_ms) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      done = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop_seconds_ = (mono_ms() - (signalled_at_ ? signalled_at_ : start)) / 1000.0;
  if (!done) {
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    exit_code_ = -1;
  } else {
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  pid_ = -1;
  return exit_code_;
}

// --- BackgroundCmd -------------------------------------------------------------------------

BackgroundCmd::BackgroundCmd(const std::vector<std::string>& argv,
                             const std::vector<std::string>& env, const std::string& out_path)
    : out_path_(out_path) {
  int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int err = open((out_path + ".err").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(out >= 0);
  REQUIRE(err >= 0);
  const ExecImage image(argv, env);
  pid_t parent = getpid();
  pid_ = fork();
  REQUIRE(pid_ >= 0);
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int null = open("/dev/null", O_RDONLY);
    dup2(null, 0);
    dup2(out, 1);
    dup2(err, 2);
    image.exec();
  }
  close(out);
  close(err);
}

BackgroundCmd::~BackgroundCmd() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

int BackgroundCmd::wait(int timeout_ms) {
  if (pid_ <= 0) return code_;
  int64_t deadline = mono_ms() + timeout_ms;
  int status = 0;
  while (mono_ms() < deadline) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return code_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
  code_ = -1;
  return code_;
}

std::string BackgroundCmd::out() const {
  return read_file(out_path_);
}

std::string BackgroundCmd::err() const {
  return read_file(out_path_ + ".err");
}

// --- SseReader -------------------------------------------------------------------------------

SseReader::SseReader(int port, const std::string& target, const HeaderList& headers,
                     int timeout_ms) {
  std::string err;
  int64_t deadline = mono_ms() + timeout_ms;
  fd_ = connect_local(port, timeout_ms, &err);
  if (fd_ < 0) {
    ended_ = true;
    return;
  }
  std::string req = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                    "\r\nAccept: text/event-stream\r\n";
  for (auto& [k, v] : headers) req += k + ": " + v + "\r\n";
  req += "\r\n";
  if (!write_all(fd_, req, deadline)) {
    ended_ = true;
    return;
  }
  std::string reason;
  size_t body_start = 0;
  while (!parse_head(buf_, &body_start, &status_, &reason, &headers_)) {
    if (read_some(fd_, &buf_, deadline) <= 0) {
      ended_ = true;
      return;
    }
  }
  buf_.erase(0, body_start);
}

SseReader::~SseReader() {
  if (fd_ >= 0) close(fd_);
}

std::string SseReader::header(const std::string& name) const {
  return find_header(headers_, name);
}

bool SseReader::fill(int64_t deadline) {
  if (ended_ || fd_ < 0) return false;
  ssize_t n = read_some(fd_, &buf_, deadline);
  if (n == 0) ended_ = true;
  return n > 0;
}

std::optional<SseReader::Event> SseReader::next(int timeout_ms) {
  int64_t deadline = mono_ms() + timeout_ms;
  for (;;) {
    // A complete event ends with a blank line.
    for (;;) {
      size_t end = buf_.find("\n\n");
      if (end == std::string::npos) break;
      std::string block = buf_.substr(0, end);
      buf_.erase(0, end + 2);
      Event e;
      bool any = false;
      size_t pos = 0;
      while (pos <= block.size()) {
        size_t nl = block.find('\n', pos);
        if (nl == std::string::npos) nl = block.size();
        std::string line = block.substr(pos, nl - pos);
        pos = nl + 1;
        if (line.empty() || line[0] == ':') continue;
        size_t colon = line.find(':');
        std::string field = line.substr(0, colon);
        std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
        if (!value.empty() && value[0] == ' ') value.erase(0, 1);
        if (field == "id") {
          e.id = std::stoll(value);
          any = true;
        } else if (field == "event") {
          e.event = value;
          any = true;
        } else if (field == "data") {
          e.data += (e.data.empty() ? "" : "\n") + value;
          any = true;
        }
      }
      if (any && (!e.data.empty() || !e.event.empty())) return e;
    }
    if (mono_ms() >= deadline || !fill(deadline)) return std::nullopt;
  }
}

std::vector<SseReader::Event> SseReader::until(const std::string& kind, int timeout_ms) {
  std::vector<Event> out;
  int64_t deadline = mono_ms() + timeout_ms;
  while (mono_ms() < deadline) {
    auto e = next(static_cast<int>(std::max<int64_t>(1, deadline - mono_ms())));
    if (!e) break;
    out.push_back(*e);
    if (e->event == kind) break;
  }
  return out;
}

// --- small things ----------------------------------------------------------------------------

std::string hmac_sha256_hex(const std::string& key, const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), md, &n);
  std::string out;
  char hex[3];
  for (unsigned i = 0; i < n; i++) {
    snprintf(hex, sizeof hex, "%02x", md[i]);
    out += hex;
  }
  return out;
}

std::string url_encode(const std::string& v) {
  std::string out;
  char hex[4];
  for (unsigned char c : v) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      snprintf(hex, sizeof hex, "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, in_quotes = false, any = false;
  for (size_t i = 0; i < text.size(); i++) {
    char c = text[i];
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          i++;
        } else {
          in_quotes = false;
        }
      } else {
        field += c;
      }
      continue;
    }
    if (c == '"' && field.empty() && !quoted) {
      in_quotes = quoted = any = true;
    } else if (c == ',') {
      row.push_back(field);
      field.clear();
      quoted = false;
      any = true;
    } else if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
      // CRLF: the \n ends the row
    } else if (c == '\n') {
      row.push_back(field);
      rows.push_back(row);
      row.clear();
      field.clear();
      quoted = any = false;
    } else {
      field += c;
      any = true;
    }
  }
  if (any || !field.empty() || !row.empty()) {
    row.push_back(field);
    rows.push_back(row);
  }
  return rows;
}

namespace serve {

bool has(const std::string& s, const std::string& sub) {
  return s.find(sub) != std::string::npos;
}

// A directory of pipelines inside `tmp`, with the given files.
std::string pipeline_dir(const TempDir& tmp,
                         const std::vector<std::pair<std::string, std::string>>& files) {
  std::string dir = tmp.file("pipelines");
  mkdir(dir.c_str(), 0755);
  for (auto& [name, src] : files) write_file(dir + "/" + name, src);
  return dir;
}

// Writes `content` beside `path` and renames it into place (what careful editors do).
void write_atomic(const std::string& path, const std::string& content) {
  std::string dir = path.substr(0, path.rfind('/'));
  std::string tmp = dir + "/.tmp-" + std::to_string(getpid()) + "-" + path.substr(dir.size() + 1);
  write_file(tmp, content);
  REQUIRE(rename(tmp.c_str(), path.c_str()) == 0);
}

int64_t count(const std::string& db, const std::string& sql) {
  return query_int(db, sql);
}

// Reply details for failure messages.
std::string show(const HttpReply& r) {
  return "HTTP " + std::to_string(r.status) + " " + r.body.substr(0, 600) +
         (r.error.empty() ? "" : " (" + r.error + ")");
}

const std::string kSecret = "It's a Secret to Everybody";

const char* const kTrivial = R"(local o = require "orch"
return o.pipeline "x" {
  o.node("a", function(ctx) return { i = ctx.input.i } end),
}
)";

const char* const kGate = R"(local o = require "orch"
return o.pipeline "gate" {
  o.node("plan", function() return { tasks = 3 } end),
  o.approve("deploy", { message = "Ship it?", approvers = { "alice", "bob" } }),
  o.node("ship", function(ctx) return { by = ctx.outputs.deploy.by, note = ctx.outputs.deploy.comment } end),
}
)";

// Sleeps `input.sleep` seconds (default 30) on its first attempt only: a cancelled run
// retried succeeds at once.
const char* const kSleepy = R"(local o = require "orch"
return o.pipeline "sleepy" {
  o.node("a", function(ctx)
    if ctx.attempt == 1 then o.sleep(ctx.input.sleep or 30) end
    return { attempt = ctx.attempt }
  end),
  o.node("b", function() return { done = true } end),
}
)";

const char* const kFailing = R"(local o = require "orch"
return o.pipeline "failing" {
  o.node("boom", function() o.fail("always fails") end),
}
)";

int64_t utc_ms(int y, int mo, int d, int h, int mi, int s) {
  struct tm tm {};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

// Runs the loop without blocking until cond() holds, at most timeout_ms.
bool pump_until(Loop& loop, const std::function<bool()>& cond, int timeout_ms) {
  int64_t deadline = mono_ms() + timeout_ms;
  for (;;) {
    uv_run(loop.get(), UV_RUN_NOWAIT);
    if (cond()) return true;
    if (mono_ms() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void pump_for(Loop& loop, int ms) {
  pump_until(
      loop, [] { return false; }, ms);
}

}  // namespace serve
}  // namespace orch::test
