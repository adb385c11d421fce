"""A lean HTTP/1.1 client for every request of a load test but its event streams: `Pool` keeps
keep-alive connections to one server (http or https), one request at a time on each, and reads
answers with a Content-Length, a chunked body, or a body that ends with the connection.

Why not aiohttp's client (which the event streams still use): the load tester must leave the
server the machine, and its requests are its main cost. Measured here, 2,000 execute POSTs on
100 connections took 0.85 s of CPU through aiohttp's client and 0.23 s through a bare asyncio
protocol like this one; on 2,000 connections, 1.77 s and 0.65 s (connecting with a socket of
our own, without a getaddrinfo per connection). With 10,000 connections opening at once, not
waiting for each handshake before writing took the tester from 4.3-5.3 s to 2.7-3.1 s."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl

import msgspec
from yarl import URL

__all__ = ["Pool", "Response"]

_USER_AGENT = "flowstage-loadtest"
_Address = tuple[socket.AddressFamily, tuple[str, int]]


class Response(msgspec.Struct, frozen=True):
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class _Connection(asyncio.Protocol):
    """One connection: `send` writes a request and waits for its answer."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._head: tuple[int, dict[str, str], int] | None = None  # status, headers, body start
        self._lost: OSError | None = None  # why the connection ended, once it has
        self.reusable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is not None:
            self._answer(closed=False)

    def eof_received(self) -> bool:
        self.reusable = False
        if self._waiter is not None:
            self._answer(closed=True)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        # A connection refused (or reset) says so; a clean close before an answer is a reset.
        self._lost = exc if isinstance(exc, OSError) else ConnectionResetError(
            "the server closed the connection before it answered")
        if self._waiter is not None and not self._waiter.done():
            self._answer(closed=True)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._lost)

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()

    async def send(self, request: bytes) -> Response:
        assert self._transport is not None and self._waiter is None
        if self._lost is not None:  # refused before anything was written
            raise self._lost
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(request)
        try:
            return await waiter
        finally:
            self._waiter = None
            self._head = None

    def _answer(self, *, closed: bool) -> None:
        """Resolve the waiter once the whole answer is in the buffer."""
        buffer = self._buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self._head = (int(lines[0].split(" ", 2)[1]), headers, end + 4)
        status, headers, start = self._head
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body, used = _dechunk(buffer, start)
        elif "content-length" in headers:
            used = start + int(headers["content-length"])
            body = bytes(buffer[start:used]) if len(buffer) >= used else None
        elif status in (204, 304) or status < 200:
            body, used = b"", start
        else:  # the body ends with the connection
            body, used = (bytes(buffer[start:]), len(buffer)) if closed else (None, 0)
        if body is None:
            return
        del buffer[:used]
        if buffer or headers.get("connection", "").lower() == "close":
            self.reusable = False
        assert self._waiter is not None
        if not self._waiter.done():
            self._waiter.set_result(Response(status, headers, body))


def _dechunk(buffer: bytearray, at: int) -> tuple[bytes | None, int]:
    """A chunked body starting at `at`: (body, bytes used), or (None, 0) if incomplete."""
    parts: list[bytes] = []
    while True:
        eol = buffer.find(b"\r\n", at)
        if eol < 0:
            return None, 0
        size = int(bytes(buffer[at:eol]).split(b";")[0], 16)
        if size == 0:
            end = buffer.find(b"\r\n\r\n", eol)  # after any trailers
            if end < 0:
                return None, 0
            return b"".join(parts), end + 4
        if len(buffer) < eol + 2 + size + 2:
            return None, 0
        parts.append(bytes(buffer[eol + 2:eol + 2 + size]))
        at = eol + 2 + size + 2


class Pool:
    """Up to `limit` keep-alive connections to the server at `url`; a request waits for one."""

    def __init__(self, url: URL, limit: int, timeout: float) -> None:
        host = url.host or "localhost"
        self._host = host
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        self._host_header = host if url.is_default_port() else f"{host}:{self._port}"
        self._timeout = timeout
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._address: asyncio.Future[_Address] | None = None

    def encode(self, method: str, target: str, headers: dict[str, str] | None,
               body: bytes | None) -> bytes:
        """A request's bytes (build a request sent many times once)."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}",
                 f"User-Agent: {_USER_AGENT}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")

    async def send(self, request: bytes) -> Response:
        """Send the bytes of one request (`encode`) and read its answer; raises OSError (or
        TimeoutError after `timeout` s) when the connection fails."""
        async with self._slots:
            connection = None
            while self._idle:
                connection = self._idle.pop()
                if connection.reusable:
                    break
                connection = None
            if connection is None:
                connection = await self._connect()
            try:
                async with asyncio.timeout(self._timeout):
                    response = await connection.send(request)
            except BaseException:
                connection.close()
                raise
            if connection.reusable:
                self._idle.append(connection)
            else:
                connection.close()
            return response

    async def _connect(self) -> _Connection:
        """A new connection, without waiting for its handshake: the socket's connect is
        started and the transport made at once. A request written before the handshake is
        done waits in the transport until the socket is writable; a connection refused or
        lost fails that request (and `send`'s timeout covers a handshake that never ends).
        Waiting for each handshake first (`loop.sock_connect`) was a third of the tester's
        CPU with 10,000 connections opening at once. TLS still waits for its handshake."""
        loop = asyncio.get_running_loop()
        family, address = await self._resolved()
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            error = sock.connect_ex(address)
            if error not in (0, errno.EINPROGRESS):
                raise OSError(error, os.strerror(error))
            if self._ssl is None:
                _, connection = await loop.create_connection(_Connection, sock=sock)
            else:
                async with asyncio.timeout(self._timeout):
                    await loop.sock_connect(sock, address)
                    _, connection = await loop.create_connection(
                        _Connection, sock=sock, ssl=self._ssl, server_hostname=self._host)
        except BaseException:
            sock.close()
            raise
        return connection

    async def _resolved(self) -> _Address:
        """The server's address, looked up once for the whole pool: the thousands of
        connections a test opens at once share one getaddrinfo (each is a thread-pool job, and
        ten thousand of them queued took seconds before the first request went out). A failed
        look-up is tried again by the next connection."""
        found = self._address
        if found is not None and found.done() and found.exception() is None:
            return found.result()
        if found is None or found.done():
            found = self._address = asyncio.ensure_future(self._look_up())
        async with asyncio.timeout(self._timeout):
            return await asyncio.shield(found)

    async def _look_up(self) -> _Address:
        infos = await asyncio.get_running_loop().getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        found, _, _, _, address = infos[0]
        return found, (str(address[0]), int(address[1]))

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
