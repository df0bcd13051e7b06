// libcurl as orchrun calls it: not linked, but loaded with dlopen on first use (see
// http_available in drivers/http_client.h), through this table of function pointers.
// Code that configures transfers of other protocols (SMTP, bindings/mod_smtp.cc) calls curl
// through it too, after http_available() returned true.
#pragma once
#include <curl/curl.h>

namespace orch {

// The libcurl functions we call, loaded with dlsym: libcurl is not linked (see http_available).
// Each pointer has the exact type of the function declared in <curl/curl.h>, variadic ones
// (curl_easy_setopt, curl_multi_setopt, curl_easy_getinfo) included.
#define ORCH_CURL_FUNCTIONS(X) \
  X(global_init)               \
  X(easy_init)                 \
  X(easy_cleanup)              \
  X(easy_setopt)               \
  X(easy_getinfo)              \
  X(easy_strerror)             \
  X(slist_append)              \
  X(slist_free_all)            \
  X(multi_init)                \
  X(multi_cleanup)             \
  X(multi_setopt)              \
  X(multi_add_handle)          \
  X(multi_remove_handle)       \
  X(multi_socket_action)       \
  X(multi_info_read)           \
  X(multi_strerror)

struct CurlApi {
#define ORCH_CURL_POINTER(name) decltype(&::curl_##name) name = nullptr;
  ORCH_CURL_FUNCTIONS(ORCH_CURL_POINTER)
#undef ORCH_CURL_POINTER
};

// Filled once by http_available; read only after it returned true.
extern CurlApi curl;

}  // namespace orch
