// The HTTP server driver on a real loop (on a thread of its own) against blocking clients on
// 127.0.0.1 in the test thread: requests and answers, keep-alive, pipelining, limits, timeouts,
// 100-continue, streaming, clients that leave, closing, and a loop that ends with nothing open.
#include "drivers/http_server.h"
#include "test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <deque>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "drivers/timer.h"
#include "drivers/loop.h"

using namespace orch;
using namespace orch::http;

namespace {

using Clock = std::chrono::steady_clock;

int64_t ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// The server and its loop run on a thread of their own; the test thread is the client. Every
// call to the server goes through on_loop(), which runs a function on the loop's thread and
// waits for its result. Handlers run on the loop's thread too (no Catch assertions there).
class ServerThread {
 public:
  ServerThread(ServerOptions opts, Handler handler, const std::string& host = "127.0.0.1") {
    server_ = std::make_unique<HttpServer>(loop_.get(), opts, std::move(handler));
    std::string err;
    INFO(err);
    REQUIRE(server_->listen(host, 0, &err));
    port = server_->port();
    async_ = new uv_async_t;
    uv_async_init(loop_.get(), async_, [](uv_async_t* a) {
      if (a->data) static_cast<ServerThread*>(a->data)->run_queued();
    });
    async_->data = this;
    thread_ = std::thread([this] { loop_.run(); });
  }
  ~ServerThread() { stop(); }

  template <typename F>
  auto on_loop(F fn) -> decltype(fn()) {
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto result = task.get_future();
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.emplace_back([&task] { task(); });
    }
    uv_async_send(async_);
    return result.get();
  }

  // On the loop's thread (from a handler): runs fn after ms.
  void later(uint64_t ms, std::function<void()> fn) {
    timers_.push_back(std::make_unique<Timer>(loop_.get()));
    timers_.back()->start(ms, std::move(fn));
  }

  HttpServer& server() { return *server_; }  // on the loop's thread only
  ServerStats stats() {
    return on_loop([this] { return server_->stats(); });
  }
  size_t connections() {
    return on_loop([this] { return server_->connections(); });
  }

  // Polls cond on the loop's thread for up to 3 s.
  bool eventually(std::function<bool()> cond) {
    auto start = Clock::now();
    while (ms_since(start) < 3000) {
      if (on_loop(cond)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  // Destroys the server on the loop's thread, lets the loop finish and closes it: the names
  // of handles that were left open (none when the server cleaned up after itself).
  std::vector<std::string> stop() {
    if (!thread_.joinable()) return leaked_;
    on_loop([this] {
      timers_.clear();
      server_.reset();
      close_and_delete(async_);
    });
    thread_.join();
    leaked_ = loop_.close();
    return leaked_;
  }

  int port = 0;

 private:
  void run_queued() {
    std::deque<std::function<void()>> q;
    {
      std::lock_guard<std::mutex> lock(mu_);
      q.swap(queue_);
    }
    for (auto& f : q) f();
  }

  Loop loop_;
  std::unique_ptr<HttpServer> server_;
  uv_async_t* async_ = nullptr;
  std::thread thread_;
  std::mutex mu_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::unique_ptr<Timer>> timers_;
  std::vector<std::string> leaked_;
};

struct Reply {
  bool ok = false;  // a whole reply was read
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;

  std::string header(std::string_view name) const {
    for (const auto& [n, v] : headers)
      if (n == name) return v;
    return "";
  }
  bool has(std::string_view name) const {
    for (const auto& h : headers)
      if (h.first == name) return true;
    return false;
  }
  nlohmann::json json() const { return nlohmann::json::parse(body, nullptr, false); }
};

// A blocking client socket; every wait is bounded (3 s by default), so that a server bug fails
// the test instead of hanging it.
class Client {
 public:
  explicit Client(int port, int family = AF_INET) {
    fd_ = socket(family, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    int rc;
    if (family == AF_INET6) {
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_addr = in6addr_loopback;
      a.sin6_port = htons(static_cast<uint16_t>(port));
      rc = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    } else {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<uint16_t>(port));
      rc = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    }
    REQUIRE(rc == 0);
  }
  ~Client() { close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      REQUIRE(n > 0);
      data.remove_prefix(static_cast<size_t>(n));
    }
  }

  // One reply: head, then a Content-Length body, no body (HEAD, 1xx, 204, 304) or everything
  // until EOF.
  Reply read_reply(bool head_request = false) {
    Reply r;
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos)
      if (!fill()) return r;
    std::string head = buf_.substr(0, end);
    buf_.erase(0, end + 4);
    size_t line_end = head.find("\r\n");
    std::string status_line = head.substr(0, line_end);
    if (status_line.rfind("HTTP/1.1 ", 0) != 0 || status_line.size() < 12) return r;
    r.status = std::stoi(status_line.substr(9, 3));
    while (line_end != std::string::npos) {
      size_t start = line_end + 2;
      line_end = head.find("\r\n", start);
      std::string line = head.substr(start, line_end - start);
      size_t colon = line.find(':');
      if (colon == std::string::npos) return r;
      std::string name = line.substr(0, colon);
      for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      size_t v = line.find_first_not_of(' ', colon + 1);
      r.headers.emplace_back(name, v == std::string::npos ? "" : line.substr(v));
    }
    if (head_request || r.status < 200 || r.status == 204 || r.status == 304) {
      r.ok = true;
      return r;
    }
    if (r.has("content-length")) {
      size_t n = std::stoul(r.header("content-length"));
      while (buf_.size() < n)
        if (!fill()) return r;
      r.body = buf_.substr(0, n);
      buf_.erase(0, n);
    } else {
      while (fill()) {
      }
      if (!eof_) return r;
      r.body = std::move(buf_);
      buf_.clear();
    }
    r.ok = true;
    return r;
  }

  // Reads until `marker` arrives; what came before it and the marker. "" on timeout or EOF.
  std::string read_until(std::string_view marker) {
    size_t at;
    while ((at = buf_.find(marker)) == std::string::npos)
      if (!fill()) return "";
    std::string out = buf_.substr(0, at + marker.size());
    buf_.erase(0, at + marker.size());
    return out;
  }

  // True when the server closes the connection (EOF or reset) within timeout_ms. What arrives
  // meanwhile is kept in unread().
  bool wait_closed(int timeout_ms = 3000) {
    while (fill(timeout_ms)) {
    }
    return eof_;
  }
  const std::string& unread() const { return buf_; }

  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  // Appends what arrives within timeout_ms; false on EOF, reset or timeout.
  bool fill(int timeout_ms = 3000) {
    if (eof_) return false;
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return false;
    char tmp[16384];
    ssize_t n = recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  std::string buf_;
  bool eof_ = false;
};

std::string get(std::string_view target, std::string_view extra_headers = "") {
  return std::string("GET ") + std::string(target) + " HTTP/1.1\r\nHost: t\r\n" +
         std::string(extra_headers) + "\r\n";
}

std::string post(std::string_view target, std::string_view body) {
  return std::string("POST ") + std::string(target) +
         " HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
         std::string(body);
}

// Answers 200 with the body it was sent (or the path when there is none).
Handler echo() {
  return [](std::shared_ptr<Exchange> ex) {
    const Request& r = ex->request();
    ex->respond(Response::text(200, r.body.empty() ? r.path : r.body));
  };
}

bool have_ipv6_loopback() {
  int fd = socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

ServerOptions short_timeouts() {
  ServerOptions o;
  o.header_timeout_ms = 200;
  o.body_timeout_ms = 200;
  o.idle_timeout_ms = 200;
  return o;
}

}  // namespace

TEST_CASE("http server: GET and POST, request fields", "[http_server]") {
  std::vector<Request> seen;  // on the loop's thread
  ServerThread st({}, [&](std::shared_ptr<Exchange> ex) {
    seen.push_back(ex->request());
    const Request& r = ex->request();
    ex->respond(Response::json(201, nlohmann::json{{"method", r.method},
                                                   {"path", r.path},
                                                   {"query", r.query},
                                                   {"x", r.param("x")},
                                                   {"body", r.body}}
                                        .dump()));
  });
  Client c(st.port);
  c.send(get("/a%20b/c%2Fd?x=1+2%21&y",
             "X-Test:  padded value  \r\nX-Multi: one\r\nx-multi: two\r\n"));
  Reply r = c.read_reply();
  REQUIRE(r.ok);
  CHECK(r.status == 201);
  CHECK(r.header("content-type") == "application/json");
  CHECK(r.header("content-length") == std::to_string(r.body.size()));
  CHECK(std::regex_match(
      r.header("date"),
      std::regex(R"([A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT)")));
  CHECK_FALSE(r.has("connection"));
  auto j = r.json();
  CHECK(j["method"] == "GET");
  CHECK(j["path"] == "/a b/c/d");
  CHECK(j["query"] == "x=1+2%21&y");
  CHECK(j["x"] == "1 2!");

  c.send(post("/submit", "hello body"));
  r = c.read_reply();
  REQUIRE(r.ok);
  CHECK(r.json()["body"] == "hello body");
  CHECK(r.json()["method"] == "POST");

  auto reqs = st.on_loop([&] { return seen; });
  REQUIRE(reqs.size() == 2);
  const Request& g = reqs[0];
  CHECK(g.target == "/a%20b/c%2Fd?x=1+2%21&y");
  CHECK(g.http_minor == 1);
  CHECK(g.remote.rfind("127.0.0.1:", 0) == 0);
  REQUIRE(g.header("x-test"));
  CHECK(*g.header("x-test") == "padded value");
  CHECK(*g.header("x-multi") == "one");
  std::vector<std::string> multi;
  for (const auto& [n, v] : g.headers)
    if (n == "x-multi") multi.push_back(v);
  CHECK(multi == std::vector<std::string>{"one", "two"});
  bool found = true;
  CHECK(g.param("y", &found) == "");
  CHECK(found);
  CHECK(g.param("z", &found) == "");
  CHECK_FALSE(found);
  CHECK(reqs[1].body == "hello body");
  CHECK(st.stats().requests == 2);
  CHECK(st.stop().empty());
}

TEST_CASE("http server: a request arriving a byte at a time", "[http_server]") {
  std::vector<Request> seen;
  ServerThread st({}, [&](std::shared_ptr<Exchange> ex) {
    seen.push_back(ex->request());
    ex->respond(Response::text(200, ex->request().body));
  });
  Client c(st.port);
  std::string req =
      "POST /p?q=1 HTTP/1.1\r\nHost: t\r\nX-Long-Name: some value\r\nContent-Length: 4\r\n\r\nbody";
  for (char ch : req) {
    c.send(std::string(1, ch));
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  Reply r = c.read_reply();
  REQUIRE(r.ok);
  CHECK(r.body == "body");
  auto reqs = st.on_loop([&] { return seen; });
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].target == "/p?q=1");
  REQUIRE(reqs[0].header("x-long-name"));
  CHECK(*reqs[0].header("x-long-name") == "some value");
  CHECK(reqs[0].headers.size() == 3);
  CHECK(st.stop().empty());
}

TEST_CASE("http server: keep-alive serves sequential requests on one connection", "[http_server]") {
  ServerThread st({}, echo());
  Client c(st.port);
  for (const char* path : {"/one", "/two", "/three"}) {
    c.send(get(path));
    Reply r = c.read_reply();
    REQUIRE(r.ok);
    CHECK(r.body == path);
  }
  auto s = st.stats();
  CHECK(s.connections_accepted == 1);
  CHECK(s.requests == 3);
  CHECK(st.stop().empty());
}

TEST_CASE("http server: pipelined requests are handed over one at a time, answered in order",
          "[http_server]") {
  std::vector<std::string> events;  // on the loop's thread
  ServerThread* stp = nullptr;
  ServerThread st({}, [&](std::shared_ptr<Exchange> ex) {
    std::string path = ex->request().path;
    events.push_back("request " + path);
    auto answer = [&events, ex, path] {
      events.push_back("answer " + path);
      ex->respond(Response::text(200, path));
    };
    // The first is answered late: the others must wait for it.
    if (path == "/1")
      stp->later(100, answer);
    else
      answer();
  });
  stp = &st;
  Client c(st.port);
  c.send(get("/1") + post("/2", "body of two") + get("/3"));
  for (const char* path : {"/1", "/2", "/3"}) {
    Reply r = c.read_reply();
    REQUIRE(r.ok);
    CHECK(r.body == path);
  }
  CHECK(st.on_loop([&] { return events; }) == std::vector<std::string>{"request /1", "answer /1",
                                                                       "request /2", "answer /2",
                                                                       "request /3", "answer /3"});
  CHECK(st.stats().connections_accepted == 1);
  CHECK(st.stop().empty());
}

TEST_CASE("http server: pipelined input beyond the read-ahead waits, then is served",
          "[http_server]") {
  ServerThread* stp = nullptr;
  ServerThread st({}, [&](std::shared_ptr<Exchange> ex) {
    std::string answer = ex->request().path + " " + std::to_string(ex->request().body.size());
    if (ex->request().path == "/slow")
      stp->later(100, [ex, answer] { ex->respond(Response::text(200, answer)); });
    else
      ex->respond(Response::text(200, answer));
  });
  stp = &st;
  Client c(st.port);
  // 600 KB behind a slow request: more than the server reads ahead.
  c.send(get("/slow") + post("/big", std::string(600 * 1024, 'p')) + get("/last"));
  CHECK(c.read_reply().body == "/slow 0");
  CHECK(c.read_reply().body == "/big 614400");
  CHECK(c.read_reply().body == "/last 0");
  CHECK(st.stop().empty());
}

TEST_CASE("http server: many pipelined requests answered at once stay in order", "[http_server]") {
  ServerThread st({}, echo());
  Client c(st.port);
  std::string all;
  for (int i = 0; i < 200; i++) all += get("/" + std::to_string(i));
  c.send(all);
  for (int i = 0; i < 200; i++) {
    Reply r = c.read_reply();
    REQUIRE(r.ok);
    REQUIRE(r.body == "/" + std::to_string(i));
  }
  CHECK(st.stats().requests == 200);
  CHECK(st.stop().empty());
}

TEST_CASE("http server: a chunked request body is decoded", "[http_server]") {
  ServerThread st({}, echo());
  Client c(st.port);
  c.send("POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a body split across reads
  c.send("lo\r\n6\r\n world\r\n0\r\n\r\n");
  Reply r = c.read_reply();
  REQUIRE(r.ok);
  CHECK(r.status == 200);
  CHECK(r.body == "hello world");
  // The connection is still good.
  c.send(get("/next"));
  CHECK(c.read_reply().body == "/next");
  CHECK(st.stop().empty());
}

TEST_CASE("http server: a big answer is written whole", "[http_server]") {
  std::string big(3 * 1024 * 1024, 'x');
  for (size_t i = 0; i < big.size(); i += 1000) big[i] = static_cast<char>('a' + i % 26);
  ServerThread st({}, [&](std::shared_ptr<Exchange> ex) { ex->respond(Response::text(200, big)); });
  Client c(st.port);
  c.send(get("/big") + get("/big"));
  for (int i = 0; i < 2; i++) {
    Reply r = c.read_reply();
    REQUIRE(r.ok);
    CHECK(r.body == big);
  }
  CHECK(st.stop().empty());
}

TEST_CASE("http server: headers over the limit get 431 and a close", "[http_server]") {
  ServerOptions o;
  o.max_header_bytes = 1024;
  ServerThread st(o, echo());
  auto head_of = [](size_t size) {  // a request head of exactly `size` bytes
    std::string h = get("/fits", "X-Pad: \r\n");
    return get("/fits", "X-Pad: " + std::string(size - h.size(), 'a') + "\r\n");
  };
  REQUIRE(head_of(1024).size() == 1024);
  {
    Client c(st.port);
    c.send(head_of(1024));
    Reply r = c.read_reply();
    REQUIRE(r.ok);
    CHECK(r.status == 200);
  }
  {
    Client c(st.port);
    c.send(head_of(1025));
    CHECK(c.read_reply().status == 431);
  }
  Client c(st.port);
  c.send(get("/big", "X-Pad: " + std::string(2000, 'a') + "\r\n"));
  Reply r = c.read_reply();
  REQUIRE(r.ok);
  CHECK(r.status == 431);
  CHECK(r.header("connection") == "close");
  CHECK(r.json()["error"]["code"] == "headers_too_large");
  CHECK(c.wait_closed());
  auto s = st.stats();
  CHECK(s.requests == 1);
  CHECK(s.bad_requests == 2);
  CHECK(st.stop().empty());
}

TEST_CASE("http server: a Content-Length over the limit gets 413 before the body is sent",
          "[http_server]") {
  ServerOptions o;
  o.max_body_bytes = 100;
  ServerThread st(o, echo());
  Client c(st.port);
  c.send("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n");  // and no body
  Reply r = c.read_reply();
  REQUIRE(r.ok);
  CHECK(r.status == 413);
  CHECK(r.json()["error"]["code"] == "body_too_large");
  CHECK(c.wait_closed());
  CHECK(st.stats().requests == 0);

  // Within the limit is fine.
  Client ok(st.port);
  ok.send(post("/up", std::string(100, 'b')));
  CHECK(ok.read_reply().status == 200);
  CHECK(st.stop().empty());
}

TEST_CASE("http server: a chunked body over the limit gets 413 and a close", "[http_server]") {
  ServerOptions o;
  o.max_body_bytes = 100;
  ServerThread st(o, echo());
  Client c(st.port);
  std::string chunk(60, 'c');
  c.send("POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3c\r\n" + chunk +
         "\r\n3c\r\n" + chunk + "\r\n");
  Reply r = c.read_reply();
  REQUIRE(r.ok);
  CHECK(r.status == 413);
  // The client may still be sending: the server drains that and closes.
  c.send("3c\r\n" + chunk + "\r\n0\r\n\r\n");
  CHECK(c.wait_closed());
  CHECK(st.stats().requests == 0);
  CHECK(st.stats().bad_requests == 1);
  CHECK(st.stop().empty());
}

TEST_CASE("http server: a malformed request gets 400 naming the parser error, then a close",
          "[http_server]") {
  ServerThread st({}, echo());
  SECTION("bad method") {
    Client c(st.port);
    c.send("GXT / HTTP/1.1\r\nHost: t\r\n\r\n");
    Reply r = c.read_reply();
    REQUIRE(r.ok);
    CHECK(r.status == 400);
    CHECK(r.header("connection") == "close");
    auto j = r.json();
    CHECK(j["error"]["code"] == "bad_request");
    CHECK(j["error"]["message"].get<std::string>().find("invalid HTTP method") !=
          std::string::npos);
    CHECK(c.wait_closed());
  }
  SECTION("after a good request, on the same connection") {
    Client c(st.port);
    c.send(get("/ok") + "GET / HTTP/1.1\r\nBad Header\r\n\r\n");
    CHECK(c.read_reply().status == 200);
    Reply r = c.read_reply();
    CHECK(r.status == 400);
    CHECK(r.json()["error"]["message"].get<std::string>().find("invalid character in header") !=
          std::string::npos);
    CHECK(c.wait_closed());
  }
  SECTION("HTTP/2.0 request line") {
    Client c(st.port);
    c.send("GET / HTTP/2.0\r\nHost: t\r\n\r\n");
    Reply r = c.read_reply();
    CHECK(r.status == 505);
    CHECK(r.json()["error"]["code"] == "http_version");
    CHECK(c.wait_closed());
  }
  SECTION("Content-Length and Transfer-Encoding together") {
    Client c(st.port);
    c.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
    CHECK(c.read_reply().status == 400);
    CHECK(c.wait_closed());
  }
  CHECK(st.stats().bad_requests == 1);
  CHECK(st.stop().empty());
}

TEST_CASE("http server: header and body timeouts answer 408 and close", "[http_server]") {
  ServerThread st(short_timeouts(), echo());
  SECTION("headers") {
    Client c(st.port);
    auto start = Clock::now();
    c.send("GET /slow HTTP/1.1\r\nHost: t\r\n");  // no blank line
    Reply r = c.read_reply();
    REQUIRE(r.ok);
    CHECK(r.status == 408);
    CHECK(r.json()["error"]["code"] == "timeout");
    CHECK(ms_since(start) >= 150);
    CHECK(c.wait_closed());
  }
  SECTION("body") {
    Client c(st.port);
    c.send("POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    Reply r = c.read_reply();
    REQUIRE(r.ok);
    CHECK(r.status == 408);
    CHECK(c.wait_closed());
  }
  CHECK(st.stats().timeouts == 1);
  CHECK(st.stats().requests == 0);
  CHECK(st.stop().empty());
}

TEST_CASE("http server: idle connections close silently", "[http_server]") {
  ServerThread st(short_timeouts(), echo());
  SECTION("after a request") {
    Client c(st.port);
    c.send(get("/x"));
    CHECK(c.read_reply().ok);
    auto start = Clock::now();
    CHECK(c.wait_closed());
    CHECK(c.unread().empty());
    CHECK(ms_since(start) >= 150);
  }
  SECTION("a new connection that sends nothing") {
    Client c(st.port);
    CHECK(c.wait_closed());
    CHECK(c.unread().empty());
  }
  CHECK(st.eventually([&] { return st.server().connections() == 0; }));
  CHECK(st.stats().timeouts == 0);
  CHECK(st.stop().empty());
}

TEST_CASE("http server: Expect: 100-continue", "[http_server]") {
  ServerOptions o;
  o.max_body_bytes = 100;
  ServerThread st(o, echo());
  SECTION("accepted length: 100 Continue, then the answer") {
    Client c(st.port);
    c.send("POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    Reply cont = c.read_reply();
    REQUIRE(cont.ok);
    CHECK(cont.status == 100);
    c.send("hello");
    Reply r = c.read_reply();
    REQUIRE(r.ok);
    CHECK(r.status == 200);
    CHECK(r.body == "hello");
  }
  SECTION("too long: 413 and no 100") {
    Client c(st.port);
    c.send("POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 500\r\n\r\n");
    Reply r = c.read_reply();
    REQUIRE(r.ok);
    CHECK(r.status == 413);
    CHECK(c.wait_closed());
  }
  CHECK(st.stop().empty());
}

TEST_CASE("http server: HEAD gets the headers of the answer and no body", "[http_server]") {
  ServerThread st({},
                  [](std::shared_ptr<Exchange> ex) { ex->respond(Response::text(200, "hello")); });
  Client c(st.port);
  c.send("HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n");
  Reply r = c.read_reply(true);
  REQUIRE(r.ok);
  CHECK(r.status == 200);
  CHECK(r.header("content-length") == "5");
  // Nothing else came: the next answer starts right at its status line.
  c.send(get("/g"));
  Reply g = c.read_reply();
  REQUIRE(g.ok);
  CHECK(g.body == "hello");
  CHECK(st.stop().empty());
}

TEST_CASE("http server: HTTP/1.0 and Connection: close", "[http_server]") {
  ServerThread st({}, echo());
  SECTION("HTTP/1.0 closes") {
    Client c(st.port);
    c.send("GET /old HTTP/1.0\r\n\r\n");
    Reply r = c.read_reply();
    REQUIRE(r.ok);
    CHECK(r.body == "/old");
    CHECK(r.header("connection") == "close");
    CHECK(c.wait_closed());
  }
  SECTION("HTTP/1.0 with keep-alive stays open") {
    Client c(st.port);
    c.send("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    Reply r = c.read_reply();
    CHECK(r.header("connection") == "keep-alive");
    c.send("GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK(c.read_reply().body == "/b");
  }
  SECTION("HTTP/1.1 with Connection: close") {
    Client c(st.port);
    c.send(get("/c", "Connection: close\r\n") + get("/ignored"));
    Reply r = c.read_reply();
    CHECK(r.body == "/c");
    CHECK(r.header("connection") == "close");
    CHECK(c.wait_closed());
    CHECK(c.unread().empty());
  }
  CHECK(st.stop().empty());
}

TEST_CASE("http server: a stream is written as it goes; the client leaving closes it",
          "[http_server]") {
  std::shared_ptr<Exchange> stream;  // on the loop's thread
  int closes = 0;
  ServerThread st({}, [&](std::shared_ptr<Exchange> ex) {
    stream = ex;
    ex->on_close([&] { closes++; });
    ex->begin_stream(200, {{"Content-Type", "text/event-stream"}, {"Cache-Control", "no-cache"}});
  });
  Client c(st.port);
  c.send(get("/events"));
  std::string head = c.read_until("\r\n\r\n");
  CHECK(head.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(head.find("Cache-Control: no-cache\r\n") != std::string::npos);
  CHECK(head.find("Content-Length") == std::string::npos);
  for (int i = 1; i <= 3; i++) {
    std::string event = "data: " + std::to_string(i) + "\n\n";
    CHECK(st.on_loop([&] { return stream->write(event); }));
    CHECK(c.read_until("\n\n") == event);
  }
  CHECK(st.on_loop([&] { return stream->closed(); }) == false);
  c.close();
  REQUIRE(st.eventually([&] { return closes == 1; }));
  auto after = st.on_loop([&] {
    return std::make_tuple(stream->write("data: late\n\n"), stream->closed(),
                           stream->pending_bytes());
  });
  CHECK(std::get<0>(after) == false);
  CHECK(std::get<1>(after) == true);
  CHECK(std::get<2>(after) == 0);
  // Registered after the close: called at once.
  st.on_loop([&] { stream->on_close([&] { closes++; }); });
  CHECK(st.on_loop([&] { return closes; }) == 2);
  st.on_loop([&] { stream.reset(); });
  CHECK(st.stop().empty());
}

TEST_CASE("http server: end_stream flushes, then closes", "[http_server]") {
  bool closed = false;
  ServerThread st({}, [&](std::shared_ptr<Exchange> ex) {
    ex->on_close([&] { closed = true; });
    ex->begin_stream(200, {{"Content-Type", "text/plain"}});
    ex->write("part one,");
    ex->write(" part two");
    ex->end_stream();
    ex->write("dropped");
  });
  Client c(st.port);
  c.send(get("/s"));
  Reply r = c.read_reply();  // no Content-Length: read to EOF
  REQUIRE(r.ok);
  CHECK(r.body == "part one, part two");
  CHECK(st.eventually([&] { return closed; }));
  CHECK(st.stop().empty());
}

TEST_CASE("http server: answering after the client has gone is harmless", "[http_server]") {
  std::vector<std::shared_ptr<Exchange>> held;  // on the loop's thread
  ServerThread st({}, [&](std::shared_ptr<Exchange> ex) {
    if (ex->request().path == "/hold")
      held.push_back(ex);
    else
      ex->respond(Response::text(200, "ok"));
  });
  {
    Client c(st.port);
    c.send(get("/hold"));
    REQUIRE(st.eventually([&] { return held.size() == 1; }));
  }  // closed without waiting
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  st.on_loop([&] { held[0]->respond(Response::text(200, "too late")); });
  CHECK(st.eventually([&] { return held[0]->closed() && st.server().connections() == 0; }));
  st.on_loop([&] { held[0]->respond(Response::text(200, "twice")); });

  // Held across close_all: closed at once, answering is a no-op.
  Client c2(st.port);
  c2.send(get("/hold"));
  REQUIRE(st.eventually([&] { return held.size() == 2; }));
  st.on_loop([&] { st.server().close_all(); });
  CHECK(st.on_loop([&] { return held[1]->closed(); }));
  st.on_loop([&] { held[1]->respond(Response::text(200, "no one to tell")); });
  CHECK(c2.wait_closed());
  CHECK(c2.unread().empty());

  Client c3(st.port);
  c3.send(get("/other"));
  CHECK(c3.read_reply().body == "ok");
  st.on_loop([&] { held.clear(); });
  CHECK(st.stop().empty());
}

TEST_CASE("http server: a client that half-closes after its request is still answered",
          "[http_server]") {
  ServerThread* stp = nullptr;
  ServerThread st({}, [&](std::shared_ptr<Exchange> ex) {
    stp->later(50, [ex] { ex->respond(Response::text(200, "late but sent")); });
  });
  stp = &st;
  Client c(st.port);
  c.send(get("/half"));
  c.shutdown_write();
  Reply r = c.read_reply();
  REQUIRE(r.ok);
  CHECK(r.body == "late but sent");
  CHECK(c.wait_closed());
  CHECK(st.stop().empty());
}

TEST_CASE("http server: an exchange dropped unanswered answers 500", "[http_server]") {
  ServerThread st({}, [](std::shared_ptr<Exchange> ex) {
    if (ex->request().path == "/throw") throw std::runtime_error("secret detail");
  });
  Client c(st.port);
  c.send(get("/drop"));
  Reply r = c.read_reply();
  REQUIRE(r.ok);
  CHECK(r.status == 500);
  CHECK(r.json()["error"]["code"] == "no_response");
  c.send(get("/throw"));
  r = c.read_reply();
  REQUIRE(r.ok);
  CHECK(r.status == 500);
  CHECK(r.body.find("secret") == std::string::npos);
  CHECK(st.stop().empty());
}

TEST_CASE("http server: beyond max_connections, 503 and a close", "[http_server]") {
  ServerOptions o;
  o.max_connections = 2;
  ServerThread st(o, echo());
  auto a = std::make_unique<Client>(st.port);
  Client b(st.port);
  a->send(get("/a"));
  b.send(get("/b"));
  CHECK(a->read_reply().ok);
  CHECK(b.read_reply().ok);
  {
    Client over(st.port);
    Reply r = over.read_reply();
    REQUIRE(r.ok);
    CHECK(r.status == 503);
    CHECK(r.json()["error"]["code"] == "overloaded");
    CHECK(over.wait_closed());
  }
  a.reset();
  REQUIRE(st.eventually([&] { return st.server().connections() == 1; }));
  Client again(st.port);
  again.send(get("/again"));
  CHECK(again.read_reply().body == "/again");
  CHECK(st.stats().connections_accepted == 4);
  CHECK(st.stop().empty());
}

TEST_CASE("http server: close_all ends streams and reports when everything is closed",
          "[http_server]") {
  std::shared_ptr<Exchange> stream;
  bool stream_closed = false;
  ServerThread st({}, [&](std::shared_ptr<Exchange> ex) {
    stream = ex;
    ex->on_close([&] { stream_closed = true; });
    ex->begin_stream(200, {{"Content-Type", "text/event-stream"}});
    ex->write("data: hi\n\n");
  });
  Client c(st.port);
  c.send(get("/events"));
  CHECK(c.read_until("data: hi\n\n") != "");
  Client idle(st.port);
  REQUIRE(st.eventually([&] { return st.server().connections() == 2; }));
  bool done = false;
  st.on_loop([&] {
    st.server().stop_accepting();
    st.server().close_all([&] { done = true; });
  });
  CHECK(st.eventually([&] { return done; }));
  CHECK(st.on_loop([&] { return stream_closed && st.server().connections() == 0; }));
  CHECK(st.on_loop([&] { return stream->write("data: late\n\n"); }) == false);
  CHECK(c.wait_closed());
  CHECK(idle.wait_closed());
  // With nothing open, done is called at once.
  CHECK(st.on_loop([&] {
    bool now = false;
    st.server().close_all([&] { now = true; });
    return now;
  }));
  st.on_loop([&] { stream.reset(); });
  CHECK(st.stop().empty());
}

TEST_CASE("http server: destroying the server with connections and exchanges held",
          "[http_server]") {
  std::shared_ptr<Exchange> held;
  int closes = 0;
  auto st = std::make_unique<ServerThread>(ServerOptions{}, [&](std::shared_ptr<Exchange> ex) {
    held = ex;
    ex->on_close([&] { closes++; });
  });
  Client c(st->port);
  c.send(get("/held"));
  REQUIRE(st->eventually([&] { return held != nullptr; }));
  CHECK(st->stop().empty());  // the loop has run: on_close was called
  CHECK(closes == 1);
  // The exchange outlives the server (and its loop): closed, and answering is a no-op.
  CHECK(held->closed());
  held->respond(Response::text(200, "nobody"));
  CHECK_FALSE(held->write("x"));
  CHECK(held->pending_bytes() == 0);
  held.reset();
  st.reset();
  CHECK(c.wait_closed());
}

TEST_CASE("http server: listen errors", "[http_server]") {
  Loop loop;
  {
    HttpServer s(loop.get(), {}, echo());
    std::string err;
    CHECK_FALSE(s.listen("localhost", 0, &err));  // literals only
    CHECK(err.find("not an IPv4 or IPv6 address") != std::string::npos);
    REQUIRE(s.listen("127.0.0.1", 0, &err));
    HttpServer other(loop.get(), {}, echo());
    CHECK_FALSE(other.listen("127.0.0.1", s.port(), &err));
    CHECK(err.find("EADDRINUSE") != std::string::npos);
  }
  CHECK(loop.close().empty());
}

TEST_CASE("http server: listens on the IPv6 loopback", "[http_server]") {
  if (!have_ipv6_loopback()) ORCH_SKIP("no IPv6 loopback on this machine");
  std::vector<std::string> remotes;
  auto st = std::make_unique<ServerThread>(
      ServerOptions{},
      [&](std::shared_ptr<Exchange> ex) {
        remotes.push_back(ex->request().remote);
        ex->respond(Response::text(200, "v6"));
      },
      "::1");
  Client c(st->port, AF_INET6);
  c.send(get("/"));
  CHECK(c.read_reply().body == "v6");
  auto r = st->on_loop([&] { return remotes; });
  REQUIRE(r.size() == 1);
  CHECK(r[0].rfind("[::1]:", 0) == 0);
  CHECK(st->stop().empty());
}

TEST_CASE("http server: Request helpers, error bodies and reasons", "[http_server]") {
  Request r;
  r.query = "a=1&b=x%20y+z&c&a=2&e%3Dq=%zz&empty=";
  bool found = false;
  CHECK(r.param("a", &found) == "1");
  CHECK(found);
  CHECK(r.param("b") == "x y z");
  CHECK(r.param("c", &found) == "");
  CHECK(found);
  CHECK(r.param("e=q") == "%zz");
  CHECK(r.param("empty", &found) == "");
  CHECK(found);
  CHECK(r.param("missing", &found) == "");
  CHECK_FALSE(found);
  r.headers = {{"x-a", "1"}, {"x-a", "2"}};
  REQUIRE(r.header("x-a"));
  CHECK(*r.header("x-a") == "1");
  CHECK(r.header("x-b") == nullptr);

  Response e = error_response(404, "not_found", "no \"run\" here");
  CHECK(e.status == 404);
  auto j = nlohmann::json::parse(e.body);
  CHECK(j["error"]["code"] == "not_found");
  CHECK(j["error"]["message"] == "no \"run\" here");
  CHECK(e.headers == Headers{{"Content-Type", "application/json"}});
  for (int code : {100, 200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404,
                   405, 408, 409, 413, 415, 422, 429, 431, 500, 501, 503})
    CHECK(std::string(status_reason(code)) != "Unknown");
  CHECK(std::string(status_reason(404)) == "Not Found");
}
