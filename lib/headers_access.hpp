// lib/headers_access.hpp — how the HTTP driver fills a response's headers_map: raw header lines, parsed later.
//
// libcurl hands the driver a response's header lines one by one. Splitting each into a lower-cased name and a
// value (strings of their own, most longer than the 15 bytes std::string keeps inline) took about 4 % of a small
// request's instructions, and most programs never read most headers. So the driver only appends the lines to one
// buffer, and the headers_map parses them on its first read (headers_map::parse_pending, in http.cpp).
#pragma once

#include <atomic>
#include <cstddef>
#include <string_view>

#include "tendril/http.hpp"

namespace tendril::http::detail {

struct headers_access {
  // Room for a typical response's header block (nginx sends about 230 bytes), so that it takes one allocation.
  static constexpr std::size_t typical_block = 480;

  // Appends one header line ("Name: value", without its line ending) to be parsed on the map's first read. Only
  // for the header block of a response still arriving: nobody else can see the map yet (session::open() returns
  // a stream once the final response's headers are all in; trailers after that go through add()).
  static void append_line(headers_map& m, std::string_view line) {
    if (m.lines_.empty()) m.lines_.reserve(typical_block);
    m.lines_.append(line).push_back('\n');
    m.state_.store(headers_map::pending, std::memory_order_relaxed);
  }
};

}  // namespace tendril::http::detail
