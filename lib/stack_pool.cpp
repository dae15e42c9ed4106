// lib/stack_pool.cpp — mmap'd stacks with guard pages, pooled per thread, and the stack-overflow reporter.
#include "stack_pool.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "tendril/stack.hpp"

#if defined(TENDRIL_HAVE_VALGRIND)
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#else
#define VALGRIND_MAKE_MEM_UNDEFINED(addr, len) ((void)(addr), (void)(len))
#define RUNNING_ON_VALGRIND 0
#define VALGRIND_STACK_REGISTER(lo, hi) 0U
#define VALGRIND_STACK_DEREGISTER(id) ((void)(id))
#endif

namespace tendril {

std::size_t default_stack_size() noexcept { return 256 * 1024; }

namespace detail {
namespace {

std::size_t page_size() noexcept {
  static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

// Pooled stacks per thread: at most this many bytes of usable stack are kept for reuse.
constexpr std::size_t pool_byte_limit = 64UL * 1024 * 1024;

struct thread_pool_state {
  std::unordered_map<std::size_t, std::vector<stack_block>> free_by_size;
  std::unordered_map<const char*, unsigned> valgrind_ids;  // only used under valgrind
  std::size_t pooled_bytes = 0;
  stack_pool_stats stats;
  ~thread_pool_state();
};

// Set false once the thread's pool is destroyed: stacks freed later (by Boost.Fiber's teardown) are unmapped.
thread_local bool pool_alive = false;

void unmap(thread_pool_state* st, const stack_block& b) noexcept {
  char* low = b.top - b.size - page_size();
  if (RUNNING_ON_VALGRIND != 0 && st != nullptr) {
    auto it = st->valgrind_ids.find(b.top);
    if (it != st->valgrind_ids.end()) {
      VALGRIND_STACK_DEREGISTER(it->second);
      st->valgrind_ids.erase(it);
    }
  }
  ::munmap(low, b.size + page_size());
  if (st != nullptr) --st->stats.mapped;
}

thread_pool_state::~thread_pool_state() {
  pool_alive = false;
  for (auto& [size, blocks] : free_by_size) {
    for (auto& b : blocks) unmap(this, b);
  }
}

thread_pool_state* pool() noexcept {
  thread_local thread_pool_state state;
  thread_local bool initialised = false;
  if (!initialised) {
    initialised = true;
    pool_alive = true;
  }
  return pool_alive ? &state : nullptr;
}

// The label of the stack this thread runs on. initial-exec TLS so the signal handler can read it safely.
__thread const stack_label* tl_current_label __attribute__((tls_model("initial-exec"))) = nullptr;

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
    write_all(label->name.empty() ? "greenlet" : label->name.c_str());
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
  return (size + page - 1) / page * page;
}

stack_block allocate_stack(std::size_t size) {
  size = usable_stack_size(size);
  thread_pool_state* st = pool();
  if (st != nullptr) {
    auto it = st->free_by_size.find(size);
    if (it != st->free_by_size.end() && !it->second.empty()) {
      stack_block b = it->second.back();
      it->second.pop_back();
      st->pooled_bytes -= size;
      --st->stats.pooled;
      ++st->stats.in_use;
      // memcheck marked what lay below the last user's final stack pointer as inaccessible; it is ours again.
      VALGRIND_MAKE_MEM_UNDEFINED(b.top - b.size, b.size);
      return b;
    }
  }
  install_overflow_handler();
  const std::size_t page = page_size();
  void* mem = ::mmap(nullptr, size + page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (mem == MAP_FAILED) throw std::bad_alloc();
  if (::mprotect(mem, page, PROT_NONE) != 0) {
    // ENOMEM here usually means vm.max_map_count is exhausted (two mappings per stack).
    ::munmap(mem, size + page);
    throw std::bad_alloc();
  }
  stack_block b{static_cast<char*>(mem) + page + size, size};
  if (st != nullptr) {
    ++st->stats.mapped;
    ++st->stats.in_use;
    if (RUNNING_ON_VALGRIND != 0) {
      st->valgrind_ids[b.top] = VALGRIND_STACK_REGISTER(b.top - size, b.top);
    }
  }
  return b;
}

void free_stack(stack_block block) noexcept {
  thread_pool_state* st = pool();
  if (st == nullptr) {
    unmap(nullptr, block);
    return;
  }
  --st->stats.in_use;
  if (st->pooled_bytes + block.size > pool_byte_limit) {
    unmap(st, block);
    return;
  }
  try {
    st->free_by_size[block.size].push_back(block);
  } catch (...) {
    unmap(st, block);
    return;
  }
  st->pooled_bytes += block.size;
  ++st->stats.pooled;
}

const stack_label* current_stack_label() noexcept { return tl_current_label; }
void set_current_stack_label(const stack_label* label) noexcept { tl_current_label = label; }

void label_stack(stack_label& label, const stack_block& block) noexcept {
  label.size = block.size;
  label.guard_high = block.top - block.size;
  label.guard_low = label.guard_high - page_size();
}

}  // namespace detail

stack_pool_stats stack_pool_statistics() noexcept {
  detail::thread_pool_state* st = detail::pool();
  return st != nullptr ? st->stats : stack_pool_stats{};
}

}  // namespace tendril
