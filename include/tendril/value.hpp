// tendril/value.hpp — what a greenlet switch carries.
//
// A `value` holds zero or more positional values (each a std::any) and named keyword values, like the
// `*args, **kwargs` of Python's greenlet.switch(). String literals are stored as std::string. Reading a value
// with the wrong type throws tendril::value_type_error naming both the stored and the requested type.
//
//   tendril::value v = tendril::value::of(1, "two", tendril::kw("three", 3.0));
//   v.size();               // 2 positional values
//   v.get<int>(0);          // 1
//   v.get<std::string>(1);  // "two"
//   v.keyword<double>("three");
//   auto [a, b] = v.as_tuple<int, std::string>();
#pragma once

#include <any>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "tendril/export.hpp"

namespace tendril {

// Thrown when a value is read as a type it does not hold, or at a position or keyword it does not have.
class TENDRIL_API value_type_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
// The readable name of a type ("int", "std::__cxx11::basic_string<...>").
TENDRIL_API std::string type_name(const std::type_info& t);
[[noreturn]] TENDRIL_API void throw_value_type_error(const std::type_info& stored, const std::type_info& wanted,
                                                     const std::string& where);
[[noreturn]] TENDRIL_API void throw_value_missing(const std::string& what);
// What args() and keywords() return for a value without any.
TENDRIL_API const std::vector<std::any>& no_args() noexcept;
TENDRIL_API const std::vector<std::pair<std::string, std::any>>& no_keywords() noexcept;

// String literals and C strings become std::string; everything else is stored decayed.
template <class A>
std::any to_any(A&& a) {
  using D = std::decay_t<A>;
  if constexpr (std::is_same_v<D, const char*> || std::is_same_v<D, char*>) {
    return std::any(std::string(a));
  } else {
    return std::any(std::forward<A>(a));
  }
}
}  // namespace detail

// A keyword argument for switch_(): tendril::kw("name", value).
struct keyword_arg {
  std::string name;
  std::any value;
};
template <class T>
keyword_arg kw(std::string name, T&& v) {
  return keyword_arg{std::move(name), detail::to_any(std::forward<T>(v))};
}

// An empty value is a null pointer, so the common case of a switch, passing nothing, costs one word to move and
// nothing to allocate; values with contents keep them in one heap block.
class TENDRIL_API value {
 public:
  using keyword_list = std::vector<std::pair<std::string, std::any>>;

  value() noexcept = default;
  value(const value& other) : d_(other.d_ ? std::make_unique<data>(*other.d_) : nullptr) {}
  value(value&& other) noexcept = default;
  value& operator=(const value& other) {
    if (this != &other) d_ = other.d_ ? std::make_unique<data>(*other.d_) : nullptr;
    return *this;
  }
  value& operator=(value&& other) noexcept = default;
  ~value() = default;

  // Builds a value from arguments; keyword_arg arguments become keywords. A lone `value` argument is returned
  // as it is (it does not nest).
  template <class... A>
  static value of(A&&... args) {
    if constexpr (sizeof...(A) == 1 && (std::is_same_v<std::decay_t<A>, value> && ...)) {
      return (value(std::forward<A>(args)), ...);
    } else if constexpr (sizeof...(A) == 0) {
      return value();
    } else {
      value v;
      v.d_ = std::make_unique<data>();
      v.d_->args.reserve(sizeof...(A));
      (v.add(std::forward<A>(args)), ...);
      return v;
    }
  }

  // Number of positional values.
  std::size_t size() const noexcept { return d_ ? d_->args.size() : 0; }
  // True when there are neither positional nor keyword values.
  bool empty() const noexcept { return !d_ || (d_->args.empty() && d_->keywords.empty()); }

  // The single positional value as T. Throws value_type_error unless there is exactly one, of type T.
  template <class T>
  T as() const {
    if (size() != 1) {
      detail::throw_value_missing("value::as<" + detail::type_name(typeid(T)) +
                                  ">() needs exactly one positional value, this value has " + std::to_string(size()));
    }
    return get<T>(0);
  }

  // Positional value i as T. Throws value_type_error if i is out of range or the type differs.
  template <class T>
  T get(std::size_t i) const {
    if (i >= size()) {
      detail::throw_value_missing("value::get(" + std::to_string(i) + "): only " + std::to_string(size()) +
                                  " positional values");
    }
    const std::any& a = d_->args[i];
    const T* p = std::any_cast<T>(&a);
    if (p == nullptr) {
      detail::throw_value_type_error(a.type(), typeid(T), "positional value " + std::to_string(i));
    }
    return *p;
  }

  // True when positional value i exists and holds a T.
  template <class T>
  bool holds(std::size_t i = 0) const noexcept {
    return i < size() && std::any_cast<T>(&d_->args[i]) != nullptr;
  }

  // All positional values as a tuple; the count and every type must match.
  template <class... T>
  std::tuple<T...> as_tuple() const {
    if (size() != sizeof...(T)) {
      detail::throw_value_missing("value::as_tuple: expected " + std::to_string(sizeof...(T)) +
                                  " positional values, this value has " + std::to_string(size()));
    }
    return as_tuple_impl<T...>(std::index_sequence_for<T...>{});
  }

  // The positional and keyword values. For a value without any, these are shared empty vectors: take them
  // again after push_back() or set_keyword() rather than keeping the reference.
  const std::vector<std::any>& args() const noexcept { return d_ ? d_->args : detail::no_args(); }
  const keyword_list& keywords() const noexcept { return d_ ? d_->keywords : detail::no_keywords(); }
  bool has_keyword(std::string_view name) const noexcept { return find(name) != nullptr; }

  // Keyword `name` as T. Throws value_type_error if it is missing or of another type.
  template <class T>
  T keyword(std::string_view name) const {
    const std::any* a = find(name);
    if (a == nullptr) detail::throw_value_missing("value has no keyword '" + std::string(name) + "'");
    const T* p = std::any_cast<T>(a);
    if (p == nullptr) detail::throw_value_type_error(a->type(), typeid(T), "keyword '" + std::string(name) + "'");
    return *p;
  }

  void push_back(std::any a) { contents().args.push_back(std::move(a)); }
  void set_keyword(std::string name, std::any a) { contents().keywords.emplace_back(std::move(name), std::move(a)); }

 private:
  struct data {
    std::vector<std::any> args;
    keyword_list keywords;
  };

  data& contents() {
    if (!d_) d_ = std::make_unique<data>();
    return *d_;
  }
  template <class A>
  void add(A&& a) {
    if constexpr (std::is_same_v<std::decay_t<A>, keyword_arg>) {
      d_->keywords.emplace_back(std::move(a.name), std::move(a.value));
    } else {
      d_->args.push_back(detail::to_any(std::forward<A>(a)));
    }
  }
  template <class... T, std::size_t... I>
  std::tuple<T...> as_tuple_impl(std::index_sequence<I...>) const {
    return std::tuple<T...>(get<T>(I)...);
  }
  const std::any* find(std::string_view name) const noexcept {
    if (!d_) return nullptr;
    for (const auto& [k, v] : d_->keywords) {
      if (k == name) return &v;
    }
    return nullptr;
  }

  std::unique_ptr<data> d_;  // null: no positional or keyword values
};

}  // namespace tendril
