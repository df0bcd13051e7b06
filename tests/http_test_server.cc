#include "http_test_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include "drivers/http_server.h"

namespace orch::test {

namespace {

constexpr size_t kMaxHead = 64 * 1024;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

std::string url_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && isxdigit(static_cast<unsigned char>(s[i + 1])) &&
               isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The server's own table of reason phrases.
const char* reason_for(int status) {
  return http::status_reason(status);
}

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads from a connection into a buffer that keeps what belongs to the next request.
class Reader {
 public:
  explicit Reader(int fd) : fd_(fd) {}
  // More bytes; false on EOF or error.
  bool fill() {
    char tmp[16384];
    for (;;) {
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      buf_.append(tmp, static_cast<size_t>(n));
      return true;
    }
  }
  // A line ending in CRLF (without it); false on EOF or when too long.
  bool line(std::string* out) {
    for (;;) {
      size_t nl = buf_.find("\r\n", pos_);
      if (nl != std::string::npos) {
        out->assign(buf_, pos_, nl - pos_);
        pos_ = nl + 2;
        return true;
      }
      if (buf_.size() - pos_ > kMaxHead || !fill()) return false;
    }
  }
  bool bytes(size_t n, std::string* out) {
    while (buf_.size() - pos_ < n)
      if (!fill()) return false;
    out->append(buf_, pos_, n);
    pos_ += n;
    return true;
  }
  // Drops what was consumed (keeps the buffer small across keep-alive requests).
  void compact() {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  bool empty() const { return pos_ == buf_.size(); }

 private:
  int fd_;
  std::string buf_;
  size_t pos_ = 0;
};

enum class ReadResult { Ok, Closed, Bad };

ReadResult read_request(Reader& in, int fd, HttpTestRequest* r) {
  std::string line;
  // Tolerate blank lines before a request (RFC 9112 2.2).
  do {
    if (!in.line(&line)) return ReadResult::Closed;
  } while (line.empty());
  size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string::npos || sp2 == sp1) return ReadResult::Bad;
  r->method = line.substr(0, sp1);
  r->target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  r->version = line.substr(sp2 + 1);
  if (r->version.rfind("HTTP/", 0) != 0) return ReadResult::Bad;
  size_t q = r->target.find('?');
  r->path = r->target.substr(0, q);
  r->query = q == std::string::npos ? "" : r->target.substr(q + 1);
  size_t head = 0;
  for (;;) {
    if (!in.line(&line)) return ReadResult::Bad;
    if (line.empty()) break;
    head += line.size();
    if (head > kMaxHead) return ReadResult::Bad;
    size_t colon = line.find(':');
    if (colon == std::string::npos || colon == 0) return ReadResult::Bad;
    r->headers.emplace_back(line.substr(0, colon),
                            std::string(trim(std::string_view(line).substr(colon + 1))));
  }
  if (iequals(r->header("expect"), "100-continue")) send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n");
  if (r->header("transfer-encoding").find("chunked") != std::string::npos) {
    r->chunked = true;
    for (;;) {
      if (!in.line(&line)) return ReadResult::Bad;
      size_t size = 0;
      try {
        size = std::stoul(line.substr(0, line.find(';')), nullptr, 16);
      } catch (...) {
        return ReadResult::Bad;
      }
      if (size == 0) break;
      if (!in.bytes(size, &r->body) || !in.line(&line) || !line.empty()) return ReadResult::Bad;
    }
    do {  // trailers, up to the blank line
      if (!in.line(&line)) return ReadResult::Bad;
    } while (!line.empty());
  } else if (r->has_header("content-length")) {
    size_t n = 0;
    try {
      n = std::stoul(r->header("content-length"));
    } catch (...) {
      return ReadResult::Bad;
    }
    if (!in.bytes(n, &r->body)) return ReadResult::Bad;
  }
  in.compact();
  return ReadResult::Ok;
}

}  // namespace

std::string HttpTestRequest::header(std::string_view name) const {
  for (auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return "";
}

bool HttpTestRequest::has_header(std::string_view name) const {
  for (auto& [k, v] : headers)
    if (iequals(k, name)) return true;
  return false;
}

std::string HttpTestRequest::param(std::string_view name) const {
  std::string_view q = query;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view kv = q.substr(0, amp);
    size_t eq = kv.find('=');
    if (url_decode(kv.substr(0, eq)) == name)
      return eq == std::string_view::npos ? "" : url_decode(kv.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return "";
}

HttpTestResponse HttpTestResponse::text(int status, std::string body) {
  HttpTestResponse r;
  r.status = status;
  r.body = std::move(body);
  r.headers.emplace_back("Content-Type", "text/plain");
  return r;
}

HttpTestResponse HttpTestResponse::json(int status, std::string body) {
  HttpTestResponse r;
  r.status = status;
  r.body = std::move(body);
  r.headers.emplace_back("Content-Type", "application/json");
  return r;
}

HttpTestServer::HttpTestServer(HttpTestHandler handler) : handler_(std::move(handler)) {
  if (!handler_)
    handler_ = [](const HttpTestRequest&) { return HttpTestResponse::text(200, "ok"); };
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 512) != 0) {
    ::close(listen_fd_);
    throw std::runtime_error(std::string("http test server: ") + strerror(errno));
  }
  socklen_t len = sizeof addr;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  if (::pipe2(wake_, O_CLOEXEC) != 0) throw std::runtime_error("http test server: pipe");
  acceptor_ = std::thread([this] { accept_loop(); });
}

HttpTestServer::~HttpTestServer() {
  stop();
}

std::string HttpTestServer::url(std::string_view path) const {
  return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
}

std::vector<HttpTestRequest> HttpTestServer::requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

size_t HttpTestServer::request_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<size_t>(seq_);
}

bool HttpTestServer::wait_for_requests(size_t n, int timeout_ms) const {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return static_cast<size_t>(seq_) >= n; });
}

bool HttpTestServer::wait_ms(int fd, int ms) {
  // poll() for the peer hanging up (not for data: a pipelined request may be waiting): a
  // client that gives up during the delay is seen at once, and stop() wakes us by shutdown.
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!stopping_) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    end - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) return true;
    pollfd p{fd, POLLRDHUP, 0};
    int rc = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 100)));
    if (rc > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) return false;
  }
  return false;
}

void HttpTestServer::stop() {
  if (stopping_.exchange(true)) return;
  cv_.notify_all();
  if (wake_[1] >= 0) {
    char c = 0;
    (void)!::write(wake_[1], &c, 1);
  }
  if (acceptor_.joinable()) acceptor_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Wakes connection threads blocked in recv; each closes its own fd.
    for (auto& c : conns_)
      if (!c->done) ::shutdown(c->fd, SHUT_RDWR);
  }
  for (auto& c : conns_)
    if (c->thread.joinable()) c->thread.join();
  conns_.clear();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  for (int& fd : wake_)
    if (fd >= 0) ::close(fd), fd = -1;
  listen_fd_ = -1;
}

void HttpTestServer::accept_loop() {
  int next_id = 1;
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (stopping_ || (fds[1].revents & POLLIN)) return;
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    accepted_++;
    open_++;
    std::lock_guard<std::mutex> lock(mu_);
    // Threads of connections that ended are joined here, so a long benchmark stays small.
    for (auto it = conns_.begin(); it != conns_.end();) {
      if ((*it)->done) {
        (*it)->thread.join();
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    Conn* raw = c.get();
    int id = next_id++;
    c->thread = std::thread([this, raw, id] { serve(raw, id); });
    conns_.push_back(std::move(c));
  }
}

void HttpTestServer::serve(Conn* c, int id) {
  Reader in(c->fd);
  while (!stopping_) {
    HttpTestRequest req;
    ReadResult rr = read_request(in, c->fd, &req);
    if (rr == ReadResult::Closed) break;
    if (rr == ReadResult::Bad) {
      send_all(c->fd, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      break;
    }
    req.connection = id;
    int now = ++in_flight_;
    for (int m = max_in_flight_; now > m && !max_in_flight_.compare_exchange_weak(m, now);) {
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      req.seq = ++seq_;
      if (record_) requests_.push_back(req);
    }
    cv_.notify_all();

    HttpTestResponse resp = handler_(req);
    bool alive = resp.delay_ms <= 0 || wait_ms(c->fd, resp.delay_ms);
    bool keep = alive && !resp.close && resp.raw.empty() && resp.cut_after < 0;
    if (iequals(req.header("connection"), "close")) keep = false;
    if (req.version == "HTTP/1.0" && !iequals(req.header("connection"), "keep-alive")) keep = false;
    if (alive) {
      std::string head, body;
      if (!resp.raw.empty()) {
        head = resp.raw;
      } else {
        head = "HTTP/1.1 " + std::to_string(resp.status) + " " +
               (resp.reason.empty() ? reason_for(resp.status) : resp.reason) + "\r\n";
        bool has_length = false;
        for (auto& [k, v] : resp.headers) {
          has_length = has_length || iequals(k, "content-length");
          head += k + ": " + v + "\r\n";
        }
        bool no_body = req.method == "HEAD" || resp.status == 204 || resp.status == 304;
        if (resp.chunked) {
          head += "Transfer-Encoding: chunked\r\n";
          if (!no_body) {
            // Two chunks when possible, to exercise the client's de-chunking.
            size_t half = resp.body.size() / 2;
            char hex[32];
            for (auto part : {std::string_view(resp.body).substr(0, half),
                              std::string_view(resp.body).substr(half)}) {
              if (part.empty()) continue;
              snprintf(hex, sizeof hex, "%zx\r\n", part.size());
              body += hex;
              body.append(part).append("\r\n");
            }
            body += "0\r\n\r\n";
          }
        } else {
          if (!has_length) head += "Content-Length: " + std::to_string(resp.body.size()) + "\r\n";
          if (!no_body) body = resp.body;
        }
        if (!keep) head += "Connection: close\r\n";
        head += "\r\n";
      }
      if (resp.cut_after >= 0) {
        std::string all = head + body;
        all.resize(std::min(all.size(), static_cast<size_t>(resp.cut_after)));
        send_all(c->fd, all);
      } else if (resp.body_delay_ms > 0) {
        send_all(c->fd, head);
        alive = wait_ms(c->fd, resp.body_delay_ms) && send_all(c->fd, body);
      } else {
        send_all(c->fd, head + body);
      }
    }
    --in_flight_;
    if (!keep || !alive) break;
  }
  open_--;
  // Lock so that stop() never shuts down an fd number this thread has closed and reused.
  std::lock_guard<std::mutex> lock(mu_);
  ::close(c->fd);
  c->done = true;
}

}  // namespace orch::test
