"""The gunicorn worker of `serve`: gthread, except that a request is read whole before a thread gets it.

gunicorn's gthread worker gives a connection to a request thread once its first bytes arrive,
and the thread then blocks reading the rest: 64 clients that send headers and stall hold all 64
threads, /ping stops answering and SageMaker replaces the instance. Here the worker's event loop
(the thread that accepts connections and watches kept-alive ones) reads each request, headers
and body, from the non-blocking socket into memory; only a complete request goes to a thread.

- A slow or stalled client costs a buffer and a file descriptor, never a thread.
- A request must arrive within `read_timeout` seconds of the worker starting to read it, else
  408 (nothing is sent to a connection that sent nothing). A request thread's socket operations
  time out after `read_timeout` too, so a client that stops reading its answer frees the thread.
- A body over `max_body` gets 413 at once (instead of `100 Continue` when the client waits for
  one); the rest of the body is read and dropped, up to `drain_limit` bytes, before the socket
  closes, so a client that sends its whole body before reading (requests, urllib) gets the 413
  instead of a connection reset.
- A chunked body's framing counts too: its bytes on the wire may be at most twice the body
  limit (plus 64 KiB), so chunk extensions cannot make a small body fill memory.
- gunicorn's own answers to requests it cannot parse (414 for a long URL, 431, 400) are JSON.
- Near `worker_connections`, the longest-idle connections are closed (kept-alive ones, then
  requests still arriving), so idle or stalled clients never keep a health check out.
- Only the framing (Content-Length or chunked) is read here, to find where a request ends;
  gunicorn's parser still parses and checks every request in the thread, from memory.
TLS and HTTP/2 (neither is used behind SageMaker) keep gthread's own handling.
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
import string
import time
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

NEED_MORE, COMPLETE, TOO_LARGE, HEADERS_TOO_LARGE, MALFORMED = range(5)
HEADER_LIMIT = 64 * 1024  # request line + headers; gunicorn's own limits are stricter per line
CHUNK_LINE_LIMIT = 8192
READ_SIZE = 256 * 1024
LINGER_S = 2.0  # after an error answer, how long a quiet client may take to close
SWEEP_S = 0.2  # how often deadlines are checked (the event loop also wakes every second)
STOP_READ_S = 5.0  # on SIGTERM, requests still arriving get this long at most
FREE_SLOTS = 16  # connection slots kept free for new clients (SageMaker's /ping among them)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 503: "Service Unavailable"}
GUNICORN_ERROR_TYPES = {400: "malformed_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
                        431: "headers_too_large", 501: "not_implemented"}
_HEX = frozenset(string.hexdigits.encode())


class RequestFrame:
    """Where one HTTP/1.x request ends, found in the bytes received so far.

    `feed` returns NEED_MORE until the request is complete (COMPLETE), or says why it never
    will be: TOO_LARGE (body over the limit), HEADERS_TOO_LARGE, MALFORMED (a broken chunked
    body). Framing errors gunicorn answers from the headers alone (two Content-Lengths, an
    unknown transfer coding) count as complete, so gunicorn answers them as it always does.
    """

    def __init__(self, max_body: int, data: bytes = b""):
        self.max_body = max_body
        self.buf = bytearray(data)
        self.head_end: int | None = None  # offset past the blank line that ends the headers
        self.end: int | None = None  # offset past the whole request, once known
        self.chunked = False
        self.at = 0  # chunked: where the next chunk-size line starts
        self.body = 0  # chunked: body bytes in the complete chunks so far
        self.expect_continue = False
        self.request_line = ""

    def feed(self, data: bytes = b"") -> int:
        self.buf += data
        if self.head_end is None:
            blank = self.buf.find(b"\r\n\r\n")
            if blank < 0:
                return HEADERS_TOO_LARGE if len(self.buf) > HEADER_LIMIT else NEED_MORE
            self.head_end = blank + 4
            if self._headers(bytes(self.buf[:blank])) == TOO_LARGE:
                return TOO_LARGE
        if self.chunked:
            return self._chunks()
        return COMPLETE if len(self.buf) >= self.end else NEED_MORE

    @property
    def waits_for_body(self) -> bool:
        return self.head_end is not None and (self.chunked or len(self.buf) < self.end)

    def _headers(self, block: bytes) -> int | None:
        lines = block.split(b"\r\n")
        if lines[0] == b"" and len(lines) > 1:  # RFC 9112 2.2: one empty line may come first
            lines = lines[1:]
        self.request_line = lines[0].decode("latin-1")[:200]
        http11 = self.request_line.endswith(" HTTP/1.1")
        lengths, codings = [], []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip()
            if not colon:
                continue
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings += [c.strip().lower() for c in value.split(b",")]
            elif name == b"expect":
                self.expect_continue = http11 and value.lower() == b"100-continue"
        self.end = self.head_end
        if codings:
            if codings[-1] == b"chunked" and not lengths and http11:
                self.chunked, self.at = True, self.head_end
            return None  # otherwise gunicorn refuses it from the headers
        if len(lengths) == 1 and lengths[0].isdigit():
            if int(lengths[0]) > self.max_body:
                return TOO_LARGE
            self.end = self.head_end + int(lengths[0])
        return None  # no body, or a Content-Length gunicorn refuses

    def _chunks(self) -> int:
        buf = self.buf
        # Every byte on the wire counts: chunk-size lines with long extensions must not let a small
        # body fill memory. Framing may add as much again as the body limit allows.
        if len(buf) - self.head_end > 2 * self.max_body + HEADER_LIMIT:
            return TOO_LARGE
        while True:
            line_end = buf.find(b"\r\n", self.at)
            if line_end < 0:
                return MALFORMED if len(buf) - self.at > CHUNK_LINE_LIMIT else NEED_MORE
            size_text = bytes(buf[self.at:line_end]).split(b";", 1)[0].rstrip(b" \t")
            if not size_text or not _HEX.issuperset(size_text):
                return MALFORMED
            size = int(size_text, 16)
            if size == 0:  # the last chunk, then trailer lines, then an empty line
                start = line_end + 2
                if buf[start:start + 2] == b"\r\n":
                    self.end = start + 2
                    return COMPLETE
                blank = buf.find(b"\r\n\r\n", start)
                if blank < 0:
                    return MALFORMED if len(buf) - start > HEADER_LIMIT else NEED_MORE
                self.end = blank + 4
                return COMPLETE
            if self.body + size > self.max_body:
                return TOO_LARGE
            data_end = line_end + 2 + size
            if len(buf) < data_end + 2:
                return NEED_MORE
            if buf[data_end:data_end + 2] != b"\r\n":
                return MALFORMED
            self.body += size
            self.at = data_end + 2


class _ErrorPage:
    """Stands in for the client socket while gunicorn writes its HTML error page: gunicorn picks
    the status (and logs), and the client gets the same status as this server's JSON error."""

    def __init__(self):
        self.data = bytearray()

    def gettimeout(self) -> float:
        return 0.0

    def sendall(self, data: bytes) -> None:
        self.data += data

    def answer(self, exc: Exception) -> bytes:
        code, reason = bytes(self.data).split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)[1:]
        status = int(code)
        message = f"{reason}: {exc}" if status < 500 else "internal server error (the server log has the details)"
        body = json.dumps({"error": message, "error_type": GUNICORN_ERROR_TYPES.get(status, "internal")}).encode()
        return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode() + body


class _Conn(TConn):
    """A gthread connection that carries the request bytes read by the event loop."""

    def __init__(self, cfg, sock, client, server, io_timeout: float):
        super().__init__(cfg, sock, client, server)
        self.io_timeout = io_timeout
        self.frame: RequestFrame | None = None
        self.pending = b""  # a complete request, for gunicorn's parser
        self.continued = False  # this worker sent `100 Continue` for the current request
        self.discard_left: int | None = None  # set once answered with an error: bytes still to drop

    def init(self):
        """In the request thread, before gunicorn parses the request (and for every request)."""
        super().init()
        self.sock.settimeout(self.io_timeout)
        if self.pending:
            self.parser.unreader.unread(self.pending)
            self.pending = b""


class ReadFirstWorker(ThreadWorker):
    """gthread with requests read on the event loop. gunicorn_conf subclasses it with the limits."""

    max_body = 6 * 1024 * 1024
    read_timeout = 30.0
    too_large_message = "the request body is too large"
    timeout_hint = "TUNEFORGE_REQUEST_READ_TIMEOUT"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reading: set[_Conn] = set()
        self.next_sweep = 0.0

    @property
    def drain_limit(self) -> int:
        return max(2 * self.max_body, 16 * 1024 * 1024)

    def accept(self, listener):
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self.enqueue_req(_Conn(self.cfg, client_sock, client_addr, listener.getsockname(), self.read_timeout))

    def enqueue_req(self, conn):
        """Every path to a request thread (new, kept-alive, pipelined) comes here: read first."""
        if not isinstance(conn, _Conn) or self.cfg.is_ssl or conn.is_http2:
            return super().enqueue_req(conn)
        leftover = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.frame, conn.continued, conn.discard_left = RequestFrame(self.max_body), False, None
        conn.timeout = time.monotonic() + self.read_timeout
        conn.sock.setblocking(False)
        self.reading.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))
        self._received(conn, leftover)

    def handle_error(self, req, client, addr, exc):
        """gunicorn's answers to requests it cannot parse (a 70 KB URL: 414, a huge header: 431,
        ...) in JSON like every other error of this server, not as an HTML page."""
        page = _ErrorPage()
        super().handle_error(req, page, addr, exc)
        if page.data:
            try:
                client.sendall(page.answer(exc))
            except OSError:
                self.log.debug("could not send the error answer")

    def handle_request(self, req, conn):
        if getattr(conn, "continued", False):
            req._expected_100_continue = False  # already sent by this worker; do not send it twice
        return super().handle_request(req, conn)

    def murder_pending(self):
        """Also the deadline sweep of the requests being read (the event loop calls it each turn)."""
        super().murder_pending()
        self._make_room()
        now = time.monotonic()
        if now < self.next_sweep:
            return
        self.next_sweep = now + SWEEP_S
        for conn in list(self.reading):
            if not self.alive:
                conn.timeout = min(conn.timeout, now + STOP_READ_S)
            started = conn.discard_left is None and bool(conn.frame.buf)
            if conn.timeout > now and (started or conn.discard_left is not None or self.alive):
                continue  # in time; a stopping worker closes only connections that sent nothing
            if started and not self.alive:
                self._reject(conn, 503, "shutting_down", "the server is shutting down; send the request again")
            elif started:
                self._reject(conn, 408, "request_timeout", f"the request was not received within "
                             f"{self.read_timeout:g} s ({self.timeout_hint})")
            else:
                self._close(conn)  # answered already, or nothing sent: close quietly

    def _make_room(self) -> None:
        """Near the connection cap, close the longest-idle connections so that new ones still get
        in: a thousand idle or stalled clients must not keep /ping out until their timeouts.
        Kept-alive connections go first, then the requests still arriving, oldest first."""
        excess = self.nr_conns - (self.worker_connections - FREE_SLOTS)
        while excess > 0 and self.keepalived_conns:
            conn = self.keepalived_conns.popleft()
            try:
                self.poller.unregister(conn.sock)
            except (OSError, KeyError, ValueError):
                pass
            self.nr_conns -= 1
            conn.close()
            excess -= 1
        if excess > 0:
            for conn in sorted(self.reading, key=lambda c: c.timeout)[:excess]:
                self._close(conn)

    # ------------------------------------------------------------------ event loop callbacks
    def _readable(self, conn: _Conn, _sock) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        try:
            if conn.discard_left is not None:  # answered with an error: drop what still comes
                conn.discard_left -= len(data)
                if not data or conn.discard_left <= 0:
                    self._close(conn)
            elif not data:
                self._close(conn)  # the client left before its request was complete
            else:
                self._received(conn, data)
        except Exception:  # noqa: BLE001 - never let one connection stop the event loop
            self.log.exception("error while reading a request")
            self._close(conn)

    def _received(self, conn: _Conn, data: bytes) -> None:
        verdict = conn.frame.feed(data)
        if verdict == NEED_MORE:
            if conn.frame.expect_continue and not conn.continued and conn.frame.waits_for_body:
                conn.continued = True
                self._send(conn, CONTINUE)
        elif verdict == COMPLETE:
            self._stop_reading(conn)
            conn.pending, conn.frame = bytes(conn.frame.buf), None
            conn.data_ready = True
            conn.sock.setblocking(True)
            ThreadWorker.enqueue_req(self, conn)
        elif verdict == TOO_LARGE:
            self._reject(conn, 413, "payload_too_large", self.too_large_message)
        elif verdict == HEADERS_TOO_LARGE:
            self._reject(conn, 431, "headers_too_large", f"the request line and headers are over "
                         f"{HEADER_LIMIT // 1024} KiB")
        else:
            self._reject(conn, 400, "malformed_request", "the chunked request body is malformed")

    def _reject(self, conn: _Conn, status: int, error_type: str, message: str) -> None:
        """Answer an error and close once the client has sent (and we dropped) the rest."""
        body = json.dumps({"error": message, "error_type": error_type}).encode()
        head = (f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        first_line = bytes(conn.frame.buf[:200]).split(b"\r\n", 1)[0].decode("latin-1")
        self.log.info('%s "%s" %s (answered while reading the request): %s', conn.client[0] if conn.client
                      else "-", conn.frame.request_line or first_line, status, message)
        if not self._send(conn, head + body):
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        conn.discard_left = self.drain_limit
        conn.timeout = max(conn.timeout, time.monotonic() + LINGER_S)

    def _send(self, conn: _Conn, data: bytes) -> bool:
        """A short write to a socket whose send buffer is empty; False (and closed) if it fails."""
        try:
            conn.sock.send(data)
            return True
        except OSError:
            self._close(conn)
            return False

    def _stop_reading(self, conn: _Conn) -> None:
        self.reading.discard(conn)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _close(self, conn: _Conn) -> None:
        if conn in self.reading:
            self._stop_reading(conn)
            self.nr_conns -= 1
            conn.close()


def worker_class(max_body: int, read_timeout: float, too_large_message: str) -> type:
    """ReadFirstWorker with this server's limits (gunicorn takes a class for worker_class)."""
    return type("TuneforgeWorker", (ReadFirstWorker,), {
        "__module__": __name__, "max_body": max_body, "read_timeout": read_timeout,
        "too_large_message": too_large_message})
