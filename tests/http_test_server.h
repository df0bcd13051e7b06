// A real HTTP/1.1 server on 127.0.0.1 (port 0) for tests of anything that speaks HTTP: the
// http client, and later Slack, PagerDuty or webhook clients.
//
// One thread accepts; each connection gets a thread with blocking sockets. Requests are parsed
// properly (request line, headers, Content-Length or chunked bodies, Expect: 100-continue,
// keep-alive) and every one is recorded so that a test can assert what was sent. A handler
// (called on the connection's thread, so it must be thread-safe) decides the reply: any status,
// headers and body, sent slowly, chunked, cut off mid-way, or raw malformed bytes.
//
//   HttpTestServer srv([](const HttpTestRequest& r) {
//     if (r.path == "/slow") return HttpTestResponse::text(200, "late").after_ms(500);
//     return HttpTestResponse::json(200, R"({"ok":true})");
//   });
//   ... request srv.url("/slow?x=1") ...
//   CHECK(srv.requests().at(0).param("x") == "1");
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace orch::test {

struct HttpTestRequest {
  std::string method, target, version;                       // "GET", "/a/b?x=1", "HTTP/1.1"
  std::string path, query;                                   // "/a/b" and "x=1" (still %-encoded)
  std::vector<std::pair<std::string, std::string>> headers;  // as received, in order
  std::string body;                                          // de-chunked
  bool chunked = false;  // the body came with Transfer-Encoding: chunked
  int connection = 0;    // 1, 2, ... per accepted connection: equal ids = a reused connection
  int seq = 0;           // 1, 2, ... in the order requests were complete

  // Case-insensitive; "" when absent.
  std::string header(std::string_view name) const;
  bool has_header(std::string_view name) const;
  // A query parameter, %-decoded ("+" is a space); "" when absent.
  std::string param(std::string_view name) const;
};

struct HttpTestResponse {
  int status = 200;
  std::string reason;  // "" = the usual phrase for status
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Wait this long before answering; cut short (and nothing sent) when the server stops or
  // the client hangs up meanwhile.
  int delay_ms = 0;
  int body_delay_ms = 0;   // wait this long between the headers and the body
  bool chunked = false;    // send the body with Transfer-Encoding: chunked
  bool close = false;      // close the connection after this response
  int64_t cut_after = -1;  // close the connection after sending this many bytes of the reply
  std::string raw;         // when set: sent as is instead of a proper reply, then close

  static HttpTestResponse text(int status, std::string body);
  static HttpTestResponse json(int status, std::string body);
  HttpTestResponse& header(std::string name, std::string value) {
    headers.emplace_back(std::move(name), std::move(value));
    return *this;
  }
  HttpTestResponse& after_ms(int ms) {
    delay_ms = ms;
    return *this;
  }
};

using HttpTestHandler = std::function<HttpTestResponse(const HttpTestRequest&)>;

class HttpTestServer {
 public:
  // The default handler answers 200 "ok" (text/plain) to everything.
  explicit HttpTestServer(HttpTestHandler handler = nullptr);
  ~HttpTestServer();
  HttpTestServer(const HttpTestServer&) = delete;
  HttpTestServer& operator=(const HttpTestServer&) = delete;

  int port() const { return port_; }
  // "http://127.0.0.1:PORT" + path
  std::string url(std::string_view path = "/") const;

  std::vector<HttpTestRequest> requests() const;
  size_t request_count() const;
  // Waits until `n` requests have arrived, at most timeout_ms; true if they did.
  bool wait_for_requests(size_t n, int timeout_ms) const;
  // The most requests that were being handled at the same time (concurrency proof).
  int max_in_flight() const { return max_in_flight_; }
  int connections_accepted() const { return accepted_; }
  int open_connections() const { return open_; }
  // Benchmarks turn recording off so that memory stays flat.
  void set_record(bool on) { record_ = on; }

  // Stops accepting, wakes every delay, closes every connection and joins the threads.
  void stop();

 private:
  struct Conn {
    std::thread thread;
    int fd = -1;
    std::atomic<bool> done{false};
  };
  void accept_loop();
  void serve(Conn* c, int id);
  // Waits ms; false when the server stops or the client hangs up meanwhile.
  bool wait_ms(int fd, int ms);

  HttpTestHandler handler_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  int port_ = 0;
  std::thread acceptor_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::list<std::unique_ptr<Conn>> conns_;
  std::vector<HttpTestRequest> requests_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> record_{true};
  std::atomic<int> in_flight_{0}, max_in_flight_{0}, accepted_{0}, open_{0};
  int seq_ = 0;
};

}  // namespace orch::test
