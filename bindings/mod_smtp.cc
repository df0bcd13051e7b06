// core.smtp_send: hands a ready RFC 5322 message to an SMTP server with libcurl, on the loop's
// HttpClient (the same curl multi handle as o.http.request), so the loop never blocks. The
// message itself is built in Lua (stdlib/orch/notify.lua); this only moves bytes.
//
//   core.smtp_send { url = "smtp://host:port", from = "a@x", rcpt = { "b@y", ... },
//                    message = "...", username =, password =, starttls = "required" | "try" |
//                    "off", timeout = ms }
//   -> { status = <last SMTP reply code>, duration_ms } | nil, message, code, status
#include <curl/curl.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bindings/async_op.h"
#include "bindings/lua_state.h"
#include "drivers/curl_api.h"
#include "drivers/http_client.h"

namespace orch {
namespace {

// What curl reads while the transfer runs; owned by the transfer (CurlTransfer::keep).
struct SmtpJob {
  ~SmtpJob() {
    if (rcpt) curl.slist_free_all(rcpt);
  }
  std::string url, from, message, username, password;
  long use_ssl = CURLUSESSL_TRY;
  curl_slist* rcpt = nullptr;
  size_t sent = 0;
};

size_t read_message(char* buf, size_t size, size_t n, void* userp) {
  auto* j = static_cast<SmtpJob*>(userp);
  size_t len = std::min(size * n, j->message.size() - j->sent);
  memcpy(buf, j->message.data() + j->sent, len);
  j->sent += len;
  return len;
}

std::string string_field(lua_State* L, const char* name) {
  lua_getfield(L, 1, name);
  std::string v;
  if (lua_type(L, -1) == LUA_TSTRING) {
    size_t n;
    const char* s = lua_tolstring(L, -1, &n);
    v.assign(s, n);
  }
  lua_pop(L, 1);
  return v;
}

// Reads the arguments and starts the transfer. Everything with C++ locals happens here, so that
// the caller raises or yields only once they are gone.
Start start_smtp(lua_State* L, const AsyncOp& op, HttpClient** client, HttpClient::Id* id) {
  std::string err;
  // libcurl is loaded on first use; building the recipient list below already calls it.
  if (!http_available(&err)) {
    push_failure(L, err, "error");
    return Start::Failed;
  }
  auto job = std::make_shared<SmtpJob>();
  job->url = string_field(L, "url");
  job->from = string_field(L, "from");
  job->message = string_field(L, "message");
  job->username = string_field(L, "username");
  job->password = string_field(L, "password");
  std::string starttls = string_field(L, "starttls");
  if (starttls == "required")
    job->use_ssl = CURLUSESSL_ALL;
  else if (starttls == "off")
    job->use_ssl = CURLUSESSL_NONE;
  lua_getfield(L, 1, "timeout");
  int64_t timeout_ms = lua_isnumber(L, -1) ? static_cast<int64_t>(lua_tonumber(L, -1)) : 30000;
  lua_pop(L, 1);
  lua_getfield(L, 1, "rcpt");
  if (lua_istable(L, -1)) {
    for (int i = 1;; i++) {
      lua_rawgeti(L, -1, i);
      if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        break;
      }
      job->rcpt = curl.slist_append(job->rcpt, lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  if (job->url.rfind("smtp://", 0) != 0 && job->url.rfind("smtps://", 0) != 0)
    err = "core.smtp_send: 'url' must start with smtp:// or smtps://";
  else if (!job->rcpt)
    err = "core.smtp_send: 'rcpt' must list at least one address";
  if (!err.empty()) {
    lua_pushlstring(L, err.data(), err.size());
    return Start::Misuse;
  }
  TaskHost* host = op.host();
  *client = host->http();
  if (!*client) {
    lua_pushliteral(L, "o.notify.email is not available in this host");
    return Start::Misuse;
  }
  CurlTransfer req;
  req.what = "SMTP " + job->url;
  req.timeout_ms = timeout_ms;
  req.configure = [j = job.get()](void* easy, std::string*) {
    CURL* e = static_cast<CURL*>(easy);
    curl.easy_setopt(e, CURLOPT_URL, j->url.c_str());
    curl.easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl.easy_setopt(e, CURLOPT_MAIL_FROM, j->from.c_str());
    curl.easy_setopt(e, CURLOPT_MAIL_RCPT, j->rcpt);
    curl.easy_setopt(e, CURLOPT_USE_SSL, j->use_ssl);
    if (!j->username.empty()) curl.easy_setopt(e, CURLOPT_USERNAME, j->username.c_str());
    if (!j->password.empty()) curl.easy_setopt(e, CURLOPT_PASSWORD, j->password.c_str());
    curl.easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl.easy_setopt(e, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(j->message.size()));
    curl.easy_setopt(e, CURLOPT_READFUNCTION, read_message);
    curl.easy_setopt(e, CURLOPT_READDATA, j);
    return true;
  };
  req.keep = job;
  host->before_effect();
  *id = (*client)->start_transfer(
      std::move(req),
      [op](HttpResponse& r) {
        op.complete([&r](lua_State* co) {
          if (!r.ok()) {
            push_failure(co, r.error, r.code);
            lua_pushinteger(co, static_cast<lua_Integer>(r.status));
            return 4;
          }
          lua_createtable(co, 0, 2);
          lua_pushinteger(co, static_cast<lua_Integer>(r.status));
          lua_setfield(co, -2, "status");
          lua_pushnumber(co, static_cast<lua_Number>(r.duration_ms));
          lua_setfield(co, -2, "duration_ms");
          return 1;
        });
      },
      &err);
  if (!*id) {
    push_failure(L, err, "error");
    return Start::Failed;
  }
  return Start::Started;
}

int l_smtp_send(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  AsyncOp op = AsyncOp::begin(L, "o.notify.email");
  HttpClient* client = nullptr;
  HttpClient::Id id = 0;
  Start started = start_smtp(L, op, &client, &id);
  if (started == Start::Misuse) return lua_error(L);
  if (started == Start::Failed) return 3;
  return op.yield(L, [client, id] { client->cancel(id); });
}

}  // namespace

void register_smtp(lua_State* L) {
  lua_pushcfunction(L, l_smtp_send);
  lua_setfield(L, -2, "smtp_send");
}

}  // namespace orch
