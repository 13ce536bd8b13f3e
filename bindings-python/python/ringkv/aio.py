"""The asyncio client: :class:`AsyncClient`, the same API as :class:`ringkv.Client` with
``await`` (and ``async for`` over :meth:`AsyncClient.iter_keys`), on asyncio streams.

>>> import asyncio, ringkv.aio                                            # doctest: +SKIP
>>> async def main():                                                     # doctest: +SKIP
...     async with ringkv.aio.AsyncClient(["https://db1:8087"], ca_file="ca.pem") as db:
...         await asyncio.gather(*(db.put(f"k{i}", b"v") for i in range(200)))
...         print((await db.get("k7")).values)

Requests are formed and answers judged by the same code as the blocking client's
(:mod:`ringkv._operations`), and routed and retried by the same policy
(:mod:`ringkv._routing`): owners first by the core's hash, reads retried on another node, a
write only when it certainly was not sent. Each node gets a bounded pool of keep-alive
HTTP/1.1 connections (TLS verified, always). A client belongs to the event loop it is first
used on.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any, AsyncIterator, Dict, Iterable, List, Optional, Set, Tuple, TypeVar, Union

from . import _native
from ._args import Name, Quorum, Ttl
from ._operations import DEFAULT_BUCKET, Operation
from ._routing import POOL_IDLE_TIMEOUT, Answer, Attempts, Endpoint, Failure, FailureKind, Request
from ._transport import MAX_RESPONSE_BYTES, tls_failure
from .client import ClientBase, Nodes
from .errors import RingkvError
from .results import KeyPage, MgetResult, Result
from .version import Context

__all__ = ["AsyncClient"]

T = TypeVar("T")

Stream = Tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _acquire_within(slots: asyncio.Semaphore, wait: float) -> bool:
    """Takes a slot within ``wait`` seconds; False when none came free.

    Not ``asyncio.wait_for(slots.acquire(), wait)``: before Python 3.12 a timeout or a
    cancellation that races with the acquisition loses the slot for good, and the pool shrinks.
    Here a slot taken after we stopped waiting is given back.
    """
    acquisition = asyncio.ensure_future(slots.acquire())
    try:
        done, _ = await asyncio.wait({acquisition}, timeout=wait)
    except BaseException:
        _give_back_if_taken(slots, acquisition)
        raise
    if done:
        return True
    _give_back_if_taken(slots, acquisition)
    return False


def _give_back_if_taken(slots: asyncio.Semaphore, acquisition: "asyncio.Future[bool]") -> None:
    """Ends an acquisition we no longer wait for, releasing its slot if it got one."""
    if acquisition.done():
        if not acquisition.cancelled() and acquisition.exception() is None:
            slots.release()
        return
    # A cancelled acquire() never holds the slot; should the cancel arrive after the slot was
    # taken, the callback sees a result and gives it back.
    acquisition.cancel()
    acquisition.add_done_callback(
        lambda finished: slots.release()
        if not finished.cancelled() and finished.exception() is None
        else None
    )


class _AsyncPool:
    """Keep-alive connections to one node: at most ``max_connections`` at once."""

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
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: List[Tuple[Stream, float]] = []
        self.opened = 0

    async def _connect(self) -> Stream:
        tls = self._tls if self.endpoint.scheme == "https" else None
        if self.endpoint.scheme == "https" and tls is None:
            raise Failure(FailureKind.CONNECT, "an https:// node, and no TLS settings")
        try:
            stream = await asyncio.wait_for(
                asyncio.open_connection(
                    self.endpoint.host,
                    self.endpoint.port,
                    ssl=tls,
                    server_hostname=self.endpoint.host if tls else None,
                    limit=2**20,
                ),
                self._connect_timeout,
            )
        except ssl.SSLError as error:
            raise tls_failure(self.endpoint, error, self._ca_file) from None
        except asyncio.TimeoutError:
            raise Failure(FailureKind.CONNECT, f"no connection within {self._connect_timeout:g} s") from None
        except OSError as error:
            raise Failure(FailureKind.CONNECT, f"could not connect: {error}") from None
        self.opened += 1
        return stream

    async def _checkout(self, wait: float) -> Stream:
        if not await _acquire_within(self._slots, wait):
            raise Failure(
                FailureKind.CONNECT, f"no free connection to it within {wait:g} s (the pool is full)"
            )
        try:
            now = time.monotonic()
            while self._idle:
                (reader, writer), since = self._idle.pop()
                if now - since < POOL_IDLE_TIMEOUT and not reader.at_eof() and not writer.is_closing():
                    return reader, writer
                writer.close()
            return await self._connect()
        except BaseException:
            self._slots.release()
            raise

    def _checkin(self, stream: Stream, reusable: bool) -> None:
        if reusable:
            self._idle.append((stream, time.monotonic()))
        else:
            stream[1].close()
        self._slots.release()

    async def send(self, request: Request, timeout: float) -> Answer:
        """One attempt (see :meth:`ringkv._transport.ConnectionPool.send`)."""
        stream = await self._checkout(timeout)
        reusable = False
        try:
            try:
                answer, reusable = await asyncio.wait_for(self._exchange(stream, request), timeout)
            except asyncio.TimeoutError:
                raise Failure(FailureKind.TIMEOUT, f"no answer within {timeout:g} s") from None
            return answer
        finally:
            self._checkin(stream, reusable)

    async def _exchange(self, stream: Stream, request: Request) -> Tuple[Answer, bool]:
        reader, writer = stream
        host = f"[{self.endpoint.host}]" if ":" in self.endpoint.host else self.endpoint.host
        lines = [f"{request.method} {request.target} HTTP/1.1", f"Host: {host}:{self.endpoint.port}"]
        lines += [f"{name}: {value}" for name, value in request.headers.items()]
        lines.append(f"Content-Length: {len(request.body)}")
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body)
            await writer.drain()
        except (OSError, ssl.SSLError) as error:
            raise Failure(FailureKind.BROKEN, f"the connection broke while sending: {error}") from None
        try:
            status_line = await reader.readline()
            if not status_line:
                raise Failure(FailureKind.BROKEN, "the connection closed before the answer")
            parts = status_line.decode("latin-1").split(None, 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise Failure(FailureKind.BROKEN, f"not an HTTP answer: {status_line[:60]!r}")
            version, status = parts[0], int(parts[1])
            headers: Dict[str, str] = {}
            while True:
                line = await reader.readline()
                if not line:
                    raise Failure(FailureKind.BROKEN, "the connection closed in the answer's headers")
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
        except (OSError, ssl.SSLError, ValueError) as error:
            raise Failure(FailureKind.BROKEN, f"the connection broke before the answer: {error}") from None
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        body = bytearray()
        try:
            if status in (204, 304) or 100 <= status < 200 or request.method == "HEAD":
                pass
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                while True:
                    size_line = await reader.readline()
                    size = int(size_line.split(b";")[0].strip() or b"x", 16)
                    if size == 0:
                        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        break
                    if len(body) + size > MAX_RESPONSE_BYTES:
                        raise Failure(FailureKind.BROKEN, f"an answer of over {MAX_RESPONSE_BYTES} bytes")
                    body += await reader.readexactly(size)
                    await reader.readexactly(2)
            elif "content-length" in headers:
                length = int(headers["content-length"])
                if length > MAX_RESPONSE_BYTES:
                    raise Failure(FailureKind.BROKEN, f"an answer of over {MAX_RESPONSE_BYTES} bytes")
                body += await reader.readexactly(length)
            else:
                keep_alive = False
                body += await reader.read(MAX_RESPONSE_BYTES)
        except asyncio.IncompleteReadError as error:
            partial = Answer(self.endpoint, status, headers, bytes(body) + error.partial)
            raise Failure(
                FailureKind.BROKEN, "the answer was cut short: the connection closed", partial=partial
            ) from None
        except (OSError, ssl.SSLError, ValueError) as error:
            partial = Answer(self.endpoint, status, headers, bytes(body))
            raise Failure(
                FailureKind.BROKEN, f"the connection broke while reading the answer: {error}", partial=partial
            ) from None
        return Answer(self.endpoint, status, headers, bytes(body)), keep_alive

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for (_, writer), _ in idle:
            writer.close()


class AsyncClient(ClientBase):
    """A client for a live cluster, for asyncio: the arguments, rules and results of
    :class:`ringkv.Client`, every call a coroutine. Safe to share between the tasks of one
    event loop (the pools bound concurrent requests per node by ``max_connections``).

    >>> import ringkv.aio
    >>> ringkv.aio.AsyncClient(["https://db1:8087", "https://db2:8087"], ring_refresh=0).nodes
    ['https://db1:8087', 'https://db2:8087']
    """

    def __init__(
        self,
        nodes: Nodes = "http://127.0.0.1:8087",
        *,
        timeout: float = 10.0,
        connect_timeout: float = 1.0,
        ca_file: Optional[str] = None,
        ring_refresh: float = 10.0,
        max_connections: int = 16,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        bucket: Name = DEFAULT_BUCKET,
        r: Optional[Quorum] = None,
        w: Optional[Quorum] = None,
        dw: Optional[Quorum] = None,
        max_value_bytes: int = _native.DEFAULT_MAX_VALUE_BYTES,
        zone: Optional[str] = None,
    ) -> None:
        super().__init__(
            nodes,
            timeout=timeout,
            connect_timeout=connect_timeout,
            ca_file=ca_file,
            ring_refresh=ring_refresh,
            max_connections=max_connections,
            backoff=backoff,
            max_backoff=max_backoff,
            bucket=bucket,
            r=r,
            w=w,
            dw=dw,
            max_value_bytes=max_value_bytes,
            zone=zone,
        )
        self._pools: Dict[Endpoint, _AsyncPool] = {}
        self._background: Set["asyncio.Task[None]"] = set()

    # ----- running operations -----

    async def _run(self, operation: Operation[T]) -> T:
        """Drives an operation: sends each request it yields, gives it the answer."""
        try:
            request = next(operation)
            while True:
                request = operation.send(await self._execute(request))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _pool(self, endpoint: Endpoint) -> _AsyncPool:
        pool = self._pools.get(endpoint)
        if pool is None:
            pool = _AsyncPool(endpoint, self._tls, self.ca_file, self.connect_timeout, self.max_connections)
            self._pools[endpoint] = pool
        return pool

    async def _execute(self, request: Request) -> Answer:
        if request.route is not None and self._router.claim_first_ring():
            try:
                await self.refresh_ring()
            except RingkvError:
                pass  # routed as without a ring; the background refresh tries again
        attempts = Attempts(request, self._targets(request), self._backoff, self._router.note_connect_failure)
        if request.route is not None:
            self._maybe_refresh_ring()
        timeout = request.timeout or self.timeout
        for endpoint in attempts:
            try:
                answer = await self._pool(endpoint).send(request, timeout)
            except Failure as failure:
                delay = attempts.failed(endpoint, failure)
                if delay > 0:
                    await asyncio.sleep(delay)
                continue
            if attempts.accept(answer):
                return answer
        return attempts.exhausted()

    def _maybe_refresh_ring(self) -> None:
        if not self._router.claim_refresh():
            return

        async def refresh() -> None:
            try:
                await self.refresh_ring()
            except RingkvError:
                pass  # routing goes on with the ring it has (or the configured nodes)
            finally:
                self._router.refresh_done()

        task = asyncio.get_running_loop().create_task(refresh())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def refresh_ring(self) -> Dict[str, Any]:
        """Reads the ring now and routes by it (see :meth:`ringkv.Client.refresh_ring`)."""
        doc, answer = await self._run(self._ops.ring())
        self._install(doc, answer)
        return doc

    def connections_opened(self) -> Dict[str, int]:
        """Connections opened so far, by node URL (see :meth:`ringkv.Client.connections_opened`)."""
        return {endpoint.url: pool.opened for endpoint, pool in self._pools.items()}

    async def aclose(self) -> None:
        """Closes the idle pooled connections and stops a background ring read."""
        for task in list(self._background):
            task.cancel()
        for pool in self._pools.values():
            pool.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ----- keys -----

    async def get(
        self,
        key: Name,
        *,
        bucket: Optional[Name] = None,
        r: Optional[Quorum] = None,
        n: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        request_timeout: Optional[float] = None,
    ) -> Result:
        """Reads every sibling of ``key`` and their context (see :meth:`ringkv.Client.get`)."""
        return await self._run(
            self._ops.get(key, bucket=bucket, r=r, n=n, timeout_ms=timeout_ms, request_timeout=request_timeout)
        )

    async def put(
        self,
        key: Name,
        value: bytes,
        *,
        context: Union[Context, str, None] = None,
        bucket: Optional[Name] = None,
        w: Optional[Quorum] = None,
        dw: Optional[Quorum] = None,
        n: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        ttl: Optional[Ttl] = None,
        if_none_match: bool = False,
        if_match: Union[Context, str, None] = None,
        request_timeout: Optional[float] = None,
    ) -> Result:
        """Writes ``value``, sent at most once (see :meth:`ringkv.Client.put`)."""
        return await self._run(
            self._ops.put(
                key,
                value,
                context=context,
                bucket=bucket,
                w=w,
                dw=dw,
                n=n,
                timeout_ms=timeout_ms,
                ttl=ttl,
                if_none_match=if_none_match,
                if_match=if_match,
                request_timeout=request_timeout,
            )
        )

    async def delete(
        self,
        key: Name,
        *,
        context: Union[Context, str, None] = None,
        bucket: Optional[Name] = None,
        r: Optional[Quorum] = None,
        w: Optional[Quorum] = None,
        dw: Optional[Quorum] = None,
        n: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        if_match: Union[Context, str, None] = None,
        request_timeout: Optional[float] = None,
    ) -> Result:
        """Deletes ``key`` (see :meth:`ringkv.Client.delete`)."""
        return await self._run(
            self._ops.delete(
                key,
                context=context,
                bucket=bucket,
                r=r,
                w=w,
                dw=dw,
                n=n,
                timeout_ms=timeout_ms,
                if_match=if_match,
                request_timeout=request_timeout,
            )
        )

    # ----- many keys, a bucket's keys, and watching a key -----

    async def mget(
        self,
        keys: Iterable[Name],
        *,
        bucket: Optional[Name] = None,
        r: Optional[Quorum] = None,
        n: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        request_timeout: Optional[float] = None,
    ) -> MgetResult:
        """Reads many keys of a bucket in one request (see :meth:`ringkv.Client.mget`)."""
        return await self._run(
            self._ops.mget(keys, bucket=bucket, r=r, n=n, timeout_ms=timeout_ms, request_timeout=request_timeout)
        )

    async def list_keys(
        self,
        *,
        bucket: Optional[Name] = None,
        limit: int = 100,
        cursor: Optional[str] = None,
        timeout_ms: Optional[int] = None,
        request_timeout: Optional[float] = None,
    ) -> KeyPage:
        """One page of a bucket's keys (see :meth:`ringkv.Client.list_keys`)."""
        return await self._run(
            self._ops.list_keys(
                bucket=bucket, limit=limit, cursor=cursor, timeout_ms=timeout_ms, request_timeout=request_timeout
            )
        )

    def iter_keys(
        self, *, bucket: Optional[Name] = None, page_size: int = 1000, timeout_ms: Optional[int] = None
    ) -> AsyncIterator[bytes]:
        """Every key of a bucket, for ``async for`` (see :meth:`ringkv.Client.iter_keys`)."""
        bucket_b = self._ops.check_listing(bucket, page_size, timeout_ms)
        return self._walk_keys(bucket_b, page_size, timeout_ms)

    async def _walk_keys(self, bucket: bytes, page_size: int, timeout_ms: Optional[int]) -> AsyncIterator[bytes]:
        cursor: Optional[str] = None
        while True:
            page = await self.list_keys(bucket=bucket, limit=page_size, cursor=cursor, timeout_ms=timeout_ms)
            for key in page.keys:
                yield key
            if page.cursor is None:
                return
            cursor = page.cursor

    async def watch(
        self,
        key: Name,
        context: Union[Context, str, None],
        *,
        bucket: Optional[Name] = None,
        timeout: Ttl = 60,
        r: Optional[Quorum] = None,
        request_timeout: Optional[float] = None,
    ) -> Result:
        """Waits until ``key`` holds a write ``context`` has not seen (see
        :meth:`ringkv.Client.watch`)."""
        return await self._run(
            self._ops.watch(key, context, bucket=bucket, timeout=timeout, r=r, request_timeout=request_timeout)
        )

    # ----- the cluster -----

    async def health(self) -> Dict[str, Any]:
        """``GET /health`` of a node."""
        return await self._run(self._ops.health())

    async def status(self) -> Dict[str, Any]:
        """``GET /cluster``: a node's view of the cluster."""
        return await self._run(self._ops.json_doc("/cluster"))

    async def ring(self) -> Dict[str, Any]:
        """``GET /ring``; also refreshes the routing."""
        return await self.refresh_ring()

    async def metrics(self) -> str:
        """``GET /metrics`` of a node: Prometheus text."""
        return await self._run(self._ops.metrics())

    async def bucket_props(self, bucket: Optional[Name] = None) -> Dict[str, Any]:
        """``GET /buckets/{bucket}/props`` (see :meth:`ringkv.Client.bucket_props`)."""
        return await self._run(self._ops.bucket_props(bucket))

    async def set_bucket_props(
        self,
        bucket: Optional[Name] = None,
        *,
        n: int,
        r: Optional[Quorum] = None,
        w: Optional[Quorum] = None,
        dw: Optional[Quorum] = None,
        conflict_mode: Optional[str] = None,
        siblings_warn: Optional[int] = None,
        max_siblings: Optional[int] = None,
        max_object_bytes: Optional[int] = None,
        default_ttl: Optional[Ttl] = None,
    ) -> None:
        """``PUT /buckets/{bucket}/props`` (see :meth:`ringkv.Client.set_bucket_props`)."""
        await self._run(
            self._ops.set_bucket_props(
                bucket,
                n=n,
                r=r,
                w=w,
                dw=dw,
                conflict_mode=conflict_mode,
                siblings_warn=siblings_warn,
                max_siblings=max_siblings,
                max_object_bytes=max_object_bytes,
                default_ttl=default_ttl,
            )
        )
