// ExecRef: a weak reference to a step being executed (an Exec), for callbacks that run later:
// it reads null once the step is gone (an earlier loop iteration, a cancelled branch). Made
// and copied on the loop's thread only, so its count is a plain integer, and its tokens are
// pooled per thread: taking one costs no allocation once a run is under way (a wide
// parallel makes hundreds of thousands).
#pragma once
#include <cstdint>
#include <utility>

namespace orch {

class Exec;

class ExecRef {
 public:
  ExecRef() = default;
  ExecRef(const ExecRef& o) : t_(o.t_) {
    if (t_) t_->refs++;
  }
  ExecRef(ExecRef&& o) noexcept : t_(std::exchange(o.t_, nullptr)) {}
  ExecRef& operator=(ExecRef o) noexcept {
    std::swap(t_, o.t_);
    return *this;
  }
  ~ExecRef() { release(); }
  Exec* get() const { return t_ ? t_->exec : nullptr; }
  bool expired() const { return get() == nullptr; }
  struct Token {
    Exec* exec;
    uint32_t refs;
    Token* next_free;
  };

 private:
  friend class Exec;
  // The reference an Exec holds to itself; the Exec clears it when it is destroyed.
  static ExecRef make(Exec* e);
  void clear() {
    if (t_) t_->exec = nullptr;
  }
  void release();
  Token* t_ = nullptr;
};

}  // namespace orch
