// lib/fiber_algorithm.cpp — tendril's Boost.Fiber scheduling algorithm, with the epoll reactor inside it.
//
// The only file that implements boost::fibers::algo::algorithm. Round-robin over ready fibers, plus:
//  - suspend_until() waits in epoll_wait() until the earliest fiber deadline (sleeps, timed waits and the curl
//    driver's timer are all fiber deadlines), an fd event, or notify(); with no fd watched, on a futex instead;
//  - notify() wakes that wait (eventfd write or futex wake), so a fiber made ready from another OS thread wakes
//    the loop; it makes no system call while the loop is not asleep;
//  - while fibers stay runnable, the reactor is polled without blocking once per round of the ready queue (when
//    the dispatcher's turn comes), so I/O never starves behind busy tasks.
// Boost.Fiber's library is built with NDEBUG; its inline code compiled here (ready-queue links, context records)
// gets the same treatment, so tendril's hot paths don't pay for assertions (an out-of-line ready_is_linked() call
// per scheduling decision) that plain Boost.Fiber doesn't, in tendril's default debugoptimized build too.
#define BOOST_DISABLE_ASSERTS
#include <linux/futex.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <boost/fiber/algo/algorithm.hpp>
#include <boost/fiber/context.hpp>
#include <boost/fiber/operations.hpp>
#include <boost/fiber/scheduler.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <iterator>
#include <system_error>

#if defined(TENDRIL_HAVE_VALGRIND)
#include <valgrind/valgrind.h>

#include <boost/context/stack_traits.hpp>
#endif

#include "reactor.hpp"

namespace tendril::detail {

reactor::reactor() {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw std::system_error(errno, std::generic_category(), "tendril: epoll_create1");
  event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) {
    ::close(epoll_fd_);
    throw std::system_error(errno, std::generic_category(), "tendril: eventfd");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // nullptr marks the eventfd
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, event_fd_, &ev);
}

reactor::~reactor() {
  ::close(event_fd_);
  ::close(epoll_fd_);
}

namespace {
// The scheduling algorithm counts the fds its reactor watches (besides the eventfd), so that while tasks stay
// runnable it polls only when there is I/O to look at. Kept here, beside the reactor, through this hook.
void count_watched(reactor* r, int delta) noexcept;
}  // namespace

void reactor::watch(int fd, std::uint32_t events, io_source* source) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = source;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) == 0) {
    count_watched(this, +1);
    return;
  }
  if (errno == EEXIST && ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev) == 0) return;
  throw std::system_error(errno, std::generic_category(), "tendril: epoll_ctl(fd " + std::to_string(fd) + ")");
}

void reactor::unwatch(int fd) noexcept {
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr) == 0) count_watched(this, -1);
}

int reactor::poll(int timeout_ms) noexcept {
  epoll_event events[128];
  int n = ::epoll_wait(epoll_fd_, events, 128, timeout_ms);
  if (n <= 0) return 0;
  for (int i = 0; i < n; ++i) {
    if (events[i].data.ptr == nullptr) {
      std::uint64_t count;
      ssize_t r = ::read(event_fd_, &count, sizeof count);  // one read resets an eventfd's counter
      (void)r;
      continue;
    }
    static_cast<io_source*>(events[i].data.ptr)->on_ready(events[i].events);
  }
  return n;
}

void reactor::interrupt() noexcept {
  std::uint64_t one = 1;
  ssize_t r = ::write(event_fd_, &one, sizeof one);
  (void)r;  // EAGAIN means a wake-up is already pending
}

namespace {

namespace fibers = boost::fibers;

#if defined(TENDRIL_HAVE_VALGRIND)
// The dispatcher's stack, for valgrind. Boost.Fiber allocates it itself and registers it only when Boost is
// built with valgrind support. Unregistered, memcheck takes switches between it and other stacks for ordinary
// stack-pointer moves when they are near each other, and marks the memory in between (other tasks' live frames)
// inaccessible. Boost places the dispatcher_context object at the top of that stack, just above the usable part,
// so its address is the stack's upper end; the upper half of Boost's default size is registered.
struct dispatcher_stack {
  static std::uintptr_t top(const fibers::context* dispatcher) noexcept {
    return reinterpret_cast<std::uintptr_t>(dispatcher);
  }
  static std::size_t half() noexcept { return boost::context::stack_traits::default_size() / 2; }
  static unsigned register_with_valgrind(const fibers::context* dispatcher) noexcept {
    return VALGRIND_STACK_REGISTER(top(dispatcher) - half(), top(dispatcher));
  }
  // On the dispatcher: whether its stack pointer is in the registered range. Not inlined, so it has a frame.
  [[gnu::noinline]] static bool running_on_registered_part() noexcept {
    char probe = 0;
    const auto sp = reinterpret_cast<std::uintptr_t>(&probe);
    const std::uintptr_t t = top(fibers::context::active());
    return sp < t && t - sp < half();
  }
};
#endif

class reactor_algorithm final : public fibers::algo::algorithm {
 public:
#if defined(TENDRIL_HAVE_VALGRIND)
  reactor_algorithm() : valgrind_(RUNNING_ON_VALGRIND != 0) {}
  ~reactor_algorithm() override {
    if (dispatcher_stack_id_ != 0) VALGRIND_STACK_DEREGISTER(dispatcher_stack_id_);
  }
#endif

  void awakened(fibers::context* ctx) noexcept override {
#if defined(TENDRIL_HAVE_VALGRIND)
    // The first context handed over is the dispatcher, moved here from Boost's default algorithm by set_algo(),
    // before anything has switched to it: its stack is registered before that first switch.
    if (!first_awakened_seen_) [[unlikely]] {
      first_awakened_seen_ = true;
      if (valgrind_ && ctx->is_context(fibers::type::dispatcher_context)) {
        dispatcher_stack_id_ = dispatcher_stack::register_with_valgrind(ctx);
      }
    }
#endif
    ctx->ready_link(ready_);
    // The dispatcher queues itself right before it resumes the fiber it picked (scheduler::dispatch()).
    if (ctx->is_context(fibers::type::dispatcher_context)) dispatcher_fresh_ = true;
  }

  fibers::context* pick_next() noexcept override {
#if defined(TENDRIL_HAVE_VALGRIND)
    if (dispatcher_stack_id_ != 0 && !dispatcher_checked_ &&
        fibers::context::active()->is_context(fibers::type::dispatcher_context)) {
      dispatcher_checked_ = true;
      if (!dispatcher_stack::running_on_registered_part()) {  // not the layout we know: leave it alone
        VALGRIND_STACK_DEREGISTER(dispatcher_stack_id_);
        dispatcher_stack_id_ = 0;
      }
    }
#endif
    // Look at I/O without blocking once per round of the ready queue, so busy tasks never starve it:
    //  - only on the dispatcher, whose turn comes once per round. A fiber calls pick_next() while it parks, still
    //    holding its waiter's spinlock (released only after the switch), so delivering an event to that waiter
    //    from there would deadlock;
    //  - only when something is ready: with nothing ready the dispatcher goes on to suspend_until(), which polls
    //    (or sleeps) anyway. (A remote wake-up drained from the eventfd here is not lost either way: notify()
    //    also sets pending_, which suspend_until() checks before it sleeps.);
    //  - only when some fd is watched: otherwise there is nothing to look at, and busy tasks pay no system call;
    //  - not right after suspend_until() has polled: this round has already looked.
    if (!ready_.empty() && (watched_ > 0 || untracked_watch.load(std::memory_order_relaxed)) &&
        fibers::context::active()->is_context(fibers::type::dispatcher_context)) {
      if (polled_) {
        polled_ = false;
      } else {
        reactor_.poll(0);
      }
    }
    if (ready_.empty()) return nullptr;
    auto it = ready_.begin();
    // A hand-off: the dispatcher has just run (it picked the fiber that is giving up the CPU now), and the
    // queue holds the dispatcher and exactly one fiber, made ready since by the fiber switching away (a task
    // spawned and then joined, a wake-up and then a wait). The dispatcher's pass would find nothing new (timers
    // and the remote queue looked at a moment ago; the only terminated fiber it could release is the one still
    // switching away), so that fiber goes first and the dispatcher, still at the front, runs right after it.
    // That saves a switch to the dispatcher and back, and its loop. Only then: with more fibers ready (say a
    // batch spawned before a join) the dispatcher keeps its turn, or the fibers it would release would wait a
    // whole round (their stacks not back in the pool when the next batch is spawned). Passed over at most once
    // per pass of its own, it runs at least every other switch.
    if (dispatcher_fresh_) {
      dispatcher_fresh_ = false;
      if (it->is_context(fibers::type::dispatcher_context)) {
        auto next = std::next(it);
        if (next != ready_.end() && std::next(next) == ready_.end()) it = next;
      }
    }
    fibers::context* ctx = &*it;
    ready_.erase(it);
    return ctx;
  }

  // The dispatcher context is not work: counting it would make this always true and spin the CPU at 100%
  // (Boost.Fiber issue #98). The dispatcher is in the queue at most once.
  bool has_ready_fibers() const noexcept override {
    auto it = ready_.begin();
    if (it == ready_.end()) return false;
    return !it->is_context(fibers::type::dispatcher_context) || std::next(it) != ready_.end();
  }

  void suspend_until(std::chrono::steady_clock::time_point const& deadline) noexcept override {
    // Never block on fiber primitives here: this runs on the dispatcher with no fiber to switch to.
    //
    // With no fd watched there is nothing for epoll to report but notify(): then sleep on a futex, which is what
    // a remote wake-up costs with Boost's own algorithms (one wake, one wait), instead of an eventfd write, an
    // epoll_wait() and an eventfd read. notify() and this follow Dekker's pattern: this stores how it is about
    // to sleep, then looks at pending_; notify() stores pending_, then looks at how (and whether) it sleeps.
    // Either this sees the notification and does not sleep, or notify() sees the sleep and ends it.
    const bool io = watched_ > 0 || untracked_watch.load(std::memory_order_relaxed);
    sleeping_.store(io ? sleep_epoll : sleep_futex, std::memory_order_seq_cst);
    if (pending_.exchange(0, std::memory_order_seq_cst) != 0) {
      sleeping_.store(sleep_none, std::memory_order_relaxed);
      return;  // a wake-up arrived since the scheduler last looked at its remote queue: look again
    }
    if (!io) {
      futex_sleep(deadline);
    } else {
      epoll_sleep(deadline);
    }
    sleeping_.store(sleep_none, std::memory_order_relaxed);
    // Whatever woke us, the scheduler looks at its remote queue next: a notify() from before this point needs
    // no further wake-up.
    pending_.store(0, std::memory_order_relaxed);
  }

  void notify() noexcept override {
    // Called on the waking thread, after the woken context has been queued.
    const int how = pending_.exchange(1, std::memory_order_seq_cst) != 0
                        ? sleep_none  // already notified, not yet consumed
                        : sleeping_.load(std::memory_order_seq_cst);
    if (how == sleep_futex) {
      // The futex wake needs only the address: let the woken task go on at once (see tl_wake_pending). Should
      // its thread be gone by then, the wake finds no waiter or, at worst, a spurious one.
      void* word = &pending_;
      release_woken();
      ::syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
      return;
    }
    if (how == sleep_epoll) reactor_.interrupt();  // uses the eventfd: the woken task must wait for this
    release_woken();
  }

  reactor& get_reactor() noexcept { return reactor_; }

  // fds the reactor watches, besides its eventfd. Closing a watched fd without unwatching it leaves the count
  // too high, which only costs a poll per round.
  std::size_t watched_ = 0;
  // Set if a reactor was ever changed from a thread other than its own (not done by tendril; counted no more).
  static inline std::atomic<bool> untracked_watch{false};

 private:
  enum : int { sleep_none, sleep_futex, sleep_epoll };

  void futex_sleep(std::chrono::steady_clock::time_point const& deadline) noexcept {
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time, which is steady_clock's.
    timespec ts{};
    const timespec* at = nullptr;
    if (deadline != std::chrono::steady_clock::time_point::max()) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
      ts.tv_sec = static_cast<time_t>(ns / 1000000000);
      ts.tv_nsec = static_cast<long>(ns % 1000000000);
      at = &ts;
    }
    ::syscall(SYS_futex, &pending_, FUTEX_WAIT_BITSET_PRIVATE, 0, at, nullptr, FUTEX_BITSET_MATCH_ANY);
  }

  void epoll_sleep(std::chrono::steady_clock::time_point const& deadline) noexcept {
    int timeout_ms = -1;
    if (deadline != std::chrono::steady_clock::time_point::max()) {
      auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) {
        timeout_ms = 0;
      } else {
        // Round up so a deadline is never reported early.
        auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
        timeout_ms = static_cast<int>(std::min<long long>(ms, 24LL * 3600 * 1000));
      }
    }
    reactor_.poll(timeout_ms);
    polled_ = true;
  }

  static void release_woken() noexcept {
    if (std::atomic<bool>* flag = tl_wake_pending) {
      tl_wake_pending = nullptr;
      flag->store(false, std::memory_order_release);
    }
  }

  // 1 once notify() has been called and the dispatcher has not yet looked (a futex word: 32 bits).
  std::atomic<int> pending_{0};
  // How the dispatcher sleeps now, if it does: sleep_none, sleep_futex or sleep_epoll.
  std::atomic<int> sleeping_{sleep_none};
  fibers::scheduler::ready_queue_type ready_;
  bool dispatcher_fresh_ = false;  // the dispatcher has queued itself and no pick_next() has run since
  bool polled_ = false;            // suspend_until() has just polled the reactor
  // Owned by the algorithm, which Boost.Fiber's scheduler owns: it outlives every fiber, and stays alive while
  // the scheduler still calls the algorithm during thread teardown.
  reactor reactor_;
#if defined(TENDRIL_HAVE_VALGRIND)
  bool valgrind_ = false;
  bool first_awakened_seen_ = false;
  bool dispatcher_checked_ = false;
  unsigned dispatcher_stack_id_ = 0;
#endif
};

thread_local reactor* tl_reactor __attribute__((tls_model("initial-exec"))) = nullptr;
thread_local reactor_algorithm* tl_algorithm __attribute__((tls_model("initial-exec"))) = nullptr;

void count_watched(reactor* r, int delta) noexcept {
  if (tl_algorithm == nullptr || r != &tl_algorithm->get_reactor()) {
    reactor_algorithm::untracked_watch.store(true, std::memory_order_relaxed);
    return;
  }
  std::size_t& n = tl_algorithm->watched_;
  if (delta > 0) {
    ++n;
  } else if (n > 0) {
    --n;
  }
}

}  // namespace

thread_local std::atomic<bool>* tl_wake_pending __attribute__((tls_model("initial-exec"))) = nullptr;

reactor& install_scheduler() {
  if (tl_reactor != nullptr) return *tl_reactor;
  auto* algo = new reactor_algorithm();
  fibers::context::active()->get_scheduler()->set_algo(fibers::algo::algorithm::ptr_t(algo));
  tl_algorithm = algo;
  tl_reactor = &algo->get_reactor();
  return *tl_reactor;
}

}  // namespace tendril::detail
