#!/usr/bin/env python3
"""Drives samples/slow_server with the curl command-line tool as an independent client.

usage: slow_server_test.py PATH_TO_SLOW_SERVER

Checks: 50 parallel requests to /index (2 s each) are all answered "hello" in >= 2 s and < 10 s (one thread
serves them concurrently); keep-alive (curl reuses its connection for two URLs); `Connection: close` is honoured;
a static file downloads byte-for-byte; HEAD gives the size; 404 for a missing file; `..` (plain or %2e%2e) is
rejected with 400; a malformed request line gets 400; stdin EOF and SIGTERM stop the server cleanly (exit 0).
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'support'))
from sample_checks import check, failures, start_slow_server  # noqa: E402


def curl(*args, timeout=30):
    return subprocess.run(['curl', '-s', *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


def raw_request(port, data):
    with socket.create_connection(('127.0.0.1', port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
        return b''.join(chunks)


def main():
    if os.environ.get('TENDRIL_UNDER_VALGRIND'):
        # `--setup valgrind --suite net` would run this script's Python under memcheck: pointless and slow.
        print('skipped under valgrind (run the sample under valgrind by hand instead)')
        sys.exit(77)
    server = sys.argv[1]
    with tempfile.TemporaryDirectory() as d:
        root = os.path.join(d, 'public')
        os.makedirs(os.path.join(root, 'img'))
        payload = bytes((i * 31 + 7) % 256 for i in range(300_000))
        with open(os.path.join(root, 'img', 'big.bin'), 'wb') as f:
            f.write(payload)
        with open(os.path.join(d, 'secret.txt'), 'w') as f:
            f.write('outside the served directory\n')

        p, port = start_slow_server(server, ['--dir', root, '--until-stdin-eof'])
        base = f'http://127.0.0.1:{port}'
        try:
            # 50 concurrent requests to the 2-second endpoint, all in flight at once.
            urls = [f'{base}/index'] * 50
            t0 = time.monotonic()
            r = curl('--parallel', '--parallel-immediate', '--parallel-max', '50', *urls)
            took = time.monotonic() - t0
            check(r.returncode == 0 and r.stdout == b'hello' * 50,
                  f'50 x /index all answered "hello" (curl exit {r.returncode}, {len(r.stdout)} bytes)')
            check(took >= 2.0, f'50 x /index took at least 2 s ({took:.2f} s)')
            check(took < 10.0, f'50 x /index took less than 10 s: served concurrently ({took:.2f} s)')

            r = curl(f'{base}/index1')
            check(r.stdout == b'hello1', f'/index1 answers "hello1" ({r.stdout!r})')

            # Keep-alive: two URLs in one curl invocation share one connection.
            r = curl('-v', f'{base}/img/big.bin', f'{base}/img/big.bin', '-o', '/dev/null', '-o', '/dev/null')
            err = r.stderr.decode(errors='replace')
            check(re.search(r'Re-using existing .*connection', err) is not None,
                  'keep-alive: curl re-uses the connection for a second request')
            r = curl('-v', '-H', 'Connection: close', f'{base}/img/big.bin', f'{base}/img/big.bin',
                     '-o', '/dev/null', '-o', '/dev/null')
            err = r.stderr.decode(errors='replace')
            check(re.search(r'Re-using existing .*connection', err) is None and 'Connection: close' in err,
                  '"Connection: close" is honoured (no reuse)')

            # Static file: byte-for-byte, and HEAD reports its length.
            out = os.path.join(d, 'got.bin')
            r = curl('-f', '-o', out, f'{base}/img/big.bin')
            with open(out, 'rb') as f:
                got = f.read()
            check(r.returncode == 0 and got == payload, f'static file download compares equal ({len(got)} bytes)')
            r = curl('-I', f'{base}/img/big.bin')
            check(b'Content-Length: 300000' in r.stdout, 'HEAD reports Content-Length: 300000')

            # 404 and path traversal.
            r = curl('-o', '/dev/null', '-w', '%{http_code}', f'{base}/img/missing.jpg')
            check(r.stdout == b'404', f'missing file -> 404 ({r.stdout!r})')
            r = curl('--path-as-is', '-w', '\n%{http_code}', f'{base}/../secret.txt')
            check(r.stdout.endswith(b'400') and b'outside' not in r.stdout, f'/../secret.txt -> 400 ({r.stdout!r})')
            r = curl('--path-as-is', '-w', '\n%{http_code}', f'{base}/img/%2e%2e/%2e%2e/secret.txt')
            check(r.stdout.endswith(b'400') and b'outside' not in r.stdout,
                  f'/img/%2e%2e/%2e%2e/secret.txt -> 400 ({r.stdout!r})')

            # A malformed request gets 400 and the connection is closed.
            resp = raw_request(port, b'NOT A REQUEST\r\n\r\n')
            check(resp.startswith(b'HTTP/1.1 400 '), f'malformed request line -> 400 ({resp[:40]!r})')
            # Pipelining: two requests in one write, two answers in order.
            resp = raw_request(port, b'GET /img/missing HTTP/1.1\r\nHost: x\r\n\r\n'
                                     b'GET /index1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
            check(resp.count(b'HTTP/1.1 ') == 2 and resp.startswith(b'HTTP/1.1 404') and resp.endswith(b'hello1'),
                  'two pipelined requests get two answers in order')
        finally:
            try:  # communicate() closes the server's stdin: with --until-stdin-eof, it stops
                rest, errs = p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                rest, errs = p.communicate()
                check(False, 'server stops within 10 s of stdin EOF')
        check(p.returncode == 0, f'server exit status 0 after stdin EOF ({p.returncode}); stderr: {errs!r}')
        check('standard input closed, stopping' in rest and re.search(r'served \d+ requests', rest) is not None,
              'server narrates its stop')

        # SIGTERM while a request is in its 2-second sleep: the server stops at once and cleanly.
        p, port = start_slow_server(server, ['--quiet'])
        c = subprocess.Popen(['curl', '-s', f'http://127.0.0.1:{port}/index'], stdout=subprocess.PIPE)
        time.sleep(0.5)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rest, errs = p.communicate(timeout=10)
        took = time.monotonic() - t0
        c.communicate(timeout=10)
        check(p.returncode == 0 and 'got SIGTERM, stopping' in rest,
              f'SIGTERM stops the server (exit {p.returncode}, {took:.2f} s)')

    if failures:
        sys.exit(f'{len(failures)} check(s) failed')
    print('all checks passed')


if __name__ == '__main__':
    main()
