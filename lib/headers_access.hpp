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
#include <vector>

#include "tendril/http.hpp"

namespace tendril::http::detail {

struct headers_access {
  // Room for a typical response's header block (nginx sends about 230 bytes), so that it takes one allocation.
  static constexpr std::size_t typical_block = 480;

  // Takes one header line ("Name: value", without its line ending). Until someone reads the map the line is only
  // appended, to be parsed on the first read. A map already read (a stream's reader looked at its headers before
  // the chunked body's trailers came) gets the line parsed into its entries at once, in place, as add() would: a
  // re-parse into a new vector would free the entries the reader may still refer to. Only the transfer's thread
  // writes the map, and a stream's map is read on that thread too (see stream).
  static void append_line(headers_map& m, std::string_view line) {
    if (m.state_.load(std::memory_order_relaxed) == headers_map::parsed && !m.entries_.empty()) {
      add_line(m.entries_, line);
      return;
    }
    if (m.lines_.empty()) m.lines_.reserve(typical_block);
    m.lines_.append(line).push_back('\n');
    m.state_.store(headers_map::pending, std::memory_order_relaxed);
  }

  // Parses one header line into `entries` as headers_map::add() adds a header; a line without a colon is skipped.
  // The one parser of header lines (headers_map's lazy parse uses it too); in http.cpp.
  static void add_line(std::vector<headers_map::value_type>& entries, std::string_view line);
};

}  // namespace tendril::http::detail
