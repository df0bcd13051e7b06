// http_bench: requests per second through o.http.request with 100 requests in flight over
// kept-alive connections, against a minimal epoll server in this process (one thread, a fixed
// 200 answer: cheap enough not to be the bottleneck), and the same for the C++ driver alone.
//   http_bench [--requests N] [--inflight K] [--orchrun BIN --pipeline FILE --db DB]
// Prints one JSON line. Figures only; nothing here fails on timing.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "drivers/http_client.h"
#include "base/json_util.h"
#include "drivers/loop.h"

namespace {

// One thread, edge-free epoll, HTTP/1.1 keep-alive; every request (GET, no body) gets the same
// small answer. Counts the requests it answered.
class EpollServer {
 public:
  EpollServer() {
    lfd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(lfd_, 1024) != 0) {
      perror("http_bench: listen");
      exit(1);
    }
    socklen_t len = sizeof a;
    getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    stop_fd_ = eventfd_like();
    add(lfd_, EPOLLIN);
    add(stop_fd_, EPOLLIN);
    thread_ = std::thread([this] { run(); });
  }
  ~EpollServer() {
    uint64_t one = 1;
    (void)!write(stop_wr_, &one, sizeof one);
    thread_.join();
    for (auto& [fd, c] : conns_) close(fd);
    close(lfd_);
    close(ep_);
    close(stop_fd_);
    close(stop_wr_);
  }
  int port() const { return port_; }
  uint64_t answered() const { return answered_; }
  uint64_t accepted() const { return accepted_; }

 private:
  struct Conn {
    std::string in, out;
  };
  int eventfd_like() {
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) exit(1);
    stop_wr_ = p[1];
    return p[0];
  }
  void add(int fd, uint32_t ev) {
    epoll_event e{};
    e.events = ev;
    e.data.fd = fd;
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &e);
  }
  void run() {
    static const std::string kAnswer =
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
    epoll_event evs[256];
    char buf[65536];
    for (;;) {
      int n = epoll_wait(ep_, evs, 256, -1);
      for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        if (fd == stop_fd_) return;
        if (fd == lfd_) {
          for (int c; (c = accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
            int one = 1;
            setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            conns_[c];
            accepted_++;
            add(c, EPOLLIN);
          }
          continue;
        }
        Conn& c = conns_[fd];
        bool closed = false;
        for (;;) {
          ssize_t r = read(fd, buf, sizeof buf);
          if (r > 0) {
            c.in.append(buf, static_cast<size_t>(r));
            continue;
          }
          if (r == 0 || (errno != EAGAIN && errno != EINTR)) closed = true;
          if (r < 0 && errno == EINTR) continue;
          break;
        }
        size_t pos = 0, end;
        while ((end = c.in.find("\r\n\r\n", pos)) != std::string::npos) {
          c.out += kAnswer;
          answered_++;
          pos = end + 4;
        }
        c.in.erase(0, pos);
        while (!c.out.empty() && !closed) {
          ssize_t w = write(fd, c.out.data(), c.out.size());
          if (w > 0) {
            c.out.erase(0, static_cast<size_t>(w));
          } else if (w < 0 && errno == EAGAIN) {
            // Rare with tiny answers: wait for room.
            epoll_event e{};
            e.events = EPOLLIN | EPOLLOUT;
            e.data.fd = fd;
            epoll_ctl(ep_, EPOLL_CTL_MOD, fd, &e);
            break;
          } else {
            closed = true;
          }
        }
        if (closed) {
          epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
          close(fd);
          conns_.erase(fd);
        }
      }
    }
  }

  int lfd_ = -1, ep_ = -1, stop_fd_ = -1, stop_wr_ = -1, port_ = 0;
  std::thread thread_;
  std::unordered_map<int, Conn> conns_;
  std::atomic<uint64_t> answered_{0}, accepted_{0};
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The driver alone: `inflight` requests at a time until `total` have completed.
double driver_rps(const std::string& url, int total, int inflight) {
  orch::Loop loop;
  double rps = 0;
  {
    orch::HttpClient client(loop.get());
    orch::HttpRequest req;
    req.url = url;
    int started = 0, done = 0, failed = 0;
    std::function<void()> start_one = [&] {
      started++;
      std::string err;
      client.start(
          req,
          [&](orch::HttpResponse& r) {
            done++;
            if (!r.ok() || r.status != 200) failed++;
            if (started < total) start_one();
          },
          &err);
    };
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < inflight && started < total; i++) start_one();
    loop.run();
    double s = seconds_since(t0);
    if (failed) fprintf(stderr, "http_bench: %d driver requests failed\n", failed);
    rps = done / s;
  }
  loop.close();
  return rps;
}

// orchrun on the pipeline: returns the run's req/s from its own duration_ms.
double pipeline_rps(const std::string& bin, const std::string& file, const std::string& db,
                    const std::string& url, int per_node, int nodes) {
  std::string input = "{\"url\":\"" + url + "\",\"per_node\":" + std::to_string(per_node) + "}";
  int p[2];
  if (pipe(p) != 0) return 0;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(p[1], 1);
    close(p[0]);
    close(p[1]);
    execl(bin.c_str(), bin.c_str(), file.c_str(), "--db", db.c_str(), "--quiet", "--json",
          "--input", input.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(p[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(p[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(p[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  std::string err;
  orch::json j = orch::parse_json(out, &err);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || j.is_discarded() ||
      j.value("status", "") != "succeeded") {
    fprintf(stderr, "http_bench: orchrun failed:\n%s\n", out.c_str());
    return 0;
  }
  double ms = j.at("duration_ms").get<double>();
  return static_cast<double>(per_node) * nodes / (ms / 1000.0);
}

}  // namespace

int main(int argc, char** argv) {
  int total = 20000, inflight = 100;
  std::string bin, pipeline, db;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--requests")
      total = atoi(argv[i + 1]);
    else if (k == "--inflight")
      inflight = atoi(argv[i + 1]);
    else if (k == "--orchrun")
      bin = argv[i + 1];
    else if (k == "--pipeline")
      pipeline = argv[i + 1];
    else if (k == "--db")
      db = argv[i + 1];
    else {
      fprintf(stderr,
              "usage: http_bench [--requests N] [--inflight K] [--orchrun BIN --pipeline FILE --db "
              "DB]\n");
      return 2;
    }
  }
  EpollServer srv;
  std::string url = "http://127.0.0.1:" + std::to_string(srv.port()) + "/";
  double drv = driver_rps(url, total, inflight);
  printf("{\"requests\":%d,\"in_flight\":%d,\"driver_req_per_s\":%.0f", total, inflight, drv);
  if (!bin.empty()) {
    // The pipeline has 100 nodes; each makes total/100 requests in sequence.
    const int nodes = 100;
    double pl = pipeline_rps(bin, pipeline, db, url, std::max(1, total / nodes), nodes);
    printf(",\"pipeline_req_per_s\":%.0f", pl);
  }
  // Connections accepted: about 2 x in_flight (one set per client) when keep-alive works.
  printf(",\"server_answered\":%llu,\"connections\":%llu}\n",
         static_cast<unsigned long long>(srv.answered()),
         static_cast<unsigned long long>(srv.accepted()));
  return 0;
}
