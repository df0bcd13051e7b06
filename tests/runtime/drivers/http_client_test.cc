// The HTTP client driver on a bare loop (no Lua) against a real server on 127.0.0.1: results,
// failure codes, keep-alive, redirects, many transfers at once, cancelling, and a loop that
// closes with nothing left open.
#include "drivers/http_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <thread>

#include "http_test_server.h"
#include "drivers/timer.h"
#include "drivers/loop.h"

using namespace orch;
using namespace orch::test;

namespace {

// A loop and a client; fetch() runs one request to the end.
struct Client {
  Loop loop;
  std::unique_ptr<HttpClient> http = std::make_unique<HttpClient>(loop.get());

  HttpResponse fetch(HttpRequest req) {
    HttpResponse out;
    bool done = false;
    std::string err;
    auto id = http->start(
        req,
        [&](HttpResponse& r) {
          out = std::move(r);
          done = true;
        },
        &err);
    INFO(err);
    REQUIRE(id != 0);
    loop.run();
    REQUIRE(done);
    return out;
  }
  HttpResponse get(const std::string& url) {
    HttpRequest req;
    req.url = url;
    return fetch(req);
  }
  // Frees the client (its handles close), then closes the loop: the names of leaked handles.
  std::vector<std::string> close() {
    http.reset();
    return loop.close();
  }
};

// A port on 127.0.0.1 where nothing listens (bound, then closed).
int closed_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// Polls `cond` (another thread's state) for up to 5 s.
template <typename F>
bool eventually(F cond) {
  for (int i = 0; i < 500; i++) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

}  // namespace

TEST_CASE(
    "http client: a GET returns status, lower-cased headers and body over one kept-alive "
    "connection",
    "[http]") {
  HttpTestServer srv([](const HttpTestRequest& r) {
    return HttpTestResponse::text(200, "hello " + r.path)
        .header("X-Many", "a")
        .header("x-many", "b");
  });
  Client c;
  auto r1 = c.get(srv.url("/one"));
  REQUIRE(r1.ok());
  CHECK(r1.status == 200);
  CHECK(r1.body == "hello /one");
  REQUIRE(r1.header("content-type"));
  CHECK(*r1.header("content-type") == "text/plain");
  REQUIRE(r1.header("x-many"));
  CHECK(*r1.header("x-many") == "a, b");
  CHECK(r1.url == srv.url("/one"));
  auto r2 = c.get(srv.url("/two"));
  CHECK(r2.body == "hello /two");

  auto reqs = srv.requests();
  REQUIRE(reqs.size() == 2);
  CHECK(reqs[0].method == "GET");
  CHECK(reqs[0].header("user-agent").rfind("orchrun/", 0) == 0);
  CHECK_FALSE(reqs[0].has_header("expect"));
  // The second request reused the first one's connection.
  CHECK(reqs[0].connection == reqs[1].connection);
  CHECK(srv.connections_accepted() == 1);
  // Idle: curl watches no socket, so the loop could end.
  CHECK(c.http->in_flight() == 0);
  CHECK(c.http->watched_sockets() == 0);
  CHECK(c.close().empty());
}

TEST_CASE("http client: methods, bodies and headers reach the server as given", "[http]") {
  HttpTestServer srv;
  Client c;
  HttpRequest post;
  post.method = "POST";
  post.url = srv.url("/items");
  post.body = R"({"a":1})";
  post.has_body = true;
  post.headers = {{"Content-Type", "application/json"}, {"X-Empty", ""}};
  CHECK(c.fetch(post).status == 200);

  // A large body: no "Expect: 100-continue" round trip.
  HttpRequest put;
  put.method = "PUT";
  put.url = srv.url("/big");
  put.body = std::string(200000, 'x');
  put.has_body = true;
  CHECK(c.fetch(put).status == 200);

  HttpRequest del;
  del.method = "DELETE";
  del.url = srv.url("/items/1");
  CHECK(c.fetch(del).status == 200);

  HttpRequest head;
  head.method = "HEAD";
  head.url = srv.url("/h");
  auto hr = c.fetch(head);
  CHECK(hr.status == 200);
  CHECK(hr.body.empty());

  auto reqs = srv.requests();
  REQUIRE(reqs.size() == 4);
  CHECK(reqs[0].method == "POST");
  CHECK(reqs[0].body == R"({"a":1})");
  CHECK(reqs[0].header("content-type") == "application/json");
  CHECK(reqs[0].has_header("x-empty"));
  CHECK(reqs[1].method == "PUT");
  CHECK(reqs[1].body.size() == 200000);
  CHECK_FALSE(reqs[1].has_header("expect"));
  // curl's default form content type is not added to a body the caller did not label.
  CHECK_FALSE(reqs[1].has_header("content-type"));
  CHECK(reqs[2].method == "DELETE");
  CHECK(reqs[2].path == "/items/1");
  CHECK(reqs[2].body.empty());
  CHECK(reqs[3].method == "HEAD");
  CHECK(c.close().empty());
}

TEST_CASE("http client: failures come back with a stable code", "[http]") {
  HttpTestServer srv([](const HttpTestRequest& r) {
    if (r.path == "/slow") return HttpTestResponse::text(200, "late").after_ms(20000);
    if (r.path == "/big") return HttpTestResponse::text(200, std::string(5000, 'b'));
    if (r.path == "/big-chunked") {
      auto resp = HttpTestResponse::text(200, std::string(5000, 'c'));
      resp.chunked = true;
      return resp;
    }
    if (r.path == "/garbage") {
      HttpTestResponse resp;
      resp.raw = "this is not http\r\n\r\n";
      return resp;
    }
    if (r.path == "/cut") {
      auto resp = HttpTestResponse::text(200, std::string(1000, 'x'));
      resp.cut_after = 80;  // the headers and a few bytes of the body
      return resp;
    }
    return HttpTestResponse::text(200, "fine");
  });
  Client c;

  auto refused = c.get("http://127.0.0.1:" + std::to_string(closed_port()) + "/x?token=secret");
  CHECK(refused.code == "connect");
  CHECK(refused.error.find("127.0.0.1") != std::string::npos);
  // The query (where tokens often are) stays out of messages.
  CHECK(refused.error.find("secret") == std::string::npos);

  HttpRequest slow;
  slow.url = srv.url("/slow");
  slow.timeout_ms = 200;
  auto timed_out = c.fetch(slow);
  CHECK(timed_out.code == "timeout");
  CHECK_FALSE(timed_out.ok());

  HttpRequest big;
  big.url = srv.url("/big");
  big.max_body = 1000;
  CHECK(c.fetch(big).code == "too_large");  // Content-Length known up front
  big.url = srv.url("/big-chunked");
  auto chunked = c.fetch(big);
  CHECK(chunked.code == "too_large");  // found while reading
  CHECK(chunked.error.find("max_body (1000 bytes)") != std::string::npos);
  big.max_body = 5000;  // exactly the size: fine
  auto exact = c.fetch(big);
  CHECK(exact.ok());
  CHECK(exact.body.size() == 5000);

  auto garbage = c.get(srv.url("/garbage"));
  CHECK(garbage.code == "error");
  CHECK_FALSE(garbage.error.empty());
  auto cut = c.get(srv.url("/cut"));
  CHECK(cut.code == "error");

  // https:// to a server that answers the TLS hello in clear text: the handshake fails.
  {
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(listen(lfd, 1) == 0);
    socklen_t len = sizeof a;
    getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
    std::thread plain([lfd] {
      int fd = accept(lfd, nullptr, nullptr);
      const char reply[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
      (void)!write(fd, reply, sizeof reply - 1);
      close(fd);
    });
    HttpRequest tls_req;
    tls_req.url = "https://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/";
    tls_req.timeout_ms = 10000;
    auto tls = c.fetch(tls_req);
    plain.join();
    close(lfd);
    INFO(tls.error);
    CHECK(tls.code == "tls");
  }

  // After all that, the client still works.
  CHECK(c.get(srv.url("/ok")).body == "fine");
  CHECK(c.close().empty());
}

TEST_CASE("http client: redirects are not followed unless asked, and at most max_redirects",
          "[http]") {
  HttpTestServer srv([](const HttpTestRequest& r) {
    if (r.path == "/from") return HttpTestResponse::text(302, "moved").header("Location", "/to");
    if (r.path == "/loop") return HttpTestResponse::text(302, "again").header("Location", "/loop");
    return HttpTestResponse::text(200, "arrived");
  });
  Client c;
  auto r = c.get(srv.url("/from"));
  CHECK(r.status == 302);
  REQUIRE(r.header("location"));
  CHECK(*r.header("location") == "/to");
  CHECK(r.body == "moved");

  HttpRequest follow;
  follow.url = srv.url("/from");
  follow.follow_redirects = true;
  auto f = c.fetch(follow);
  CHECK(f.status == 200);
  CHECK(f.body == "arrived");
  CHECK(f.url == srv.url("/to"));
  CHECK_FALSE(f.header("location"));  // the final response's headers only

  follow.url = srv.url("/loop");
  follow.max_redirects = 3;
  auto loop = c.fetch(follow);
  CHECK(loop.code == "error");
  CHECK(loop.error.find("edirect") != std::string::npos);
  CHECK(srv.request_count() == 1 + 2 + 4);
  CHECK(c.close().empty());
}

TEST_CASE("http client: many transfers run at once on one loop", "[http]") {
  HttpTestServer srv(
      [](const HttpTestRequest& r) { return HttpTestResponse::text(200, r.query).after_ms(200); });
  Client c;
  const int n = 40;
  int done = 0, ok = 0;
  for (int i = 0; i < n; i++) {
    HttpRequest req;
    req.url = srv.url("/w?i=" + std::to_string(i));
    std::string err;
    auto id = c.http->start(
        req,
        [&, i](HttpResponse& r) {
          done++;
          ok += r.ok() && r.body == "i=" + std::to_string(i);
        },
        &err);
    REQUIRE(id != 0);
  }
  CHECK(c.http->in_flight() == n);
  c.loop.run();
  CHECK(done == n);
  CHECK(ok == n);
  INFO("max in flight at the server: " << srv.max_in_flight());
  CHECK(srv.max_in_flight() > 1);
  CHECK(c.close().empty());
}

TEST_CASE("http client: cancel aborts at once, calls nobody back, and leaves nothing open",
          "[http]") {
  HttpTestServer srv(
      [](const HttpTestRequest&) { return HttpTestResponse::text(200, "late").after_ms(30000); });
  Client c;
  HttpRequest req;
  req.url = srv.url("/slow");
  bool called = false;
  std::string err;
  auto id = c.http->start(
      req, [&](HttpResponse&) { called = true; }, &err);
  REQUIRE(id != 0);
  // Cancel once the server has the request, from a loop callback as a node timeout would.
  auto poll_timer = std::make_unique<Timer>(c.loop.get());
  Timer& poll = *poll_timer;
  poll.start(
      5,
      [&] {
        if (srv.request_count() == 0) return;
        poll.stop();
        // While the transfer is open: its socket is close-on-exec (o.exec children must not
        // inherit connections). Every socket of this process is, the test server's included.
        for (auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
          std::error_code ec;
          auto target = std::filesystem::read_symlink(e.path(), ec).string();
          if (target.rfind("socket:", 0) != 0) continue;
          int fd = std::stoi(e.path().filename().string());
          INFO("fd " << fd << " " << target);
          CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
        }
        c.http->cancel(id);
        c.http->cancel(id);  // twice is harmless
      },
      5);
  c.loop.run();
  poll_timer.reset();
  CHECK_FALSE(called);
  CHECK(c.http->in_flight() == 0);
  CHECK(c.http->watched_sockets() == 0);
  // The connection was closed, not left half-used: the server saw it go.
  CHECK(eventually([&] { return srv.open_connections() == 0; }));
  CHECK(c.close().empty());
}

TEST_CASE("http client: destroying the client aborts what is in flight without callbacks",
          "[http]") {
  HttpTestServer srv(
      [](const HttpTestRequest&) { return HttpTestResponse::text(200, "late").after_ms(30000); });
  Client c;
  int called = 0;
  for (int i = 0; i < 3; i++) {
    HttpRequest req;
    req.url = srv.url("/slow");
    std::string err;
    REQUIRE(c.http->start(
                req, [&](HttpResponse&) { called++; }, &err) != 0);
  }
  // Run until the server has all three, then tear down.
  auto poll_timer = std::make_unique<Timer>(c.loop.get());
  Timer& poll = *poll_timer;
  poll.start(
      5,
      [&] {
        if (srv.request_count() < 3) return;
        poll.stop();
        c.http.reset();
      },
      5);
  c.loop.run();
  poll_timer.reset();
  CHECK(called == 0);
  CHECK(eventually([&] { return srv.open_connections() == 0; }));
  CHECK(c.close().empty());
}

TEST_CASE("http test server: chunked request bodies, pipelined keep-alive requests, bad input",
          "[http]") {
  HttpTestServer srv([](const HttpTestRequest& r) { return HttpTestResponse::text(200, r.body); });
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(srv.port()));
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  std::string two =
      "POST /c?x=a%20b&y=1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: t\r\n\r\n"
      "PUT /l HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
      "GARBAGE\r\n\r\n";
  REQUIRE(send(fd, two.data(), two.size(), 0) == static_cast<ssize_t>(two.size()));
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) got.append(buf, static_cast<size_t>(n));
  close(fd);
  CHECK(got.find("abcdefg") != std::string::npos);
  CHECK(got.find("hello") != std::string::npos);
  CHECK(got.find("400 Bad Request") != std::string::npos);  // and then it closed
  auto reqs = srv.requests();
  REQUIRE(reqs.size() == 2);
  CHECK(reqs[0].chunked);
  CHECK(reqs[0].body == "abcdefg");
  CHECK(reqs[0].param("x") == "a b");
  CHECK(reqs[0].param("y") == "1");
  CHECK(reqs[0].param("z").empty());
  CHECK(reqs[1].method == "PUT");
  CHECK(reqs[1].body == "hello");
  CHECK(reqs[0].connection == reqs[1].connection);
}
