// Text helpers shared by the suites' tests.
#pragma once

#include <string>

namespace tendril_test {

// Whether `needle` occurs in `haystack` (error messages are checked for the parts that matter).
inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace tendril_test
