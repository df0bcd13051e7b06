// http_server_bench: requests per second the HTTP server driver answers (200 "ok" to every
// request, keep-alive), measured with wrk against 127.0.0.1.
//   http_server_bench [--seconds S] [--connections C] [--threads T]
//   http_server_bench --serve [--port P]   # only serve (for a wrk or ab run by hand)
// Prints one JSON line. Figures only; nothing here fails on timing.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "drivers/http_server.h"
#include "drivers/loop.h"

using namespace orch;

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  int seconds = 3, connections = 50, threads = 2, port = 0;
  bool serve_only = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::atoi(argv[++i]) : 0; };
    if (a == "--seconds")
      seconds = next();
    else if (a == "--connections")
      connections = next();
    else if (a == "--threads")
      threads = next();
    else if (a == "--port")
      port = next();
    else if (a == "--serve")
      serve_only = true;
    else {
      fprintf(stderr,
              "usage: http_server_bench [--seconds S] [--connections C] [--threads T] | "
              "--serve [--port P]\n");
      return 2;
    }
  }

  Loop loop;
  http::HttpServer server(loop.get(), {}, [](std::shared_ptr<http::Exchange> ex) {
    ex->respond(http::Response::text(200, "ok"));
  });
  std::string err;
  if (!server.listen("127.0.0.1", port, &err)) {
    fprintf(stderr, "http_server_bench: %s\n", err.c_str());
    return 1;
  }
  if (serve_only) {
    fprintf(stderr, "serving on http://127.0.0.1:%d/\n", server.port());
    loop.run();
    return 0;
  }

  // wrk runs on a thread of its own; the loop stops when it is done.
  auto* stop = new uv_async_t;
  uv_async_init(loop.get(), stop, [](uv_async_t* a) {
    static_cast<http::HttpServer*>(a->data)->stop_accepting();
    static_cast<http::HttpServer*>(a->data)->close_all();
    close_and_delete(a);
  });
  stop->data = &server;
  std::string out;
  int wrk_status = -1;
  std::thread wrk([&] {
    std::string cmd = "wrk -t" + std::to_string(threads) + " -c" + std::to_string(connections) +
                      " -d" + std::to_string(seconds) +
                      "s http://127.0.0.1:" + std::to_string(server.port()) + "/ 2>&1";
    if (FILE* p = popen(cmd.c_str(), "r")) {
      char buf[4096];
      size_t n;
      while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
      wrk_status = pclose(p);
    }
    uv_async_send(stop);
  });
  loop.run();
  wrk.join();
  const http::ServerStats& s = server.stats();
  size_t at = out.find("Requests/sec:");
  if (wrk_status != 0 || at == std::string::npos) {
    fprintf(stderr, "http_server_bench: wrk failed (is it installed?)\n%s", out.c_str());
    return 1;
  }
  printf("{\"req_per_s\":%.0f,\"requests\":%llu,\"connections\":%llu,\"bad_requests\":%llu}\n",
         std::atof(out.c_str() + at + strlen("Requests/sec:")),
         static_cast<unsigned long long>(s.requests),
         static_cast<unsigned long long>(s.connections_accepted),
         static_cast<unsigned long long>(s.bad_requests));
  return 0;
}
