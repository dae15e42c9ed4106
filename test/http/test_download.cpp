// Downloads to files: the content on success, and never a file (nor a temp file) left behind on failure.
#include <limits.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "helpers.hpp"
#include "tendril/wait.hpp"

using namespace http_test;

// fdatasync() and fsync() as libtendril.so calls them: this executable's definitions interpose libc's (test_http is
// linked with export_dynamic so that the library's references bind to them). Each counts its calls, notes the file
// or directory of the last one, and fails with its `fail_with` errno when that is set; otherwise it does the real
// system call, after sleeping `delay_ms` (a slow disk).
namespace {
struct interposed_sync {
  std::atomic<int> calls{0};
  std::atomic<int> fail_with{0};
  std::atomic<int> delay_ms{0};
  std::mutex mutex;
  std::string path;          // the file of the last call (guarded by mutex)
  std::string probe;         // a file to look for at each call (guarded by mutex; empty: none)
  bool probe_found = false;  // whether `probe` existed at the last call (guarded by mutex)

  int call(int fd, long sys) {
    ++calls;
    char target[PATH_MAX];
    const std::string link = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target);
    {
      std::lock_guard<std::mutex> lk(mutex);
      path.assign(target, n > 0 ? static_cast<std::size_t>(n) : 0);
      probe_found = !probe.empty() && ::access(probe.c_str(), F_OK) == 0;
    }
    if (const int e = fail_with.load()) {
      errno = e;
      return -1;
    }
    if (const int ms = delay_ms.load()) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return static_cast<int>(::syscall(sys, fd));
  }
  std::string last_path() {
    std::lock_guard<std::mutex> lk(mutex);
    return path;
  }
};
interposed_sync fdatasyncs;
interposed_sync fsyncs;

// Sets `knob` (an interposer's fail_with or delay_ms) to `value` for its lifetime, then back to 0.
struct scoped_knob {
  std::atomic<int>& knob;
  scoped_knob(std::atomic<int>& k, int value) : knob(k) { knob = value; }
  ~scoped_knob() { knob = 0; }
  scoped_knob(const scoped_knob&) = delete;
  scoped_knob& operator=(const scoped_knob&) = delete;
};
}  // namespace

extern "C" int fdatasync(int fd) { return fdatasyncs.call(fd, SYS_fdatasync); }
extern "C" int fsync(int fd) { return fsyncs.call(fd, SYS_fsync); }

TEST_CASE("a successful download writes exactly the body under the destination name") {
  temp_dir dir;
  const std::size_t n = 300000;
  const fs::path to = dir.path / "out.bin";
  auto r = http::download(url("/bytes/" + std::to_string(n)), to);
  CHECK(r.path == to);
  CHECK(r.bytes == n);
  CHECK(r.status == 200);
  CHECK(r.url == url("/bytes/" + std::to_string(n)));
  CHECK(r.elapsed > 0ns);
  CHECK(dir.entries() == std::vector<std::string>{"out.bin"});
  CHECK(read_file(to) == expected_bytes(n));
}

TEST_CASE("a downloaded file has the permissions of a newly created file, not the temporary file's 0600") {
  temp_dir dir;
  const mode_t old_mask = ::umask(022);  // the test's own mask; restored below
  const fs::path to = dir.path / "out.bin";
  const fs::path plain = dir.path / "plain";
  http::download(url("/bytes/10"), to);
  { std::ofstream(plain) << "x"; }
  const auto perms = fs::status(to).permissions();
  ::umask(027);
  const fs::path to2 = dir.path / "out2.bin";
  http::download(url("/bytes/10"), to2);
  const auto perms2 = fs::status(to2).permissions();
  ::umask(old_mask);
  CHECK(perms == fs::status(plain).permissions());
  CHECK(perms == (fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read));
  CHECK(perms2 == (fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read));
}

TEST_CASE("a download replaces an existing file, follows redirects, and works from many tasks") {
  temp_dir dir;
  SUBCASE("replaces") {
    const fs::path to = dir.path / "f";
    { std::ofstream(to) << "old content that is longer than the new one, much longer indeed"; }
    auto r = http::download(url("/bytes/10"), to);
    CHECK(r.bytes == 10);
    CHECK(read_file(to) == expected_bytes(10));
  }
  SUBCASE("redirect") {
    auto r = http::download(url("/redirect/2"), dir.path / "r");
    CHECK(r.url == url("/redirect/0"));
    CHECK(read_file(dir.path / "r") == "redirect done");
  }
  SUBCASE("an empty body") {
    auto r = http::download(url("/bytes/0"), dir.path / "empty");
    CHECK(r.bytes == 0);
    CHECK(fs::exists(dir.path / "empty"));
    CHECK(fs::file_size(dir.path / "empty") == 0);
  }
  SUBCASE("20 tasks with one session") {
    http::session s;
    tendril::run([&] {
      std::vector<tendril::task<std::uint64_t>> ts;
      for (int i = 0; i < 20; ++i) {
        ts.push_back(tendril::spawn([&, i] {
          auto n = static_cast<std::size_t>(1000 * (i + 1));
          return s.download(url("/bytes/" + std::to_string(n)), dir.path / ("f" + std::to_string(i))).bytes;
        }));
      }
      auto sizes = tendril::gather(ts);
      for (int i = 0; i < 20; ++i) CHECK(sizes[static_cast<std::size_t>(i)] == 1000u * static_cast<unsigned>(i + 1));
    });
    CHECK(dir.entries().size() == 20);
    for (int i = 0; i < 20; ++i) {
      CHECK(read_file(dir.path / ("f" + std::to_string(i))) == expected_bytes(1000 * static_cast<std::size_t>(i + 1)));
    }
  }
}

TEST_CASE("a failed download leaves no file behind") {
  temp_dir dir;
  const fs::path to = dir.path / "out.bin";
  SUBCASE("connection dropped mid-body") {
    try {
      http::download(url("/drop/300000"), to);
      FAIL("no exception");
    } catch (const http::error& e) {
      CHECK(e.code() == 18);
      CHECK(contains(e.what(), url("/drop/300000")));
    }
  }
  SUBCASE("a Content-Length too large to be real, then the connection closed") {
    try {
      http::download(url("/huge-length/5000"), to);
      FAIL("no exception");
    } catch (const http::error& e) {
      CHECK(e.code() == 18);
    }
  }
  SUBCASE("404") {
    try {
      http::download(url("/status/404"), to);
      FAIL("no exception");
    } catch (const http::status_error& e) {
      CHECK(e.status() == 404);
      CHECK(contains(e.what(), url("/status/404")));
    }
  }
  SUBCASE("refused connection") {
    CHECK_THROWS_AS(http::download("http://127.0.0.1:" + std::to_string(refused_port()) + "/", to), http::error);
  }
  SUBCASE("timeout") {
    http::options o;
    o.timeout = 200ms;
    CHECK_THROWS_AS(http::download(url("/stall"), to, o), http::timeout_error);
  }
  SUBCASE("on_progress aborts") {
    http::options o;
    o.on_progress = [](const http::progress& p) { return p.downloaded == 0; };
    CHECK_THROWS_AS(http::download(url("/slow/100000?chunk=1000&interval=0.01"), to, o), http::error);
  }
  SUBCASE("an existing destination is left untouched by a failure") {
    { std::ofstream(to) << "keep me"; }
    CHECK_THROWS_AS(http::download(url("/drop/300000"), to), http::error);
    CHECK(read_file(to) == "keep me");
    CHECK(dir.entries() == std::vector<std::string>{"out.bin"});
    return;
  }
  SUBCASE("cancelled mid-transfer") {
    std::atomic<std::int64_t> seen{0};
    tendril::run([&] {
      auto t = tendril::spawn([&] {
        http::options o;
        o.on_progress = [&](const http::progress& p) {
          seen = p.downloaded;
          return true;
        };
        return http::download(url("/slow/1000000?chunk=1000&interval=0.01"), to, o).bytes;  // about 10 s
      });
      // Wait (by polling, as a user would) until the transfer has written part of the body.
      stopwatch sw;
      while (seen == 0 && sw.elapsed() < generous(10s)) tendril::sleep_for(5ms);
      REQUIRE(seen > 0);
      bool part_file = false;
      for (const auto& name : dir.entries()) part_file = part_file || contains(name, ".part");
      CHECK(part_file);  // the body goes to a temp file beside the destination
      stopwatch cancel_sw;
      CHECK(t.cancel());
      t.join();
      CHECK(cancel_sw.elapsed() < generous(2s));
      CHECK(t.cancelled());
    });
  }
  CHECK(dir.entries().empty());
}

TEST_CASE("a destination name near the file system's limit is saved: only its temporary name is cut") {
  temp_dir dir;
  const std::string name(250, 'n');  // fits NAME_MAX (255); ".NAME.part-XXXXXX" would not
  const auto d = http::download(url("/bytes/1000"), dir.path / name);
  CHECK(d.bytes == 1000);
  CHECK(read_file(dir.path / name) == expected_bytes(1000));
  CHECK(dir.entries() == std::vector<std::string>{name});
}

TEST_CASE("a download into a missing directory fails with a filesystem_error naming the path") {
  temp_dir dir;
  const fs::path to = dir.path / "missing" / "out.bin";
  try {
    http::download(url("/bytes/10"), to);
    FAIL("no exception");
  } catch (const fs::filesystem_error& e) {
    CHECK(contains(e.what(), (dir.path / "missing").string()));
  }
  CHECK(dir.entries().empty());
}

TEST_CASE("a download to a directory fails before anything is sent, naming the path, and leaves nothing") {
  temp_dir dir;
  const fs::path sub = dir.path / "sub";
  REQUIRE(fs::create_directory(sub));
  fs::path to;
  SUBCASE("an existing directory") { to = sub; }
  SUBCASE("an existing directory, spelled with a trailing slash") { to = sub / ""; }
  const long requests_before = stats().requests;
  try {
    http::download(url("/bytes/300000"), to);
    FAIL("no exception");
  } catch (const fs::filesystem_error& e) {
    CHECK(e.code() == std::errc::is_a_directory);
    CHECK(contains(e.what(), sub.string()));
    CHECK(contains(e.what(), "directory"));
  }
  // The server saw only the two /stats requests: the download itself was never sent.
  CHECK(stats().requests == requests_before + 1);
  CHECK(dir.entries() == std::vector<std::string>{"sub"});
  CHECK(fs::is_empty(sub));
}

TEST_CASE("a download over a symlink, a FIFO or a device fails before anything is sent and leaves it as it was") {
  temp_dir dir;
  const fs::path sub = dir.path / "sub";
  REQUIRE(fs::create_directory(sub));
  fs::path to;
  std::string expected;
  SUBCASE("a symlink to a directory") {
    to = dir.path / "link-to-dir";
    fs::create_directory_symlink(sub, to);
    expected = "symbolic link";
  }
  SUBCASE("a symlink to a file") {
    to = dir.path / "link-to-file";
    std::ofstream(sub / "file") << "kept";
    fs::create_symlink(sub / "file", to);
    expected = "symbolic link";
  }
  SUBCASE("a FIFO") {
    to = dir.path / "fifo";
    REQUIRE(::mkfifo(to.c_str(), 0600) == 0);
    expected = "not a regular file";
  }
  const auto before = fs::symlink_status(to).type();
  const long requests_before = stats().requests;
  try {
    http::download(url("/bytes/1000"), to);
    FAIL("no exception");
  } catch (const fs::filesystem_error& e) {
    CHECK(contains(e.what(), expected));
    CHECK(contains(e.what(), to.string()));
  }
  CHECK(stats().requests == requests_before + 1);  // nothing sent
  CHECK(fs::symlink_status(to).type() == before);  // still the link or FIFO it was
  for (const auto& entry : fs::directory_iterator(dir.path)) {
    CHECK(entry.path().filename().string().find(".part-") == std::string::npos);  // no temporary file left
  }
}

TEST_CASE("a download into a bad directory fails at once, without waiting for a slot of its session") {
  temp_dir dir;
  fs::path bad;
  std::errc why{};
  SUBCASE("a missing directory") {
    bad = dir.path / "missing";
    why = std::errc::no_such_file_or_directory;
  }
  SUBCASE("a regular file as the directory") {
    bad = dir.path / "file";
    { std::ofstream(bad) << "x"; }
    why = std::errc::not_a_directory;
  }
  http::session_options so;
  so.max_connections = 1;
  http::session s(so);
  tendril::run([&] {
    auto busy = s.open(url("/stall"));      // holds the session's only slot while it lives
    tendril::timeout guard(generous(10s));  // the old code waited here for that slot
    try {
      s.download(url("/bytes/10"), bad / "out.bin");
      FAIL("no exception");
    } catch (const fs::filesystem_error& e) {
      CHECK(e.code() == why);
      CHECK(contains(e.what(), bad.string()));
    }
  });
  CHECK(dir.entries().size() == (why == std::errc::not_a_directory ? 1U : 0U));
}

// The filesystem_error a download of 300,000 bytes to `to` throws (none, and a failed check, if it succeeds).
std::optional<fs::filesystem_error> failed_download(const fs::path& to) {
  try {
    http::download(url("/bytes/300000"), to);
  } catch (const fs::filesystem_error& e) {
    return e;
  }
  FAIL_CHECK("no exception");
  return std::nullopt;
}

TEST_CASE("a download is flushed to disk (fdatasync) before its rename, and a failed flush leaves no file") {
  temp_dir dir;
  const fs::path to = dir.path / "out.bin";
  SUBCASE("one fdatasync, on the temporary file, before it gets the final name") {
    const int before = fdatasyncs.calls.load();
    auto r = http::download(url("/bytes/300000"), to);
    CHECK(r.bytes == 300000);
    CHECK(fdatasyncs.calls.load() == before + 1);
    const std::string synced = fdatasyncs.last_path();
    // The temporary file's name: the flush came before the rename.
    CHECK(fs::path(synced).parent_path() == fs::canonical(dir.path));  // /proc/self/fd names are resolved
    CHECK(fs::path(synced).filename().string().rfind(".out.bin.part-", 0) == 0);
    CHECK(dir.entries() == std::vector<std::string>{"out.bin"});
    CHECK(read_file(to) == expected_bytes(300000));
  }
  SUBCASE("a failing fdatasync is an error that removes the temporary file and keeps the old file") {
    { std::ofstream(to) << "keep me"; }
    scoped_knob failing(fdatasyncs.fail_with, EIO);
    const int before = fdatasyncs.calls.load();
    const auto e = failed_download(to);
    REQUIRE(e);
    CHECK(e->code() == std::errc::io_error);
    CHECK(e->path1() == to);
    CHECK(contains(e->what(), to.string()));
    CHECK(fdatasyncs.calls.load() == before + 1);
    CHECK(dir.entries() == std::vector<std::string>{"out.bin"});
    CHECK(read_file(to) == "keep me");
  }
}

TEST_CASE("after the rename the download's directory is flushed to disk (fsync), so the new name is durable too") {
  temp_dir dir;
  const fs::path to = dir.path / "out.bin";
  SUBCASE("one fsync, on the destination's directory, after the rename") {
    {
      std::lock_guard<std::mutex> lk(fsyncs.mutex);
      fsyncs.probe = to.string();
    }
    const int before = fsyncs.calls.load();
    http::download(url("/bytes/1000"), to);
    CHECK(fsyncs.calls.load() == before + 1);
    CHECK(fs::path(fsyncs.last_path()) == fs::canonical(dir.path));
    std::lock_guard<std::mutex> lk(fsyncs.mutex);
    CHECK(fsyncs.probe_found);  // the file had its final name when its directory was flushed
    fsyncs.probe.clear();
  }
  SUBCASE(
      "a failing directory flush is an error naming the destination; the complete file stays, the old one is gone") {
    { std::ofstream(to) << "old"; }
    scoped_knob failing(fsyncs.fail_with, EIO);
    const auto e = failed_download(to);
    REQUIRE(e);
    CHECK(e->code() == std::errc::io_error);
    CHECK(e->path1() == to);
    CHECK(contains(e->what(), "complete under its final name"));
    CHECK(dir.entries() == std::vector<std::string>{"out.bin"});
    CHECK(read_file(to) == expected_bytes(300000));
  }
  SUBCASE("a file system that cannot flush a directory (EINVAL) is no error") {
    scoped_knob failing(fsyncs.fail_with, EINVAL);
    const int before = fsyncs.calls.load();
    auto r = http::download(url("/bytes/1000"), to);
    CHECK(r.bytes == 1000);
    CHECK(fsyncs.calls.load() == before + 1);
    CHECK(read_file(to) == expected_bytes(1000));
  }
}

TEST_CASE("a slow flush to disk holds up only the downloading task, not the thread's other tasks") {
  // fdatasync() of a big file takes a while (seconds on a slow disk). On the event loop's thread it would stop
  // every task and transfer of the thread for that long; it runs on the thread pool instead.
  temp_dir dir;
  const scoped_knob slow(fdatasyncs.delay_ms, 1000);
  int ticks = 0;
  bool done = false;
  stopwatch sw;
  tendril::run([&] {
    auto ticker = tendril::spawn([&] {
      while (!done) {
        tendril::sleep_for(10ms);
        ++ticks;
      }
    });
    auto d = http::download(url("/bytes/1000"), dir.path / "out.bin");
    done = true;
    ticker.get();
    CHECK(d.bytes == 1000);
  });
  CHECK(sw.elapsed() >= 1s);  // the download waited for its flush
  // The ticker ran while the download waited: about 100 ticks of 10 ms in that second (at least 10 even on a
  // slow, loaded machine). With the flush on the loop's thread it got at most the few before the flush began.
  CHECK(ticks >= 10);
}
