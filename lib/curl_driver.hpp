// lib/curl_driver.hpp — one libcurl transfer, run by the calling thread's curl driver (no curl types here).
//
// The driver (curl_driver.cpp) is a per-thread libcurl multi handle on the scheduler's reactor. A transfer is
// one easy handle in it; the task that owns the transfer parks until the driver reports data or completion.
#pragma once

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tendril/http.hpp"

namespace tendril::detail {

struct transfer_request {
  std::string method = "GET";
  std::string url;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::optional<duration> timeout, connect_timeout;
  bool follow_redirects = true;
  long max_redirects = 10;
  bool verify_tls = true;
  std::string ca_file;
  std::string proxy;
  std::function<bool(const http::progress&)> on_progress;
};

// Receives body data on the event loop. Must not block or switch.
class body_sink {
 public:
  // consumed: taken, and the owning task is woken if it waits (it may be waiting for data); stored: taken, and
  // nothing for the owning task to do (it waits for the end of the transfer only); pause: not taken, libcurl
  // hands the same data again after transfer::unpause(); abort: fail the transfer.
  enum class result { consumed, stored, pause, abort };
  virtual result on_data(const char* data, std::size_t n) noexcept = 0;

 protected:
  ~body_sink() = default;
};

struct transfer_impl;

class transfer {
 public:
  // `sink` (may be null: the body is collected in body()) must outlive the transfer.
  transfer(transfer_request request, body_sink* sink);
  // Aborts the transfer if it is still running.
  ~transfer();
  transfer(const transfer&) = delete;
  transfer& operator=(const transfer&) = delete;

  // Hands the transfer to the driver.
  void start();
  // Parks the calling task until the driver reports something (data for the sink, completion).
  // Throws task_cancelled / timeout_error (aborting the transfer first).
  void wait();
  // start() and wait() until finished.
  void run();
  // Resumes a transfer the sink paused.
  void unpause();
  // Removes the transfer from the driver now (idempotent).
  void abort() noexcept;
  // Throws usage_error unless the calling thread may use the transfer: the thread that made it, or any thread once
  // that thread has exited (its driver let go of the transfer). Touches nothing the home thread may be writing.
  void check_thread() const;

  bool finished() const noexcept;
  // Whether the final response's headers are all in (set before the first byte of its body). Kept for a transfer
  // with a sink only: a collected body is read once the transfer has finished.
  bool headers_done() const noexcept;
  int code() const noexcept;  // CURLcode; 0 = success
  // What options::on_progress threw, aborting the transfer (null if it did not): the requester rethrows it.
  std::exception_ptr callback_error() const noexcept;
  // libcurl's description of the failure, and a hint for the user.
  std::string describe_failure() const;
  long status() const;
  std::string effective_url() const;
  // The effective URL, taking request().url's string when it is the same (no redirect): request().url is empty
  // afterwards. For building the response once the transfer is over.
  std::string take_effective_url();
  http::headers_map& headers() noexcept;
  std::string& body() noexcept;
  duration elapsed() const noexcept;
  const transfer_request& request() const noexcept;

 private:
  std::unique_ptr<transfer_impl> impl_;
};

// CURLcode values tendril reacts to (kept here so http.cpp needs no curl header).
enum curl_code : int {
  curl_ok = 0,
  curl_couldnt_resolve_host = 6,
  curl_couldnt_connect = 7,
  curl_partial_file = 18,
  curl_operation_timedout = 28,
  curl_got_nothing = 52,
  curl_send_error = 55,
  curl_recv_error = 56,
};

}  // namespace tendril::detail
