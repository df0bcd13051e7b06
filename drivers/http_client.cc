#include "drivers/http_client.h"

#include <curl/curl.h>
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>

#include <algorithm>
#include <cctype>
#include <mutex>

#include "drivers/curl_api.h"
#include "drivers/loop.h"

namespace orch {

CurlApi curl;

namespace {

// Idle connections kept for reuse, over all hosts.
constexpr long kMaxCachedConnections = 256;

CURLM* M(void* p) {
  return static_cast<CURLM*>(p);
}

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

// The URL without its query and fragment: error messages must not carry tokens passed as
// query parameters.
std::string url_for_message(const std::string& url) {
  return url.substr(0, url.find_first_of("?#"));
}

const char* error_code(CURLcode rc) {
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
      return "timeout";
    case CURLE_COULDNT_CONNECT:
      return "connect";
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      return "dns";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED:
      return "tls";
    case CURLE_FILESIZE_EXCEEDED:
      return "too_large";
    case CURLE_LOGIN_DENIED:
      return "auth";
    default:
      return "error";
  }
}

// curl's descriptors are not close-on-exec: a child started by o.exec would inherit them and
// keep a connection open after curl closed it. Spawns happen on the loop thread, the thread
// that makes curl create descriptors, so there is no window for a fork in between.
void set_cloexec(int fd) {
  int flags = fcntl(fd, F_GETFD);
  if (flags >= 0 && !(flags & FD_CLOEXEC)) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

std::vector<int> open_fds() {
  std::vector<int> fds;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d)) fds.push_back(atoi(e->d_name));
    closedir(d);
  }
  return fds;
}

// Marks close-on-exec whatever was opened since `before` (open_fds()) was taken.
void mark_new_fds_cloexec(const std::vector<int>& before) {
  for (int fd : open_fds())
    if (std::find(before.begin(), before.end(), fd) == before.end()) set_cloexec(fd);
}

constexpr const char* kLibcurl = "libcurl.so.4";

// Loads libcurl into `curl` and initialises it; false with *err when it cannot.
bool load_curl(std::string* err) {
  // RTLD_LOCAL: curl's symbols (and those of the libraries it pulls) stay out of the global
  // namespace, where LuaJIT C modules look symbols up.
  void* lib = dlopen(kLibcurl, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    *err = std::string("cannot load ") + kLibcurl + ": " + dlerror();
    return false;
  }
  CurlApi api;
#define ORCH_CURL_LOAD(name)                                                  \
  api.name = reinterpret_cast<decltype(api.name)>(dlsym(lib, "curl_" #name)); \
  if (!api.name) {                                                            \
    *err = std::string("cannot load ") + kLibcurl + ": " + dlerror();         \
    dlclose(lib);                                                             \
    return false;                                                             \
  }
  ORCH_CURL_FUNCTIONS(ORCH_CURL_LOAD)
#undef ORCH_CURL_LOAD
  // Whatever curl_global_init opens must not leak into o.exec children either.
  std::vector<int> before = open_fds();
  CURLcode rc = api.global_init(CURL_GLOBAL_DEFAULT);
  mark_new_fds_cloexec(before);
  if (rc != CURLE_OK) {
    *err = std::string("curl_global_init failed: ") + api.easy_strerror(rc);
    return false;  // the library stays loaded: unloading a half-initialised curl is no safer
  }
  curl = api;
  return true;
}

}  // namespace

bool http_available(std::string* err) {
  // curl_global_init is not thread-safe: it must not run while another thread uses libcurl (or
  // the libraries it initialises). orchrun calls libcurl only from the loop thread, and this
  // runs before the first easy or multi handle exists, so initialising lazily here, once under
  // std::call_once, is safe; it no longer needs to run in main() before any thread starts.
  static std::once_flag once;
  static std::string error;
  std::call_once(once, [] {
    if (!load_curl(&error)) error = "HTTP is unavailable: " + error;
  });
  if (!error.empty() && err) *err = error;
  return error.empty();
}

const std::string* HttpResponse::header(std::string_view lower_name) const {
  for (auto& [k, v] : headers)
    if (k == lower_name) return &v;
  return nullptr;
}

std::string url_escape(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string r;
  r.reserve(s.size());
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    // ASCII only, whatever the locale (std::isalnum is not).
    bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      r.push_back(c);
    } else {
      r.push_back('%');
      r.push_back(kHex[u >> 4]);
      r.push_back(kHex[u & 15]);
    }
  }
  return r;
}

// One request in flight: the easy handle and everything curl reads from or writes into while
// it runs.
struct HttpClient::Transfer {
  ~Transfer() {
    if (easy) curl.easy_cleanup(easy);
    if (header_list) curl.slist_free_all(header_list);
  }
  HttpClient* client = nullptr;
  Id id = 0;
  CURL* easy = nullptr;
  curl_slist* header_list = nullptr;
  std::string body;  // the request body; curl reads it in place
  std::string method, url;
  std::string label;           // "POST http://host/path" or CurlTransfer::what, for messages
  std::shared_ptr<void> keep;  // CurlTransfer::keep
  uint64_t max_body = 0;
  bool too_large = false;
  uint64_t start_ns = 0;
  DoneFn done;
  HttpResponse response;
  char errbuf[CURL_ERROR_SIZE] = {0};
};

// A socket curl asked us to watch. Freed in the poll handle's close callback.
struct HttpClient::Socket {
  uv_poll_t poll{};
  int fd = -1;
  HttpClient* client = nullptr;
};

namespace {

size_t on_header(char* data, size_t size, size_t n, void* userp) {
  auto* t = static_cast<HttpClient::Transfer*>(userp);
  std::string_view line(data, size * n);
  // A new status line starts a new response (a redirect followed, a 100 Continue): only the
  // final response's headers are reported.
  if (line.substr(0, 5) == "HTTP/") {
    t->response.headers.clear();
    return size * n;
  }
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return size * n;  // the blank line, or junk
  std::string name = lower(trim(line.substr(0, colon)));
  std::string_view value = trim(line.substr(colon + 1));
  for (auto& [k, v] : t->response.headers) {
    if (k == name) {
      v.append(", ").append(value);
      return size * n;
    }
  }
  t->response.headers.emplace_back(std::move(name), std::string(value));
  return size * n;
}

int on_sockopt(void*, curl_socket_t fd, curlsocktype) {
  set_cloexec(fd);
  return CURL_SOCKOPT_OK;
}

size_t on_body(char* data, size_t size, size_t n, void* userp) {
  auto* t = static_cast<HttpClient::Transfer*>(userp);
  size_t len = size * n;
  if (t->response.body.size() + len > t->max_body) {
    t->too_large = true;
    return 0;  // anything but len aborts the transfer
  }
  t->response.body.append(data, len);
  return len;
}

}  // namespace

HttpClient::HttpClient(uv_loop_t* loop) : loop_(loop), timer_(make_uv_handle<uv_timer_t>()) {
  uv_timer_init(loop_, timer_.get());
  timer_->data = this;
  if (!http_available(&unavailable_)) return;  // every start fails with the reason
  // curl_multi_init opens a socket pair (to wake curl_multi_poll, which we do not use): mark
  // whatever it opened close-on-exec too.
  std::vector<int> before = open_fds();
  multi_ = curl.multi_init();
  mark_new_fds_cloexec(before);
  curl.multi_setopt(M(multi_), CURLMOPT_SOCKETFUNCTION, &HttpClient::on_socket);
  curl.multi_setopt(M(multi_), CURLMOPT_SOCKETDATA, this);
  curl.multi_setopt(M(multi_), CURLMOPT_TIMERFUNCTION, &HttpClient::on_timer);
  curl.multi_setopt(M(multi_), CURLMOPT_TIMERDATA, this);
  // curl's default cache size is 4 x the transfers in the multi handle *now*: when most of a
  // wave of transfers finish in one loop turn (before their tasks start the next ones), it
  // would close the connections those tasks are about to reuse. A fixed size keeps them.
  curl.multi_setopt(M(multi_), CURLMOPT_MAXCONNECTS, kMaxCachedConnections);
}

HttpClient::~HttpClient() {
  if (multi_) {
    // Nobody is called back from here on.
    for (auto& [id, t] : transfers_) curl.multi_remove_handle(M(multi_), t->easy);
    transfers_.clear();
    // Closes the cached connections; curl may report their sockets removed (forget_socket).
    curl.multi_cleanup(M(multi_));
    multi_ = nullptr;
  }
  while (!sockets_.empty()) forget_socket(sockets_.begin()->first);
  timer_.reset();
}

std::unique_ptr<HttpClient::Transfer> HttpClient::new_transfer(int64_t timeout_ms, DoneFn done,
                                                               std::string* err) {
  if (!multi_) {
    *err = unavailable_.empty() ? "curl_multi_init failed" : unavailable_;
    return nullptr;
  }
  auto t = std::make_unique<Transfer>();
  t->client = this;
  t->id = next_id_++;
  t->easy = curl.easy_init();
  if (!t->easy) {
    *err = "curl_easy_init failed";
    return nullptr;
  }
  t->done = std::move(done);
  CURL* e = t->easy;
  curl.easy_setopt(e, CURLOPT_PRIVATE, t.get());
  curl.easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
  curl.easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl.easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_ms));
  curl.easy_setopt(e, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
  return t;
}

HttpClient::Id HttpClient::add_transfer(std::unique_ptr<Transfer> t, std::string* err) {
  t->start_ns = uv_hrtime();
  CURLMcode mrc = curl.multi_add_handle(M(multi_), t->easy);
  if (mrc != CURLM_OK) {
    *err = std::string("curl_multi_add_handle: ") + curl.multi_strerror(mrc);
    return 0;
  }
  Id id = t->id;
  transfers_.emplace(id, std::move(t));
  return id;
}

HttpClient::Id HttpClient::start_transfer(CurlTransfer req, DoneFn done, std::string* err) {
  auto t = new_transfer(req.timeout_ms, std::move(done), err);
  if (!t) return 0;
  t->label = std::move(req.what);
  t->keep = std::move(req.keep);
  t->max_body = UINT64_MAX;
  if (req.configure && !req.configure(t->easy, err)) return 0;
  return add_transfer(std::move(t), err);
}

HttpClient::Id HttpClient::start(const HttpRequest& req, DoneFn done, std::string* err) {
  auto t = new_transfer(req.timeout_ms, std::move(done), err);
  if (!t) return 0;
  t->method = req.method;
  t->url = req.url;
  t->label = req.method + " " + url_for_message(req.url);
  t->max_body = req.max_body;
  CURL* e = t->easy;
  curl.easy_setopt(e, CURLOPT_URL, req.url.c_str());
  // Only HTTP(S), also on redirects: no file://, no smb:// from a pipeline's URL.
  curl.easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl.easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl.easy_setopt(e, CURLOPT_USERAGENT, "orchrun/" ORCHRUN_VERSION);
  curl.easy_setopt(e, CURLOPT_FOLLOWLOCATION, req.follow_redirects ? 1L : 0L);
  curl.easy_setopt(e, CURLOPT_MAXREDIRS, req.max_redirects);
  // Fails fast when the server announces a larger body; on_body catches the rest.
  curl.easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(req.max_body));
  curl.easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl.easy_setopt(e, CURLOPT_HEADERDATA, t.get());
  curl.easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl.easy_setopt(e, CURLOPT_WRITEDATA, t.get());

  // GET, POST and HEAD through curl's own options, so that a redirect after a POST becomes a
  // GET as browsers do; any other method is sent as given.
  if (req.has_body || req.method == "POST") {
    t->body = req.body;
    curl.easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t->body.size()));
    curl.easy_setopt(e, CURLOPT_POSTFIELDS, t->body.data());
    if (req.method != "POST") curl.easy_setopt(e, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  } else if (req.method == "HEAD") {
    curl.easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else if (req.method != "GET") {
    curl.easy_setopt(e, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  }

  bool has_content_type = false, has_expect = false;
  for (auto& [k, v] : req.headers) {
    std::string name = lower(k);
    has_content_type = has_content_type || name == "content-type";
    has_expect = has_expect || name == "expect";
    // "Name;" is curl's way to send a header with an empty value ("Name:" would remove it).
    std::string line = v.empty() ? k + ";" : k + ": " + v;
    t->header_list = curl.slist_append(t->header_list, line.c_str());
  }
  // Without these, curl adds its own: a form content type for POST bodies, and
  // "Expect: 100-continue" (a one-second stall with servers that ignore it) for large ones.
  if ((req.has_body || req.method == "POST") && !has_content_type)
    t->header_list = curl.slist_append(t->header_list, "Content-Type:");
  if (!has_expect) t->header_list = curl.slist_append(t->header_list, "Expect:");
  curl.easy_setopt(e, CURLOPT_HTTPHEADER, t->header_list);
  return add_transfer(std::move(t), err);
}

void HttpClient::cancel(Id id) {
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  // Removing the easy handle stops the transfer now; curl drops the half-used connection and
  // tells on_socket to forget its socket.
  curl.multi_remove_handle(M(multi_), it->second->easy);
  transfers_.erase(it);
}

int HttpClient::on_timer(void* multi, long timeout_ms, void* userp) {
  auto* self = static_cast<HttpClient*>(userp);
  if (timeout_ms < 0) {
    uv_timer_stop(self->timer_.get());
    return 0;
  }
  // Even a 0 ms timeout goes through the loop: curl must not be called back from inside itself.
  uv_timer_start(
      self->timer_.get(),
      [](uv_timer_t* h) {
        if (auto* c = static_cast<HttpClient*>(h->data)) c->socket_action(CURL_SOCKET_TIMEOUT, 0);
      },
      static_cast<uint64_t>(timeout_ms), 0);
  return 0;
}

int HttpClient::on_socket(void* easy, int fd, int what, void* userp, void* socketp) {
  auto* self = static_cast<HttpClient*>(userp);
  if (what == CURL_POLL_REMOVE) {
    self->forget_socket(fd);
    return 0;
  }
  Socket* s = nullptr;
  auto it = self->sockets_.find(fd);
  if (it != self->sockets_.end()) s = it->second;
  if (!s) {
    set_cloexec(fd);  // also the resolver's descriptors, which skip on_sockopt
    s = new Socket();
    s->fd = fd;
    s->client = self;
    s->poll.data = s;
    int rc = uv_poll_init_socket(self->loop_, &s->poll, fd);
    if (rc != 0) {
      delete s;  // never initialised: no close needed
      return -1;
    }
    self->sockets_[fd] = s;
  }
  int events = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= UV_WRITABLE;
  uv_poll_start(&s->poll, events, [](uv_poll_t* h, int status, int ev) {
    auto* sock = static_cast<Socket*>(h->data);
    int flags = 0;
    if (status < 0) {
      flags = CURL_CSELECT_ERR;
    } else {
      if (ev & UV_READABLE) flags |= CURL_CSELECT_IN;
      if (ev & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    }
    // `sock` may be closed by curl during the call (on_socket REMOVE); its memory lives on
    // until the close callback, but read what we need first.
    sock->client->socket_action(sock->fd, flags);
  });
  return 0;
}

void HttpClient::forget_socket(int fd) {
  auto it = sockets_.find(fd);
  if (it == sockets_.end()) return;
  Socket* s = it->second;
  sockets_.erase(it);
  // Closing stops the poll at once (the fd may be closed and reused by curl right after).
  uv_close(reinterpret_cast<uv_handle_t*>(&s->poll),
           [](uv_handle_t* h) { delete static_cast<Socket*>(h->data); });
}

void HttpClient::socket_action(int fd, int events) {
  int running = 0;
  curl.multi_socket_action(M(multi_), fd, events, &running);
  finish_transfers();
}

void HttpClient::finish_transfers() {
  // One message at a time: a done callback may cancel (remove) other transfers, and curl drops
  // their queued messages with them.
  int left = 0;
  while (CURLMsg* msg = curl.multi_info_read(M(multi_), &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL* easy = msg->easy_handle;
    CURLcode rc = msg->data.result;
    Transfer* raw = nullptr;
    curl.easy_getinfo(easy, CURLINFO_PRIVATE, &raw);
    auto it = transfers_.find(raw ? raw->id : 0);
    if (it == transfers_.end() || it->second.get() != raw) {
      curl.multi_remove_handle(M(multi_), easy);
      continue;
    }
    std::unique_ptr<Transfer> t = std::move(it->second);
    transfers_.erase(it);
    HttpResponse& r = t->response;
    r.duration_ms = static_cast<int64_t>((uv_hrtime() - t->start_ns) / 1000000);
    curl.easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r.status);
    char* eff = nullptr;
    curl.easy_getinfo(easy, CURLINFO_EFFECTIVE_URL, &eff);
    r.url = eff ? eff : t->url;
    if (rc != CURLE_OK) {
      std::string what = t->label + ": ";
      if (t->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
        r.code = "too_large";
        r.error =
            what + "response body larger than max_body (" + std::to_string(t->max_body) + " bytes)";
      } else {
        r.code = error_code(rc);
        r.error = what + (t->errbuf[0] ? t->errbuf : curl.easy_strerror(rc));
      }
      r.body.clear();
    }
    curl.multi_remove_handle(M(multi_), easy);
    HttpResponse out = std::move(r);
    DoneFn done = std::move(t->done);
    t.reset();  // its connection stays in the multi handle's cache for the next request
    if (done) done(out);
  }
}

}  // namespace orch
