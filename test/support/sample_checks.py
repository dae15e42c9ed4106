"""What the Python scripts that drive the sample programs share: checks that print ok/FAIL and are counted in
`failures`, a loopback port with nothing listening on it, and starting slow_server on a free port.

A script in test/<dir>/ imports it with
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'support'))
    from sample_checks import check, failures, ...
"""
import re
import socket
import subprocess
import sys

failures = []  # what failed, in order; a script exits non-zero when it is not empty


def check(cond, what):
    print(('ok    ' if cond else 'FAIL  ') + what)
    if not cond:
        failures.append(what)


def closed_port():
    """A free loopback port with nothing listening on it (bound, then closed)."""
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_slow_server(prog, args):
    """Starts slow_server (`prog`) on a free port with `args`; returns (process, port) once it listens. Its stdin,
    stdout and stderr are pipes (text)."""
    p = subprocess.Popen([prog, '--port', '0', *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.fullmatch(r'listening on http://127\.0\.0\.1:(\d+)\n', line)
    if not m:
        p.kill()
        sys.exit(f'FAIL: slow_server printed {line!r} first; stderr: {p.stderr.read()}')
    return p, int(m.group(1))
