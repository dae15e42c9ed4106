#!/usr/bin/env python3
"""Runs a sample program and checks its output against an expected-output file.

usage: check_sample.py EXPECTED_FILE [--timeout S] [--min-seconds S] -- PROGRAM [ARGS...]

Each line of EXPECTED_FILE must match the corresponding line of the program's stdout:
  - a plain line matches exactly (trailing spaces ignored);
  - a line starting with `re:` is a Python regular expression that must match the whole line;
  - a line `...` matches any number of lines (including none) up to the next expected line.
The program must exit with status 0 within --timeout seconds (default 60), and, with --min-seconds, must take
at least that long (a lower bound: e.g. "three sleeps of 1, 2 and 3 s finish after at least 3 s").
"""
import re
import subprocess
import sys
import time


def match_lines(expected, actual):
    i = j = 0
    while i < len(expected):
        e = expected[i]
        if e == '...':
            if i + 1 == len(expected):
                return None
            nxt = expected[i + 1]
            while j < len(actual) and not line_matches(nxt, actual[j]):
                j += 1
            i += 1
            continue
        if j >= len(actual):
            return f'missing line {j + 1}: expected {e!r}'
        if not line_matches(e, actual[j]):
            return f'line {j + 1}: expected {e!r}, got {actual[j]!r}'
        i += 1
        j += 1
    if j < len(actual):
        return f'unexpected extra output from line {j + 1}: {actual[j]!r}'
    return None


def line_matches(e, a):
    a = a.rstrip()
    if e.startswith('re:'):
        return re.fullmatch(e[3:], a) is not None
    return e.rstrip() == a


def main():
    args = sys.argv[1:]
    sep = args.index('--')
    opts, cmd = args[:sep], args[sep + 1:]
    expected_file = opts[0]
    timeout = 60.0
    min_seconds = None
    k = 1
    while k < len(opts):
        if opts[k] == '--timeout':
            timeout = float(opts[k + 1]); k += 2
        elif opts[k] == '--min-seconds':
            min_seconds = float(opts[k + 1]); k += 2
        else:
            sys.exit(f'unknown option {opts[k]}')
    with open(expected_file, encoding='utf-8') as f:
        expected = [l.rstrip('\n') for l in f]
    start = time.monotonic()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        sys.exit(f'FAIL: {cmd[0]} did not finish within {timeout} s')
    elapsed = time.monotonic() - start
    out = p.stdout.decode('utf-8', 'replace').splitlines()
    sys.stderr.write(p.stderr.decode('utf-8', 'replace'))
    print('\n'.join(out))
    if p.returncode != 0:
        sys.exit(f'FAIL: exit status {p.returncode}')
    err = match_lines(expected, out)
    if err:
        sys.exit(f'FAIL: {err}')
    if min_seconds is not None and elapsed < min_seconds:
        sys.exit(f'FAIL: finished in {elapsed:.2f} s, expected at least {min_seconds} s')
    print(f'OK ({elapsed:.2f} s)')


if __name__ == '__main__':
    main()
