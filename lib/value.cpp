// lib/value.cpp — readable errors for tendril::value.
#include "tendril/value.hpp"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>

namespace tendril::detail {

std::string type_name(const std::type_info& t) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(abi::__cxa_demangle(t.name(), nullptr, nullptr, &status), std::free);
  std::string s = status == 0 && name ? std::string(name.get()) : std::string(t.name());
  // Spell the common library types the way people write them.
  const std::string long_string = "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >";
  for (std::size_t pos; (pos = s.find(long_string)) != std::string::npos;)
    s.replace(pos, long_string.size(), "std::string");
  return s;
}

void throw_value_type_error(const std::type_info& stored, const std::type_info& wanted, const std::string& where) {
  throw value_type_error("tendril::value: " + where + " holds " + type_name(stored) + ", not the requested " +
                         type_name(wanted));
}

void throw_value_missing(const std::string& what) { throw value_type_error("tendril::value: " + what); }

const std::vector<std::any>& no_args() noexcept {
  static const std::vector<std::any> none;
  return none;
}

const std::vector<std::pair<std::string, std::any>>& no_keywords() noexcept {
  static const std::vector<std::pair<std::string, std::any>> none;
  return none;
}

}  // namespace tendril::detail
