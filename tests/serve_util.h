// Helpers for tests of `orchrun serve` through the real binary: a server child process, a
// plain-socket HTTP/1.1 client, and a server-sent-events reader. Every wait is bounded.
//
//   ServeProcess srv(dir, db, {"--max-body", "1KiB"}, {"ORCHRUN_SECRET_GH=s3cret"});
//   auto r = srv.request("POST", "/api/pipelines/x/runs", R"({"input":{}})");
//   CHECK(r.status == 202);
//   std::string id = r.json()["run_id"];
//   int code = srv.stop();  // SIGTERM, then waits; 0 on a clean shutdown
#pragma once
#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/json_util.h"

namespace orch {
class Loop;
}

namespace orch::test {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct HttpReply {
  int status = 0;  // 0: no (parsable) answer: connection refused, timed out, garbage
  std::string reason;
  HeaderList headers;  // names lower-cased
  std::string body;    // de-chunked
  std::string raw;     // every byte received
  std::string error;   // why status is 0

  // The first header of that name (case-insensitive); "" when absent.
  std::string header(const std::string& name) const;
  // The body as JSON (discarded when it is not).
  json json_body() const;
  // {"error":{"code":...}} -> code, or "".
  std::string error_code() const;
};

// Sends `bytes` to 127.0.0.1:port and reads the answer until the server closes the connection
// or the answer is complete (Content-Length / chunked), at most timeout_ms in all.
HttpReply http_raw(int port, const std::string& bytes, int timeout_ms = 5000);
// One request with "Connection: close" (and Content-Length when there is a body).
HttpReply http_request(int port, const std::string& method, const std::string& target,
                       const std::string& body = "", const HeaderList& headers = {},
                       int timeout_ms = 5000);

// One keep-alive connection: requests one after the other on it (no "Connection: close").
class HttpConnection {
 public:
  explicit HttpConnection(int port, int timeout_ms = 5000);
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;
  bool connected() const { return fd_ >= 0; }
  HttpReply request(const std::string& method, const std::string& target,
                    const std::string& body = "", const HeaderList& headers = {},
                    int timeout_ms = 5000);

 private:
  int port_ = 0;
  int fd_ = -1;
};

// Polls cond every step_ms until it is true or timeout_ms has passed; its last answer.
bool eventually(const std::function<bool()>& cond, int timeout_ms = 5000, int step_ms = 10);

// `orchrun serve DIR --listen 127.0.0.1:0 --db DB ARGS...` as a child process, its stdout and
// stderr in a log file. The constructor waits (at most 10 s) for "listening on" and REQUIREs it.
class ServeProcess {
 public:
  ServeProcess(const std::string& dir, const std::string& db, std::vector<std::string> args = {},
               std::vector<std::string> env = {}, const std::string& listen = "127.0.0.1:0");
  ~ServeProcess();
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::string& log_path() const { return log_path_; }
  std::string log() const;

  HttpReply request(const std::string& method, const std::string& target,
                    const std::string& body = "", const HeaderList& headers = {},
                    int timeout_ms = 5000) const;
  HttpReply get(const std::string& target) const { return request("GET", target); }
  // POST with a JSON body (and, when token_ is set, the bearer token).
  HttpReply post(const std::string& target, const std::string& body = "") const;
  // Sets the token post() sends.
  void set_token(const std::string& token) { token_ = token; }

  // GET /api/runs/ID until its status is one of `statuses` (comma-separated), at most
  // timeout_ms. The last answer's JSON.
  json wait_run(const std::string& id, const std::string& statuses, int timeout_ms = 8000) const;

  // Sends `sig`, waits for the exit at most timeout_ms (then SIGKILL). The exit code (128+N
  // when killed by signal N; -1 when it had to be killed). Idempotent.
  int stop(int sig = SIGTERM, int timeout_ms = 15000);
  // The two halves of stop(): send a signal now, wait for the exit later (a second SIGTERM
  // forces orchrun serve out, so stop() after signal() is not the same as wait_exit()).
  void signal(int sig);
  int wait_exit(int timeout_ms = 15000);
  bool exited() const { return pid_ <= 0; }
  // Seconds between the signal and the exit, for the last stop().
  double stop_seconds() const { return stop_seconds_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  int exit_code_ = -1;
  double stop_seconds_ = 0;
  int64_t signalled_at_ = 0;
  std::string log_path_, token_;
};

// Reads a server-sent-events stream: GET `target` with `headers`, then one event at a time.
class SseReader {
 public:
  struct Event {
    int64_t id = -1;  // -1: no id line
    std::string event, data;
  };
  SseReader(int port, const std::string& target, const HeaderList& headers = {},
            int timeout_ms = 5000);
  ~SseReader();
  SseReader(const SseReader&) = delete;
  SseReader& operator=(const SseReader&) = delete;

  int status() const { return status_; }
  std::string header(const std::string& name) const;
  // The next event, waiting at most timeout_ms; nullopt on timeout or when the stream ended
  // (see ended()). Comments and "retry:" fields are skipped.
  std::optional<Event> next(int timeout_ms = 5000);
  // Events until one of kind `kind` (included), at most timeout_ms in all.
  std::vector<Event> until(const std::string& kind, int timeout_ms = 8000);
  bool ended() const { return ended_; }

 private:
  bool fill(int64_t deadline_ms);
  int fd_ = -1;
  int status_ = 0;
  HeaderList headers_;
  std::string buf_;
  bool ended_ = false;
};

// A command in the background, its stdout and stderr in files (e.g. `orchrun logs --follow`
// while the test restarts the server).
class BackgroundCmd {
 public:
  BackgroundCmd(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                const std::string& out_path);
  ~BackgroundCmd();
  // Waits for the exit at most timeout_ms (then SIGKILL): the exit code, -1 when killed.
  int wait(int timeout_ms);
  std::string out() const;
  std::string err() const;

 private:
  pid_t pid_ = -1;
  int code_ = -1;
  std::string out_path_;
};

// Lowercase hex HMAC-SHA256 of `data` with `key` (OpenSSL).
std::string hmac_sha256_hex(const std::string& key, const std::string& data);
// Percent-encodes a query parameter value.
std::string url_encode(const std::string& v);
// Parses RFC 4180 CSV (quoted fields, "" escapes, CRLF or LF line ends): rows of fields.
std::vector<std::vector<std::string>> parse_csv(const std::string& text);
// Milliseconds on a monotonic clock.
int64_t mono_ms();

// What the serve_*_test.cc files share (a namespace of its own: other tests that include this
// header have helpers of the same names).
class TempDir;
namespace serve {

bool has(const std::string& s, const std::string& sub);
// A directory of pipelines inside `tmp`, with the given files.
std::string pipeline_dir(const TempDir& tmp,
                         const std::vector<std::pair<std::string, std::string>>& files);
// Writes `content` beside `path` and renames it into place (what careful editors do).
void write_atomic(const std::string& path, const std::string& content);
int64_t count(const std::string& db, const std::string& sql);
// Reply details for failure messages.
std::string show(const HttpReply& r);

extern const std::string kSecret;
// Pipeline "x": one node returning {i = input.i}.
extern const char* const kTrivial;
// Pipeline "gate": plan, an approval "deploy" (alice or bob), ship.
extern const char* const kGate;
// Pipeline "sleepy": sleeps `input.sleep` seconds (default 30) on its first attempt only: a
// cancelled run retried succeeds at once.
extern const char* const kSleepy;
// Pipeline "failing": its node always fails.
extern const char* const kFailing;

// In-process servers: unix ms of a UTC date and time; running a loop without blocking until
// cond() holds (at most timeout_ms), or for `ms`.
int64_t utc_ms(int y, int mo, int d, int h, int mi, int s);
bool pump_until(Loop& loop, const std::function<bool()>& cond, int timeout_ms = 5000);
void pump_for(Loop& loop, int ms);

}  // namespace serve
}  // namespace orch::test
