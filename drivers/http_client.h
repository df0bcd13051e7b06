// HTTP(S) requests on the loop: libcurl's multi interface, driven by libuv. Curl tells us which
// sockets to watch (CURLMOPT_SOCKETFUNCTION: one uv_poll_t per socket) and when to call it back
// (CURLMOPT_TIMERFUNCTION: one uv_timer_t); we tell curl what happened with
// curl_multi_socket_action. Nothing blocks the loop and any number of requests run at once.
//
// One HttpClient per loop, shared by every task: its multi handle keeps a connection cache, so
// requests to the same host reuse kept-alive connections. The client owns its uv handles
// (freed in their close callbacks) and every transfer in flight; destroying it aborts what is
// left without calling anyone back.
#pragma once
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "drivers/uv_handle.h"

namespace orch {

struct HttpRequest {
  std::string method = "GET";  // upper case
  std::string url;             // complete, query included; http:// or https:// only
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool has_body = false;
  int64_t timeout_ms = 30000;  // the whole transfer: connect, send, receive
  bool follow_redirects = false;
  long max_redirects = 10;
  uint64_t max_body = 10u << 20;  // bytes of response body; more aborts with code "too_large"
};

struct HttpResponse {
  long status = 0;
  // Lower-cased names; a repeated header's values are joined with ", ". Only the final
  // response's headers when redirects were followed.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  int64_t duration_ms = 0;
  std::string url;  // the URL the response came from (differs after redirects)
  // Set when the transfer failed: a message, and a short stable code: "timeout", "connect",
  // "dns", "tls", "too_large", "auth" (login refused; SMTP) or "error".
  std::string error, code;
  bool ok() const { return error.empty(); }
  const std::string* header(std::string_view lower_name) const;
};

// A transfer of another protocol driven by the same multi handle (SMTP for o.notify.email).
// `configure` sets that protocol's options on the easy handle (a CURL*, through the table in
// drivers/curl_api.h); the client adds what every transfer gets (error buffer, no
// signals, close-on-exec sockets, the timeout) and reports the end like a request:
// HttpResponse::status is CURLINFO_RESPONSE_CODE (the last SMTP reply code for SMTP),
// error/code are set on failure. `keep` owns what curl reads while the transfer runs (the
// payload, recipient lists); it is released when the transfer ends.
struct CurlTransfer {
  std::string what;  // names the transfer in messages, e.g. "SMTP smtp://127.0.0.1:25"
  int64_t timeout_ms = 30000;
  std::function<bool(void* easy, std::string* err)> configure;
  std::shared_ptr<void> keep;
};

// libcurl is not linked: it is loaded (dlopen "libcurl.so.4") and initialised
// (curl_global_init) on first use, so that runs that never make a request do not pay for its
// ~30 shared libraries. Loads it on the first call; false with *err ("HTTP is unavailable:
// cannot load libcurl.so.4: ...") when it cannot be loaded, on this and every later call.
// Call it on the loop thread (see the .cc).
bool http_available(std::string* err);

// %-encodes a query component as curl_easy_escape does: everything but unreserved characters
// (RFC 3986: letters, digits, "-._~"), as %XX in upper case. Does not need libcurl.
std::string url_escape(std::string_view s);

class HttpClient {
 public:
  using DoneFn = std::function<void(HttpResponse&)>;
  using Id = uint64_t;

  // Loads libcurl (http_available); when it cannot, every start fails with the reason.
  explicit HttpClient(uv_loop_t* loop);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Starts a request; `done` is called once from a loop callback (never from inside start) with
  // the response or the failure. Returns 0 with *err when the request cannot be started.
  Id start(const HttpRequest& req, DoneFn done, std::string* err);
  // Starts a transfer of another protocol (see CurlTransfer); same contract as start().
  Id start_transfer(CurlTransfer req, DoneFn done, std::string* err);
  // Aborts a request at once: its easy handle leaves the multi handle and `done` is never
  // called. Unknown or finished ids are ignored.
  void cancel(Id id);
  size_t in_flight() const { return transfers_.size(); }
  // Sockets curl asked us to watch right now (for tests).
  size_t watched_sockets() const { return sockets_.size(); }

  // Internal (defined in the .cc): one request in flight; one watched socket.
  struct Transfer;
  struct Socket;

 private:
  static int on_socket(void* easy, int fd, int what, void* userp, void* socketp);
  static int on_timer(void* multi, long timeout_ms, void* userp);
  void socket_action(int fd, int events);
  void finish_transfers();
  void forget_socket(int fd);
  // The part of starting a transfer that every protocol shares.
  std::unique_ptr<Transfer> new_transfer(int64_t timeout_ms, DoneFn done, std::string* err);
  Id add_transfer(std::unique_ptr<Transfer> t, std::string* err);

  uv_loop_t* loop_;
  void* multi_ = nullptr;       // CURLM*; null when libcurl could not be loaded
  std::string unavailable_;     // why, then
  UvHandle<uv_timer_t> timer_;  // curl's timeout
  std::unordered_map<int, Socket*> sockets_;
  std::unordered_map<Id, std::unique_ptr<Transfer>> transfers_;
  Id next_id_ = 1;
};

}  // namespace orch
