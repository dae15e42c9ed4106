#!/usr/bin/env python3
"""An HTTP/2 test server for the tendril test suite: nginx on loopback, with a private configuration.

Python's standard library has no HTTP/2, so this script runs nginx (Debian's nginx-light, which has the
http_v2 and ssl modules; scripts/tendril-dev installs it) in the foreground, as a single process, with a
self-signed certificate made by the ``openssl`` command-line tool, all in a temp dir.

READY protocol (the same as http_server.py's, so the suite's http_test_server helper runs it):

    READY <http_port> <https_port> <path_to_cert_pem>

* <https_port>: TLS with ALPN offering h2 and http/1.1 (HTTP/2 for a client that asks for it).
* <http_port>: plain HTTP/1.1 on the same document root.
* The certificate is for localhost and 127.0.0.1 (usable as a CA file).
* Runs until its stdin reaches EOF (or SIGTERM), then stops nginx and removes its temp dir.

Content:
  GET /bytes/<n>       for n in 1000, 100000, 4194304: n pattern bytes (byte i = (i * 7 + 3) % 256), as http_server.py
  GET /log/access.log  nginx's access log so far, one line per request:
                       "<connection serial> <its request number> <protocol> <status> <request URI with query>"
"""
import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

SIZES = (1000, 100000, 4 << 20)


def _free_ports(n):
    """n distinct free loopback ports (all probe sockets held until every port is chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _serves_ours(http_port, https_port, cert):
    """Whether our nginx answers on both ports (not merely something listening there): the plain port serves our
    /bytes/1000, and the TLS port completes a handshake verified against our certificate."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/bytes/1000" % http_port, timeout=1) as r:
            if r.read() != bytes((i * 7 + 3) % 256 for i in range(1000)):
                return False
        ctx = ssl.create_default_context(cafile=cert)
        with socket.create_connection(("127.0.0.1", https_port), timeout=1) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost"):
                return True
    except (OSError, ssl.SSLError):
        return False


def _nginx():
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("h2_server.py: nginx not found: install nginx-light (scripts/tendril-dev test installs it)")


def _die_with_parent():
    """In the nginx child: SIGTERM when this script goes, however it goes (the suite may kill it)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _make_cert(tmpdir):
    key = os.path.join(tmpdir, "key.pem")
    cert = os.path.join(tmpdir, "cert.pem")
    cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
           "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert]
    try:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit("h2_server.py: cannot run openssl: %s" % e)
    return key, cert


CONFIG = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  log_format conn '$connection $connection_requests $server_protocol $status $request_uri';
  access_log {root}/log/access.log conn;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  default_type application/octet-stream;
  keepalive_timeout 60s;
  server {{
    listen 127.0.0.1:{https_port} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    root {root};
  }}
  server {{
    listen 127.0.0.1:{http_port};
    root {root};
  }}
}}
"""


def main():
    nginx = _nginx()
    tmp = tempfile.mkdtemp(prefix="tendril-h2-server.")
    proc = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # before READY: still clean up (finally below)
    try:
        key, cert = _make_cert(tmp)
        root = os.path.join(tmp, "www")
        os.makedirs(os.path.join(root, "bytes"))
        os.makedirs(os.path.join(root, "log"))
        for n in SIZES:
            with open(os.path.join(root, "bytes", str(n)), "wb") as f:
                f.write((bytes((i * 7 + 3) % 256 for i in range(256)) * (n // 256 + 1))[:n])  # period 256
        for _attempt in range(5):  # a port picked here may be taken before nginx binds it: try again
            http_port, https_port = _free_ports(2)
            conf = os.path.join(tmp, "nginx.conf")
            with open(conf, "w") as f:
                f.write(CONFIG.format(tmp=tmp, root=root, cert=cert, key=key, http_port=http_port,
                                      https_port=https_port))
            proc = subprocess.Popen([nginx, "-c", conf, "-p", tmp + "/", "-e", os.path.join(tmp, "error.log")],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    preexec_fn=_die_with_parent)
            deadline = time.monotonic() + 10
            ready = False
            while proc.poll() is None and time.monotonic() < deadline:
                if _serves_ours(http_port, https_port, cert):
                    ready = True
                    break
                time.sleep(0.05)
            if ready and proc.poll() is None:
                break
            proc.kill()
            proc.wait()
            proc = None
        if proc is None:
            log = open(os.path.join(tmp, "error.log")).read() if os.path.exists(os.path.join(tmp, "error.log")) else ""
            raise SystemExit("h2_server.py: nginx did not start:\n" + log)

        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())

        def watch_stdin():
            while sys.stdin.buffer.read(4096):
                pass
            stopped.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
        sys.stdout.write("READY %d %d %s\n" % (http_port, https_port, cert))
        sys.stdout.flush()
        while not stopped.wait(0.5):
            if proc.poll() is not None:
                raise SystemExit("h2_server.py: nginx exited with status %s" % proc.returncode)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
