// How orchrun owns libuv handles. libuv may still touch a handle after uv_close() until its
// close callback runs, so memory is freed only there, never directly. Two ways, and only two:
//
// 1. A handle on its own (a timer, an async, a listener): UvHandle<T>, a unique_ptr whose
//    deleter asks libuv to close the handle and frees it in the close callback. `data` is
//    cleared first, so a callback already queued for it sees null and does nothing.
//
//        UvHandle<uv_timer_t> t = make_uv_handle<uv_timer_t>();
//        uv_timer_init(loop, t.get());  t->data = this;  ...  t.reset();  // or let it go
//
// 2. Handles embedded in an object that must outlive all of them (a connection's socket and
//    timer, a process's pipes, a curl socket's poll): the object sets `data = this`, closes each
//    handle with a callback that counts, and deletes itself when the last one has closed
//    (drivers/http_server.cc Connection, drivers/process.cc Process).
//
// Loop::close() (drivers/loop.h) closes whatever an owner forgot and names it.
#pragma once
#include <uv.h>

#include <memory>

namespace orch {

// Frees a handle allocated with `new T` once libuv is done with it. Closing twice is harmless.
template <typename T>
void close_and_delete(T* handle) {
  if (!handle) return;
  auto* h = reinterpret_cast<uv_handle_t*>(handle);
  if (uv_is_closing(h)) return;
  h->data = nullptr;
  uv_close(h, [](uv_handle_t* hh) { delete reinterpret_cast<T*>(hh); });
}

template <typename T>
struct UvClose {
  void operator()(T* handle) const noexcept { close_and_delete(handle); }
};

// An owned handle: allocate with make_uv_handle, init with uv_*_init before anything else.
template <typename T>
using UvHandle = std::unique_ptr<T, UvClose<T>>;

template <typename T>
UvHandle<T> make_uv_handle() {
  return UvHandle<T>(new T{});
}

}  // namespace orch
