#include "drivers/process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <unordered_map>

#include "drivers/loop.h"
#include "drivers/signals.h"

extern char** environ;

namespace orch {

// One SIGCHLD watcher per loop, owned by the Loop (Loop::child_watcher): on each signal (libuv
// coalesces them), every child spawned on that loop and not yet reaped is asked with
// waitpid(WNOHANG). Only our own pids are waited for, never -1, so that children of other parts of
// the process are left alone. The watcher is started before a child is spawned (a SIGCHLD before
// there is a handler would be lost), keeps the loop alive while a child is unreaped, and closes
// itself when none is left.
class ChildWatcher {
 public:
  static ChildWatcher* get(uv_loop_t* loop) {
    ChildWatcher*& w = Loop::from(loop)->child_watcher();
    if (!w) {
      w = new ChildWatcher(loop);
      uv_signal_start(
          &w->sig_, [](uv_signal_t* h, int) { static_cast<ChildWatcher*>(h->data)->reap(); },
          SIGCHLD);
    }
    return w;
  }
  void add(pid_t pid, Process* p) { children_[pid] = p; }
  // The spawn failed: nothing to wait for; close if nothing else is.
  void release() {
    if (children_.empty()) close();
  }
  // Closes now, whatever is left unreaped (Loop::close: the loop is going away).
  void close() {
    if (closing_) return;
    closing_ = true;
    Loop::from(loop_)->child_watcher() = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&sig_),
             [](uv_handle_t* h) { delete static_cast<ChildWatcher*>(h->data); });
  }

 private:
  explicit ChildWatcher(uv_loop_t* loop) : loop_(loop) {
    uv_signal_init(loop, &sig_);
    sig_.data = this;
  }
  void reap() {
    std::vector<std::pair<Process*, int>> done;
    for (auto it = children_.begin(); it != children_.end();) {
      int status = 0;
      pid_t r = waitpid(it->first, &status, WNOHANG);
      if (r == it->first || (r < 0 && errno == ECHILD)) {
        done.emplace_back(it->second, r == it->first ? status : -1);
        it = children_.erase(it);
      } else {
        ++it;
      }
    }
    if (children_.empty()) close();  // the next spawn starts another
    for (auto& [p, status] : done) {
      if (status < 0)
        p->on_exit(-1, 0);  // reaped by someone else: its status is unknown
      else if (WIFSIGNALED(status))
        p->on_exit(0, WTERMSIG(status));
      else
        p->on_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 0, 0);
    }
  }

  uv_loop_t* loop_;
  uv_signal_t sig_{};
  bool closing_ = false;
  std::unordered_map<pid_t, Process*> children_;
};

void close_child_watcher(ChildWatcher* w) {
  w->close();
}

void Capture::append(const char* data, size_t n) {
  total_ += n;
  if (head_.size() < half_) {
    size_t take = std::min(n, half_ - head_.size());
    head_.append(data, take);
    data += take;
    n -= take;
  }
  if (n == 0) return;
  tail_.append(data, n);
  // Trim in chunks so that appends stay amortised O(n).
  if (tail_.size() > 2 * half_ + 4096) tail_.erase(0, tail_.size() - half_);
}

std::string Capture::text() const {
  std::string tail = tail_.size() > half_ ? tail_.substr(tail_.size() - half_) : tail_;
  uint64_t kept = head_.size() + tail.size();
  if (total_ <= kept) return head_ + tail;
  return head_ + "\n[... " + std::to_string(total_ - kept) + " bytes omitted ...]\n" + tail;
}

Process::Process(uv_loop_t* loop, ProcessTable* table, const ProcessSpec& spec)
    : loop_(loop),
      table_(table),
      stdin_data_(spec.stdin_data),
      timeout_ms_(spec.timeout_ms),
      kill_grace_ms_(spec.kill_grace_ms),
      start_ns_(uv_hrtime()) {
  result_.out = Capture(spec.max_capture);
  result_.err = Capture(spec.max_capture);
}

Process::~Process() {
  if (table_) {
    table_->live_.erase(this);
    if (table_->on_gone && result_.pid > 0) table_->on_gone(result_.pid);
  }
  if (result_.pid > 0) unregister_child_group(result_.pid);
}

Process* Process::spawn(uv_loop_t* loop, ProcessTable* table, const ProcessSpec& spec,
                        DoneFn on_done, std::string* err, std::string* code) {
  if (spec.argv.empty()) {
    *err = "empty command";
    *code = "EINVAL";
    return nullptr;
  }
  auto* p = new Process(loop, table, spec);
  p->on_done_ = std::move(on_done);
  uv_pipe_init(loop, &p->out_, 0);
  uv_pipe_init(loop, &p->err_, 0);
  uv_pipe_init(loop, &p->in_, 0);
  uv_timer_init(loop, &p->timer_);
  uv_timer_init(loop, &p->kill_timer_);
  p->out_.data = p->err_.data = p->in_.data = p->timer_.data = p;
  p->kill_timer_.data = p;
  p->open_handles_ = 5;
  auto fail = [&](int e) {
    *err = std::string(uv_err_name(-e)) + ": " + uv_strerror(-e);
    *code = uv_err_name(-e);
    p->on_done_ = nullptr;
    p->finished_ = true;
    p->exited_ = true;
    p->close_handles();
    return nullptr;
  };

  std::vector<char*> argv;
  for (auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  if (spec.set_env) {
    for (auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
  }
  // Pipes: the child's ends are dup2'ed onto 0/1/2; every descriptor is close-on-exec.
  int out[2] = {-1, -1}, errp[2] = {-1, -1}, in[2] = {-1, -1};
  auto close_all = [&] {
    for (int fd : {out[0], out[1], errp[0], errp[1], in[0], in[1]})
      if (fd >= 0) close(fd);
  };
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0 ||
      (spec.has_stdin && pipe2(in, O_CLOEXEC) != 0)) {
    int e = errno;
    close_all();
    return fail(e);
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (spec.has_stdin)
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  else
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
  // Nothing else of ours leaks into the child, even a descriptor opened without O_CLOEXEC.
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  if (!spec.cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, spec.cwd.c_str());
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // SETSID: the child leads its own session and process group, so a timeout or a cancel can
  // signal everything it started, not just the shell. Signals come back to their defaults
  // (orchrun ignores SIGPIPE) and none is blocked.
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  ChildWatcher* watcher = ChildWatcher::get(loop);
  pid_t pid = 0;
  int rc =
      posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), spec.set_env ? envp.data() : environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  // The child's ends belong to the child now.
  close(out[1]);
  close(errp[1]);
  if (in[0] >= 0) close(in[0]);
  out[1] = errp[1] = in[0] = -1;
  if (rc != 0) {
    watcher->release();
    close_all();
    return fail(rc);
  }
  for (int fd : {out[0], errp[0], in[1]})
    if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  uv_pipe_open(&p->out_, out[0]);
  uv_pipe_open(&p->err_, errp[0]);
  if (spec.has_stdin) uv_pipe_open(&p->in_, in[1]);
  p->result_.pid = pid;
  if (table) table->live_.insert(p);
  register_child_group(p->result_.pid);
  watcher->add(pid, p);

  auto alloc = [](uv_handle_t*, size_t suggested, uv_buf_t* buf) {
    buf->base = new char[suggested];
    buf->len = suggested;
  };
  auto on_read = [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* self = static_cast<Process*>(s->data);
    bool is_out = s == reinterpret_cast<uv_stream_t*>(&self->out_);
    if (n > 0) (is_out ? self->result_.out : self->result_.err).append(buf->base, n);
    delete[] buf->base;
    if (n < 0) {  // EOF or error: this stream is done
      uv_read_stop(s);
      (is_out ? self->out_eof_ : self->err_eof_) = true;
      self->maybe_finish();
    }
  };
  uv_read_start(reinterpret_cast<uv_stream_t*>(&p->out_), alloc, on_read);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&p->err_), alloc, on_read);

  if (spec.has_stdin) {
    uv_buf_t b = uv_buf_init(p->stdin_data_.data(), static_cast<unsigned>(p->stdin_data_.size()));
    p->write_req_.data = p;
    int wrc = uv_write(
        &p->write_req_, reinterpret_cast<uv_stream_t*>(&p->in_), &b, 1, [](uv_write_t* req, int) {
          // Done (or EPIPE because the child did not read it): close stdin so the
          // child sees EOF.
          auto* self = static_cast<Process*>(req->data);
          auto* h = reinterpret_cast<uv_handle_t*>(&self->in_);
          if (!uv_is_closing(h))
            uv_close(h, [](uv_handle_t* hh) { static_cast<Process*>(hh->data)->handle_closed(); });
        });
    if (wrc != 0) {
      uv_close(reinterpret_cast<uv_handle_t*>(&p->in_),
               [](uv_handle_t* hh) { static_cast<Process*>(hh->data)->handle_closed(); });
    }
  } else {
    uv_close(reinterpret_cast<uv_handle_t*>(&p->in_),
             [](uv_handle_t* hh) { static_cast<Process*>(hh->data)->handle_closed(); });
  }

  if (p->timeout_ms_ > 0) {
    uv_timer_start(
        &p->timer_,
        [](uv_timer_t* t) {
          auto* self = static_cast<Process*>(t->data);
          self->result_.timed_out = true;
          self->terminate(self->kill_grace_ms_);
        },
        p->timeout_ms_, 0);
  }
  return p;
}

void Process::terminate(int64_t grace_ms) {
  // The whole group is signalled even when the leader has exited: what it started may still
  // be running (and may ignore SIGTERM).
  if (grace_ms <= 0) {
    uv_kill(-result_.pid, SIGKILL);
    if (killing_) {
      // A delayed SIGKILL was pending (terminate with a grace, e.g. a detach): this one
      // supersedes it, so its timer no longer keeps a finished process alive.
      killing_ = false;
      uv_timer_stop(&kill_timer_);
      if (finished_) close_handles();
    }
    return;
  }
  if (killing_) return;  // SIGKILL is already on its way
  killing_ = true;
  uv_kill(-result_.pid, SIGTERM);
  uv_timer_start(
      &kill_timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<Process*>(t->data);
        uv_kill(-self->result_.pid, SIGKILL);
        self->killing_ = false;
        // A process that finished while waiting for this kept only this handle open.
        if (self->finished_) self->close_handles();
      },
      static_cast<uint64_t>(grace_ms), 0);
}

void Process::detach(int64_t grace_ms) {
  on_done_ = nullptr;
  terminate(grace_ms);
}

void Process::on_exit(int64_t status, int sig) {
  exited_ = true;
  result_.exit_code = status;
  result_.term_signal = sig;
  result_.duration_ms = static_cast<int64_t>((uv_hrtime() - start_ns_) / 1000000);
  // Whatever else the child started is still in its group; if it keeps our pipes open we do
  // not wait for it forever: 250 ms after the leader exits, the result is final.
  uv_timer_stop(&timer_);
  uv_timer_start(
      &timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<Process*>(t->data);
        self->out_eof_ = self->err_eof_ = true;
        self->maybe_finish();
      },
      250, 0);
  maybe_finish();
}

void Process::maybe_finish() {
  if (finished_ || !exited_ || !out_eof_ || !err_eof_) return;
  finished_ = true;
  if (on_done_) {
    auto cb = std::move(on_done_);
    on_done_ = nullptr;
    cb(result_);
  }
  close_handles();
}

void Process::close_handles() {
  auto closer = [](uv_handle_t* h) { static_cast<Process*>(h->data)->handle_closed(); };
  for (uv_handle_t* h :
       {reinterpret_cast<uv_handle_t*>(&out_), reinterpret_cast<uv_handle_t*>(&err_),
        reinterpret_cast<uv_handle_t*>(&in_), reinterpret_cast<uv_handle_t*>(&timer_)}) {
    if (!uv_is_closing(h)) uv_close(h, closer);
  }
  // A pending SIGKILL for the group outlives the leader; its timer closes when it has fired.
  auto* kt = reinterpret_cast<uv_handle_t*>(&kill_timer_);
  if (!killing_ && !uv_is_closing(kt)) uv_close(kt, closer);
}

void Process::handle_closed() {
  if (--open_handles_ == 0 && finished_) delete this;
}

void ProcessTable::kill_all() {
  for (Process* p : live_) {
    p->on_done_ = nullptr;
    p->terminate(0);
  }
}

ProcessTable::~ProcessTable() {
  kill_all();
  for (Process* p : live_) p->table_ = nullptr;
  live_.clear();
}

}  // namespace orch
