// orchrun serve and orchrun logs.
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "base/duration.h"
#include "base/ids.h"
#include "base/json_util.h"
#include "cli/common.h"
#include "drivers/loop.h"
#include "drivers/signals.h"
#include "engine/run_json.h"
#include "server/api.h"
#include "server/doctor.h"
#include "server/server.h"

namespace orch::cli {
namespace {

// "127.0.0.1:8080", "[::1]:8080", ":8080" (loopback), "8080".
bool parse_listen(const std::string& v, std::string* host, int* port, std::string* err) {
  std::string h = "127.0.0.1", p = v;
  if (!v.empty() && v[0] == '[') {
    size_t close = v.find(']');
    if (close == std::string::npos || close + 1 >= v.size() || v[close + 1] != ':') {
      *err = "--listen: '" + v + "' is not [IPv6]:PORT";
      return false;
    }
    h = v.substr(1, close - 1);
    p = v.substr(close + 2);
  } else if (size_t colon = v.rfind(':'); colon != std::string::npos) {
    if (colon > 0) h = v.substr(0, colon);
    p = v.substr(colon + 1);
  }
  char* end = nullptr;
  long n = strtol(p.c_str(), &end, 10);
  if (p.empty() || *end || n < 0 || n > 65535) {
    *err = "--listen: '" + v + "' needs a port from 0 to 65535 (HOST:PORT)";
    return false;
  }
  if (h == "localhost") h = "127.0.0.1";
  *host = h;
  *port = static_cast<int>(n);
  return true;
}

// "1048576", "512KiB", "1MiB", "2MB", "64kb".
bool parse_size(const std::string& v, size_t* out, std::string* err) {
  char* end = nullptr;
  double n = strtod(v.c_str(), &end);
  std::string unit = end ? end : "";
  for (auto& c : unit) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  double mult = unit.empty() || unit == "b"    ? 1
                : unit == "k" || unit == "kib" ? 1024
                : unit == "kb"                 ? 1000
                : unit == "m" || unit == "mib" ? 1024.0 * 1024
                : unit == "mb"                 ? 1e6
                : unit == "g" || unit == "gib" ? 1024.0 * 1024 * 1024
                                               : -1;
  if (end == v.c_str() || mult < 0 || n <= 0 || n * mult > 1e10) {
    *err = "--max-body: '" + v + "' is not a size (e.g. 1MiB, 512KiB, 1048576)";
    return false;
  }
  *out = static_cast<size_t>(n * mult);
  return true;
}

bool read_token_file(const std::string& path, std::string* token, std::string* err) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    *err = "--token-file: cannot read " + path + ": " + strerror(errno);
    return false;
  }
  if (st.st_mode & 077) {
    char mode[8];
    snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    *err = "--token-file: " + path + " has mode " + mode +
           "; a token others can read is not a secret (chmod 600 " + path + ")";
    return false;
  }
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  *token = ss.str();
  while (!token->empty() && isspace(static_cast<unsigned char>(token->back()))) token->pop_back();
  return true;
}

}  // namespace

int cmd_serve(const Args& a) {
  if (a.positional.size() > 1) {
    fprintf(stderr, "usage: orchrun serve [DIR] [--listen HOST:PORT] [--db PATH]\n");
    return kExitUsage;
  }
  ServeOptions so;
  so.dir = a.positional.empty() ? "pipelines" : a.positional[0];
  std::string err;
  if (!parse_listen(a.get("--listen", "127.0.0.1:8080"), &so.host, &so.port, &err) ||
      !sandbox_from(a, &so.load.sandbox, &err)) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitUsage;
  }
  if (a.has("--max-body") && !parse_size(a.get("--max-body"), &so.http.max_body_bytes, &err)) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitUsage;
  }
  if (a.has("--grace")) {
    auto g = parse_duration_ms(a.get("--grace"), &err);
    if (!g) {
      fprintf(stderr, "orchrun: --grace: %s\n", err.c_str());
      return kExitUsage;
    }
    so.grace_ms = *g;
  }
  if (a.has("--token-file")) {
    so.token_file = a.get("--token-file");
    if (!read_token_file(so.token_file, &so.token, &err)) {
      fprintf(stderr, "orchrun: %s\n", err.c_str());
      return kExitUsage;
    }
  } else if (const char* t = getenv("ORCHRUN_TOKEN")) {
    so.token = t;
  }
  if (!so.token.empty()) so.load.redact.push_back(so.token);
  if (!so.token.empty() && so.token.size() < 16) {
    fprintf(stderr,
            "orchrun: the API token is %zu characters; use at least 16 (e.g. openssl "
            "rand -hex 32)\n",
            so.token.size());
    return kExitUsage;
  }
  so.secrets_file = a.get("--secrets");
  if (so.secrets_file.empty())
    if (const char* f = getenv("ORCHRUN_SECRETS_FILE")) so.secrets_file = f;
  struct stat st {};
  if (stat(so.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    fprintf(stderr, "orchrun: serve: %s is not a directory of pipelines\n", so.dir.c_str());
    return kExitUsage;
  }
  auto store = open_store(a, false, &err);
  if (!store) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitInternal;
  }
  Loop loop;
  int code = kExitOk;
  {
    Server server(&loop, store.get(), so);
    if (!server.start(&err)) {
      fprintf(stderr, "orchrun: serve: %s\n", err.c_str());
      return kExitUsage;
    }
    // SIGTERM/SIGINT: a graceful shutdown; a second one forces the exit, and so does the
    // watchdog when the shutdown has not ended 5 s after its grace (a node body stuck in C code).
    InterruptHandler intr(
        loop.get(), [&](int signo) { server.shutdown([&loop] { uv_stop(loop.get()); }); }, false,
        so.grace_ms + 5000);
    loop.run();
    if (!server.scheduler().fatal_error().empty()) {
      fprintf(stderr, "orchrun: %s\n", server.scheduler().fatal_error().c_str());
      code = kExitInternal;
    }
  }
  store->commit();
  if (store->full()) store->retry_full();  // one last try: there may be room by now
  if (store->full()) {
    fprintf(stderr,
            "orchrun: disk full: %zu write(s) held in memory could not be committed to %s and "
            "are lost; what was committed before is intact, and the next start resumes the "
            "unfinished runs from there\n",
            store->held_writes(), store->path().c_str());
    code = kExitInternal;
  }
  return code;
}

// --- doctor -----------------------------------------------------------------------------------

int cmd_doctor(const Args& a) {
  if (a.positional.size() > 1) {
    fprintf(stderr, "usage: orchrun doctor [DIR] [--db PATH] [--listen HOST:PORT]\n");
    return kExitUsage;
  }
  DoctorInputs in;
  std::string err;
  if (!parse_listen(a.get("--listen", "127.0.0.1:8080"), &in.listen_host, &in.listen_port, &err)) {
    fprintf(stderr, "orchrun: %s\n", err.c_str());
    return kExitUsage;
  }
  if (!sandbox_from(a, &in.load.sandbox, &err)) {
    if (err.rfind("--allow", 0) == 0 || err == "--secrets needs a file name") {
      fprintf(stderr, "orchrun: %s\n", err.c_str());
      return kExitUsage;
    }
    in.load.sandbox.secrets_file.clear();  // a bad secrets file is one of the checks
  }
  in.secrets_file = a.get("--secrets");
  if (in.secrets_file.empty())
    if (const char* f = getenv("ORCHRUN_SECRETS_FILE")) in.secrets_file = f;
  in.token_file = a.get("--token-file");
  in.db_path = a.get("--db", default_db_path());
  in.full_integrity = a.has("--full");
  // serve's default directory; named or not, it is checked when it is there.
  std::string dir = a.positional.empty() ? "pipelines" : a.positional[0];
  struct stat st {};
  if (!a.positional.empty() || stat(dir.c_str(), &st) == 0) in.pipelines_dir = dir;
  auto checks = run_doctor(in);
  if (a.positional.empty() && in.pipelines_dir.empty())
    checks.push_back({"pipelines", CheckLevel::kWarn, "no pipelines/ directory here",
                      "name the directory orchrun serve hosts: orchrun doctor DIR"});
  if (a.has("--json")) {
    printf("%s\n", dump_json(doctor_json(checks), 2).c_str());
    return doctor_failed(checks) ? kExitFailed : kExitOk;
  }
  Style stl = style_for(stdout);
  size_t warn = 0, fail = 0;
  for (const auto& k : checks) {
    std::string level = check_level_name(k.level);
    std::string tag = k.level == CheckLevel::kOk     ? stl.green(level + "  ")
                      : k.level == CheckLevel::kWarn ? stl.yellow(level)
                                                     : stl.red(level);
    printf("%s  %-18s %s\n", tag.c_str(), k.name.c_str(), k.message.c_str());
    if (!k.fix.empty()) printf("      %-18s -> %s\n", "", k.fix.c_str());
    warn += k.level == CheckLevel::kWarn;
    fail += k.level == CheckLevel::kFail;
  }
  if (!warn && !fail)
    printf("all %zu checks passed\n", checks.size());
  else
    printf("%zu check(s): %zu failed, %zu warning(s)\n", checks.size(), fail, warn);
  return fail ? kExitFailed : kExitOk;
}

// --- logs -------------------------------------------------------------------------------------

namespace {

void print_event(const Event& e, bool json_out) {
  if (json_out) {
    printf("%s\n", dump_json(event_json(e)).c_str());
  } else {
    std::string where = e.node.empty() ? "" : e.node + "#" + std::to_string(e.attempt);
    printf("%s  %-22s %-24s %s\n", iso8601_ms(e.ts).c_str(), e.kind.c_str(), where.c_str(),
           e.data == "{}" ? "" : e.data.c_str());
  }
  fflush(stdout);
}

bool final_kind(const std::string& kind) {
  return kind == "run.succeeded" || kind == "run.failed" || kind == "run.cancelled";
}

int exit_for(const std::string& kind) {
  return kind == "run.succeeded" ? kExitOk : kExitFailed;
}

// Follows /api/events?run=ID on `url` until the run ends. Reconnects with Last-Event-ID when
// the connection drops.
int follow(const std::string& url, const std::string& run_id, bool json_out) {
  std::string rest = url;
  if (rest.rfind("http://", 0) == 0)
    rest = rest.substr(7);
  else if (rest.find("://") != std::string::npos) {
    fprintf(stderr, "orchrun: --server: only http:// URLs are supported (got %s)\n", url.c_str());
    return kExitUsage;
  }
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  std::string host = "127.0.0.1", port = "8080";
  if (!rest.empty() && rest[0] == '[') {
    size_t c = rest.find(']');
    host = rest.substr(1, c - 1);
    if (c + 1 < rest.size() && rest[c + 1] == ':') port = rest.substr(c + 2);
  } else if (size_t c = rest.rfind(':'); c != std::string::npos) {
    host = rest.substr(0, c);
    port = rest.substr(c + 1);
  } else if (!rest.empty()) {
    host = rest;
  }
  const char* token = getenv("ORCHRUN_TOKEN");
  int64_t last_id = 0;
  int failures = 0;
  bool ever_connected = false;
  for (;;) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    int fd = -1;
    if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) == 0) {
      for (addrinfo* ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        // Linux bounds connect() by the send timeout: an address that drops packets fails in
        // 3 s instead of the kernel's two minutes.
        timeval tv{3, 0};
        if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
          close(fd);
          fd = -1;
        }
      }
      freeaddrinfo(res);
    }
    if (fd < 0) {
      // Never reached: say so at once and give up after a few seconds (a wrong --server or a
      // server that is not up). Reached before: it may be restarting, so wait longer.
      const int err = errno;
      ++failures;
      if (failures == 1)
        fprintf(stderr, "orchrun: cannot reach the server at %s: %s; %s\n", url.c_str(),
                strerror(err), ever_connected ? "reconnecting for up to 30 s" : "retrying");
      if (failures > (ever_connected ? 30 : 3)) {
        fprintf(stderr,
                "orchrun: giving up: no server at %s (is orchrun serve running there? "
                "--server URL)\n",
                url.c_str());
        return kExitInternal;
      }
      usleep(1000000);
      continue;
    }
    std::string req = "GET /api/events?run=" + run_id + " HTTP/1.1\r\nHost: " + host + ":" + port +
                      "\r\nAccept: text/event-stream\r\n";
    if (token && *token) req += std::string("Authorization: Bearer ") + token + "\r\n";
    if (last_id) req += "Last-Event-ID: " + std::to_string(last_id) + "\r\n";
    req += "\r\n";
    if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
      close(fd);
      continue;
    }
    std::string buf;
    bool headers_done = false;
    char chunk[65536];
    std::string id_line, event_line, data_line;
    for (;;) {
      ssize_t n = read(fd, chunk, sizeof chunk);
      if (n <= 0) break;
      buf.append(chunk, static_cast<size_t>(n));
      if (!headers_done) {
        size_t end = buf.find("\r\n\r\n");
        if (end == std::string::npos) continue;
        std::string status = buf.substr(0, buf.find("\r\n"));
        if (status.find(" 200 ") == std::string::npos) {
          size_t body = end + 4;
          fprintf(stderr, "orchrun: %s: %s %s\n", url.c_str(), status.c_str(),
                  buf.substr(body).c_str());
          close(fd);
          return status.find(" 404 ") != std::string::npos ? kExitUsage : kExitInternal;
        }
        headers_done = true;
        failures = 0;
        ever_connected = true;
        buf.erase(0, end + 4);
      }
      size_t nl;
      while ((nl = buf.find('\n')) != std::string::npos) {
        std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) {
          if (!data_line.empty()) {
            json j = parse_json(data_line, nullptr);
            Event e;
            e.id = j.value("id", int64_t{0});
            e.kind = j.value("kind", "");
            e.run_id = j.value("run_id", "");
            e.trace_id = j.value("trace_id", "");
            e.pipeline = j.value("pipeline", "");
            e.version = j.value("version", 0);
            e.node = j.value("node", "");
            e.attempt = j.value("attempt", 0);
            e.data = j.contains("data") ? dump_json(j["data"]) : "";
            std::string terr;
            if (!parse_time_ms(j.value("ts", ""), 0, &e.ts, &terr)) e.ts = 0;
            if (e.id > last_id) {
              last_id = e.id;
              print_event(e, json_out);
            }
            if (final_kind(e.kind) && e.run_id == run_id) {
              close(fd);
              return exit_for(e.kind);
            }
          }
          data_line.clear();
          continue;
        }
        if (line.rfind("data: ", 0) == 0) data_line += line.substr(6);
      }
    }
    close(fd);
    usleep(200000);  // the server went away or restarted: reconnect where we were
  }
}

}  // namespace

int cmd_logs(const Args& a) {
  if (a.positional.size() != 1) {
    fprintf(stderr, "usage: orchrun logs RUN_ID [--follow] [--server URL] [--db PATH]\n");
    return kExitUsage;
  }
  bool json_out = a.has("--json");
  std::string id = a.positional[0];
  std::string path = a.get("--db", default_db_path());
  // The store first, when it is here: a finished run is printed from it.
  if (access(path.c_str(), F_OK) == 0) {
    std::unique_ptr<Store> store;
    std::optional<RunRow> run;
    std::string err;
    store = open_store(a, true, &err);
    if (store) {
      run = store->find_run(id, &err);
      if (run) {
        id = run->id;
        bool finished = run->status == RunStatus::succeeded || run->status == RunStatus::failed ||
                        run->status == RunStatus::cancelled;
        if (!a.has("--follow") || finished) {
          for (auto& e : store->events(run->id)) print_event(e, json_out);
          return !finished ? kExitOk : run->status == RunStatus::succeeded ? kExitOk : kExitFailed;
        }
      } else if (!a.has("--follow")) {
        fprintf(stderr, "orchrun: %s\n", err.c_str());
        return kExitUsage;
      }
    }
  } else if (!a.has("--follow")) {
    fprintf(stderr, "orchrun: no database at %s (use --follow --server URL for a remote run)\n",
            path.c_str());
    return kExitUsage;
  }
  std::string url = a.get("--server");
  if (url.empty())
    if (const char* s = getenv("ORCHRUN_SERVER")) url = s;
  if (url.empty()) url = "http://127.0.0.1:8080";
  return follow(url, id, json_out);
}

}  // namespace orch::cli
