// samples/fetch_many.cpp — seed 004's aiohttp crawler: fetch pages concurrently, print each URL and its length.
//
// The Python original:
//
//   async def fetch(session, url):
//       async with session.get(url) as response:
//           text = await response.text()
//           print(url, len(text))
//
//   async def main():
//       async with aiohttp.ClientSession() as session:
//           tasks = [asyncio.create_task(fetch(session, url)) for url in url_list]
//           await asyncio.wait(tasks)
//
// The tendril version has the same shape — one session, one task per URL, then wait for all of them — but the
// fetch function is ordinary blocking-looking code (no async/await), and results are printed in input order
// after gathering, whatever order the pages arrive in. (So nothing prints until the last page is in or has
// failed: --timeout bounds that wait. Printing inside fetch(), as the Python does, would show pages as they
// arrive, in arrival order.)
//
//   fetch_many [-k] [--timeout S] [URL ...]
//
//   -k, --insecure   do not verify TLS certificates (aiohttp's verify_ssl=False); off by default
//   --timeout S      give up on a page after S seconds (default 30; 0: no limit)
//
// With no URL it starts a small web server inside this program (sample_http_server.hpp) with six pages of
// known sizes — the first one slowest — and crawls those, so the output is the same on every run.
// Prints "URL LENGTH" per page (LENGTH in bytes), or "URL error: REASON"; exit status 1 if any page failed.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "command_line.hpp"
#include "sample_http_server.hpp"
#include "tendril/http.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/wait.hpp"

using namespace std::chrono_literals;
namespace http = tendril::http;

namespace {

// fetch(session, url): looks blocking, suspends only the calling task.
std::size_t fetch(http::session& session, const std::string& url) {
  http::response r = session.get(url);
  r.raise_for_status();  // a 404 page is an error here, as response.raise_for_status() in aiohttp
  return r.body.size();
}

// Crawls `urls` concurrently and prints the results in input order. Returns the number of failures.
int crawl(const std::vector<std::string>& urls, bool insecure, double timeout) {
  http::session_options so;
  so.defaults.verify_tls = !insecure;
  if (timeout > 0) {  // per request: a page that never answers fails after `timeout` s instead of hanging the crawl
    so.defaults.timeout = std::chrono::duration_cast<tendril::duration>(std::chrono::duration<double>(timeout));
  }
  http::session session(so);  // aiohttp.ClientSession(): shared by all the tasks

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<tendril::task<std::size_t>> tasks;
  for (const auto& url : urls) {
    tasks.push_back(tendril::spawn([&session, url] { return fetch(session, url); }));  // asyncio.create_task
  }
  // asyncio.gather(*tasks, return_exceptions=True): one outcome per task, in the order given.
  auto outcomes = tendril::gather_settled(tasks);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  int failures = 0;
  std::size_t total = 0;
  for (std::size_t i = 0; i < urls.size(); ++i) {
    if (outcomes[i].ok()) {
      std::printf("%s %zu\n", urls[i].c_str(), *outcomes[i].value);
      total += *outcomes[i].value;
      continue;
    }
    ++failures;
    try {
      std::rethrow_exception(outcomes[i].error);
    } catch (const http::status_error& e) {
      std::printf("%s error: HTTP status %ld\n", urls[i].c_str(), e.status());
    } catch (const http::error& e) {
      std::printf("%s error: %s\n", urls[i].c_str(), sample::failure_reason(e, "-k").c_str());
    } catch (const std::exception& e) {
      std::printf("%s error: %s\n", urls[i].c_str(), e.what());
    }
  }
  std::printf("%zu pages, %zu bytes in %.2f s", urls.size() - static_cast<std::size_t>(failures), total, took);
  if (failures > 0) std::printf(", %d failed", failures);
  std::printf("\n");
  return failures;
}

// The built-in site: /page/1 .. /page/6, page i is sizes[i-1] bytes of text and takes (7 - i) * 100 ms.
constexpr std::size_t sizes[] = {512, 1500, 4096, 10000, 32768, 100000};

std::string page(int i) {
  std::string body = "<html><body><h1>page " + std::to_string(i) + "</h1><p>";
  const std::size_t size = sizes[i - 1];
  const std::string words = "tendril tasks fetch pages concurrently on one thread ";
  while (body.size() < size - 19) body += words[body.size() % words.size()];
  body += "</p></body></html>\n";
  body.resize(size, '\n');
  return body;
}

constexpr const char* usage_line = "usage: fetch_many [-k] [--timeout S] [URL ...]\n";

[[noreturn]] void usage(const std::string& why) { sample::usage_failure("fetch_many", why, usage_line); }

}  // namespace

int main(int argc, char** argv) {
  bool insecure = false;
  double timeout = 30;
  std::vector<std::string> urls;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-k" || a == "--insecure") {
      insecure = true;
    } else if (a == "--timeout") {
      if (i + 1 >= argc) usage("missing value after --timeout");
      const std::string v = argv[++i];
      const auto seconds = sample::parse_number(std::string_view(v), 0.0, 1e6);
      if (!seconds) usage(sample::bad_value("--timeout", v, "seconds, from 0 to 1000000"));
      timeout = *seconds;
    } else if (a == "-h" || a == "--help") {
      std::printf(
          "fetch_many: fetches pages concurrently and prints each URL with its length, in input order\n%s"
          "  -k, --insecure   do not verify TLS certificates (for test servers)\n"
          "  --timeout S      give up on a page after S seconds (default 30; 0: no limit)\n"
          "With no URL: crawls a demo site served by this program.\n",
          usage_line);
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      usage("unknown option " + a);
    } else {
      urls.push_back(a);
    }
  }

  return tendril::run([&] {
    if (!urls.empty()) return crawl(urls, insecure, timeout) == 0 ? 0 : 1;

    // No URLs: serve six pages from this very process and crawl them. The server's handler sleeps in its
    // connection's task, the crawler's tasks wait for their responses: all on this one thread.
    sample::http_server server([](const sample::request& r) -> std::optional<sample::reply> {
      int i = 0;
      if (std::sscanf(r.path.c_str(), "/page/%d", &i) != 1 || i < 1 || i > 6 ||
          r.path != "/page/" + std::to_string(i)) {
        return std::nullopt;  // 404
      }
      tendril::sleep_for(std::chrono::milliseconds(100 * (7 - i)));  // page 1 is the slowest
      return sample::reply::bytes(page(i), "text/html; charset=utf-8");
    });
    server.start();
    std::printf("fetch_many: no URLs given; crawling the 6 pages of a server started inside this program\n");
    std::printf("(page 1 is the slowest to answer, page 6 the fastest; results still print in input order)\n");
    for (int i = 1; i <= 6; ++i) urls.push_back(server.url("/page/" + std::to_string(i)));
    int failures = crawl(urls, insecure, timeout);
    std::printf("(one after another, that would have taken at least 2.1 s)\n");
    server.stop();
    return failures == 0 ? 0 : 1;
  });
}
