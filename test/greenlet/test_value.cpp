// tendril::value: what a switch carries.
#include <doctest/doctest.h>

#include <string>
#include <tuple>
#include <vector>

#include "helpers.hpp"
#include "tendril/greenlet.hpp"
#include "tendril/value.hpp"

using tendril::greenlet;
using tendril::kw;
using tendril::value;
using tendril::value_type_error;
using namespace tendril_test;

namespace {
std::string what_of(const auto& f) {
  try {
    f();
  } catch (const value_type_error& e) {
    return e.what();
  }
  return "<no value_type_error>";
}
}  // namespace

TEST_SUITE("value") {

TEST_CASE("positional and keyword values; string literals become std::string") {
  value v = value::of(1, "two", kw("three", 3.0));
  CHECK(v.size() == 2);
  CHECK_FALSE(v.empty());
  CHECK(v.get<int>(0) == 1);
  CHECK(v.get<std::string>(1) == "two");
  CHECK(v.holds<std::string>(1));
  CHECK_FALSE(v.holds<const char*>(1));
  CHECK_FALSE(v.holds<int>(2));  // out of range: false, not an error
  CHECK(v.keyword<double>("three") == 3.0);
  CHECK(v.has_keyword("three"));
  CHECK_FALSE(v.has_keyword("four"));
  REQUIRE(v.keywords().size() == 1);
  CHECK(v.keywords()[0].first == "three");
  CHECK(v.args().size() == 2);
  auto [a, b] = v.as_tuple<int, std::string>();
  CHECK(a == 1);
  CHECK(b == "two");
}

TEST_CASE("empty values and keyword-only values") {
  value none;
  CHECK(none.empty());
  CHECK(none.size() == 0);
  value kw_only = value::of(kw("k", 1));
  CHECK_FALSE(kw_only.empty());
  CHECK(kw_only.size() == 0);
  CHECK(kw_only.as_tuple<>() == std::tuple<>{});
}

TEST_CASE("as<T> needs exactly one positional value of type T") {
  CHECK(value::of(5).as<int>() == 5);
  CHECK_THROWS_AS(value().as<int>(), value_type_error);
  CHECK_THROWS_AS(value::of(1, 2).as<int>(), value_type_error);
  CHECK(what_of([] { value::of(1, 2).as<int>(); }).find("exactly one") != std::string::npos);
}

TEST_CASE("a wrong type throws value_type_error naming both types") {
  std::string w = what_of([] { value::of(1).as<std::string>(); });
  CHECK(w.find("int") != std::string::npos);
  CHECK(w.find("std::string") != std::string::npos);

  w = what_of([] { value::of(std::string("s")).get<int>(0); });
  CHECK(w.find("int") != std::string::npos);
  CHECK(w.find("std::string") != std::string::npos);

  w = what_of([] { value::of(kw("k", 2.5)).keyword<int>("k"); });
  CHECK(w.find("double") != std::string::npos);
  CHECK(w.find("int") != std::string::npos);
  CHECK(w.find("'k'") != std::string::npos);

  w = what_of([] { value::of(1, 2.0).as_tuple<int, int>(); });
  CHECK(w.find("double") != std::string::npos);
}

TEST_CASE("missing positions and keywords, and count mismatches, throw value_type_error") {
  value v = value::of(1);
  CHECK_THROWS_AS(v.get<int>(1), value_type_error);
  CHECK_THROWS_AS(v.keyword<int>("nope"), value_type_error);
  CHECK(what_of([&] { v.keyword<int>("nope"); }).find("nope") != std::string::npos);
  CHECK_THROWS_AS((v.as_tuple<int, int>()), value_type_error);
  CHECK_THROWS_AS(v.as_tuple<>(), value_type_error);
}

TEST_CASE("a lone value argument is not nested; push_back and set_keyword build values by hand") {
  value v = value::of(1, "x");
  value same = value::of(v);
  CHECK(same.size() == 2);
  CHECK(same.get<std::string>(1) == "x");
  value built;
  built.push_back(std::any(3));
  built.set_keyword("name", std::any(std::string("n")));
  CHECK(built.as<int>() == 3);
  CHECK(built.keyword<std::string>("name") == "n");
}

TEST_CASE("typed run parameters are unpacked from the first switch; mismatches reach the caller") {
  greenlet g([](int a, std::string b, double c) { return b + std::to_string(a) + (c > 1.0 ? "!" : "?"); });
  CHECK(g.switch_(4, "n", 2.0).as<std::string>() == "n4!");

  greenlet wrong([](int) {});
  CHECK_THROWS_AS(wrong.switch_("not an int"), value_type_error);
  CHECK(wrong.dead());

  greenlet no_args([] {});
  CHECK_THROWS_AS(no_args.switch_(1), value_type_error);

  greenlet takes_value([](value v) { return v; });
  value r = takes_value.switch_(1, kw("k", 2));
  CHECK(r.as<int>() == 1);
  CHECK(r.keyword<int>("k") == 2);
}

}  // TEST_SUITE
