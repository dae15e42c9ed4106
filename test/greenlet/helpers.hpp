// Shared helpers for the greenlet suites.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>

#include "tendril/greenlet.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define TENDRIL_TEST_HAVE_LSAN_INTERFACE 1
#endif

namespace tendril_test {

// Python's SomeError / KeyError / IndexError stand-ins.
struct some_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct key_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct index_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// greenlet.getcurrent().parent.switch(*args), written so that no handle to the *current* greenlet stays alive on
// this stack while it is suspended: `greenlet::current().parent()->switch_()` would keep the temporary
// current() handle until the switch returns, and a greenlet referenced from its own stack is never killed when
// its last outside handle goes.
template <class... A>
tendril::value switch_to_parent(A&&... args) {
  tendril::greenlet parent = *tendril::greenlet::current().parent();
  return parent.switch_(std::forward<A>(args)...);
}

inline bool under_valgrind() { return std::getenv("TENDRIL_UNDER_VALGRIND") != nullptr; }
inline bool under_asan() { return std::getenv("TENDRIL_UNDER_ASAN") != nullptr; }

// Redirects file descriptor 2 into a temporary file until finish(), which returns what was written.
class stderr_capture {
 public:
  stderr_capture() {
    std::fflush(stderr);
    file_ = std::tmpfile();
    if (file_ == nullptr) throw std::runtime_error("tmpfile failed");
    saved_ = ::dup(2);
    ::dup2(::fileno(file_), 2);
  }
  stderr_capture(const stderr_capture&) = delete;
  stderr_capture& operator=(const stderr_capture&) = delete;
  ~stderr_capture() { (void)finish(); }

  std::string finish() {
    if (file_ == nullptr) return text_;
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    std::rewind(file_);
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, file_)) > 0) text_.append(buf, n);
    std::fclose(file_);
    file_ = nullptr;
    return text_;
  }

 private:
  std::FILE* file_ = nullptr;
  int saved_ = -1;
  std::string text_;
};

// Allocations made while this is alive are not reported by LeakSanitizer (for tests that leak on purpose, as
// the contract demands for a greenlet that refuses to die).
struct lsan_disabled_scope {
#if defined(TENDRIL_TEST_HAVE_LSAN_INTERFACE)
  lsan_disabled_scope() { __lsan_disable(); }
  ~lsan_disabled_scope() { __lsan_enable(); }
#endif
  lsan_disabled_scope(const lsan_disabled_scope&) = delete;
  lsan_disabled_scope& operator=(const lsan_disabled_scope&) = delete;
#if !defined(TENDRIL_TEST_HAVE_LSAN_INTERFACE)
  lsan_disabled_scope() = default;
#endif
};

}  // namespace tendril_test
