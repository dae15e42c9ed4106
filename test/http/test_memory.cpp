// Large bodies keep memory bounded: downloads stream to disk, streams apply backpressure.
//
// Peak RSS is measured as VmHWM (after resetting it through /proc/self/clear_refs) minus the RSS before. Under
// valgrind (shadow memory) and ASan (quarantine) RSS says little about tendril, so there the bodies are smaller
// and only the content is checked.
#include <string>
#include <vector>

#include "helpers.hpp"

using namespace http_test;

namespace {

bool measure_rss() { return !under_valgrind() && !under_asan(); }

std::uint64_t big_size() {
  return measure_rss() ? 256ull * 1024 * 1024 : under_asan() ? 64ull * 1024 * 1024 : 16ull * 1024 * 1024;
}

constexpr long bound_kib = 64 * 1024;  // 64 MiB

struct rss_probe {
  long before = 0;
  bool ok = false;
  rss_probe() {
    ok = measure_rss() && reset_peak_rss();
    before = proc_status_kib("VmRSS");
  }
  long growth_kib() const { return proc_status_kib("VmHWM") - before; }
};

}  // namespace

TEST_CASE("the RSS probe sees memory the process touches") {
  if (!measure_rss()) return;
  rss_probe probe;
  REQUIRE(probe.ok);
  {
    std::vector<char> block(96 * 1024 * 1024);
    for (std::size_t i = 0; i < block.size(); i += 4096) block[i] = 1;
    CHECK(block[4096] == 1);
  }
  CHECK(probe.growth_kib() >= 90 * 1024);
}

TEST_CASE("a 256 MiB download keeps resident memory bounded and the file exact") {
  const std::uint64_t n = big_size();
  temp_dir dir;
  const fs::path to = dir.path / "big.bin";
  http::session s;
  CHECK(s.get(url("/bytes/10")).status == 200);  // warm up the loop and the connection
  rss_probe probe;
  auto r = s.download(url("/bytes/" + std::to_string(n)), to);
  const long growth = probe.growth_kib();
  CHECK(r.bytes == n);
  CHECK(file_is_pattern(to, n));
  if (probe.ok) {
    MESSAGE("download of " << n / (1024 * 1024) << " MiB: peak RSS growth " << growth << " KiB");
    CHECK(growth < bound_kib);
  }
}

TEST_CASE("a 256 MiB stream read in 64 KiB chunks keeps resident memory bounded") {
  const std::uint64_t n = big_size();
  http::session s;
  CHECK(s.get(url("/bytes/10")).status == 200);
  rss_probe probe;
  auto st = s.open(url("/bytes/" + std::to_string(n)));
  std::uint64_t got = 0;
  bool exact = true;
  for (std::string piece; !(piece = st.read(64 * 1024)).empty();) {
    exact = exact && piece.size() <= 64 * 1024 && is_pattern(piece.data(), piece.size(), got);
    got += piece.size();
  }
  const long growth = probe.growth_kib();
  CHECK(got == n);
  CHECK(exact);
  if (probe.ok) {
    MESSAGE("stream of " << n / (1024 * 1024) << " MiB: peak RSS growth " << growth << " KiB");
    CHECK(growth < bound_kib);
  }
}

TEST_CASE("a 256 MiB stream read_into a 256 KiB buffer keeps resident memory bounded") {
  const std::uint64_t n = big_size();
  http::session s;
  CHECK(s.get(url("/bytes/10")).status == 200);
  std::vector<char> buf(256 * 1024);
  rss_probe probe;
  auto st = s.open(url("/bytes/" + std::to_string(n)));
  std::uint64_t got = 0;
  bool exact = true;
  for (std::size_t k; (k = st.read_into(buf)) != 0;) {
    exact = exact && k <= buf.size() && is_pattern(buf.data(), k, got);
    got += k;
  }
  const long growth = probe.growth_kib();
  CHECK(got == n);
  CHECK(exact);
  if (probe.ok) {
    MESSAGE("stream of " << n / (1024 * 1024) << " MiB read_into: peak RSS growth " << growth << " KiB");
    CHECK(growth < bound_kib);
  }
}

TEST_CASE("a stream nobody reads pauses its transfer instead of buffering the body") {
  const std::uint64_t n = measure_rss() ? 128ull * 1024 * 1024 : 16ull * 1024 * 1024;
  http::session s;
  CHECK(s.get(url("/bytes/10")).status == 200);
  rss_probe probe;
  auto st = s.open(url("/bytes/" + std::to_string(n)));
  // Give the transfer every chance to run ahead of the reader; memory must stay bounded however long this is.
  tendril::sleep_for(500ms);
  const long idle_growth = probe.growth_kib();
  std::uint64_t got = 0;
  bool exact = true;
  for (std::string piece; !(piece = st.read(1 << 20)).empty();) {
    exact = exact && is_pattern(piece.data(), piece.size(), got);
    got += piece.size();
  }
  CHECK(got == n);
  CHECK(exact);
  if (probe.ok) {
    MESSAGE("idle stream: peak RSS growth " << idle_growth << " KiB");
    CHECK(idle_growth < 16 * 1024);
    CHECK(probe.growth_kib() < bound_kib);
  }
}
