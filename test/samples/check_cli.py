#!/usr/bin/env python3
"""Checks the command lines of the network samples: bad input is a usage error (exit 2, a message on stderr that
names the option and the value), --help prints to stdout and exits 0, and a few errors speak the command line's
language. Every case runs in well under a second.

usage: check_cli.py NAME=PATH...      (NAME: download, fetch_many, slow_server; a sample not given is skipped)
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'support'))
from sample_checks import check, closed_port, failures, start_slow_server  # noqa: E402


def run(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors='replace', timeout=30,
                       **kw)
    return p


def usage_error(prog, args, *needles):
    """`prog args` exits 2, prints nothing on stdout, and its stderr contains every needle."""
    p = run([prog, *args])
    ok = p.returncode == 2 and p.stdout == '' and all(n in p.stderr for n in needles)
    first = p.stderr.splitlines()[0] if p.stderr else ''
    check(ok, f'{os.path.basename(prog)} {" ".join(repr(a) for a in args)}: exit 2 ({p.returncode}), {first!r}')


def shows_help(prog):
    p = run([prog, '--help'])
    name = os.path.basename(prog)
    check(p.returncode == 0 and f'usage: {name}' in p.stdout and p.stderr == '',
          f'{name} --help: usage on stdout, exit 0 ({p.returncode})')


def check_download(prog, tmp):
    shows_help(prog)
    for bad in ['nan', 'inf', '1e30', '1e10', '5x', '0']:
        usage_error(prog, ['--timeout', bad, 'http://127.0.0.1:1/x'], '--timeout', f'"{bad}"')
    for bad in ['nan', '1.5', '0x10', '18446744073709551616', '0', '-1', '10001']:
        usage_error(prog, ['-j', bad, 'http://127.0.0.1:1/x'], '-j', f'"{bad}"')
    for bad in ['inf', '2.7', '11']:
        usage_error(prog, ['--retries', bad, 'http://127.0.0.1:1/x'], '--retries', f'"{bad}"')
    usage_error(prog, ['--frobnicate'], 'unknown option --frobnicate')
    usage_error(prog, ['-o', '', 'http://127.0.0.1:1/x'], '-o: empty directory name')
    usage_error(prog, ['-i', tmp], f'cannot read {tmp}: it is a directory')
    listing = os.path.join(tmp, 'urls.txt')
    with open(listing, 'wb') as f:
        f.write(b'http://127.0.0.1:1/a\nhttp://127.0.0.1:1/b\x00c\n')
    usage_error(prog, ['-i', listing], 'line 2', '\\x00')

    # A URL whose file name is an existing directory of -o DIR: refused before connecting, in CLI terms.
    out = os.path.join(tmp, 'out')
    os.makedirs(os.path.join(out, 'sub'))
    url = f'http://127.0.0.1:{closed_port()}/sub'
    p = run([prog, '-o', out, '--retries', '0', url])
    check(p.returncode == 1 and f'FAILED  {url}: {os.path.join(out, "sub")} is a directory' in p.stdout
          and 'name the file' not in p.stdout, f'download to an existing directory: a plain reason ({p.stdout!r})')


def check_fetch_many(prog, slow_server):
    shows_help(prog)
    usage_error(prog, ['--frobnicate'], 'unknown option --frobnicate')
    for bad in ['nan', 'inf', '-1', '1e30', '5x']:
        usage_error(prog, ['--timeout', bad, 'http://127.0.0.1:1/x'], '--timeout', f'"{bad}"')
    if not slow_server:
        return
    # A page that takes 30 s: --timeout 0.5 gives up on it.
    server, port = start_slow_server(slow_server, ['--until-stdin-eof', '--quiet', '--delay', '30'])
    try:
        t0 = time.monotonic()
        p = run([prog, '--timeout', '0.5', f'http://127.0.0.1:{port}/index'])
        took = time.monotonic() - t0
        check(p.returncode == 1 and 'error: Timeout was reached' in p.stdout and took < 5,
              f'fetch_many --timeout 0.5: the slow page fails after {took:.2f} s ({p.stdout!r})')
    finally:
        server.communicate(timeout=10)


def check_slow_server(prog, tmp):
    shows_help(prog)
    for bad in ['abc', '5000x', '4294967297', '-1', '65536']:
        usage_error(prog, ['--port', bad], '--port', f'"{bad}"')
    for bad in ['abc', 'inf', '1e300', 'nan', '-1']:
        usage_error(prog, ['--delay', bad], '--delay', f'"{bad}"')
    usage_error(prog, ['--port', '0', '--dir', os.path.join(tmp, 'nonexistent')], '--dir',
                'No such file or directory')
    some_file = os.path.join(tmp, 'file.txt')
    with open(some_file, 'w') as f:
        f.write('not a directory\n')
    usage_error(prog, ['--port', '0', '--dir', some_file], '--dir', 'not a directory')
    # Standard input closed: refused at start (otherwise fd 0 would be one of the server's own descriptors).
    p = run([prog, '--port', '0', '--until-stdin-eof'], stdin=subprocess.DEVNULL, preexec_fn=lambda: os.close(0))
    check(p.returncode == 2 and 'standard input is closed' in p.stderr,
          f'slow_server --until-stdin-eof <&-: exit 2 ({p.returncode}), {p.stderr.splitlines()[:1]}')

    # A client that leaves in the middle of a file still gets an access-log line.
    public = os.path.join(tmp, 'public')
    os.makedirs(public)
    with open(os.path.join(public, 'big.bin'), 'wb') as f:
        f.write(bytes(50_000_000))
    with open(os.path.join(public, 'secret.txt'), 'w') as f:
        f.write('unreadable\n')
    os.chmod(os.path.join(public, 'secret.txt'), 0)
    server, port = start_slow_server(prog, ['--until-stdin-eof', '--dir', public])
    if os.geteuid() != 0:  # root reads it anyway
        try:
            status = urllib.request.urlopen(f'http://127.0.0.1:{port}/secret.txt', timeout=10).status
        except urllib.error.HTTPError as e:
            status = e.code
        check(status == 403, f'a file the server may not read: 403 ({status})')
    lines = []

    def collect():
        for line in server.stdout:
            lines.append(line)

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    with socket.create_connection(('127.0.0.1', port), timeout=10) as s:
        s.sendall(b'GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n')
        got = 0
        while got < 100_000:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += len(chunk)
    # The server logs the cut-short answer once a write to the closed connection fails: wait for that line (up to
    # 10 s), not for a fixed time.
    gone = re.compile(r'GET /big\.bin -> 200, \d+ bytes, \d+\.\d\d s \(cut short\)')
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(gone.search(line) for line in list(lines)):
        time.sleep(0.02)
    server.stdin.close()
    server.wait(timeout=10)
    reader.join(timeout=10)
    check(any(gone.search(line) for line in lines), 'a client gone mid-file is logged "(cut short)"')


def main():
    if os.environ.get('TENDRIL_UNDER_VALGRIND'):
        print('skipped under valgrind (it would run this script\'s Python under memcheck)')
        sys.exit(77)
    progs = dict(a.split('=', 1) for a in sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        if 'download' in progs:
            os.makedirs(os.path.join(tmp, 'download'))
            check_download(progs['download'], os.path.join(tmp, 'download'))
        if 'fetch_many' in progs:
            check_fetch_many(progs['fetch_many'], progs.get('slow_server'))
        if 'slow_server' in progs:
            os.makedirs(os.path.join(tmp, 'slow_server'))
            check_slow_server(progs['slow_server'], os.path.join(tmp, 'slow_server'))
    if failures:
        sys.exit(f'{len(failures)} check(s) failed')
    print('all checks passed')


if __name__ == '__main__':
    main()
