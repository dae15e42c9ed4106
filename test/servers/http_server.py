#!/usr/bin/env python3
"""Loopback HTTP/HTTPS test server for the tendril test suite.

Uses only the Python 3.11 standard library plus the ``openssl`` command-line
tool (which is run once at start-up to create a self-signed certificate for
CN=localhost, subjectAltName DNS:localhost and IP:127.0.0.1, in a temp dir).

READY protocol
--------------
* Plain HTTP and HTTPS listeners are bound to 127.0.0.1 on ephemeral ports.
* When both are listening, exactly one line is written to stdout and flushed:

      READY <http_port> <https_port> <path_to_cert_pem>

  Nothing else is ever written to stdout.  <path_to_cert_pem> is the
  self-signed certificate (usable as a CA file) and stays valid while the
  server runs.
* The server runs until its stdin reaches EOF (or it gets SIGTERM), then
  exits immediately (os._exit), removing its temp dir.  Thus it can never
  outlive the process that started it with a pipe on its stdin.

All responses are HTTP/1.1, keep-alive, and carry Content-Length (except
where noted).  Query parameters are optional.  Deterministic "pattern" bytes
mean: byte at offset i is (i * 7 + 3) % 256.

Endpoints
---------
GET  /bytes/<n>[?delay=<s>][&wait=<w>]
                                n pattern bytes (application/octet-stream),
                                streamed in 64 KiB chunks; optional sleep
                                of <s> seconds (float) before answering,
                                and of <w> seconds between the headers
                                and the body.
GET  /delay/<s>                 sleeps <s> seconds, 200 "delayed <s>" (<s>
                                echoed exactly as written in the path).
GET  /status/<code>             that status (200..599), body "status <code>"
                                (no body for 204/304).
GET  /redirect/<n>              n > 0: 302, Location: /redirect/<n-1>;
                                n == 0: 200 "redirect done".
GET  /redirect-loop             302, Location: /redirect-loop, forever.
POST /echo  (also PUT, PATCH)   200, echoes the request body exactly
                                (Content-Length or chunked request bodies);
                                Content-Type = request's Content-Type or
                                application/octet-stream.
GET  /headers                   200, JSON object of the request headers,
                                names lower-cased (repeats joined by ", ").
GET  /repeat-headers            200 "repeats" with the headers X-Repeat: one,
                                X-Other: 1, x-REPEAT: two, X-Padded: (tab,
                                space) padded value (space, tab), X-Blank:
                                (nothing) (in that order).
GET  /trailers                  200 "hello world", chunked, then 0.3 s later
                                the last chunk and the trailer X-Trailer: done.
GET  /drop/<n>                  200 with Content-Length n, but only n//2
                                pattern bytes are sent, then the connection
                                is shut down and closed (FIN, no TLS
                                close_notify): connection dropped mid-body.
GET  /huge-length/<n>           200 with Content-Length 2^64 (too large for
                                any client to hold), n pattern bytes, then
                                the connection is shut down and closed: a
                                body that cannot be complete.
GET  /huge-length-chunked/<n>   the same Content-Length, but also
                                Transfer-Encoding: chunked, which frames
                                the n pattern bytes instead: complete.
GET  /stall                     200 with Content-Length 1000000, 10 pattern
                                bytes, then nothing for 60 s, then close.
GET  /slow/<n>[?chunk=<b>&interval=<s>]
                                n pattern bytes with Content-Length n, sent
                                in chunks of <b> bytes (default 1024) with
                                <s> seconds (default 0.05) between chunks.
GET  /stats                     JSON {"connections": <TCP connections
                                accepted so far on both ports>, "requests":
                                <requests dispatched so far, including this
                                one>}.
GET  /image/<name>[?delay=<s>&size=<b>]
                                sleeps <s> (default 0), then <b> bytes
                                (default 20000) of fake JPEG data
                                (image/jpeg): FF D8 FF, then pattern bytes
                                shifted by a per-name phase.
anything else                   404 "not found".

HEAD is accepted for every GET endpoint (headers only).  A request body sent
to any endpoint other than /echo is read and discarded, so keep-alive stays
in sync.
"""

import http.server
import json
import os
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zlib

CHUNK = 64 * 1024
# Pattern with period 256; PATTERN[p:p + k] (p < 256, k <= CHUNK) is the
# pattern run starting at any offset o with o % 256 == p.
PATTERN = bytes((i * 7 + 3) % 256 for i in range(CHUNK + 256))

_QUIET_ERRORS = (ConnectionError, ssl.SSLError, socket.timeout, TimeoutError,
                 OSError, ValueError)


class _Stats:
    def __init__(self):
        self._lock = threading.Lock()
        self.connections = 0
        self.requests = 0

    def add_connection(self):
        with self._lock:
            self.connections += 1

    def add_request(self):
        with self._lock:
            self.requests += 1

    def snapshot(self):
        with self._lock:
            return {"connections": self.connections, "requests": self.requests}


STATS = _Stats()


class _Dropped(Exception):
    """Raised after the handler deliberately killed its connection."""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tendril-test-server/1.0"

    def version_string(self):
        return self.server_version

    # ---- silence -------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def handle(self):
        try:
            super().handle()
        except _QUIET_ERRORS:
            self.close_connection = True

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except _Dropped:
            self.close_connection = True
        except _QUIET_ERRORS:
            self.close_connection = True

    # ---- helpers -------------------------------------------------------
    def _write(self, data):
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    def _write_pattern(self, offset, length, chunk=CHUNK, interval=0.0):
        """Writes `length` pattern bytes starting at pattern offset `offset`."""
        chunk = max(1, chunk)
        first = True
        while length > 0:
            if not first and interval > 0:
                time.sleep(interval)
            first = False
            piece = min(chunk, length)
            remaining_piece = piece
            while remaining_piece > 0:
                k = min(CHUNK, remaining_piece)
                phase = offset % 256
                self._write(PATTERN[phase:phase + k])
                offset += k
                remaining_piece -= k
            length -= piece

    def _start(self, code, length=None, ctype="text/plain", extra=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _reply(self, code, body, ctype="text/plain", extra=None):
        if isinstance(body, str):
            body = body.encode()
        self._start(code, len(body), ctype, extra)
        self._write(body)

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("eof in chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers up to the empty line
                    while True:
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                parts.append(self._read_exact(size))
                self.rfile.readline(65537)  # CRLF after chunk data
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self._read_exact(length)

    def _read_exact(self, n):
        parts = []
        while n > 0:
            data = self.rfile.read(min(n, CHUNK))
            if not data:
                raise ConnectionError("eof in request body")
            parts.append(data)
            n -= len(data)
        return b"".join(parts)

    def _drop_connection(self):
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.connection.close()
        except OSError:
            pass
        raise _Dropped()

    @staticmethod
    def _float(q, name, default):
        try:
            return float(q[name][0])
        except (KeyError, IndexError, ValueError):
            return default

    @staticmethod
    def _int(q, name, default):
        try:
            return int(q[name][0])
        except (KeyError, IndexError, ValueError):
            return default

    # ---- dispatch ------------------------------------------------------
    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _dispatch(self):
        STATS.add_request()
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        q = urllib.parse.parse_qs(url.query)
        method = self.command
        parts = path.strip("/").split("/")
        head, arg = parts[0], ("/".join(parts[1:]) if len(parts) > 1 else None)

        if path == "/echo" and method in ("POST", "PUT", "PATCH"):
            body = self._read_body()
            ctype = self.headers.get("Content-Type") or "application/octet-stream"
            self._reply(200, body, ctype)
            return

        # Any other request: consume (and ignore) a request body.
        if self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"):
            self._read_body()

        if method not in ("GET", "HEAD"):
            self._reply(404, "not found")
            return

        try:
            if head == "bytes" and arg is not None:
                n = int(arg)
                delay = self._float(q, "delay", 0.0)
                wait = self._float(q, "wait", 0.0)
                if delay > 0:
                    time.sleep(delay)
                self._start(200, n, "application/octet-stream")
                if wait > 0:
                    time.sleep(wait)
                self._write_pattern(0, n)
            elif head == "delay" and arg is not None:
                secs = float(arg)
                if secs > 0:
                    time.sleep(secs)
                self._reply(200, "delayed " + arg)
            elif head == "status" and arg is not None:
                code = int(arg)
                if not 200 <= code <= 599:
                    self._reply(400, "bad status")
                elif code in (204, 304):
                    self.send_response(code)
                    self.end_headers()
                else:
                    self._reply(code, "status %d" % code)
            elif head == "redirect" and arg is not None:
                n = int(arg)
                if n > 0:
                    self._reply(302, "redirect", extra={"Location": "/redirect/%d" % (n - 1)})
                else:
                    self._reply(200, "redirect done")
            elif path == "/redirect-loop":
                self._reply(302, "redirect", extra={"Location": "/redirect-loop"})
            elif path == "/headers":
                result = {}
                for k, v in self.headers.items():
                    k = k.lower()
                    result[k] = result[k] + ", " + v if k in result else v
                self._reply(200, json.dumps(result), "application/json")
            elif path == "/trailers":
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Trailer", "X-Trailer")
                self.end_headers()
                self._write(b"5\r\nhello\r\n6\r\n world\r\n")
                self.wfile.flush()
                time.sleep(0.3)  # the headers reach the client well before the trailer
                self._write(b"0\r\nX-Trailer:  done \r\n\r\n")
            elif path == "/repeat-headers":
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "7")
                self.send_header("X-Repeat", "one")
                self.send_header("X-Other", "1")
                self.send_header("x-REPEAT", "two")
                self.send_header("X-Padded", "\t padded value \t")
                self.send_header("X-Blank", "")
                self.end_headers()
                self._write(b"repeats")
            elif head == "drop" and arg is not None:
                n = int(arg)
                self._start(200, n, "application/octet-stream")
                self._write_pattern(0, n // 2)
                self._drop_connection()
            elif head == "huge-length-chunked" and arg is not None:
                n = int(arg)
                self._start(200, 2**64, "application/octet-stream", extra={"Transfer-Encoding": "chunked"})
                body = (PATTERN[:256] * (n // 256 + 1))[:n]  # the pattern from phase 0
                self._write(b"%x\r\n" % n + body + b"\r\n0\r\n\r\n")
            elif head == "huge-length" and arg is not None:
                n = int(arg)
                self._start(200, 2**64, "application/octet-stream")
                self._write_pattern(0, n)
                self._drop_connection()
            elif path == "/stall":
                self._start(200, 1000000, "application/octet-stream")
                self._write_pattern(0, 10)
                self.wfile.flush()
                time.sleep(60)
                self._drop_connection()
            elif head == "slow" and arg is not None:
                n = int(arg)
                chunk = self._int(q, "chunk", 1024)
                interval = self._float(q, "interval", 0.05)
                self._start(200, n, "application/octet-stream")
                self._write_pattern(0, n, chunk=chunk, interval=interval)
            elif path == "/stats":
                self._reply(200, json.dumps(STATS.snapshot()), "application/json")
            elif head == "image" and arg:
                delay = self._float(q, "delay", 0.0)
                size = max(0, self._int(q, "size", 20000))
                if delay > 0:
                    time.sleep(delay)
                phase = zlib.crc32(arg.encode()) % 256
                body = bytearray()
                while len(body) < size:
                    body += PATTERN[phase:phase + min(CHUNK, size - len(body))]
                body[:3] = b"\xff\xd8\xff"[:size]
                self._reply(200, bytes(body[:size]), "image/jpeg")
            else:
                self._reply(404, "not found")
        except ValueError:
            # e.g. /bytes/abc: bad number in the path (only reachable before
            # any response bytes were written).
            self._reply(404, "not found")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def server_bind(self):
        # Skip HTTPServer.server_bind's getfqdn() (possible slow reverse DNS).
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]

    def get_request(self):
        conn, addr = super().get_request()
        STATS.add_connection()
        return conn, addr

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, _QUIET_ERRORS) or isinstance(exc, _Dropped):
            return
        super().handle_error(request, client_address)


class _TlsServer(_Server):
    def __init__(self, address, handler, context):
        self.ssl_context = context
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        # Runs in the per-connection thread, so a slow/bad handshake never
        # blocks the accept loop.
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except _QUIET_ERRORS:
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass


def _make_cert(tmpdir):
    key = os.path.join(tmpdir, "key.pem")
    cert = os.path.join(tmpdir, "cert.pem")
    cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
           "-subj", "/CN=localhost",
           "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
           "-keyout", key, "-out", cert]
    try:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise SystemExit("http_server.py: cannot run openssl: %s" % e)
    if res.returncode != 0:
        raise SystemExit("http_server.py: openssl failed (%d): %s"
                         % (res.returncode, res.stderr.decode(errors="replace")))
    return key, cert


def main():
    tmpdir = tempfile.mkdtemp(prefix="tendril-test-server-")

    def die(*_):
        shutil.rmtree(tmpdir, ignore_errors=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, die)
    try:
        key, cert = _make_cert(tmpdir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])

        plain = _Server(("127.0.0.1", 0), Handler)
        secure = _TlsServer(("127.0.0.1", 0), Handler, ctx)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise

    for srv in (plain, secure):
        threading.Thread(target=srv.serve_forever, daemon=True).start()

    sys.stdout.write("READY %d %d %s\n" % (plain.server_port, secure.server_port, cert))
    sys.stdout.flush()

    # Serve until stdin reaches EOF (parent closed the pipe or died).
    def watch_stdin():
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        die()

    threading.Thread(target=watch_stdin, daemon=True).start()
    # The main thread only waits, so SIGTERM's handler runs promptly.
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
