// samples/download.cpp — a concurrent downloader: many files at once, on one thread, with progress bars.
//
//   download [-j N] [-o DIR] [-i FILE] [--sync] [--retries N] [--timeout S] [URL ...]
//
//   -j N          at most N downloads at once (default 16)
//   -o DIR        where to put the files (default ./downloads); file names come from the URLs
//   -i FILE       read more URLs from FILE, one per line ('#' starts a comment; '-' is standard input)
//   --sync        one after another instead (the baseline to compare with)
//   --retries N   retry a download that fails to connect, times out, or gets 502/503/504, N times (default 2);
//                 the session waits 0.2 s before the first retry and doubles the wait each time (up to 30 s);
//                 each retry prints a line first ("retry 1 of 2 in 0.2 s: REASON")
//   --timeout S   time limit of each attempt, in seconds (default: no limit); a retry gets S again
//
// With no URL at all it runs a demo: it starts a small HTTP server inside this very process (sample_http_server.hpp,
// on tendril::net) that serves 8 images, each after a 1-second pause like a slow real server, downloads them one
// after another and then all at once, and prints both times. Server and downloader share one OS thread: every
// connection of the server and every download is a tendril task, and a task waiting for the network (or
// sleeping in the server's handler) lets the others run.
//
// How it works:
//   - one tendril::http::session (aiohttp.ClientSession) shares connections between downloads and limits how many
//     run at once (max_connections = N); a semaphore limits how many *tasks* are downloading, so the progress
//     display knows which ones are active;
//   - each URL gets a task that calls session.download(url, path), which looks blocking but suspends only that
//     task; the file is written to a temporary name and renamed at the end, so a failed or interrupted download
//     leaves no partial file behind;
//   - on a terminal, options::on_progress records each transfer's byte counts (it runs on the event loop, so it
//     only stores numbers) and a ticker task redraws the bars ten times a second; into a pipe or file, it prints
//     one line per finished file instead;
//   - Ctrl-C arrives through a signalfd watched by a task, which cancels the downloads: their temporary files are
//     removed as the tasks unwind.
//
// Exit status: 0 if every download succeeded, 1 if any failed, 2 for a usage error, 130 when interrupted.
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "command_line.hpp"
#include "sample_http_server.hpp"
#include "tendril/http.hpp"
#include "tendril/io.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/sync.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace http = tendril::http;
using clock_type = std::chrono::steady_clock;

namespace {

double seconds_since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

// 1234567 -> "1.2 MB"
std::string human(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000 && u < 4) {
    bytes /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

// ---- file names ------------------------------------------------------------------------------------------------

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The last segment of the URL's path, percent-decoded and made safe: "http://h/a/b%20c.jpg?x" -> "b c.jpg".
// Empty, "." or ".." -> "index.html".
std::string file_name_for(std::string_view url) {
  auto scheme = url.find("://");
  std::string_view rest = scheme == std::string_view::npos ? url : url.substr(scheme + 3);
  rest = rest.substr(0, rest.find_first_of("?#"));
  auto slash = rest.find('/');
  std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  std::string_view last = path.substr(path.empty() ? 0 : path.rfind('/') + 1);
  std::string name;
  for (std::size_t i = 0; i < last.size(); ++i) {
    if (last[i] == '%' && i + 2 < last.size() && hex(last[i + 1]) >= 0 && hex(last[i + 2]) >= 0) {
      name += static_cast<char>(hex(last[i + 1]) * 16 + hex(last[i + 2]));
      i += 2;
    } else {
      name += last[i];
    }
  }
  for (char& c : name) {
    if (c == '/' || c == '\\' || c == '\0' || static_cast<unsigned char>(c) < 0x20) c = '_';
  }
  if (name.empty() || name == "." || name == "..") name = "index.html";
  return name;
}

// "a.jpg" the first time, then "a.jpg.1", "a.jpg.2"... (like wget), so two URLs never share a file.
std::string unique_name(const std::string& name, std::set<std::string>& used) {
  std::string candidate = name;
  for (int k = 1; !used.insert(candidate).second; ++k) candidate = name + "." + std::to_string(k);
  return candidate;
}

// ---- one download ----------------------------------------------------------------------------------------------

struct job {
  std::string url;
  std::string name;  // file name inside the output directory
  fs::path dest;
  // Progress, written by on_progress (on the event loop) and read by the display.
  std::int64_t received = 0;
  std::int64_t total = 0;  // 0 while unknown
  bool active = false;
  bool finished = false;
  // Outcome.
  bool ok = false;
  std::uint64_t bytes = 0;
  double seconds = 0;
  std::string error;
  clock_type::time_point started;
};

// Prints progress: bars redrawn in place on a terminal, one line per finished file otherwise.
class display {
 public:
  explicit display(bool tty) : tty_(tty) {}

  bool tty() const { return tty_; }

  void begin(std::vector<job>& jobs) {
    jobs_ = &jobs;
    t0_ = clock_type::now();
  }

  // A download ended: a permanent line (above the bars on a terminal).
  void finished(const job& j) {
    char line[4096];
    if (j.ok) {
      std::snprintf(line, sizeof line, "done  %s  %llu bytes  %.2f s", j.name.c_str(),
                    static_cast<unsigned long long>(j.bytes), j.seconds);
    } else {
      std::snprintf(line, sizeof line, "FAILED  %s: %s", j.url.c_str(), j.error.c_str());
    }
    say(line);
  }

  // A permanent line of text.
  void say(const std::string& text) {
    if (!tty_) {
      std::printf("%s\n", text.c_str());
      std::fflush(stdout);
      return;
    }
    std::string frame = erase() + text + "\n";
    write(frame);
    redraw();
  }

  // Redraws the bars (terminal only): one per active download, then a total line.
  void redraw() {
    if (!tty_ || jobs_ == nullptr) return;
    const int width = terminal_width();
    std::string frame = erase();
    int shown = 0, hidden = 0, lines = 0;
    std::int64_t received = 0, known_left = 0;
    std::size_t done = 0, failed = 0;
    bool all_known = true;
    for (const job& j : *jobs_) {
      received += j.finished ? static_cast<std::int64_t>(j.bytes) : j.received;
      if (j.finished) {
        ++(j.ok ? done : failed);
        continue;
      }
      if (!j.active || j.total <= 0) all_known = false;
      if (j.total > 0) known_left += std::max<std::int64_t>(0, j.total - j.received);
      if (!j.active) continue;
      if (shown < max_bars) {
        frame += fit(bar_line(j, width), width) + "\n";
        ++shown;
        ++lines;
      } else {
        ++hidden;
      }
    }
    if (hidden > 0) {
      frame += "  ... and " + std::to_string(hidden) + " more\n";
      ++lines;
    }
    const double elapsed = seconds_since(t0_);
    const double rate = elapsed > 0 ? static_cast<double>(received) / elapsed : 0;
    std::string total = "  " + std::to_string(done) + "/" + std::to_string(jobs_->size()) + " files";
    if (failed > 0) total += " (" + std::to_string(failed) + " failed)";
    total += "  " + human(static_cast<double>(received)) + "  " + human(rate) + "/s";
    if (all_known && rate > 0) {
      char eta[32];
      std::snprintf(eta, sizeof eta, "  ETA %.0f s", static_cast<double>(known_left) / rate);
      total += eta;
    } else {
      total += "  ETA --";
    }
    frame += fit(total, width) + "\n";
    ++lines;
    write(frame);
    lines_ = lines;
  }

  // Removes the bars (the batch is over).
  void end() {
    if (tty_) write(erase());
    jobs_ = nullptr;
  }

 private:
  static constexpr int max_bars = 12;

  std::string erase() {
    std::string s;
    if (lines_ > 0) s = "\r\x1b[" + std::to_string(lines_) + "A\x1b[J";  // cursor up, clear to the end
    lines_ = 0;
    return s;
  }

  static void write(const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  }

  static int terminal_width() {
    winsize ws{};
    if (::ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) return ws.ws_col;
    return 80;
  }

  // Cut to the terminal width, so no line wraps (that would break the cursor-up count).
  static std::string fit(std::string s, int width) {
    if (static_cast<int>(s.size()) >= width) s.resize(static_cast<std::size_t>(width - 1));
    return s;
  }

  std::string bar_line(const job& j, int width) const {
    std::string name = j.name.size() > 20 ? j.name.substr(0, 17) + "..." : j.name;
    name.resize(20, ' ');
    const int bar = std::clamp(width - 2 - 20 - 2 - 43, 10, 50);  // what is left beside name and numbers
    std::string line = "  " + name + " [";
    const double elapsed = seconds_since(j.started);
    const double rate = elapsed > 0 ? static_cast<double>(j.received) / elapsed : 0;
    if (j.total > 0) {
      const double f = std::min(1.0, static_cast<double>(j.received) / static_cast<double>(j.total));
      const int full = static_cast<int>(f * bar);
      line += std::string(static_cast<std::size_t>(full), '#') + std::string(static_cast<std::size_t>(bar - full), '.');
      char tail[96];
      std::snprintf(tail, sizeof tail, "] %3d%%  %s / %s  %s/s", static_cast<int>(f * 100),
                    human(static_cast<double>(j.received)).c_str(), human(static_cast<double>(j.total)).c_str(),
                    human(rate).c_str());
      line += tail;
    } else {
      // Size unknown (yet): a marker bouncing along the bar.
      const int pos = static_cast<int>(elapsed * 10) % (2 * bar - 2);
      const int at = pos < bar ? pos : 2 * bar - 2 - pos;
      std::string b(static_cast<std::size_t>(bar), ' ');
      b[static_cast<std::size_t>(at)] = '=';
      line += b + "]       " + human(static_cast<double>(j.received)) + "  " + human(rate) + "/s";
    }
    return line;
  }

  bool tty_;
  std::vector<job>* jobs_ = nullptr;
  clock_type::time_point t0_;
  int lines_ = 0;  // lines of bars currently on screen
};

// Downloads one file; records the outcome in `j` and never throws (except task_cancelled: an interrupt).
void fetch(job& j, http::session& session, display& out) {
  j.active = true;
  j.started = clock_type::now();
  http::options o;
  o.on_progress = [&j](const http::progress& p) {
    // Runs on the event loop while data moves: record the numbers, nothing else.
    j.received = p.downloaded;
    j.total = p.download_total;
    return true;
  };
  try {
    // download() replaces only a regular file; say so in this program's terms before it refuses in C++ terms.
    std::error_code ec;
    const fs::file_status there = fs::symlink_status(j.dest, ec);
    if (fs::exists(there) && !fs::is_regular_file(there)) {
      j.error = j.dest.string() + (fs::is_directory(there) ? " is a directory" : " is not a regular file") +
                ": not replaced (rename it, or pick another -o DIR)";
    } else {
      http::download_result r = session.download(j.url, j.dest, o);
      j.bytes = r.bytes;
      j.ok = true;
    }
  } catch (const tendril::task_cancelled&) {
    throw;  // interrupted: let the task unwind (the temporary file goes with it)
  } catch (const http::status_error& e) {
    j.error = "HTTP status " + std::to_string(e.status());
  } catch (const http::error& e) {
    j.error = sample::failure_reason(e);
  } catch (const fs::filesystem_error& e) {
    j.error = "cannot save " + e.path1().string() + ": " + e.code().message();  // e.g. "Permission denied"
  } catch (const std::exception& e) {
    j.error = e.what();
  }
  j.seconds = seconds_since(j.started);
  j.finished = true;
  out.finished(j);
}

struct batch_result {
  std::size_t files = 0;
  std::size_t ok = 0;
  std::uint64_t bytes = 0;
  double seconds = 0;
};

// Cancels and waits for tasks on the way out, whatever the way out is: the tasks use this function's locals.
struct task_reaper {
  std::vector<tendril::task<void>>& tasks;
  ~task_reaper() {
    for (auto& t : tasks) t.cancel();
    for (auto& t : tasks) {
      while (!t.done()) {
        try {
          t.join();
        } catch (...) {
          // we were cancelled ourselves: keep waiting, they are unwinding
        }
      }
    }
  }
};

// Downloads every job, at most `parallel` at once (1: one after another, in this task).
batch_result download_all(std::vector<job>& jobs, http::session& session, std::size_t parallel, display& out) {
  const auto t0 = clock_type::now();
  out.begin(jobs);
  std::vector<tendril::task<void>> tasks;
  {
    task_reaper reaper{tasks};
    if (out.tty()) {
      // The ticker: redraws the bars ten times a second while the downloads run.
      tasks.push_back(tendril::spawn([&out] {
        for (;;) {
          out.redraw();
          tendril::sleep_for(100ms);
        }
      }));
    }
    if (parallel <= 1) {
      for (job& j : jobs) fetch(j, session, out);
    } else {
      tendril::semaphore slots(parallel);
      std::vector<tendril::task<void>> downloads;
      task_reaper download_reaper{downloads};
      for (job& j : jobs) {
        downloads.push_back(tendril::spawn([&j, &session, &out, &slots] {
          tendril::semaphore_guard slot(slots);  // wait for one of the N places
          fetch(j, session, out);
        }));
      }
      for (auto& t : downloads) t.join();
    }
  }  // the ticker stops here
  out.end();
  batch_result r;
  r.files = jobs.size();
  r.seconds = seconds_since(t0);
  for (const job& j : jobs) {
    if (j.ok) {
      ++r.ok;
      r.bytes += j.bytes;
    }
  }
  return r;
}

std::vector<job> make_jobs(const std::vector<std::string>& urls, const fs::path& dir) {
  std::vector<job> jobs;
  std::set<std::string> used;
  for (const auto& u : urls) {
    job j;
    j.url = u;
    j.name = unique_name(file_name_for(u), used);
    j.dest = dir / j.name;
    jobs.push_back(std::move(j));
  }
  return jobs;
}

void print_summary(const std::vector<job>& jobs, const batch_result& r, const fs::path& dir) {
  std::printf("downloaded %zu of %zu files, %llu bytes in %.2f s (%s/s) into %s\n", r.ok, r.files,
              static_cast<unsigned long long>(r.bytes), r.seconds,
              human(r.seconds > 0 ? static_cast<double>(r.bytes) / r.seconds : 0).c_str(), dir.string().c_str());
  if (r.ok < r.files) {
    std::printf("%zu failed:\n", r.files - r.ok);
    for (const job& j : jobs) {
      if (!j.ok) std::printf("  %s: %s\n", j.url.c_str(), j.error.c_str());
    }
  }
}

// ---- the demo --------------------------------------------------------------------------------------------------

constexpr int demo_images = 8;
constexpr auto demo_delay = 1s;

// Image i (1..8): deterministic bytes, 125 to 300 KiB, that start and end like a JPEG.
std::string demo_image(int i) {
  const std::size_t size = (100 + 25 * static_cast<std::size_t>(i)) * 1024;
  std::string b(size, '\0');
  for (std::size_t k = 0; k < size; ++k) b[k] = static_cast<char>((k * 31 + static_cast<std::size_t>(i) * 7) % 251);
  const char soi[] = "\xFF\xD8\xFF\xE0\x00\x10JFIF";
  std::copy(soi, soi + sizeof soi - 1, b.begin());
  b[size - 2] = '\xFF';
  b[size - 1] = '\xD9';
  return b;
}

int run_demo(const fs::path& dir, std::size_t parallel, display& out) {
  // The server: /img/1.jpg ... /img/8.jpg, each answered after a 1-second pause (the handler's sleep suspends only
  // that connection's task).
  std::vector<std::string> images;
  for (int i = 1; i <= demo_images; ++i) images.push_back(demo_image(i));
  sample::http_server server([&images](const sample::request& r) -> std::optional<sample::reply> {
    int i = 0;
    if (std::sscanf(r.path.c_str(), "/img/%d.jpg", &i) != 1 || i < 1 || i > demo_images ||
        r.path != "/img/" + std::to_string(i) + ".jpg") {
      return std::nullopt;  // 404
    }
    tendril::sleep_for(demo_delay);
    return sample::reply::bytes(images[static_cast<std::size_t>(i - 1)], "image/jpeg");
  });
  server.start();

  std::printf(
      "download: no URLs given, so here is a demo. A web server inside this program (%s) serves %d images,\n"
      "each after a %d-second pause, like a slow real server. We fetch them into %s/ twice: one after another,\n"
      "then all at once - on one thread, each download a tendril task. (Usage: download [-j N] [-o DIR] URL...)\n",
      server.url("/img/").c_str(), demo_images, static_cast<int>(demo_delay.count()), dir.string().c_str());
  std::fflush(stdout);

  std::vector<std::string> urls;
  for (int i = 1; i <= demo_images; ++i) urls.push_back(server.url("/img/" + std::to_string(i) + ".jpg"));

  http::session_options so;
  so.max_connections = parallel;
  http::session session(so);

  std::printf("\none after another (--sync):\n");
  std::vector<job> one_by_one = make_jobs(urls, dir);
  batch_result a = download_all(one_by_one, session, 1, out);
  std::printf("%zu files, %llu bytes in %.2f s\n", a.ok, static_cast<unsigned long long>(a.bytes), a.seconds);

  std::printf("\nall at once (-j %zu):\n", parallel);
  std::vector<job> together = make_jobs(urls, dir);
  batch_result b = download_all(together, session, parallel, out);
  std::printf("%zu files, %llu bytes in %.2f s\n", b.ok, static_cast<unsigned long long>(b.bytes), b.seconds);

  std::printf("\nsync: %zu files in %.1f s   concurrent: %zu files in %.1f s   speed-up %.1fx\n", a.ok, a.seconds, b.ok,
              b.seconds, b.seconds > 0 ? a.seconds / b.seconds : 0.0);
  std::fflush(stdout);
  server.stop();
  return a.ok == a.files && b.ok == b.files ? 0 : 1;
}

// ---- command line ----------------------------------------------------------------------------------------------

constexpr const char* usage_line =
    "usage: download [-j N] [-o DIR] [-i FILE] [--sync] [--retries N] [--timeout S] [URL ...]\n";

// --help: to standard output, exit status 0.
[[noreturn]] void help() {
  std::printf(
      "download: downloads URLs concurrently, on one thread\n%s"
      "  -j N          at most N downloads at once (default 16, at most 10000)\n"
      "  -o DIR        where the files go (default ./downloads); created if needed\n"
      "  -i FILE       more URLs, one per line ('#' starts a comment; '-' is standard input)\n"
      "  --sync        one after another instead\n"
      "  --retries N   retry a download that fails to connect, times out, or gets 502/503/504, up to N times\n"
      "                (default 2, at most 10). The waits between attempts double from 0.2 s (0.2, 0.4, 0.8 ...,\n"
      "                at most 30 s each): 2 retries wait 0.6 s in all, 5 wait 6.2 s, 10 wait 111 s\n"
      "  --timeout S   time limit of each attempt, in seconds (default: none); every retry gets S again\n"
      "With no URL: a demo against a slow server built into this program.\n",
      usage_line);
  std::exit(0);
}

[[noreturn]] void usage(const std::string& why) {
  sample::usage_failure("download", why, usage_line, "       (download --help for more)\n");
}

bool is_control(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

// "http://a\x01b": control characters (a NUL byte in a file of URLs, say) made visible.
std::string escaped(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (is_control(c)) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

bool has_control_char(std::string_view s) { return std::any_of(s.begin(), s.end(), is_control); }

struct settings {
  std::size_t parallel = 16;
  fs::path dir = "downloads";
  std::vector<std::string> urls;
  std::vector<std::string> url_files;
  bool sync = false;
  int retries = 2;
  std::optional<double> timeout;
};

// Adds the URLs of `f` ("-": standard input) to `urls`.
void read_url_file(const std::string& f, std::vector<std::string>& urls) {
  std::ifstream file;
  std::istream* in = &std::cin;
  if (f != "-") {
    std::error_code ec;
    if (fs::is_directory(f, ec)) usage("cannot read " + f + ": it is a directory");
    errno = 0;
    file.open(f);
    if (!file) usage("cannot read " + f + (errno != 0 ? std::string(": ") + std::strerror(errno) : ""));
    in = &file;
  }
  int number = 0;
  for (std::string line; std::getline(*in, line);) {
    ++number;
    auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos || line[b] == '#') continue;
    auto e = line.find_last_not_of(" \t\r");
    std::string url = line.substr(b, e - b + 1);
    if (has_control_char(url)) {
      usage(f + ", line " + std::to_string(number) + ": control character in the URL \"" + escaped(url) + "\"");
    }
    urls.push_back(url);
  }
}

settings parse(int argc, char** argv) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value after " + a);
      return argv[++i];
    };
    auto bad = [&](const std::string& v, const char* expected) { usage(sample::bad_value(a, escaped(v), expected)); };
    if (a == "-j" || a == "--jobs") {
      std::string v = value();
      auto n = sample::parse_number<std::uint64_t>(v, 1, 10000);
      if (!n) bad(v, "a whole number from 1 to 10000");
      s.parallel = static_cast<std::size_t>(*n);
    } else if (a == "-o" || a == "--output") {
      std::string v = value();
      if (v.empty()) usage(a + ": empty directory name");
      std::error_code ec;
      if (fs::exists(v, ec) && !fs::is_directory(v, ec)) usage(a + " " + v + ": exists and is not a directory");
      s.dir = v;
    } else if (a == "-i" || a == "--input") {
      s.url_files.push_back(value());
    } else if (a == "--sync") {
      s.sync = true;
    } else if (a == "--retries") {
      std::string v = value();
      auto n = sample::parse_number<std::uint64_t>(v, 0, 10);
      if (!n) bad(v, "a whole number from 0 to 10");
      s.retries = static_cast<int>(*n);
    } else if (a == "--timeout") {
      std::string v = value();
      s.timeout = sample::parse_number(v, 0.001, 1e6);
      if (!s.timeout) bad(v, "seconds, from 0.001 to 1000000");
    } else if (a == "-h" || a == "--help") {
      help();
    } else if (!a.empty() && a[0] == '-') {
      usage("unknown option " + a);
    } else if (has_control_char(a)) {
      usage("control character in the URL \"" + escaped(a) + "\"");
    } else {
      s.urls.push_back(a);
    }
  }
  for (const auto& f : s.url_files) read_url_file(f, s.urls);
  return s;
}

int real_main(const settings& s, display& out) {
  std::error_code ec;
  fs::create_directories(s.dir, ec);
  if (ec) {
    std::fprintf(stderr, "download: cannot create %s: %s\n", s.dir.string().c_str(), ec.message().c_str());
    return 1;
  }
  if (s.urls.empty() && s.url_files.empty()) return run_demo(s.dir, s.parallel, out);
  if (s.urls.empty()) {
    std::fprintf(stderr, "download: no URLs in the input\n");
    return 1;
  }

  http::session_options so;
  so.max_connections = s.parallel;
  so.retries = s.retries;
  so.on_retry = [&out](const http::retry_event& e) {  // as curl's "Will retry in N seconds" warning
    char wait[32];
    std::snprintf(wait, sizeof wait, "%.1f", std::chrono::duration<double>(e.wait).count());
    out.say("retry " + std::to_string(e.retry) + " of " + std::to_string(e.retries) + " in " + wait +
            " s: " + e.reason);
  };
  if (s.timeout) {
    so.defaults.timeout = std::chrono::duration_cast<tendril::duration>(std::chrono::duration<double>(*s.timeout));
  }
  http::session session(so);
  std::vector<job> jobs = make_jobs(s.urls, s.dir);
  batch_result r = download_all(jobs, session, s.sync ? 1 : s.parallel, out);
  print_summary(jobs, r, s.dir);
  return r.ok == r.files ? 0 : 1;
}

// Waits (suspending only this task) for SIGINT or SIGTERM on a signalfd.
int wait_for_signal(int sfd) {
  signalfd_siginfo info{};
  for (;;) {
    tendril::wait_readable(sfd);
    if (::read(sfd, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) return static_cast<int>(info.ssi_signo);
  }
}

}  // namespace

int main(int argc, char** argv) {
  settings s = parse(argc, argv);
  display out(::isatty(1) != 0);
  if (!out.tty()) std::setvbuf(stdout, nullptr, _IOLBF, 0);

  // Ctrl-C / SIGTERM become readable data on a file descriptor (blocked before any thread exists).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  ::sigprocmask(SIG_BLOCK, &signals, nullptr);
  const int sfd = ::signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);

  int status = tendril::run([&] {
    auto work = tendril::spawn([&] { return real_main(s, out); }, {.name = "download", .stack_size = 0});
    if (sfd >= 0) {
      tendril::spawn([&] {
        int sig = wait_for_signal(sfd);
        std::fprintf(stderr, "\ndownload: %s, cancelling (unfinished files are removed)\n",
                     sig == SIGINT ? "interrupted" : "terminated");
        work.cancel();
      });
    }
    work.join();
    if (work.cancelled()) return 130;
    return work.get();
    // run() cancels the signal watcher, still waiting.
  });
  if (sfd >= 0) ::close(sfd);
  return status;
}
