// The HTTP request layer of orchrun serve (drivers/http_server.*: http-parser's
// callbacks, chunked bodies, header and body limits, pipelining, answers now, later, streamed
// or dropped) fed arbitrary bytes through a real loopback connection on an in-process loop.
//
// Input: byte 0 picks the server (limits) and how the bytes are sent, the rest is what the
// client sends. Byte 0: bits 0-1 the server (0, 3: default limits; 1: 256-byte headers; 2:
// 64-byte bodies), bits 2-7 the write size (0: all at once; n: writes of 4n bytes, the loop
// running between them so that the server reads them apart). The client then half-closes
// and reads until the server closes. Handler by path prefix: /later answers on the next loop
// turn, /stream streams, /drop drops the exchange (500), /throw throws, /big answers 40 KB,
// anything else echoes what was parsed.
//
// Invariants: the server closes the connection after the client's half-close (within 5 s),
// every byte it sends starts a status line ("HTTP/1.1 "), and no connection is left open.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "drivers/http_server.h"
#include "drivers/loop.h"

using namespace orch;
using namespace orch::http;

namespace {

struct World {
  Loop loop;
  std::vector<std::unique_ptr<HttpServer>> servers;
  std::vector<std::shared_ptr<Exchange>> later;  // answered on the next loop turn
  uv_timer_t later_timer{};
  uv_timer_t guard{};
  bool guard_fired = false;
};

World* g_world = nullptr;

std::string describe(const Request& r) {
  std::string s = r.method + " " + r.path + "?" + r.query + " http/1." +
                  std::to_string(r.http_minor) + " headers=" + std::to_string(r.headers.size()) +
                  " body=" + std::to_string(r.body.size());
  bool found = false;
  s += " a=" + r.param("a", &found) + (found ? "" : "(none)");
  if (const std::string* ct = r.header("content-type")) s += " ct=" + *ct;
  return s;
}

void handle(std::shared_ptr<Exchange> ex) {
  const Request& r = ex->request();
  auto starts = [&](const char* p) { return r.path.rfind(p, 0) == 0; };
  if (starts("/later")) {
    g_world->later.push_back(ex);
    uv_timer_start(
        &g_world->later_timer,
        [](uv_timer_t*) {
          for (auto& e : std::exchange(g_world->later, {}))
            e->respond(Response::json(202, "{\"later\":true}"));
        },
        0, 0);
  } else if (starts("/stream")) {
    ex->begin_stream(200, {{"Content-Type", "text/event-stream"}});
    ex->write("data: " + describe(r) + "\n\n");
    (void)ex->pending_bytes();
    ex->end_stream();
  } else if (starts("/drop")) {
    // Dropped unanswered: the server answers 500.
  } else if (starts("/throw")) {
    throw std::runtime_error("handler failure");
  } else if (starts("/big")) {
    ex->respond(Response::text(200, std::string(40 * 1024, 'x')));
  } else {
    // A header from the request goes back out: the server must keep CR/LF out of the head.
    Headers h = {{"X-Echo", r.target}};
    if (!r.headers.empty()) h.emplace_back(r.headers[0].first, r.headers[0].second);
    ex->respond(Response{r.method == "DELETE" ? 204 : 200, h, describe(r)});
  }
}

void init_world() {
  signal(SIGPIPE, SIG_IGN);
  g_world = new World;
  uv_timer_init(g_world->loop.get(), &g_world->later_timer);
  uv_timer_init(g_world->loop.get(), &g_world->guard);
  ServerOptions defaults, small_head, small_body;
  small_head.max_header_bytes = 256;
  small_body.max_body_bytes = 64;
  for (const ServerOptions& o : {defaults, small_head, small_body}) {
    auto s = std::make_unique<HttpServer>(g_world->loop.get(), o, handle);
    std::string err;
    if (!s->listen("127.0.0.1", 0, &err)) orch::fuzz::fail("listen: " + err);
    g_world->servers.push_back(std::move(s));
  }
}

// Runs the loop once without blocking (enough for the server to read what was just written
// on loopback, accept, answer).
void turn() {
  uv_run(g_world->loop.get(), UV_RUN_NOWAIT);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!g_world) init_world();
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  HttpServer& server = *g_world->servers[(mode & 3) == 3 ? 0 : (mode & 3)];
  const size_t step = (mode >> 2) * 4;
  std::string_view input = orch::fuzz::bytes(data + 1, size - 1);

  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(fd >= 0, "socket");
  // Each input connects from another address of 127/8: the connections the client closes
  // last sit in TIME_WAIT for a minute, and from one address they would use up the
  // ephemeral ports after ~14,000 inputs.
  static uint32_t inputs = 0;
  sockaddr_in from{};
  from.sin_family = AF_INET;
  from.sin_addr.s_addr = htonl(0x7F010001u + (inputs++ % 0xFFFF) * 2);  // 127.1.0.1, .3, ...
  FUZZ_CHECK(bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) == 0, "bind");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server.port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  if (rc != 0 && errno == EINTR) {
    // libFuzzer's timeout alarm interrupted it; the connection goes on: wait for it.
    pollfd p{fd, POLLOUT, 0};
    while (::poll(&p, 1, 5000) < 0 && errno == EINTR) {
    }
    int soerr = 0;
    socklen_t len = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
    rc = soerr == 0 ? 0 : -1;
    errno = soerr;
  }
  FUZZ_CHECK(rc == 0, std::string("connect: ") + strerror(errno));
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  turn();  // accept

  std::string answer;
  auto read_some = [&] {
    char buf[65536];
    for (;;) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n > 0) {
        answer.append(buf, static_cast<size_t>(n));
        continue;
      }
      return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);  // closed
    }
  };

  bool closed = false;
  for (size_t at = 0; at < input.size() && !closed;) {
    size_t n = step == 0 ? input.size() - at : std::min(step, input.size() - at);
    ssize_t w = send(fd, input.data() + at, n, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) break;  // the server closed first
    if (w > 0) at += static_cast<size_t>(w);
    turn();
    closed = read_some();
  }
  shutdown(fd, SHUT_WR);

  // The server answers what it has and closes; the guard bounds the wait. The poll wakes the
  // loop when the client's side has something to read (the server's own events do otherwise).
  g_world->guard_fired = false;
  uv_timer_start(
      &g_world->guard, [](uv_timer_t*) { g_world->guard_fired = true; }, 5000, 0);
  auto* poll = new uv_poll_t;
  uv_poll_init(g_world->loop.get(), poll, fd);
  uv_poll_start(poll, UV_READABLE | UV_DISCONNECT, [](uv_poll_t*, int, int) {});
  while (!closed && !g_world->guard_fired) {
    uv_run(g_world->loop.get(), UV_RUN_ONCE);
    closed = read_some();
  }
  close_and_delete(poll);
  // FUZZ_HTTP_ANSWERS=1 prints what the server answered (to look at a corpus by hand).
  static const bool show = getenv("FUZZ_HTTP_ANSWERS") != nullptr;
  if (show) fprintf(stderr, "--- answer (%zu bytes)\n%s\n", answer.size(), answer.c_str());
  FUZZ_CHECK(closed, "the server did not close the connection within 5 s of the client's EOF");
  FUZZ_CHECK(answer.empty() || answer.rfind("HTTP/1.1 ", 0) == 0,
             "the answer does not start with a status line: " + answer.substr(0, 80));

  // Close with a RST (no TIME_WAIT left behind per input), then let the server forget it.
  linger lg{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
  while (!g_world->guard_fired) {
    size_t open = 0;
    for (auto& s : g_world->servers) open += s->connections();
    if (open == 0) break;
    uv_run(g_world->loop.get(), UV_RUN_ONCE);
  }
  uv_timer_stop(&g_world->guard);
  size_t open = 0;
  for (auto& s : g_world->servers) open += s->connections();
  FUZZ_CHECK(open == 0, "a connection stayed open after the client closed");
  FUZZ_CHECK(g_world->later.empty(), "a deferred exchange was never answered");
  return 0;
}
