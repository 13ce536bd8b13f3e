"""The blocking transport of :class:`ringkv.Client`: TLS settings, and a bounded pool of
keep-alive HTTP/1.1 connections per node (``http.client``), each attempt classified for the
retry policy of :mod:`ringkv._routing` by how far it got."""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import time
from typing import Dict, List, Optional, Tuple, Union

from ._routing import POOL_IDLE_TIMEOUT, Answer, Endpoint, Failure, FailureKind, Request
from .errors import InvalidRequestError

#: Largest answer body read (several siblings of the largest values fit).
MAX_RESPONSE_BYTES = 256 * 1024 * 1024


def tls_context(ca_file: Optional[str]) -> ssl.SSLContext:
    """The TLS settings of ``https://`` nodes: certificates verified (always) against
    ``ca_file`` (PEM: a private CA, or the node's self-signed certificate), else against the
    system's trusted roots; the certificate must name the host of the URL."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except FileNotFoundError as error:
        raise InvalidRequestError(f"ca_file {ca_file}: {error.strerror or error}") from None
    except (ssl.SSLError, OSError, ValueError) as error:
        raise InvalidRequestError(f"ca_file {ca_file}: not a PEM CA certificate: {error}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # HTTP/1.1 only (the server would pick h2 otherwise), as over plain TCP.
    context.set_alpn_protocols(["http/1.1"])
    return context


def tls_failure(endpoint: Endpoint, error: ssl.SSLError, ca_file: Optional[str]) -> Failure:
    """A failed TLS handshake: a connection failure (nothing was sent), named as such."""
    trust = f"ca_file {ca_file}" if ca_file else "the system's trusted roots"
    reason = getattr(error, "verify_message", None) or getattr(error, "reason", None) or str(error)
    return Failure(
        FailureKind.CONNECT,
        f"TLS handshake failed ({reason}; the certificate was checked against {trust} "
        f"and must name {endpoint.host}): {error}",
        tls=True,
    )


def is_idle_and_open(sock: Optional[Union[socket.socket, ssl.SSLSocket]]) -> bool:
    """Whether a pooled connection can take a request: nothing is readable on it (an idle
    HTTP/1.1 connection that is readable was closed by the server, or is out of step)."""
    if sock is None:
        return False
    try:
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


class ConnectionPool:
    """Keep-alive connections to one node: at most ``max_connections`` at once (a request waits
    for a free one), idle ones reused most recent first and closed after
    :data:`~ringkv._routing.POOL_IDLE_TIMEOUT`. Thread-safe."""

    def __init__(
        self,
        endpoint: Endpoint,
        tls: Optional[ssl.SSLContext],
        ca_file: Optional[str],
        connect_timeout: float,
        max_connections: int,
    ) -> None:
        self.endpoint = endpoint
        self._tls = tls
        self._ca_file = ca_file
        self._connect_timeout = connect_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._idle: List[Tuple[http.client.HTTPConnection, float]] = []
        #: Connections opened so far (for tests and metrics).
        self.opened = 0

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self.endpoint.host, self.endpoint.port
        connection: http.client.HTTPConnection
        if self.endpoint.scheme == "https":
            if self._tls is None:
                raise Failure(FailureKind.CONNECT, "an https:// node, and no TLS settings")
            connection = http.client.HTTPSConnection(host, port, timeout=self._connect_timeout, context=self._tls)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=self._connect_timeout)
        try:
            connection.connect()
        except ssl.SSLError as error:
            connection.close()
            raise tls_failure(self.endpoint, error, self._ca_file) from None
        except socket.timeout:
            connection.close()
            raise Failure(FailureKind.CONNECT, f"no connection within {self._connect_timeout:g} s") from None
        except OSError as error:
            connection.close()
            raise Failure(FailureKind.CONNECT, f"could not connect: {error}") from None
        if connection.sock is not None:
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.opened += 1
        return connection

    def _checkout(self, wait: float) -> http.client.HTTPConnection:
        if not self._slots.acquire(timeout=wait):
            raise Failure(FailureKind.CONNECT, f"no free connection to it within {wait:g} s (the pool is full)")
        try:
            now = time.monotonic()
            while True:
                with self._lock:
                    if not self._idle:
                        break
                    connection, since = self._idle.pop()
                if now - since < POOL_IDLE_TIMEOUT and is_idle_and_open(connection.sock):
                    return connection
                connection.close()
            return self._connect()
        except BaseException:
            self._slots.release()
            raise

    def _checkin(self, connection: http.client.HTTPConnection, reusable: bool) -> None:
        if reusable:
            with self._lock:
                self._idle.append((connection, time.monotonic()))
        else:
            connection.close()
        self._slots.release()

    def send(self, request: Request, timeout: float) -> Answer:
        """One attempt: raises :class:`~ringkv._routing.Failure` saying whether the request
        may have been sent."""
        connection = self._checkout(timeout)
        reusable = False
        try:
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            headers = dict(request.headers)
            headers.setdefault("Content-Length", str(len(request.body)))
            try:
                connection.request(request.method, request.target, body=request.body or None, headers=headers)
            except socket.timeout:
                raise Failure(FailureKind.TIMEOUT, f"sending took over {timeout:g} s") from None
            except (OSError, http.client.HTTPException) as error:
                raise Failure(FailureKind.BROKEN, f"the connection broke while sending: {error}") from None
            try:
                response = connection.getresponse()
            except socket.timeout:
                raise Failure(FailureKind.TIMEOUT, f"no answer within {timeout:g} s") from None
            except (OSError, http.client.HTTPException) as error:
                raise Failure(FailureKind.BROKEN, f"the connection broke before the answer: {error!r}") from None
            answer_headers = {name.lower(): value for name, value in response.getheaders()}
            try:
                body = response.read(MAX_RESPONSE_BYTES + 1)
            except socket.timeout:
                raise Failure(FailureKind.TIMEOUT, f"the answer stalled for over {timeout:g} s") from None
            except http.client.IncompleteRead as error:
                partial = Answer(self.endpoint, response.status, answer_headers, bytes(error.partial))
                raise Failure(
                    FailureKind.BROKEN, "the answer was cut short: the connection closed", partial=partial
                ) from None
            except (OSError, http.client.HTTPException) as error:
                raise Failure(FailureKind.BROKEN, f"the connection broke while reading the answer: {error}") from None
            if len(body) > MAX_RESPONSE_BYTES:
                raise Failure(FailureKind.BROKEN, f"an answer of over {MAX_RESPONSE_BYTES} bytes")
            reusable = not response.will_close
            return Answer(self.endpoint, response.status, answer_headers, body)
        finally:
            self._checkin(connection, reusable)

    def close(self) -> None:
        """Closes the idle connections (those in use close when they come back)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection, _ in idle:
            connection.close()


class Pools:
    """A :class:`ConnectionPool` per node, made on first use. Thread-safe."""

    def __init__(
        self, tls: Optional[ssl.SSLContext], ca_file: Optional[str], connect_timeout: float, max_connections: int
    ) -> None:
        self._tls = tls
        self._ca_file = ca_file
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._pools: Dict[Endpoint, ConnectionPool] = {}

    def __getitem__(self, endpoint: Endpoint) -> ConnectionPool:
        with self._lock:
            pool = self._pools.get(endpoint)
            if pool is None:
                pool = ConnectionPool(
                    endpoint, self._tls, self._ca_file, self._connect_timeout, self._max_connections
                )
                self._pools[endpoint] = pool
            return pool

    def connections_opened(self) -> Dict[str, int]:
        """Connections opened so far, by node URL."""
        with self._lock:
            return {endpoint.url: pool.opened for endpoint, pool in self._pools.items()}

    def close(self) -> None:
        """Closes every idle connection."""
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            pool.close()
