"""A client for a live ringkv cluster, over its HTTP API (standard library only).

>>> import ringkv                                          # doctest: +SKIP
>>> db = ringkv.Client(["https://db1:8087", "https://db2:8087"], ca_file="ca.pem")   # doctest: +SKIP
>>> db.put("alice", b"milk", bucket="carts")               # doctest: +SKIP
>>> g = db.get("alice", bucket="carts")                    # doctest: +SKIP
>>> g.values, g.context                                    # doctest: +SKIP
>>> db.put("alice", b"milk,eggs", context=g.context, bucket="carts")   # doctest: +SKIP

Sessions: a value written with ``ttl`` expires; ``if_none_match=True`` creates a key only if it
has no value, ``if_match`` writes only over an unchanged context::

    db.put("s-42", b'{"user": 7}', bucket="sessions", ttl="30m", if_none_match=True)
    g = db.get("s-42", bucket="sessions")          # g.expires_at: ms since the Unix epoch
    db.put("s-42", g.value, context=g.context, bucket="sessions", ttl="30m")   # sliding expiry

Many keys at once, a bucket's keys, and waiting for a change::

    m = db.mget(["alice", "bob"], bucket="carts")   # m["alice"].values, m.errors, m.unprocessed
    for key in db.iter_keys(bucket="carts"):        # every key, page by page (a scan: admin, export)
        ...
    w = db.watch("alice", g.context, bucket="carts", timeout=30)   # w.changed, w.values, w.context

How requests travel (the Rust client's rules; :mod:`ringkv._routing` has them in full):

- **Routing.** The client reads the ring (``GET /ring``) in the background and sends each key
  request to the first live replica of the key's partition (computed by the core's own hash),
  so the coordinator is an owner and no forwarding hop is needed; then to the other replicas,
  the configured nodes, and any other member. Without a ring (not read yet, or
  ``ring_refresh=0``) the configured nodes take turns. The ring is re-read every
  ``ring_refresh`` seconds and soon after a node refused a connection.
- **Zone.** A client told its ``zone`` (``Client(nodes, zone="dc2")``, as the nodes' ``zone``
  setting names it) sends a key's request to the key's replicas in that zone first, in
  preference order, then to its other replicas and the fallbacks above; it reads the ring before
  its first key request so that one stays in the zone too.
- **TLS.** ``https://`` nodes' certificates are always verified, against ``ca_file`` or the
  system's roots; a failed handshake is a :class:`~ringkv.TlsError` (nothing was sent).
- **Pooling.** Keep-alive connections per node, at most ``max_connections`` at once; the client
  is safe to share between threads.
- **Retries.** A read goes on to the next node after any transport failure. A write (put,
  delete) goes on only when it certainly was not sent (connection refused, TLS handshake
  failed, no free connection); once it may have left, a timeout or a broken connection is a
  :class:`~ringkv.RequestTimeoutError` saying it may or may not have been applied, and it is
  never sent again: a blind retry without the new context would make a sibling of the same
  change. Attempts are spaced by a bounded exponential backoff, five nodes at most.

Failures are exceptions (see :mod:`ringkv.errors`): :class:`~ringkv.QuorumError` when too few
replicas answered, :class:`~ringkv.InvalidRequestError` for a request the node refused,
:class:`~ringkv.PreconditionFailedError` when a write's condition did not hold,
:class:`~ringkv.UnavailableError` when no node can be reached,
:class:`~ringkv.RequestTimeoutError` when none answered in time.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, TypeVar, Union

from . import _native
from ._args import Name, Quorum, Ttl, integer, name_bytes
from ._operations import (
    DEFAULT_BUCKET,
    HEADER_CONTEXT,
    HEADER_DURABLE,
    HEADER_EXPIRES_AT,
    HEADER_FALLBACKS,
    HEADER_NODE,
    HEADER_READ_YOUR_WRITES,
    HEADER_REPLICAS,
    HEADER_SIBLINGS,
    MAX_LIST_LIMIT,
    MAX_MGET_KEYS,
    MAX_WATCH_WAIT_MS,
    Operation,
    Operations,
    parse_multipart,
    seconds,
)
from ._routing import Answer, Attempts, Endpoint, Failure, Request, Router, RoutingTable, normalize_node_url
from ._transport import Pools, tls_context
from .errors import InvalidRequestError, RingkvError
from .results import KeyPage, MgetResult, Result
from .version import Context

__all__ = [
    "Client",
    "parse_multipart",
    "DEFAULT_BUCKET",
    "HEADER_CONTEXT",
    "HEADER_DURABLE",
    "HEADER_EXPIRES_AT",
    "HEADER_FALLBACKS",
    "HEADER_NODE",
    "HEADER_READ_YOUR_WRITES",
    "HEADER_REPLICAS",
    "HEADER_SIBLINGS",
    "MAX_LIST_LIMIT",
    "MAX_MGET_KEYS",
    "MAX_WATCH_WAIT_MS",
]

T = TypeVar("T")
Nodes = Union[str, Sequence[str]]


class ClientBase:
    """What both live clients are made of (:class:`Client`, :class:`ringkv.aio.AsyncClient`):
    the checked settings, the routing state and the operations. No I/O."""

    def __init__(
        self,
        nodes: Nodes,
        *,
        timeout: float,
        connect_timeout: float,
        ca_file: Optional[str],
        ring_refresh: float,
        max_connections: int,
        backoff: float,
        max_backoff: float,
        bucket: Name,
        r: Optional[Quorum],
        w: Optional[Quorum],
        dw: Optional[Quorum],
        max_value_bytes: int,
        zone: Optional[str] = None,
    ) -> None:
        if isinstance(nodes, str):
            nodes = [nodes]
        elif not isinstance(nodes, (list, tuple)):
            raise TypeError(f"nodes must be a URL (str) or a list of URLs, not {type(nodes).__name__}")
        if not nodes:
            raise InvalidRequestError("no nodes: give at least one node URL")
        endpoints = [normalize_node_url(node) for node in nodes]
        self._ops = Operations(timeout=timeout, bucket=bucket, r=r, w=w, dw=dw, max_value_bytes=max_value_bytes)
        self.connect_timeout = seconds("connect_timeout", connect_timeout)
        if isinstance(ring_refresh, bool) or not isinstance(ring_refresh, (int, float)) or ring_refresh < 0:
            raise InvalidRequestError(f"ring_refresh = {ring_refresh!r}: a number of seconds, 0 to turn routing off")
        self.max_connections = integer("max_connections", max_connections, 1, 10_000)
        for name, value in (("backoff", backoff), ("max_backoff", max_backoff)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InvalidRequestError(f"{name} = {value!r}: a number of seconds, 0 or more")
        self._backoff = (float(backoff), float(max_backoff))
        if ca_file is not None and not isinstance(ca_file, str):
            ca_file = str(ca_file)  # a path
        self.ca_file: Optional[str] = ca_file
        uses_tls = any(endpoint.scheme == "https" for endpoint in endpoints)
        # Built whenever a CA is given, so a bad file fails here, not at the first request.
        self._tls = tls_context(ca_file) if uses_tls or ca_file is not None else None
        if zone is not None and not isinstance(zone, str):
            raise TypeError(f"zone must be a str or None, not {type(zone).__name__}")
        self._router = Router(endpoints, float(ring_refresh), zone.strip() if zone else None)
        #: The first configured node's URL.
        self.url: str = endpoints[0].url

    @property
    def nodes(self) -> List[str]:
        """The configured nodes' URLs (normalized)."""
        return [endpoint.url for endpoint in self._router.nodes]

    @property
    def timeout(self) -> float:
        """Seconds an attempt waits for an answer (a call's ``request_timeout`` overrides it)."""
        return self._ops.timeout

    @property
    def bucket(self) -> bytes:
        """The default bucket of every call."""
        return self._ops.bucket

    @property
    def zone(self) -> Optional[str]:
        """The zone whose replicas of a key are tried first (``None``: no preference)."""
        return self._router.zone

    @property
    def ring_version(self) -> Optional[int]:
        """The version of the ring requests are routed by (``None``: none yet, or routing off)."""
        table = self._router.table
        return table.version if table is not None else None

    def replicas_for(self, key: Name, *, bucket: Optional[Name] = None) -> List[str]:
        """The URLs a request for ``key`` tries first: its usable replicas by the ring the
        client knows (empty when it knows none), owner first, or with a ``zone`` those in the
        zone first.

        >>> import ringkv
        >>> ringkv.Client("http://127.0.0.1:1", ring_refresh=0).replicas_for("k")
        []
        """
        table = self._router.table
        if table is None:
            return []
        route = (self._ops.bucket_of(bucket), name_bytes("key", key))
        return [e.url for e in table.replicas_for_zone(*route, self._router.zone)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.nodes if len(self.nodes) > 1 else self.url!r})"

    def _targets(self, request: Request) -> List[Endpoint]:
        if request.route is not None:
            return self._router.key_targets(*request.route)
        return self._router.any_targets()

    def _install(self, doc: Dict[str, Any], answer: Answer) -> None:
        self._router.install(RoutingTable(doc, answer.endpoint))


class Client(ClientBase):
    """A client for a live cluster: blocking, thread-safe, pooled.

    Args:
        nodes: the URL of a node, e.g. ``"https://db1:8087"``, or a list of them (``http://``
            may be left out). Every node of the cluster is learnt from its ring; these are
            where to start, and the fallback when no ring can be read.
        timeout: seconds an attempt waits for the answer (the longest silence on the
            connection); a call's ``request_timeout`` overrides it, and a request with
            ``timeout_ms`` waits at least that plus one second, so the node's own quorum
            timeout answers first.
        connect_timeout: seconds to wait for a connection and its TLS handshake (a failure
            then is "not sent", which even a write may retry on another node).
        ca_file: PEM file of the CA (or self-signed certificate) ``https://`` nodes'
            certificates must chain to; ``None``: the system's trusted roots. Verification is
            always on, and the certificate must name the host of the URL.
        ring_refresh: seconds between background reads of the ring (partition-aware
            routing); 0 turns routing off: requests go to the configured nodes in turn.
        max_connections: connections per node at once (keep-alive, reused); a request waits
            for a free one.
        backoff, max_backoff: the wait before a retry on another node doubles from
            ``backoff`` up to ``max_backoff`` seconds (with jitter).
        bucket: the default bucket of every call.
        r, w, dw: default quorum overrides of every call (``None``: the bucket's).
        max_value_bytes: the largest value a put sends (default: the server's default limit,
            8 MiB); a larger one is an :class:`~ringkv.InvalidRequestError`, nothing sent.
        zone: the zone (datacenter, rack) this client runs in, as the nodes' ``zone`` setting
            names it: a key's replicas in this zone are tried before its other replicas, and the
            ring is read before the first key request. ``None`` (or empty): no preference.
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
        self._pools = Pools(self._tls, self.ca_file, self.connect_timeout, self.max_connections)

    # ----- running operations -----

    def _run(self, operation: Operation[T]) -> T:
        """Drives an operation: sends each request it yields, gives it the answer."""
        try:
            request = next(operation)
            while True:
                request = operation.send(self._execute(request))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _execute(self, request: Request) -> Answer:
        """Sends ``request`` to its targets in order, following the retry policy."""
        if request.route is not None and self._router.claim_first_ring():
            try:
                self.refresh_ring()
            except RingkvError:
                pass  # routed as without a ring; the background refresh tries again
        attempts = Attempts(request, self._targets(request), self._backoff, self._router.note_connect_failure)
        if request.route is not None:
            self._maybe_refresh_ring()
        timeout = request.timeout or self.timeout
        for endpoint in attempts:
            try:
                answer = self._pools[endpoint].send(request, timeout)
            except Failure as failure:
                delay = attempts.failed(endpoint, failure)
                if delay > 0:
                    time.sleep(delay)
                continue
            if attempts.accept(answer):
                return answer
        return attempts.exhausted()

    def _maybe_refresh_ring(self) -> None:
        if not self._router.claim_refresh():
            return

        def refresh() -> None:
            try:
                self.refresh_ring()
            except RingkvError:
                pass  # routing goes on with the ring it has (or the configured nodes)
            finally:
                self._router.refresh_done()

        threading.Thread(target=refresh, name="ringkv-ring-refresh", daemon=True).start()

    def refresh_ring(self) -> Dict[str, Any]:
        """Reads the ring now (``GET /ring`` from any node) and routes by it from now on
        (normally done in the background); returns the ring document."""
        doc, answer = self._run(self._ops.ring())
        self._install(doc, answer)
        return doc

    def connections_opened(self) -> Dict[str, int]:
        """Connections this client has opened so far, by node URL (pooled connections are
        reused, so this grows only with concurrency, failures and idle timeouts)."""
        return self._pools.connections_opened()

    def close(self) -> None:
        """Closes the idle pooled connections (the client stays usable)."""
        self._pools.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- keys -----

    def get(
        self,
        key: Name,
        *,
        bucket: Optional[Name] = None,
        r: Optional[Quorum] = None,
        n: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        request_timeout: Optional[float] = None,
    ) -> Result:
        """Reads every sibling of ``key`` and their context.

        ``values`` is empty when the key is absent, deleted or expired (such a key still has a
        context); several values are siblings to resolve (``result.value`` raises
        :class:`~ringkv.ConflictError` then). ``expires_at`` is when the values expire, in
        milliseconds since the Unix epoch at the answering node's clock (``None`` when one of
        them never does).
        """
        return self._run(
            self._ops.get(key, bucket=bucket, r=r, n=n, timeout_ms=timeout_ms, request_timeout=request_timeout)
        )

    def put(
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
        """Writes ``value``; with ``context`` (from a get of this key) it replaces exactly the
        siblings that context has seen, without it adds a sibling. Returns the new context.

        ``ttl`` (seconds, a ``timedelta`` or a duration such as ``"30m"``; 1 ms to 10 years,
        sent as ``?ttl=``) makes the value expire; without one the bucket's ``default_ttl``
        applies, if it has one. ``if_none_match=True`` (``If-None-Match: *``) writes only if
        the key has no value (absent, deleted or expired); ``if_match`` (``If-Match``, a
        context) only if the key's context is still that one, and without ``context`` the
        write replaces what that context saw. One condition at most; when it does not hold,
        nothing is written and :class:`~ringkv.PreconditionFailedError` carries the key's
        current context. Best effort: writers checking at the same time (on either side of a
        partition) can all pass, and their values become siblings.

        The put is sent at most once: if the connection fails or times out after it may have
        left, :class:`~ringkv.RequestTimeoutError` says it may or may not have been applied
        (read the key before writing again). ``request_timeout`` (seconds) overrides the
        client's ``timeout`` for this call.
        """
        return self._run(
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

    def delete(
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
        """Deletes ``key``: a tombstone superseding what ``context`` has seen.

        Without a context the key is read first (``r`` as for :meth:`get`) and what that read
        returns is deleted; :class:`~ringkv.NothingToDeleteError` (a ``KeyError``) when it finds
        nothing (absent, or already deleted): nothing is written then.

        ``if_match`` (a context; ``If-Match``) deletes only if the key's context is still that
        one, and is the delete's context when ``context`` is not given (no read first);
        otherwise :class:`~ringkv.PreconditionFailedError`, with the current context.
        """
        return self._run(
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

    def mget(
        self,
        keys: Iterable[Name],
        *,
        bucket: Optional[Name] = None,
        r: Optional[Quorum] = None,
        n: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        request_timeout: Optional[float] = None,
    ) -> MgetResult:
        """Reads many keys of a bucket in one request (``POST /kv/{bucket}?mget``): each key is
        read as :meth:`get` reads it (at ``r``, within ``timeout_ms``), in parallel on the node.

        ``keys``: 1 to 1,000 distinct keys (``str`` or ``bytes``). The answer streams, one key
        at a time; it is read whole, then line by line (a read: retried on another node). One key's failure does not fail the others: it is
        in ``errors``, as the exception a get of that key would have raised. Keys left over
        once the answer reached 16 MiB of values are in ``unprocessed``: ask for them again.
        Raises (nothing read) for a request the node refused as a whole, and
        :class:`~ringkv.ServerError` when the answer was cut short.

        >>> m = db.mget(["alice", "bob", b"\\xff"], bucket="carts")   # doctest: +SKIP
        >>> m["alice"].values, m["bob"].value, m.errors, m.unprocessed   # doctest: +SKIP
        """
        return self._run(
            self._ops.mget(keys, bucket=bucket, r=r, n=n, timeout_ms=timeout_ms, request_timeout=request_timeout)
        )

    def list_keys(
        self,
        *,
        bucket: Optional[Name] = None,
        limit: int = 100,
        cursor: Optional[str] = None,
        timeout_ms: Optional[int] = None,
        request_timeout: Optional[float] = None,
    ) -> KeyPage:
        """One page of a bucket's keys (``GET /kv/{bucket}?list``): up to ``limit`` (1 to 1,000)
        keys, starting where ``cursor`` (the previous page's) says, or at the beginning.

        A listing is a scan, for admin and export, not for serving requests: it asks one replica
        of each partition (no quorum), so a key written or deleted a moment ago may be missing
        or still listed. Keys come as ``bytes``, in partition order (not sorted). A page may be
        short, or empty, and still have a ``cursor``: the listing is complete only when
        ``page.cursor`` is ``None``. A cursor the node cannot read (altered, or of another
        bucket) is an :class:`~ringkv.InvalidRequestError`; a partition none of whose replicas
        answered, a :class:`~ringkv.QuorumError`.

        >>> page = db.list_keys(bucket="carts", limit=500)               # doctest: +SKIP
        >>> page.keys, page.cursor                                       # doctest: +SKIP
        """
        return self._run(
            self._ops.list_keys(
                bucket=bucket, limit=limit, cursor=cursor, timeout_ms=timeout_ms, request_timeout=request_timeout
            )
        )

    def iter_keys(
        self, *, bucket: Optional[Name] = None, page_size: int = 1000, timeout_ms: Optional[int] = None
    ) -> Iterator[bytes]:
        """Every key of a bucket, as ``bytes``: :meth:`list_keys` page after page (``page_size``
        keys each, 1 to 1,000) until the listing is complete. Lazy: a page is asked for when
        the previous one is used up. What :meth:`list_keys` says of consistency holds here too.

        >>> live = set(db.iter_keys(bucket="carts"))                     # doctest: +SKIP
        """
        bucket_b = self._ops.check_listing(bucket, page_size, timeout_ms)
        return self._walk_keys(bucket_b, page_size, timeout_ms)

    def _walk_keys(self, bucket: bytes, page_size: int, timeout_ms: Optional[int]) -> Iterator[bytes]:
        cursor: Optional[str] = None
        while True:
            page = self.list_keys(bucket=bucket, limit=page_size, cursor=cursor, timeout_ms=timeout_ms)
            yield from page.keys
            if page.cursor is None:
                return
            cursor = page.cursor

    def watch(
        self,
        key: Name,
        context: Union[Context, str, None],
        *,
        bucket: Optional[Name] = None,
        timeout: Ttl = 60,
        r: Optional[Quorum] = None,
        request_timeout: Optional[float] = None,
    ) -> Result:
        """Waits until ``key`` holds a write that ``context`` has not seen, for at most
        ``timeout`` (seconds, a ``timedelta`` or ``"30s"``; 1 ms to 10 minutes, default 60 s).
        A long poll: ``GET /kv/{bucket}/{key}?changed_since=<context>``.

        ``context`` is the context of a read of this key (a :class:`~ringkv.Context` or its
        base64), or ``None`` to wait for the first write of a key with no history. The result
        is a :class:`~ringkv.Result` with ``op == "watch"`` either way:

        - ``changed`` is True: the key changed, and the result is what a :meth:`get` returns
          (``values``, possibly none when it was deleted, and ``context``); it comes at once
          when the key already holds such a write;
        - ``changed`` is False: the wait ended first (``outcome == "unchanged"``, no values);
          ``context`` is the one to watch from next.

        So a loop that follows a key reads::

            context = None
            while True:
                w = db.watch("config", context, timeout=30)
                if w.changed:
                    apply(w.values)
                context = w.context

        Each watch holds a place on the node until it answers: a node holding as many as it
        may answers 429, an :class:`~ringkv.UnavailableError` (try later or another node).
        """
        return self._run(
            self._ops.watch(key, context, bucket=bucket, timeout=timeout, r=r, request_timeout=request_timeout)
        )

    # ----- the cluster -----

    def health(self) -> Dict[str, Any]:
        """``GET /health`` of a node: ``status``, ``node``, ``alive_members``, ``members``."""
        return self._run(self._ops.health())

    def status(self) -> Dict[str, Any]:
        """``GET /cluster``: a node's view of the cluster (members, their status and
        partitions, ring version, hints pending, partitions moving)."""
        return self._run(self._ops.json_doc("/cluster"))

    def ring(self) -> Dict[str, Any]:
        """``GET /ring``: the partition table (every partition's preference list); also
        refreshes the routing."""
        return self.refresh_ring()

    def members(self) -> Dict[str, Dict[str, Any]]:
        """The members by id, from :meth:`status`."""
        return {member["id"]: member for member in self.status()["members"]}

    def metrics(self) -> str:
        """``GET /metrics`` of a node: Prometheus text."""
        return self._run(self._ops.metrics())

    def bucket_props(self, bucket: Optional[Name] = None) -> Dict[str, Any]:
        """``GET /buckets/{bucket}/props``: ``n``, ``r``, ``w``, ``dw``, ``conflict_mode``,
        ``siblings_warn``, ``max_siblings``, ``max_object_bytes``, and ``default_ttl`` (a
        duration such as ``"30m"``, absent when values do not expire by default)."""
        return self._run(self._ops.bucket_props(bucket))

    def set_bucket_props(
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
        """``PUT /buckets/{bucket}/props``: sets every property of a bucket at once; those not
        given take their defaults (``quorum``, ``quorum``, ``0``, ``siblings``, ..., no
        ``default_ttl``). ``default_ttl`` (seconds, a ``timedelta`` or ``"30m"``) makes the
        values of puts without a ``ttl`` expire after it. The cluster spreads the change by
        gossip: other nodes apply it a moment later."""
        self._run(
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

