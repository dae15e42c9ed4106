// lib/ascii.hpp — ASCII text rules: case for HTTP header names (tokens), which a locale must not change, header
// blanks, and user text shown in an error message.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tendril::detail {

inline char lower_ascii(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c | 0x20) : c; }

// Equal up to ASCII case: the one comparison of header names (headers_map, request headers, the driver's).
inline bool same_ignoring_ascii_case(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower_ascii(a[i]) != lower_ascii(b[i])) return false;
  }
  return true;
}

// `v` without the spaces and tabs around it (a header value's optional whitespace).
inline std::string_view trim_blanks(std::string_view v) noexcept {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// `s` for an error message: NUL, CR and LF shown as escapes (a NUL would end what() early, a line end would
// split the message).
inline std::string printable(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\0') {
      out += "\\0";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace tendril::detail
