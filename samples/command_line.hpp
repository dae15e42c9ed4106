// samples/command_line.hpp — what the command-line samples share: strict option values, and failures told in
// the command line's terms rather than the C++ API's.
#pragma once

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "tendril/http.hpp"

namespace sample {

// The whole of `v` as a number in [lo, hi], or nothing. std::from_chars takes no spaces, no "0x" prefix and no
// sign on an unsigned type, and reports overflow instead of wrapping around (atoi and strtod would take "5x",
// and casting nan or 1e30 to an integer is undefined behaviour); "nan" and "inf" fail the range check.
template <class T>
std::optional<T> parse_number(std::string_view v, T lo, T hi) {
  T n{};
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size() || !(n >= lo && n <= hi)) return std::nullopt;
  return n;
}

// A usage error: "PROGRAM: WHY", the usage line (and `more`, if any) on standard error, then exit status 2.
[[noreturn]] inline void usage_failure(const char* program, const std::string& why, const char* usage_line,
                                       const char* more = "") {
  std::fprintf(stderr, "%s: %s\n%s%s", program, why.c_str(), usage_line, more);
  std::exit(2);
}

// The reason for usage_failure() when an option's value does not parse: bad value for --port: "x" (expected ...).
inline std::string bad_value(std::string_view option, std::string_view value, std::string_view expected) {
  return "bad value for " + std::string(option) + ": \"" + std::string(value) + "\" (expected " +
         std::string(expected) + ")";
}

// Why a request failed, for the person at the command line: libcurl's message and the library's hint, except
// where that hint names C++ options (options::ca_file, options::max_redirects), which a command line does not
// have. `insecure_flag` names the program's option that skips TLS verification, if it has one.
inline std::string failure_reason(const tendril::http::error& e, std::string_view insecure_flag = {}) {
  std::string m = e.curl_message().empty() ? e.what() : e.curl_message();
  const bool untrusted = e.code() == 60 || e.code() == 77;  // CURLE_PEER_FAILED_VERIFICATION, _SSL_CACERT_BADFILE
  const bool redirects = e.code() == 47;                    // CURLE_TOO_MANY_REDIRECTS
  if (!untrusted && !redirects) return m;
  if (const auto hint = m.rfind("; "); hint != std::string::npos) m.resize(hint);
  if (redirects) return m + "; more than 10 redirects: a redirect loop?";
  m += "; the server's TLS certificate is not trusted";
  if (!insecure_flag.empty()) m += " (for a test server, " + std::string(insecure_flag) + " skips the check)";
  return m;
}

}  // namespace sample
