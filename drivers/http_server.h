// An HTTP/1.1 server on the libuv loop, for orchrun serve (webhooks, the JSON API, server-sent
// events, /metrics). Requests are parsed by http-parser (Debian's libhttp-parser); this file
// owns sockets, limits, timeouts and ordering.
//
// - Keep-alive by default (HTTP/1.1), closed after "Connection: close" or an HTTP/1.0 request
//   without keep-alive.
// - Pipelining: requests on one connection are answered in order. The next request is handed
//   to the handler only once the previous one has been answered (bytes that arrive meanwhile
//   are buffered, within the header/body limits).
// - Chunked request bodies are decoded; the handler always sees the whole body.
// - Limits: header bytes (431), body bytes (413, checked against Content-Length before reading
//   and while reading chunks), a header read timeout and a body read timeout (408), an idle
//   timeout between requests (silent close). "Expect: 100-continue" is answered.
// - Malformed requests get 400 with a JSON error body, then the connection is closed.
// - Error bodies are JSON: {"error": {"code": "...", "message": "..."}}.
// - A connection the server closes (errors, "Connection: close", the end of a stream) is shut
//   down on our side once the answer is written, then drained until the client closes (at most
//   2 s), so that unread input does not turn the close into a RST that loses the answer.
//
// Everything runs on the loop's thread: construct, call and destroy the server there, and call
// Exchange methods there too. The process must ignore SIGPIPE (orchrun's main and the tests do).
#pragma once
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace orch::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent: "/api/runs?status=failed"
  std::string path;    // percent-decoded path, without the query
  std::string query;   // raw query string, without '?'
  Headers headers;     // names lower-cased, values as sent (trimmed)
  std::string body;    // decoded (chunked) body
  std::string remote;  // peer address "127.0.0.1:54321" or "[::1]:54321"
  int http_minor = 1;

  // The first header of that (lower-case) name, or nullptr.
  const std::string* header(std::string_view lower_name) const;
  // The first value of a query parameter, percent-decoded ('+' is a space); *found set if given.
  std::string param(std::string_view name, bool* found = nullptr) const;
};

struct Response {
  int status = 200;
  Headers headers;  // Content-Length, Date, Connection are added by the server
  std::string body;
  static Response json(int status, std::string body);  // Content-Type: application/json
  static Response text(int status, std::string body,
                       std::string content_type = "text/plain; charset=utf-8");
};

// {"error": {"code": code, "message": message}} with that status.
Response error_response(int status, std::string_view code, std::string_view message);
const char* status_reason(int status);

// One request being answered. The handler may answer at once or later (e.g. after a commit);
// answering after the client has gone is a no-op. Exactly one of respond() or begin_stream()
// must be called, once; an Exchange dropped unanswered answers 500 (and one dropped while
// streaming ends the stream). An Exchange may outlive its connection and the server.
class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual const Request& request() const = 0;
  virtual void respond(Response r) = 0;
  // A streamed answer (server-sent events): the status line and headers now (no
  // Content-Length; the connection closes when the stream ends), then write() as data comes.
  virtual void begin_stream(int status, Headers headers) = 0;
  // False when the connection has gone (the write is dropped).
  virtual bool write(std::string_view data) = 0;
  virtual void end_stream() = 0;
  virtual bool closed() const = 0;
  // Called once when the connection closes (client gone, server stopping, stream ended: once
  // the client has closed too, or 2 s after end_stream()), from the loop, never from inside
  // another Exchange call; at once if it has already closed. Only while the exchange is
  // unanswered or streaming: respond() drops the callbacks, as nothing more happens to an
  // answered exchange. A client that half-closes (shutdown(SHUT_WR)) after its request is still
  // answered; one that does so during a stream has gone.
  virtual void on_close(std::function<void()> cb) = 0;
  // Bytes queued for the client and not yet written (a slow SSE client).
  virtual size_t pending_bytes() const = 0;
};

using Handler = std::function<void(std::shared_ptr<Exchange>)>;

// A timeout of 0 (or less) disables that timer. A new connection waits for its first byte at
// most the smaller of the header and idle timeouts.
struct ServerOptions {
  size_t max_header_bytes = 64 * 1024;
  size_t max_body_bytes = 1024 * 1024;
  int64_t header_timeout_ms = 10000;  // from the first byte of a request to its last header
  int64_t body_timeout_ms = 30000;    // from the end of the headers to the end of the body
  int64_t idle_timeout_ms = 60000;    // keep-alive connection with no request in progress
  size_t max_connections = 4096;      // beyond: accepted, answered 503, closed
};

// bad_requests: refused as malformed or over a limit (400, 413, 431, 505); timeouts: header and
// body timeouts (408). Idle connections closed silently are not counted.
struct ServerStats {
  uint64_t connections_accepted = 0, requests = 0, bad_requests = 0, timeouts = 0;
};

class HttpServer {
 public:
  HttpServer(uv_loop_t* loop, ServerOptions opts, Handler handler);
  // Closes the listener and every connection at once. Their memory is freed, and on_close
  // callbacks called, when the loop runs next: the owner runs it (e.g. Loop::close()). close_all
  // callbacks still pending are dropped. Nothing touches the HttpServer after this.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // host: an IPv4 or IPv6 literal; port 0 picks a free port (see port()). False with *err.
  bool listen(const std::string& host, int port, std::string* err);
  int port() const;
  // Stops accepting new connections; connections already open carry on.
  void stop_accepting();
  // Closes every connection (streams end, requests in progress are dropped). `done` is called
  // once all their handles are closed (at once when there are none).
  void close_all(std::function<void()> done = nullptr);
  size_t connections() const;  // accepted and not fully closed yet
  const ServerStats& stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace orch::http
