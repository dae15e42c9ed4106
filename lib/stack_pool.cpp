// lib/stack_pool.cpp — mmap'd stacks with guard pages, pooled per thread, and the stack-overflow reporter.
#include "stack_pool.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "tendril/stack.hpp"
#include "valgrind_requests.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#else
#define ASAN_UNPOISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#endif

namespace tendril {

std::size_t default_stack_size() noexcept { return 256 * 1024; }

namespace detail {

__thread const stack_label* tl_current_label __attribute__((tls_model("initial-exec"))) = nullptr;
const std::size_t stack_guard_size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));

namespace {

std::size_t page_size() noexcept {
  static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

// Pooled stacks per thread: at most this many freed stacks, and at most this many bytes of usable stack, are kept
// for reuse. Counted in stacks, so that a batch of a thousand default-size tasks finishing at once is reused by the
// next batch instead of being unmapped and mapped again; a pooled stack keeps only the pages its last user
// touched resident, so the byte limit bounds what the pool can hold resident in the worst case.
constexpr std::size_t pool_count_limit = 1024;
constexpr std::size_t pool_byte_limit = 256UL * 1024 * 1024;
// Stacks beyond the limits are unmapped in batches of this many: sorted by address, adjacent ones (the usual case
// when a crowd of tasks spawned together finishes together) go in one munmap() call.
constexpr std::size_t release_batch = 128;
// New stacks are mapped a slab at a time (one mmap() for several stacks) when guard pages need no mapping of their
// own (see guard_mode): up to this many bytes or stacks per slab.
constexpr std::size_t slab_bytes = 4UL * 1024 * 1024;
constexpr std::size_t slab_max_stacks = 64;
// No stack can be larger than the x86-64 user address space (128 TiB): requests above this are clamped to it, so
// rounding to pages cannot wrap around, and the mapping then fails with a clear error.
constexpr std::size_t max_stack_size = std::size_t{1} << 47;

// std::bad_alloc (what a failed mapping has always thrown) with a message that says which stack and why.
class stack_alloc_error final : public std::bad_alloc {
 public:
  stack_alloc_error(std::size_t size, const char* step, int err) noexcept {
    std::snprintf(what_, sizeof what_,
                  "tendril: cannot allocate a stack of %zu usable bytes (%s: %s); ask for a smaller stack_size, or "
                  "check ulimit -v and vm.max_map_count",
                  size, step, std::strerror(err));
  }
  const char* what() const noexcept override { return what_; }

 private:
  char what_[256];
};

// How guard pages are made. MADV_GUARD_INSTALL (Linux 6.13) marks pages in the page tables: no separate mapping,
// so a whole slab of stacks is one VMA (and adjacent slabs merge), which makes mapping, unmapping and the VMA count
// (vm.max_map_count) cheap. Older kernels, and valgrind (which knows nothing of guard markers), get one mapping per
// stack with an mprotect(PROT_NONE) guard page: two VMAs per stack.
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
enum class guard_mode { unknown, marker, mprotect };
std::atomic<guard_mode> guard_kind{guard_mode::unknown};

// Free stacks of one usable size.
struct size_class {
  std::size_t size = 0;
  std::vector<stack_block> free;  // freed stacks, most recently freed last
  // The not yet used part of the last slab: stacks are carved from `fresh_top` downwards while above `fresh_low`.
  char* fresh_top = nullptr;
  char* fresh_low = nullptr;
};

struct thread_pool_state {
  std::vector<size_class> classes;  // few sizes in practice: a linear search beats hashing
  std::vector<stack_block> releasing;
  std::size_t pooled_bytes = 0;
  stack_pool_stats stats;
  iovec slab_iov[slab_max_stacks];  // for map_slab(), kept off the (possibly small) calling stack
  // The fast paths of allocate_stack() and free_stack() (a task's spawn and end): the class last used, and the
  // request (allocate_stack()'s argument, 0 for the default size) that found it. A pointer into `classes`,
  // reset whenever that vector grows.
  size_class* last_class = nullptr;
  std::size_t last_request = 0;
  bool on_valgrind = false;  // set by create_pool()
  ~thread_pool_state();

  size_class& class_for(std::size_t size) {
    for (auto& c : classes) {
      if (c.size == size) return c;
    }
    classes.push_back(size_class{size, {}, nullptr, nullptr});
    last_class = nullptr;
    return classes.back();
  }
  void flush_releasing() noexcept;
};

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

// process_madvise() on this process: one system call for a whole vector of ranges. False if it did not do it all
// (then the caller falls back, or does without). Lock-free, so that a child forked while another thread was in
// here cannot deadlock. The pidfd is per process: a child opens its own, and leaves the inherited one alone (it
// may have closed and reused that number; pidfds are close-on-exec). An advice the kernel refused once (old
// kernel, seccomp) is not tried again.
bool madvise_self(const iovec* iov, std::size_t n, int advice) noexcept {
  static std::atomic<std::uint64_t> self{0};     // (pid << 32) | pidfd; 0: none yet
  static std::atomic<std::uint32_t> refused{0};  // bit 0: pidfd_open, bit 1: MADV_GUARD_INSTALL, bit 2: others
  const std::uint32_t bit = advice == MADV_GUARD_INSTALL ? 2U : 4U;
  if ((refused.load(std::memory_order_relaxed) & (1U | bit)) != 0) return false;
  const auto pid = static_cast<std::uint32_t>(::getpid());
  std::uint64_t cur = self.load(std::memory_order_acquire);
  if (cur == 0 || static_cast<std::uint32_t>(cur >> 32) != pid) {
    const long opened = ::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0U);
    if (opened < 0) {
      refused.fetch_or(1U, std::memory_order_relaxed);
      return false;
    }
    const std::uint64_t mine = (std::uint64_t{pid} << 32) | static_cast<std::uint32_t>(opened);
    if (self.compare_exchange_strong(cur, mine, std::memory_order_acq_rel)) {
      cur = mine;
    } else {
      ::close(static_cast<int>(opened));  // another thread of this process was first: ours is not needed
      if (static_cast<std::uint32_t>(cur >> 32) != pid) return false;
    }
  }
  const int fd = static_cast<int>(static_cast<std::uint32_t>(cur));
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < n; ++i) bytes += iov[i].iov_len;
  const long done = ::syscall(SYS_process_madvise, fd, iov, n, advice, 0U);
  if (done < 0 && (errno == ENOSYS || errno == EPERM || errno == EINVAL)) {
    refused.fetch_or(bit, std::memory_order_relaxed);
  }
  return done >= 0 && static_cast<std::size_t>(done) == bytes;
}

enum class pool_phase : unsigned char { unborn, alive, dead };
// initial-exec: read on every allocation and free; a general-dynamic access from a shared library costs a
// __tls_get_addr call. Dead once the thread's pool is destroyed: stacks freed later (by Boost.Fiber's teardown)
// are unmapped at once.
thread_local thread_pool_state* tl_pool __attribute__((tls_model("initial-exec"))) = nullptr;
thread_local pool_phase tl_pool_phase __attribute__((tls_model("initial-exec"))) = pool_phase::unborn;

// Valgrind's ids of the stacks it was told about, by stack top. Process-wide, not per thread: a stack can be
// freed after its thread's pool is gone (Boost.Fiber's teardown frees task stacks last), and a stack left
// registered makes memcheck take a later mapping at the same address for that old stack (false reports of
// reads "on thread 1's stack"). Only used under valgrind; never destroyed, as threads free stacks until the end.
struct valgrind_stacks {
  std::mutex mutex;
  std::unordered_map<const char*, unsigned> ids;
};
valgrind_stacks& registered_stacks() {
  static auto* r = new valgrind_stacks;
  return *r;
}

void register_with_valgrind(const stack_block& b) {
  if (RUNNING_ON_VALGRIND != 0) {
    valgrind_stacks& r = registered_stacks();
    std::lock_guard<std::mutex> lk(r.mutex);
    r.ids[b.top] = VALGRIND_STACK_REGISTER(b.top - b.size, b.top);
  }
}

void deregister_with_valgrind(const stack_block& b) noexcept {
  if (RUNNING_ON_VALGRIND != 0) {
    valgrind_stacks& r = registered_stacks();
    std::lock_guard<std::mutex> lk(r.mutex);
    auto it = r.ids.find(b.top);
    if (it != r.ids.end()) {
      VALGRIND_STACK_DEREGISTER(it->second);
      r.ids.erase(it);
    }
  }
}

void unmap(thread_pool_state* st, const stack_block& b) noexcept {
  deregister_with_valgrind(b);
  ::munmap(b.top - b.size - page_size(), b.size + page_size());
  if (st != nullptr) --st->stats.mapped;
}

void thread_pool_state::flush_releasing() noexcept {
  if (releasing.empty()) return;
  std::sort(releasing.begin(), releasing.end(),
            [](const stack_block& a, const stack_block& b) { return a.top < b.top; });
  const std::size_t page = page_size();
  char* run_low = nullptr;
  char* run_high = nullptr;
  for (const stack_block& b : releasing) {
    deregister_with_valgrind(b);
    char* low = b.top - b.size - page;
    if (run_high != low) {
      if (run_high != nullptr) ::munmap(run_low, static_cast<std::size_t>(run_high - run_low));
      run_low = low;
    }
    run_high = b.top;
  }
  ::munmap(run_low, static_cast<std::size_t>(run_high - run_low));
  stats.mapped -= releasing.size();
  releasing.clear();
}

thread_pool_state::~thread_pool_state() {
  tl_pool = nullptr;
  tl_pool_phase = pool_phase::dead;
  flush_releasing();
  for (auto& c : classes) {
    for (auto& b : c.free) releasing.push_back(b);
    if (c.fresh_top != c.fresh_low) ::munmap(c.fresh_low, static_cast<std::size_t>(c.fresh_top - c.fresh_low));
  }
  flush_releasing();
}

[[gnu::noinline]] thread_pool_state* create_pool() noexcept {
  if (tl_pool_phase != pool_phase::unborn) return nullptr;
  thread_local thread_pool_state state;
  state.on_valgrind = RUNNING_ON_VALGRIND != 0;
  tl_pool = &state;
  tl_pool_phase = pool_phase::alive;
  return &state;
}

inline thread_pool_state* pool() noexcept {
  thread_pool_state* st = tl_pool;
  return st != nullptr ? st : create_pool();
}

// Maps a slab of stacks of `size` usable bytes with guard markers into `c`'s fresh range. False if guard markers
// are not supported (then nothing is left mapped).
bool map_slab(thread_pool_state& st, size_class& c, std::size_t size) {
  const std::size_t page = page_size();
  const std::size_t stride = size + page;
  const std::size_t n = std::clamp<std::size_t>(slab_bytes / stride, 1, slab_max_stacks);
  void* mem = ::mmap(nullptr, n * stride, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (mem == MAP_FAILED) throw stack_alloc_error(size, "mmap", errno);
  char* base = static_cast<char*>(mem);
  // All guard pages in one process_madvise() call when the kernel takes it, else one madvise() each.
  iovec* iov = st.slab_iov;
  for (std::size_t i = 0; i < n; ++i) iov[i] = iovec{base + i * stride, page};
  if (!madvise_self(iov, n, MADV_GUARD_INSTALL)) {
    for (std::size_t i = 0; i < n; ++i) {
      if (::madvise(base + i * stride, page, MADV_GUARD_INSTALL) != 0) {
        ::munmap(mem, n * stride);
        return false;
      }
    }
  }
  // Every stack's top page will be written at once by whoever gets it (Boost.Context puts its context record
  // there, and the first frames follow): fault them all in with one call rather than one page fault each.
  // Best effort. Untouched stacks of the slab thus hold one resident page each until used.
  for (std::size_t i = 0; i < n; ++i) iov[i] = iovec{base + (i + 1) * stride - page, page};
  madvise_self(iov, n, MADV_POPULATE_WRITE);
  // A previous slab's leftover (fewer than one stack short of a slab) is simply given back.
  if (c.fresh_top != c.fresh_low) ::munmap(c.fresh_low, static_cast<std::size_t>(c.fresh_top - c.fresh_low));
  c.fresh_low = base;
  c.fresh_top = base + n * stride;
  return true;
}

// One stack with its own mapping and an mprotect'd guard page.
stack_block map_single(std::size_t size) {
  const std::size_t page = page_size();
  void* mem = ::mmap(nullptr, size + page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (mem == MAP_FAILED) throw stack_alloc_error(size, "mmap", errno);
  if (::mprotect(mem, page, PROT_NONE) != 0) {
    // ENOMEM here usually means vm.max_map_count is exhausted (two mappings per stack).
    const int err = errno;
    ::munmap(mem, size + page);
    throw stack_alloc_error(size, "mprotect of the guard page", err);
  }
  return stack_block{static_cast<char*>(mem) + page + size, size};
}

// A new stack, for the pool `st` (may be null).
stack_block map_stack(thread_pool_state* st, std::size_t size) {
  guard_mode mode = guard_kind.load(std::memory_order_relaxed);
  if (mode == guard_mode::unknown) {
    mode = RUNNING_ON_VALGRIND != 0 ? guard_mode::mprotect : guard_mode::marker;
    guard_kind.store(mode, std::memory_order_relaxed);
  }
  if (mode == guard_mode::marker && st != nullptr) {
    size_class& c = st->class_for(size);
    const std::size_t stride = size + page_size();
    if (static_cast<std::size_t>(c.fresh_top - c.fresh_low) < stride) {
      if (!map_slab(*st, c, size)) {
        guard_kind.store(guard_mode::mprotect, std::memory_order_relaxed);
        return map_single(size);
      }
    }
    stack_block b{c.fresh_top, size};
    c.fresh_top -= stride;
    return b;
  }
  return map_single(size);
}

// --- stack overflow reporting ---------------------------------------------------------------------------------

struct sigaction previous_segv_action;

void write_all(const char* s) noexcept {
  std::size_t n = std::strlen(s);
  while (n > 0) {
    ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}

void format_size(char* out, std::size_t v) noexcept {
  char tmp[32];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (int i = 0; i < n; ++i) out[i] = tmp[n - 1 - i];
  out[n] = '\0';
}

void on_segv(int sig, siginfo_t* info, void* uctx) {
  const stack_label* label = tl_current_label;
  const char* addr = static_cast<const char*>(info->si_addr);
  // A fault in (or just below) the guard page of the stack we run on is an overflow.
  if (label != nullptr && addr >= label->guard_low - 65536 && addr < label->guard_high) {
    char size[32];
    format_size(size, label->size);
    write_all("tendril: stack overflow in ");
    if (!label->name.empty()) {
      write_all(label->name.c_str());
    } else {
      write_all(label->unnamed != nullptr ? label->unnamed : "greenlet");
    }
    write_all(" (stack size ");
    write_all(size);
    write_all(" bytes); give it a larger stack_options::size / spawn_options::stack_size\n");
    ::signal(SIGSEGV, SIG_DFL);
    ::raise(SIGSEGV);
    return;
  }
  // Not ours: hand over to whoever was installed before.
  if ((previous_segv_action.sa_flags & SA_SIGINFO) != 0 && previous_segv_action.sa_sigaction != nullptr) {
    previous_segv_action.sa_sigaction(sig, info, uctx);
    return;
  }
  if (previous_segv_action.sa_handler != SIG_DFL && previous_segv_action.sa_handler != SIG_IGN &&
      previous_segv_action.sa_handler != nullptr) {
    previous_segv_action.sa_handler(sig);
    return;
  }
  ::signal(SIGSEGV, SIG_DFL);
  ::raise(SIGSEGV);
}

void install_overflow_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = &on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGSEGV, &sa, &previous_segv_action);
  });
  // Each thread that runs on tendril stacks needs an alternate signal stack for the handler to run on.
  thread_local struct alt_stack {
    void* mem = nullptr;
    alt_stack() {
      stack_t current{};
      if (::sigaltstack(nullptr, &current) == 0 && (current.ss_flags & SS_DISABLE) == 0) return;  // already has one
      const std::size_t size = 64 * 1024;
      mem = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (mem == MAP_FAILED) {
        mem = nullptr;
        return;
      }
      stack_t ss{};
      ss.ss_sp = mem;
      ss.ss_size = size;
      ::sigaltstack(&ss, nullptr);
    }
    ~alt_stack() {
      if (mem == nullptr) return;
      stack_t ss{};
      ss.ss_flags = SS_DISABLE;
      ::sigaltstack(&ss, nullptr);
      ::munmap(mem, 64 * 1024);
    }
  } alt;
  (void)alt;
}

}  // namespace

std::size_t usable_stack_size(std::size_t size) noexcept {
  if (size == 0) size = default_stack_size();
  const std::size_t page = page_size();
  if (size < 4 * page) size = 4 * page;
  size = std::min(size, max_stack_size);
  return (size + page - 1) / page * page;
}

namespace {
stack_block take_pooled(thread_pool_state* st, size_class& c) noexcept {
  stack_block b = c.free.back();
  c.free.pop_back();
  st->pooled_bytes -= b.size;
  --st->stats.pooled;
  ++st->stats.in_use;
  // memcheck marked what lay below the last user's final stack pointer as inaccessible; it is ours again.
  if (st->on_valgrind) VALGRIND_MAKE_MEM_UNDEFINED(b.top - b.size, b.size);
  // So is what AddressSanitizer poisoned in it: frames abandoned by an exception, or by a switch away, keep their
  // redzones (switches are not annotated for ASan), which the next user's frames would hit.
  ASAN_UNPOISON_MEMORY_REGION(b.top - b.size, b.size);
  return b;
}

[[gnu::noinline]] stack_block allocate_stack_slow(std::size_t request) {
  const std::size_t size = usable_stack_size(request);
  thread_pool_state* st = pool();
  if (st != nullptr) {
    size_class& c = st->class_for(size);
    st->last_class = &c;
    st->last_request = request;
    if (!c.free.empty()) return take_pooled(st, c);
  }
  install_overflow_handler();
  stack_block b = map_stack(st, size);
  try {
    register_with_valgrind(b);
  } catch (...) {
    unmap(nullptr, b);
    throw;
  }
  if (st != nullptr) {
    ++st->stats.mapped;
    ++st->stats.in_use;
  }
  return b;
}

[[gnu::noinline]] void free_stack_slow(stack_block block) noexcept {
  thread_pool_state* st = pool();
  if (st == nullptr) {
    unmap(nullptr, block);
    return;
  }
  --st->stats.in_use;
  try {
    if (st->stats.pooled < pool_count_limit && st->pooled_bytes + block.size <= pool_byte_limit) {
      size_class& c = st->class_for(block.size);
      c.free.push_back(block);
      st->pooled_bytes += block.size;
      ++st->stats.pooled;
      return;
    }
    if (st->releasing.capacity() == 0) st->releasing.reserve(release_batch);
    st->releasing.push_back(block);
    if (st->releasing.size() >= release_batch) st->flush_releasing();
  } catch (...) {
    unmap(st, block);
  }
}
}  // namespace

// The fast paths: the same size as last time, and a pooled stack to take or room in the pool (and in its vector).
stack_block allocate_stack(std::size_t size) {
  thread_pool_state* st = tl_pool;
  if (st != nullptr && st->last_class != nullptr && size == st->last_request && !st->last_class->free.empty()) {
    return take_pooled(st, *st->last_class);
  }
  return allocate_stack_slow(size);
}

void free_stack(stack_block block) noexcept {
  thread_pool_state* st = tl_pool;
  if (st != nullptr && st->last_class != nullptr && block.size == st->last_class->size &&
      st->stats.pooled < pool_count_limit && st->pooled_bytes + block.size <= pool_byte_limit &&
      st->last_class->free.size() < st->last_class->free.capacity()) {
    st->last_class->free.push_back(block);
    st->pooled_bytes += block.size;
    ++st->stats.pooled;
    --st->stats.in_use;
    return;
  }
  free_stack_slow(block);
}

void register_thread_stack_with_valgrind() noexcept {
  if (RUNNING_ON_VALGRIND == 0) return;
  if (::getpid() == static_cast<pid_t>(::syscall(SYS_gettid))) return;
  struct registration {
    unsigned id = 0;
    registration() noexcept {
      pthread_attr_t attr;
      if (::pthread_getattr_np(::pthread_self(), &attr) != 0) return;
      void* low = nullptr;
      std::size_t size = 0;
      if (::pthread_attr_getstack(&attr, &low, &size) == 0) {
        id = VALGRIND_STACK_REGISTER(static_cast<char*>(low), static_cast<char*>(low) + size);
      }
      ::pthread_attr_destroy(&attr);
    }
    ~registration() {
      if (id != 0) VALGRIND_STACK_DEREGISTER(id);
    }
  };
  thread_local registration r;
  (void)r;
}

}  // namespace detail

stack_pool_stats stack_pool_statistics() noexcept {
  detail::thread_pool_state* st = detail::pool();
  if (st == nullptr) return stack_pool_stats{};
  st->flush_releasing();  // stacks waiting to be unmapped in a batch count as unmapped
  return st->stats;
}

}  // namespace tendril
