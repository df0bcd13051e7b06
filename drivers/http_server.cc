#include "drivers/http_server.h"

#include <http_parser.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <exception>
#include <nlohmann/json.hpp>
#include <unordered_set>
#include <utility>

#include "drivers/loop.h"

namespace orch::http {

namespace {

// Bytes read ahead (pipelined requests) while the handler works on the previous request;
// beyond this, reading pauses until it answers.
constexpr size_t kMaxReadAhead = 64 * 1024;
// Answers queued for a client that does not read them; beyond this, the next pipelined request
// waits until the client catches up.
constexpr size_t kMaxQueuedOutput = 1024 * 1024;
// Closing a socket that still has unread input sends a RST, and a RST can destroy the last
// answer before the client reads it (a 413 while the client is still sending its body). So a
// connection we close is shut down on our side and drained until the client closes too, for
// at most this long (nginx's "lingering close").
constexpr int64_t kLingerMs = 2000;
// Larger response bodies are written from their own string instead of being copied after the
// head (smaller ones are, so that pipelined answers go out in one write).
constexpr size_t kCopiedBodyMax = 16 * 1024;
constexpr int kBacklog = 511;
constexpr size_t kReadBufferSize = 64 * 1024;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX sequences decoded (malformed ones kept as they are); '+' becomes a space in query strings
// only, not in paths.
std::string percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); i++) {
    int hi, lo;
    if (s[i] == '%' && i + 2 < s.size() && (hi = hex_value(s[i + 1])) >= 0 &&
        (lo = hex_value(s[i + 2])) >= 0) {
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (s[i] == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

// The server sets these itself; copies from the handler would contradict its framing.
bool reserved_header(std::string_view name) {
  return iequals(name, "content-length") || iequals(name, "date") || iequals(name, "connection") ||
         iequals(name, "transfer-encoding");
}

// A name or value with CR or LF would let a caller's data split the response.
bool header_safe(std::string_view s) {
  return s.find_first_of("\r\n") == std::string_view::npos;
}

std::string peer_name(const uv_tcp_t* tcp) {
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  char ip[64] = "";
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    uv_ip6_name(a, ip, sizeof ip);
    return "[" + std::string(ip) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
  uv_ip4_name(a, ip, sizeof ip);
  return std::string(ip) + ":" + std::to_string(ntohs(a->sin_port));
}

class Server;
class ExchangeImpl;

enum class Phase {
  kIdle,       // before a request: the idle timer runs
  kHead,       // request line and headers arriving: the header timer runs
  kBody,       // body arriving: the body timer runs
  kHandling,   // a complete request is with the handler; no timer
  kStreaming,  // a streamed answer is being written; no timer
  kDraining,   // the last answer is queued; our side shuts down once it is written
  kLingering,  // shut down; dropping what the client still sends until it closes
  kClosed,     // handles closing or closed
};

// One accepted connection. It owns itself (`self`) until both of its handles are closed, and
// every Exchange made on it holds a shared_ptr too, so that an Exchange kept by the handler
// after the connection (or the whole server) is gone can still be asked, and answers "closed".
// `server` is cleared when the server is destroyed; nothing touches it once phase is kClosed.
struct Conn {
  explicit Conn(Server* s) : server(s) {
    http_parser_init(&parser, HTTP_REQUEST);
    parser.data = this;
  }

  Server* server;
  std::shared_ptr<Conn> self;
  uv_tcp_t tcp{};
  uv_timer_t timer{};
  uv_shutdown_t shutdown_req{};
  int open_handles = 2;
  Phase phase = Phase::kIdle;
  bool reading = false;
  bool peer_eof = false;        // the client shut down its side (or closed)
  bool counted = false;         // counts towards max_connections
  bool output_blocked = false;  // parsing waits for the client to read queued answers
  bool in_process = false;
  std::string remote;

  http_parser parser{};
  std::string inbuf;  // read, not parsed yet: inbuf[inpos..]
  size_t inpos = 0;
  size_t head_bytes = 0;  // of the request being parsed (request line and headers)
  Request req;            // being parsed
  bool in_value = false;  // the last header callback was a value
  bool keep_alive = false;
  // Set by a parser callback that refuses the request (the parser then reports HPE_CB_*).
  int refuse_status = 0;
  std::string refuse_code, refuse_message;

  std::string outbuf;  // answers not handed to libuv yet (coalesced while parsing)
  // The exchange unanswered or streaming (or whose stream ended), and its on_close callbacks;
  // those outlive the Exchange object if the handler drops it.
  ExchangeImpl* current = nullptr;
  std::vector<std::function<void()>> close_callbacks;
  bool finalized = false;  // both handles closed, close_callbacks called

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp); }
  bool closing() const { return phase == Phase::kClosed; }
  // Still able to answer (not draining, lingering or closed).
  bool open() const { return phase < Phase::kDraining; }
  bool parsing() const {
    return phase == Phase::kIdle || phase == Phase::kHead || phase == Phase::kBody;
  }

  void start(int64_t first_request_ms);
  void arm(int64_t ms);
  void process();
  void dispatch();
  void parse_error(http_errno err);
  void send_error(int status, std::string_view code, std::string_view message);
  void append_head(int status, const Headers& headers, const size_t* content_length,
                   const char* connection);
  void respond(const ExchangeImpl& ex, Response r);
  void begin_stream(int status, const Headers& headers);
  bool stream_write(std::string_view data);
  void end_stream();
  void flush(std::string body = {});
  void start_draining();
  void update_reading();
  void close_now();
  void finalize();
  size_t queued() { return outbuf.size() + uv_stream_get_write_queue_size(stream()); }

  int refuse(int status, const char* code, std::string message) {
    refuse_status = status;
    refuse_code = code;
    refuse_message = std::move(message);
    return -1;
  }

  // http_parser callbacks.
  static Conn* of(http_parser* p) { return static_cast<Conn*>(p->data); }
  static int on_message_begin(http_parser* p);
  static int on_url(http_parser* p, const char* at, size_t n);
  static int on_header_field(http_parser* p, const char* at, size_t n);
  static int on_header_value(http_parser* p, const char* at, size_t n);
  static int on_headers_complete(http_parser* p);
  static int on_body(http_parser* p, const char* at, size_t n);
  static int on_message_complete(http_parser* p);
};

const http_parser_settings kParserSettings = [] {
  http_parser_settings s;
  http_parser_settings_init(&s);
  s.on_message_begin = Conn::on_message_begin;
  s.on_url = Conn::on_url;
  s.on_header_field = Conn::on_header_field;
  s.on_header_value = Conn::on_header_value;
  s.on_headers_complete = Conn::on_headers_complete;
  s.on_body = Conn::on_body;
  s.on_message_complete = Conn::on_message_complete;
  return s;
}();

class ExchangeImpl final : public Exchange {
 public:
  ExchangeImpl(std::shared_ptr<Conn> conn, Request req, bool keep_alive, bool head)
      : conn_(std::move(conn)), req_(std::move(req)), keep_alive_(keep_alive), head_(head) {}
  ~ExchangeImpl() override;

  const Request& request() const override { return req_; }
  void respond(Response r) override;
  void begin_stream(int status, Headers headers) override;
  bool write(std::string_view data) override;
  void end_stream() override;
  bool closed() const override { return !conn_->open(); }
  void on_close(std::function<void()> cb) override;
  size_t pending_bytes() const override { return conn_->closing() ? 0 : conn_->queued(); }

  bool keep_alive() const { return keep_alive_; }
  bool head() const { return head_; }

 private:
  enum class State { kPending, kStreaming, kDone };
  std::shared_ptr<Conn> conn_;
  Request req_;
  bool keep_alive_, head_;
  State state_ = State::kPending;
};

class Server {
 public:
  Server(uv_loop_t* loop, ServerOptions opts, Handler handler)
      : loop_(loop), opts(opts), handler(std::make_shared<const Handler>(std::move(handler))) {}
  ~Server();
  bool listen(const std::string& host, int port, std::string* err);
  void stop_accepting();
  void close_all(std::function<void()> done);
  void forget(Conn* c);
  std::string_view date();

  uv_loop_t* loop_;
  ServerOptions opts;
  // Shared so that a handler that destroys the server is not destroyed while it runs.
  std::shared_ptr<const Handler> handler;
  ServerStats stats;
  int port = 0;
  std::unordered_set<Conn*> conns;
  std::array<char, kReadBufferSize> read_buf;

 private:
  void accept_one();
  void notify_if_all_closed();

  UvHandle<uv_tcp_t> listener_;
  size_t counted_ = 0;
  std::vector<std::function<void()>> all_closed_;
  time_t date_second_ = -1;
  std::string date_;
};

// --- Conn: reading and parsing ------------------------------------------------------------------

void Conn::start(int64_t first_request_ms) {
  arm(first_request_ms);
  update_reading();
}

void Conn::arm(int64_t ms) {
  if (ms <= 0) {
    uv_timer_stop(&timer);
    return;
  }
  uv_timer_start(
      &timer,
      [](uv_timer_t* t) {
        auto* c = static_cast<Conn*>(t->data);
        switch (c->phase) {
          case Phase::kHead:
            c->server->stats.timeouts++;
            c->send_error(408, "timeout", "request headers not received in time");
            break;
          case Phase::kBody:
            c->server->stats.timeouts++;
            c->send_error(408, "timeout", "request body not received in time");
            break;
          case Phase::kIdle:
          case Phase::kDraining:
          case Phase::kLingering:
            c->close_now();
            break;
          default:
            break;
        }
      },
      static_cast<uint64_t>(ms), 0);
}

void Conn::update_reading() {
  if (closing() || peer_eof) return;
  bool want = inbuf.size() - inpos < kMaxReadAhead;
  if (want && !reading) {
    int rc = uv_read_start(
        stream(),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          auto& b = static_cast<Conn*>(h->data)->server->read_buf;
          *buf = uv_buf_init(b.data(), b.size());
        },
        [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
          auto* c = static_cast<Conn*>(s->data);
          if (nread > 0) {
            // After the answer that ends the connection, input is dropped unread.
            if (!c->parsing() && c->phase != Phase::kHandling) return;
            c->inbuf.append(buf->base, static_cast<size_t>(nread));
            if (c->phase == Phase::kHandling)
              c->update_reading();
            else
              c->process();
          } else if (nread == UV_EOF) {
            c->peer_eof = true;
            c->reading = false;  // libuv stops reading at EOF
            if (c->parsing()) {
              c->process();  // answers what is buffered, then closes
            } else if (c->phase == Phase::kStreaming || c->phase == Phase::kLingering) {
              c->close_now();
            }
            // kHandling: a client may half-close after its request; it is answered first.
            // kDraining: the shutdown callback closes.
          } else if (nread < 0) {
            c->close_now();
          }
        });
    if (rc != 0) {
      close_now();
      return;
    }
    reading = true;
  } else if (!want && reading) {
    uv_read_stop(stream());
    reading = false;
  }
}

// Parses buffered input while no request is with the handler. Reentrant calls (the handler
// answering from inside dispatch()) return at once: the outer loop carries on.
void Conn::process() {
  if (in_process) return;
  in_process = true;
  while (parsing() && inpos < inbuf.size()) {
    if (phase == Phase::kIdle && queued() > kMaxQueuedOutput) {
      flush();  // often writes it all at once
      if (closing()) break;
      if (queued() > kMaxQueuedOutput) {
        output_blocked = true;  // the write callback carries on
        break;
      }
    }
    const size_t max_head = server->opts.max_header_bytes;
    const bool in_head = phase == Phase::kIdle || phase == Phase::kHead;
    size_t len = inbuf.size() - inpos;
    // Feeding the parser no more than the header limit makes the count exact: the parser
    // pauses in on_headers_complete, at the last byte of the head (which it consumes later).
    if (in_head) len = std::min(len, max_head - head_bytes);
    size_t n = http_parser_execute(&parser, &kParserSettings, inbuf.data() + inpos, len);
    inpos += n;
    if (in_head) head_bytes += n;
    http_errno err = HTTP_PARSER_ERRNO(&parser);
    if (err == HPE_PAUSED) {
      http_parser_pause(&parser, 0);
      if (phase == Phase::kHandling) dispatch();  // paused by on_message_complete
    } else if (err != HPE_OK) {
      parse_error(err);
    } else if ((phase == Phase::kIdle || phase == Phase::kHead) && head_bytes >= max_head) {
      server->stats.bad_requests++;
      send_error(431, "headers_too_large",
                 "request headers exceed " + std::to_string(max_head) + " bytes");
    }
  }
  if (inpos > 0) {
    inbuf.erase(0, inpos);
    inpos = 0;
  }
  // The client has finished sending: once what it sent is answered, close.
  if (peer_eof && parsing() && inbuf.empty()) start_draining();
  flush();
  update_reading();
  in_process = false;
}

void Conn::dispatch() {
  server->stats.requests++;
  std::shared_ptr<const Handler> handler = server->handler;
  req.remote = remote;
  auto ex =
      std::make_shared<ExchangeImpl>(self, std::move(req), keep_alive, parser.method == HTTP_HEAD);
  req = Request{};
  current = ex.get();
  try {
    (*handler)(ex);
  } catch (const std::exception&) {
    // The message may carry internals; the client gets a generic one.
    ex->respond(error_response(500, "internal", "internal server error"));
  }
  // If the handler kept no reference, ~ExchangeImpl answers 500 now.
}

void Conn::parse_error(http_errno err) {
  server->stats.bad_requests++;
  if (refuse_status != 0) {
    send_error(refuse_status, refuse_code, refuse_message);
  } else if (err == HPE_HEADER_OVERFLOW) {
    send_error(431, "headers_too_large", http_errno_description(err));
  } else {
    send_error(400, "bad_request",
               std::string("malformed request: ") + http_errno_description(err) + " (" +
                   http_errno_name(err) + ")");
  }
}

int Conn::on_message_begin(http_parser* p) {
  Conn* c = of(p);
  c->phase = Phase::kHead;
  c->arm(c->server->opts.header_timeout_ms);
  c->req = Request{};
  c->in_value = false;
  return 0;
}

int Conn::on_url(http_parser* p, const char* at, size_t n) {
  of(p)->req.target.append(at, n);
  return 0;
}

int Conn::on_header_field(http_parser* p, const char* at, size_t n) {
  Conn* c = of(p);
  auto& h = c->req.headers;
  // A name may arrive in pieces (split reads); a new one starts after a value.
  if (c->in_value || h.empty()) h.emplace_back();
  c->in_value = false;
  for (size_t i = 0; i < n; i++)
    h.back().first += static_cast<char>(std::tolower(static_cast<unsigned char>(at[i])));
  return 0;
}

int Conn::on_header_value(http_parser* p, const char* at, size_t n) {
  Conn* c = of(p);
  c->in_value = true;
  if (c->req.headers.empty()) c->req.headers.emplace_back();  // (a value always follows a name)
  c->req.headers.back().second.append(at, n);
  return 0;
}

int Conn::on_headers_complete(http_parser* p) {
  Conn* c = of(p);
  const ServerOptions& o = c->server->opts;
  Request& r = c->req;
  c->phase = Phase::kBody;
  c->arm(o.body_timeout_ms);
  r.method = http_method_str(static_cast<http_method>(p->method));
  r.http_minor = p->http_minor;
  for (auto& h : r.headers) h.second = std::string(trim(h.second));
  if (p->http_major != 1) return c->refuse(505, "http_version", "only HTTP/1.x is supported");

  http_parser_url u;
  http_parser_url_init(&u);
  if (http_parser_parse_url(r.target.data(), r.target.size(), p->method == HTTP_CONNECT, &u) != 0)
    return c->refuse(400, "bad_request", "invalid request target");
  auto field = [&](http_parser_url_fields f) {
    if (!(u.field_set & (1 << f))) return std::string_view();
    return std::string_view(r.target).substr(u.field_data[f].off, u.field_data[f].len);
  };
  r.path = percent_decode(field(UF_PATH), false);
  if (r.path.empty()) r.path = "/";
  r.query = std::string(field(UF_QUERY));

  // After an Upgrade or CONNECT, the parser stops reading HTTP: answer, then close.
  c->keep_alive = http_should_keep_alive(p) && !p->upgrade;
  const bool has_length = p->flags & F_CONTENTLENGTH;
  if (has_length && p->content_length > o.max_body_bytes)
    return c->refuse(413, "body_too_large",
                     "request body exceeds " + std::to_string(o.max_body_bytes) + " bytes");
  const bool has_body = (p->flags & F_CHUNKED) || (has_length && p->content_length > 0);
  const std::string* expect = r.header("expect");
  if (has_body && p->http_minor >= 1 && expect && iequals(*expect, "100-continue"))
    c->outbuf += "HTTP/1.1 100 Continue\r\n\r\n";  // sent when this read has been parsed
  http_parser_pause(p, 1);
  return 0;
}

int Conn::on_body(http_parser* p, const char* at, size_t n) {
  Conn* c = of(p);
  size_t max = c->server->opts.max_body_bytes;
  if (c->req.body.size() + n > max)
    return c->refuse(413, "body_too_large",
                     "request body exceeds " + std::to_string(max) + " bytes");
  c->req.body.append(at, n);
  return 0;
}

int Conn::on_message_complete(http_parser* p) {
  Conn* c = of(p);
  c->phase = Phase::kHandling;
  uv_timer_stop(&c->timer);
  c->head_bytes = 0;
  http_parser_pause(p, 1);  // the next request waits until this one is answered
  return 0;
}

// --- Conn: answering ----------------------------------------------------------------------------

void Conn::append_head(int status, const Headers& headers, const size_t* content_length,
                       const char* connection) {
  std::string& o = outbuf;
  o += "HTTP/1.1 ";
  o += std::to_string(status);
  o += ' ';
  o += status_reason(status);
  o += "\r\n";
  for (const auto& [name, value] : headers) {
    if (name.empty() || reserved_header(name) || !header_safe(name) || !header_safe(value))
      continue;
    o += name;
    o += ": ";
    o += value;
    o += "\r\n";
  }
  if (content_length) {
    o += "Content-Length: ";
    o += std::to_string(*content_length);
    o += "\r\n";
  }
  o += "Date: ";
  o += server->date();
  o += "\r\n";
  if (connection) {
    o += "Connection: ";
    o += connection;
    o += "\r\n";
  }
  o += "\r\n";
}

void Conn::respond(const ExchangeImpl& ex, Response r) {
  if (phase != Phase::kHandling) return;
  const bool keep = ex.keep_alive();
  const char* connection = !keep ? "close" : ex.request().http_minor == 0 ? "keep-alive" : nullptr;
  // No body (nor length) for 1xx, 204 and 304; HEAD gets the length of the body it would get.
  const bool bodyless = r.status < 200 || r.status == 204 || r.status == 304;
  const size_t length = r.body.size();
  append_head(r.status, r.headers, bodyless ? nullptr : &length, connection);
  if (!bodyless && !ex.head()) {
    if (r.body.size() < kCopiedBodyMax)
      outbuf += r.body;
    else
      flush(std::move(r.body));
  }
  if (!keep) {
    start_draining();
    return;
  }
  phase = Phase::kIdle;
  arm(server->opts.idle_timeout_ms);
  process();  // the next pipelined request, if buffered; flushes
}

void Conn::send_error(int status, std::string_view code, std::string_view message) {
  if (!open()) return;
  Response r = error_response(status, code, message);
  size_t length = r.body.size();
  append_head(status, r.headers, &length, "close");
  outbuf += r.body;
  start_draining();
}

void Conn::begin_stream(int status, const Headers& headers) {
  if (phase != Phase::kHandling) return;
  phase = Phase::kStreaming;
  // What the client sends from now on is dropped: the connection closes after the stream.
  inbuf.clear();
  inpos = 0;
  append_head(status, headers, nullptr, nullptr);
  flush();
  update_reading();  // reading on, to see the client leave
}

bool Conn::stream_write(std::string_view data) {
  if (phase != Phase::kStreaming) return false;
  outbuf.append(data);
  flush();
  return !closing();
}

void Conn::end_stream() {
  if (phase == Phase::kStreaming) start_draining();
}

// An unfinished write; it owns its bytes until libuv calls back. `body` is a large response
// body moved in rather than copied; `head` everything before it.
struct WriteReq {
  uv_write_t req;
  std::string head, body;
};

// Hands outbuf, then `body`, to the socket: uv_try_write first (usually all of it), uv_write for
// the rest.
void Conn::flush(std::string body) {
  if (closing() || (outbuf.empty() && body.empty())) return;
  uv_buf_t bufs[2] = {uv_buf_init(outbuf.data(), static_cast<unsigned>(outbuf.size())),
                      uv_buf_init(body.data(), static_cast<unsigned>(body.size()))};
  size_t done = 0;
  if (uv_stream_get_write_queue_size(stream()) == 0) {
    int n = uv_try_write(stream(), bufs, 2);
    if (n < 0 && n != UV_EAGAIN) {
      close_now();
      return;
    }
    done = n > 0 ? static_cast<size_t>(n) : 0;
  }
  if (done == outbuf.size() + body.size()) {
    outbuf.clear();  // keeps its capacity for the next answer
    return;
  }
  auto* w = new WriteReq;
  w->req.data = w;
  size_t head_done = std::min(done, outbuf.size());
  w->head = std::move(outbuf);
  outbuf.clear();
  w->body = std::move(body);
  bufs[0] =
      uv_buf_init(w->head.data() + head_done, static_cast<unsigned>(w->head.size() - head_done));
  size_t body_done = done - head_done;
  bufs[1] =
      uv_buf_init(w->body.data() + body_done, static_cast<unsigned>(w->body.size() - body_done));
  int rc = uv_write(&w->req, stream(), bufs, 2, [](uv_write_t* req, int status) {
    auto* c = static_cast<Conn*>(req->handle->data);
    delete static_cast<WriteReq*>(req->data);
    if (c->closing()) return;  // UV_ECANCELED after close_now()
    if (status < 0) {
      c->close_now();
    } else if (c->output_blocked && c->queued() <= kMaxQueuedOutput) {
      c->output_blocked = false;
      c->process();
    }
  });
  if (rc != 0) {
    delete w;
    close_now();
  }
}

void Conn::start_draining() {
  phase = Phase::kDraining;
  inbuf.clear();
  inpos = 0;
  // Bounds the wait for a client that does not read its last answer.
  arm(server->opts.idle_timeout_ms);
  flush();
  if (closing()) return;
  int rc = uv_shutdown(&shutdown_req, stream(), [](uv_shutdown_t* req, int status) {
    auto* c = static_cast<Conn*>(req->handle->data);
    if (c->closing()) return;
    if (status < 0 || c->peer_eof) {
      c->close_now();
      return;
    }
    c->phase = Phase::kLingering;
    c->arm(kLingerMs);
    c->update_reading();
  });
  if (rc != 0) close_now();
}

void Conn::close_now() {
  if (closing()) return;
  phase = Phase::kClosed;
  inbuf = std::string();
  outbuf = std::string();
  auto closed = [](uv_handle_t* h) {
    auto* c = static_cast<Conn*>(h->data);
    if (--c->open_handles == 0) c->finalize();
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp), closed);
}

// Both handles are closed: tell the exchange in progress, then the server. Either callback may
// destroy the server, so `server` is read again after the first.
void Conn::finalize() {
  std::shared_ptr<Conn> keep = std::move(self);  // frees this at the end, unless exchanges hold it
  current = nullptr;
  finalized = true;
  for (auto& cb : std::exchange(close_callbacks, {})) cb();
  if (server) server->forget(this);
}

// --- ExchangeImpl -------------------------------------------------------------------------------

ExchangeImpl::~ExchangeImpl() {
  if (conn_->current != this) return;
  // Dropped by the handler without an answer (or with the stream open). Callbacks given to
  // on_close stay with the connection.
  if (state_ == State::kPending)
    respond(error_response(500, "no_response", "the handler did not answer"));
  else if (state_ == State::kStreaming)
    end_stream();
  if (conn_->current == this) conn_->current = nullptr;
}

void ExchangeImpl::respond(Response r) {
  if (state_ != State::kPending) return;
  state_ = State::kDone;
  // Client gone: nothing to send, and on_close still fires for this exchange.
  if (conn_->closing()) return;
  conn_->current = nullptr;
  conn_->close_callbacks.clear();
  conn_->respond(*this, std::move(r));
}

void ExchangeImpl::begin_stream(int status, Headers headers) {
  if (state_ != State::kPending) return;
  state_ = State::kStreaming;
  conn_->begin_stream(status, headers);
}

bool ExchangeImpl::write(std::string_view data) {
  if (state_ != State::kStreaming || conn_->phase != Phase::kStreaming) return false;
  if (head_) return true;  // HEAD: headers only
  return conn_->stream_write(data);
}

void ExchangeImpl::end_stream() {
  if (state_ != State::kStreaming) return;
  state_ = State::kDone;  // on_close fires when the connection has closed
  conn_->end_stream();
}

void ExchangeImpl::on_close(std::function<void()> cb) {
  if (conn_->finalized) {
    cb();
  } else if (conn_->current == this) {
    conn_->close_callbacks.push_back(std::move(cb));
  }
  // else: answered with respond(); the exchange is over and nothing more happens to it.
}

// --- Server -------------------------------------------------------------------------------------

Server::~Server() {
  stop_accepting();
  std::vector<Conn*> all(conns.begin(), conns.end());
  for (Conn* c : all) {
    c->close_now();
    c->server = nullptr;
  }
}

bool Server::listen(const std::string& host, int port_in, std::string* err) {
  auto fail = [&](std::string msg) {
    if (err) *err = std::move(msg);
    return false;
  };
  if (listener_) return fail("already listening");
  if (port_in < 0 || port_in > 65535) return fail("invalid port " + std::to_string(port_in));
  sockaddr_storage addr{};
  if (uv_ip4_addr(host.c_str(), port_in, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(host.c_str(), port_in, reinterpret_cast<sockaddr_in6*>(&addr)) != 0)
    return fail("not an IPv4 or IPv6 address: " + host);
  UvHandle<uv_tcp_t> l = make_uv_handle<uv_tcp_t>();
  uv_tcp_init(loop_, l.get());
  l->data = this;
  int rc = uv_tcp_bind(l.get(), reinterpret_cast<sockaddr*>(&addr), 0);
  if (rc == 0)
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(l.get()), kBacklog,
                   [](uv_stream_t* s, int status) {
                     auto* self = static_cast<Server*>(s->data);
                     if (self && status == 0) self->accept_one();
                   });
  if (rc != 0) {
    return fail("listen on " + host + " port " + std::to_string(port_in) + ": " + uv_err_name(rc) +
                ": " + uv_strerror(rc));
  }
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(l.get(), reinterpret_cast<sockaddr*>(&bound), &len);
  port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  listener_ = std::move(l);
  return true;
}

void Server::accept_one() {
  auto c = std::make_shared<Conn>(this);
  uv_tcp_init(loop_, &c->tcp);
  uv_timer_init(loop_, &c->timer);
  c->tcp.data = c->timer.data = c.get();
  c->self = c;
  conns.insert(c.get());
  if (uv_accept(reinterpret_cast<uv_stream_t*>(listener_.get()), c->stream()) != 0) {
    c->close_now();
    return;
  }
  stats.connections_accepted++;
  uv_tcp_nodelay(&c->tcp, 1);
  c->remote = peer_name(&c->tcp);
  if (counted_ >= opts.max_connections) {
    c->send_error(503, "overloaded", "too many connections");
    return;
  }
  c->counted = true;
  counted_++;
  // A new connection that sends nothing is bounded by the header timeout too (slowloris).
  int64_t first = opts.idle_timeout_ms;
  if (opts.header_timeout_ms > 0 && (first <= 0 || opts.header_timeout_ms < first))
    first = opts.header_timeout_ms;
  c->start(first);
}

void Server::stop_accepting() {
  listener_.reset();
}

void Server::close_all(std::function<void()> done) {
  if (done) all_closed_.push_back(std::move(done));
  std::vector<Conn*> all(conns.begin(), conns.end());
  for (Conn* c : all) c->close_now();
  notify_if_all_closed();  // at once when there were none
}

void Server::forget(Conn* c) {
  conns.erase(c);
  if (c->counted) counted_--;
  notify_if_all_closed();
}

// The callbacks may destroy the server: nothing touches it after them.
void Server::notify_if_all_closed() {
  if (!conns.empty() || all_closed_.empty()) return;
  auto done = std::move(all_closed_);
  all_closed_.clear();
  for (auto& cb : done) cb();
}

// The Date header, formatted once per second. Names spelled out: strftime's follow the locale.
std::string_view Server::date() {
  time_t now = time(nullptr);
  if (now != date_second_) {
    static const char* const kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    tm t{};
    gmtime_r(&now, &t);
    char buf[40];
    snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[t.tm_wday], t.tm_mday,
             kMonths[t.tm_mon], t.tm_year + 1900, t.tm_hour, t.tm_min, t.tm_sec);
    date_ = buf;
    date_second_ = now;
  }
  return date_;
}

}  // namespace

// --- public API ---------------------------------------------------------------------------------

const std::string* Request::header(std::string_view lower_name) const {
  for (const auto& [name, value] : headers)
    if (name == lower_name) return &value;
  return nullptr;
}

std::string Request::param(std::string_view name, bool* found) const {
  std::string_view q = query;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    size_t eq = part.find('=');
    if (percent_decode(part.substr(0, eq), true) != name) continue;
    if (found) *found = true;
    return eq == std::string_view::npos ? std::string() : percent_decode(part.substr(eq + 1), true);
  }
  if (found) *found = false;
  return "";
}

Response Response::json(int status, std::string body) {
  return Response{status, {{"Content-Type", "application/json"}}, std::move(body)};
}

Response Response::text(int status, std::string body, std::string content_type) {
  return Response{status, {{"Content-Type", std::move(content_type)}}, std::move(body)};
}

Response error_response(int status, std::string_view code, std::string_view message) {
  nlohmann::json j = {{"error", {{"code", std::string(code)}, {"message", std::string(message)}}}};
  // Invalid UTF-8 (from a request, say) is replaced rather than thrown on.
  return Response::json(status, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

const char* status_reason(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 411:
      return "Length Required";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 416:
      return "Range Not Satisfiable";
    case 417:
      return "Expectation Failed";
    case 422:
      return "Unprocessable Content";
    case 425:
      return "Too Early";
    case 426:
      return "Upgrade Required";
    case 428:
      return "Precondition Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

struct HttpServer::Impl : Server {
  using Server::Server;
};

HttpServer::HttpServer(uv_loop_t* loop, ServerOptions opts, Handler handler)
    : impl_(std::make_unique<Impl>(loop, opts, std::move(handler))) {}

HttpServer::~HttpServer() = default;

bool HttpServer::listen(const std::string& host, int port, std::string* err) {
  return impl_->listen(host, port, err);
}

int HttpServer::port() const {
  return impl_->port;
}

void HttpServer::stop_accepting() {
  impl_->stop_accepting();
}

void HttpServer::close_all(std::function<void()> done) {
  impl_->close_all(std::move(done));
}

size_t HttpServer::connections() const {
  return impl_->conns.size();
}

const ServerStats& HttpServer::stats() const {
  return impl_->stats;
}

}  // namespace orch::http
