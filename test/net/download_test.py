#!/usr/bin/env python3
"""Drives samples/download against an independent server (Python's http.server, in a thread of this script).

usage: download_test.py PATH_TO_DOWNLOAD

Checks: concurrent downloads land byte-for-byte under de-duplicated names (a.bin, a.bin.1, index.html for "/");
a 404 and a closed port are reported as FAILED with their reasons, exit status is non-zero, and no file (nor a
temporary .part file) is left for them; -i FILE and --sync work; --timeout gives up on a stalled server;
--retries gets past a 503; SIGINT in the middle of a body exits 130 and removes the partial file.
"""
import http.server
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'support'))
from sample_checks import check, closed_port, failures  # noqa: E402


def pattern(n, seed):
    return bytes((i * 7 + seed) % 256 for i in range(n))


FILES = {
    '/a.bin': pattern(200_000, 1),
    '/sub/a.bin': pattern(150_000, 2),
    '/': b'<html>index</html>\n',
    '/b%20c.txt': b'space in the name\n',
}
flaky_hits = {'n': 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def send_body(self, status, body, length=None):
        self.send_response(status)
        self.send_header('Content-Length', str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self):
        if self.path in FILES:
            self.send_body(200, FILES[self.path])
        elif self.path == '/flaky.bin':
            flaky_hits['n'] += 1
            if flaky_hits['n'] % 2 == 1:
                self.send_body(503, b'try again')
            else:
                self.send_body(200, b'finally')
        elif self.path == '/stall.bin':
            # Announces 1 MB, sends 10 kB, then stalls.
            self.send_body(200, pattern(10_000, 3), length=1_000_000)
            time.sleep(5)
            self.close_connection = True
        else:
            self.send_body(404, b'not found')


def run(cmd, timeout=60):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    print(f'$ {" ".join(cmd)}  -> exit {p.returncode}')
    print(p.stdout, end='')
    if p.stderr:
        print('stderr:', p.stderr, end='')
    return p


def leftovers(d):
    return [f for f in os.listdir(d) if '.part' in f]


def main():
    if os.environ.get('TENDRIL_UNDER_VALGRIND'):
        # `--setup valgrind --suite net` would run this script's Python under memcheck: pointless and slow.
        print('skipped under valgrind (run the sample under valgrind by hand instead)')
        sys.exit(77)
    prog = sys.argv[1]
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f'http://127.0.0.1:{server.server_address[1]}'
    dead = f'http://127.0.0.1:{closed_port()}/x.bin'

    with tempfile.TemporaryDirectory() as d:
        # 1. Concurrent, with failures.
        out = os.path.join(d, 'out1')
        p = run([prog, '-j', '4', '-o', out, '--retries', '0',
                 f'{base}/a.bin', f'{base}/sub/a.bin', f'{base}/', f'{base}/b%20c.txt', f'{base}/missing.bin', dead])
        check(p.returncode != 0, 'exit status is non-zero when a download failed')
        names = sorted(os.listdir(out)) if os.path.isdir(out) else []
        check(names == sorted(['a.bin', 'a.bin.1', 'index.html', 'b c.txt']),
              f'exactly the successful files, de-duplicated names ({names})')

        def content(name):
            with open(os.path.join(out, name), 'rb') as f:
                return f.read()
        if names == sorted(['a.bin', 'a.bin.1', 'index.html', 'b c.txt']):
            check(content('a.bin') == FILES['/a.bin'] and content('a.bin.1') == FILES['/sub/a.bin']
                  and content('index.html') == FILES['/'] and content('b c.txt') == FILES['/b%20c.txt'],
                  'contents compare equal')
        check(not os.path.exists(os.path.join(out, 'missing.bin')) and not os.path.exists(os.path.join(out, 'x.bin')),
              'no file for the 404 nor for the closed port')
        check(leftovers(out) == [], 'no temporary files left')
        lines = p.stdout.splitlines()
        check(any(re.fullmatch(r'done  a\.bin  200000 bytes  \d+\.\d\d s', l) for l in lines), 'a "done" line per file')
        check(f'FAILED  {base}/missing.bin: HTTP status 404' in lines, '404 reported with its reason')
        check(any(l.startswith(f'FAILED  {dead}: ') and 'connect' in l.lower() for l in lines),
              'closed port reported with its reason')
        check(any(re.fullmatch(r'downloaded 4 of 6 files, 350037 bytes in \d+\.\d\d s \(.*/s\) into .*', l)
                  for l in lines), 'summary line')
        check('2 failed:' in lines and f'  {base}/missing.bin: HTTP status 404' in lines, 'failures listed at the end')

        # 2. -i FILE and --sync: everything succeeds, exit 0.
        out = os.path.join(d, 'out2')
        listing = os.path.join(d, 'urls.txt')
        with open(listing, 'w') as f:
            f.write(f'# a comment\n{base}/a.bin\n\n  {base}/sub/a.bin  \n')
        p = run([prog, '--sync', '-o', out, '-i', listing])
        check(p.returncode == 0, '-i FILE --sync: exit status 0')
        check(sorted(os.listdir(out)) == ['a.bin', 'a.bin.1'], '-i FILE --sync: both files')

        # 3. --timeout gives up on a stalled body; nothing is left behind.
        out = os.path.join(d, 'out3')
        t0 = time.monotonic()
        p = run([prog, '-o', out, '--timeout', '0.5', '--retries', '0', f'{base}/stall.bin'])
        took = time.monotonic() - t0
        check(p.returncode != 0 and 'FAILED' in p.stdout and 'timed out' in p.stdout.lower(),
              '--timeout: the stalled download fails with a timeout')
        check(0.5 <= took < 4.5, f'--timeout: gave up after about 0.5 s ({took:.2f} s)')
        check(os.listdir(out) == [], '--timeout: no file and no temporary file left')

        # 4. --retries gets past a 503; without retries the 503 is a failure.
        out = os.path.join(d, 'out4')
        flaky_hits['n'] = 0
        p = run([prog, '-o', out, '--retries', '2', f'{base}/flaky.bin'])
        check(p.returncode == 0 and os.path.exists(os.path.join(out, 'flaky.bin')), '--retries 2 gets past a 503')
        flaky_hits['n'] = 0
        p = run([prog, '-o', os.path.join(d, 'out5'), '--retries', '0', f'{base}/flaky.bin'])
        check(p.returncode != 0 and 'HTTP status 503' in p.stdout, '--retries 0: the 503 is a failure')

        # 5. SIGINT in the middle of a body: exit 130, the partial file is removed.
        out = os.path.join(d, 'out6')
        proc = subprocess.Popen([prog, '-o', out, f'{base}/stall.bin'], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        saw_part = False
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not saw_part:
            time.sleep(0.05)
            saw_part = os.path.isdir(out) and leftovers(out) != []
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        check(saw_part, 'a temporary file exists while the body arrives')
        check(proc.returncode == 130, f'SIGINT: exit status 130 ({proc.returncode}); stderr {err!r}')
        check(os.listdir(out) == [], f'SIGINT: no file and no temporary file left ({os.listdir(out)})')

    server.shutdown()
    if failures:
        sys.exit(f'{len(failures)} check(s) failed')
    print('all checks passed')


if __name__ == '__main__':
    main()
