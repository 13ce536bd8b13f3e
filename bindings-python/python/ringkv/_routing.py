"""Where a request goes and what a failed attempt allows next: the routing and retry policy of
both live clients (:class:`ringkv.Client` and :class:`ringkv.aio.AsyncClient`), with no I/O.

The rules are those of the Rust client (``client/src/http.rs``, ``http/retry.rs``,
``http/routing.rs``), and so are the names:

- **Routing.** A :class:`RoutingTable` is built from a ``GET /ring`` document. A key's partition
  is computed by the core's own hash (``_native.key_partition``: MD5 of bucket and key, the top
  bits), and the request goes to the partition's usable replicas (alive, ``up``, ``joining`` or
  ``leaving``) owner first, then to the configured nodes in rotating order, then to any other
  usable member (:func:`plan_targets`). Without a ring (not fetched yet, unreachable, or routing
  turned off) the configured nodes are tried in rotation. A node that refused a connection is
  tried last for :data:`SUSPECT_FOR` seconds.
- **Zone.** A client given its own ``zone`` (the datacenter or rack it runs in, as the nodes'
  ``zone`` setting names them) tries a key's replicas in that zone first, in preference order,
  then its other replicas, then the fallbacks above (:func:`prefer_zone`), so a request is
  coordinated without a cross-zone hop whenever an owner of the key is near. Such a client reads
  the ring before its first key request (once: :meth:`Router.claim_first_ring`), so that this
  request is routed by zone too; without a zone the ring is only read in the background.
- **Refresh.** The ring is re-read in the background every ``ring_refresh`` seconds, and soon
  (:data:`MIN_REFRESH_GAP`) after a connection failure (:class:`RefreshState`). Nodes do not
  announce ring changes in their answers, so this is how a client learns them.
- **Retries** (:func:`retry_decision`): reads are tried on the next node after any transport
  failure; key writes only when the request **certainly was not sent** (the connection or TLS
  handshake failed, or no pooled connection was free); once a byte may have left (timeout,
  reset, connection closed before the answer) a write stops with "outcome unknown": a blind
  retry without the new context would turn one write into two siblings. A 503 quorum failure is
  never retried; a node without a ring or shutting down makes a read go on; a 507 (the
  coordinator's disk is full: nothing written) makes any request go on. At most
  :data:`MAX_ATTEMPTS` nodes are tried, with a bounded exponential backoff between attempts
  (:func:`backoff_delay`).

:class:`Attempts` drives one request through these rules; each client only performs the I/O.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import _native
from .errors import InvalidRequestError, RequestTimeoutError, ServerError, TlsError, UnavailableError

#: At most this many nodes are tried for one request.
MAX_ATTEMPTS = 5
#: Seconds a node that refused a connection is tried after the others.
SUSPECT_FOR = 5.0
#: The shortest gap, in seconds, between two ring refreshes triggered by connection failures.
MIN_REFRESH_GAP = 0.5
#: Seconds added to a request's ``timeout_ms`` so the node's own answer comes before the client
#: gives up.
SERVER_ANSWER_GRACE = 1.0
#: Idle pooled connections are closed after this many seconds, before the server's idle timeout
#: (its header-read timeout, 10 s by default) could close them under a request.
POOL_IDLE_TIMEOUT = 5.0
#: Member statuses whose members take requests.
USABLE_STATUSES = ("up", "joining", "leaving")


# ----- node addresses -----


@dataclass(frozen=True)
class Endpoint:
    """A node's base URL, split: ``scheme`` (``http`` or ``https``), ``host``, ``port``."""

    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        """``scheme://host:port`` (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url


def normalize_node_url(node: str) -> Endpoint:
    """A node address as an :class:`Endpoint`: ``http://`` may be left out, the port defaults
    to the scheme's, and a path is refused.

    >>> normalize_node_url("127.0.0.1:8087").url
    'http://127.0.0.1:8087'
    >>> normalize_node_url("https://db1:8443/").url
    'https://db1:8443'
    """
    if not isinstance(node, str):
        raise TypeError(f"a node URL must be a str, not {type(node).__name__}")
    text = node.strip().rstrip("/")
    parsed = urllib.parse.urlsplit(text if "://" in text else "http://" + text)
    if parsed.scheme not in ("http", "https"):
        raise InvalidRequestError(f"{node!r}: unsupported URL scheme {parsed.scheme!r}: use http:// or https://")
    if not parsed.hostname:
        raise InvalidRequestError(f"{node!r}: no host in the URL")
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError as error:
        raise InvalidRequestError(f"invalid port in URL {node!r}: {error}") from None
    if parsed.path not in ("", "/") or parsed.query:
        raise InvalidRequestError(f"{node!r}: a node address has no path")
    return Endpoint(parsed.scheme, parsed.hostname, port)


def member_url(client_address: str, source: Endpoint) -> Optional[Endpoint]:
    """The endpoint of a member from its ``http_addr``, with the scheme of ``source`` (the node
    the ring came from: HTTPS is a cluster-wide setting). A wildcard IP is replaced by the host
    of ``source``.

    >>> member_url("0.0.0.0:8088", normalize_node_url("https://db1:8087")).url
    'https://db1:8088'
    """
    text = client_address.strip() if isinstance(client_address, str) else ""
    if not text:
        return None
    try:
        if "://" in text:
            return normalize_node_url(text)
        endpoint = normalize_node_url(f"{source.scheme}://{text}")
    except (InvalidRequestError, TypeError):
        return None
    try:
        if ipaddress.ip_address(endpoint.host).is_unspecified:
            return Endpoint(source.scheme, source.host, endpoint.port)
    except ValueError:
        pass  # a host name
    return endpoint


# ----- the routing table -----


class RoutingTable:
    """The ring reduced to what routing needs: per partition, its usable replicas' endpoints in
    preference order. Built from a ``GET /ring`` document fetched from ``source``."""

    __slots__ = ("version", "partition_count", "members", "zones", "_replicas")

    def __init__(self, doc: Mapping[str, Any], source: Endpoint) -> None:
        if not isinstance(doc, Mapping):
            raise ServerError("ring: the document is not an object")
        count = doc.get("partition_count")
        if (
            not isinstance(count, int)
            or isinstance(count, bool)
            or count <= 0
            or count & (count - 1)
            or count > _native.MAX_PARTITIONS
        ):
            raise ServerError(f"ring: partition count {count!r} is not a power of two up to {_native.MAX_PARTITIONS}")
        partitions = doc.get("partitions")
        if not isinstance(partitions, list) or len(partitions) != count:
            raise ServerError(f"ring: {count} partitions declared, a different number listed")
        version = doc.get("version")
        #: The ring's version (``None`` when the document has none).
        self.version: Optional[int] = version if isinstance(version, int) else None
        #: Q.
        self.partition_count: int = count
        by_id: Dict[str, Endpoint] = {}
        #: The zone of each usable member that has one.
        self.zones: Dict[Endpoint, str] = {}
        for member in doc.get("members") or []:
            if not isinstance(member, Mapping):
                raise ServerError("ring: a member that is not an object")
            if member.get("alive") is not True or member.get("status") not in USABLE_STATUSES:
                continue
            endpoint = member_url(str(member.get("http_addr", "")), source)
            if endpoint is not None and isinstance(member.get("id"), str):
                by_id[member["id"]] = endpoint
                zone = member.get("zone")
                if isinstance(zone, str) and zone:
                    self.zones[endpoint] = zone
        #: Endpoints of every usable member.
        self.members: List[Endpoint] = list(dict.fromkeys(by_id.values()))
        replicas: List[Optional[Tuple[Endpoint, ...]]] = [None] * count
        for partition in partitions:
            if not isinstance(partition, Mapping):
                raise ServerError("ring: a partition that is not an object")
            index = partition.get("id")
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
                raise ServerError(f"ring: partition id {index!r} out of range")
            if replicas[index] is not None:
                raise ServerError(f"ring: partition {index} listed twice")
            ids = partition.get("replicas") or []
            replicas[index] = tuple(by_id[i] for i in ids if isinstance(i, str) and i in by_id)
        self._replicas: List[Tuple[Endpoint, ...]] = [r or () for r in replicas]

    def replicas_for(self, bucket: bytes, key: bytes) -> Tuple[Endpoint, ...]:
        """The usable replicas of ``bucket``/``key``, owner first (the core computes the key's
        partition)."""
        return self._replicas[_native.key_partition(bucket, key, self.partition_count)]

    def replicas_for_zone(self, bucket: bytes, key: bytes, zone: Optional[str]) -> List[Endpoint]:
        """The usable replicas of ``bucket``/``key`` in the order a client in ``zone`` tries
        them: those in ``zone`` first, then the others, each group owner first (``None``: the
        order of :meth:`replicas_for`)."""
        return prefer_zone(self.replicas_for(bucket, key), zone, self.zones.get)


def prefer_zone(
    replicas: Sequence[Endpoint],
    zone: Optional[str],
    zone_of: Callable[[Endpoint], Optional[str]],
) -> List[Endpoint]:
    """Reorders a key's replicas (in preference order) for a client in ``zone``: the replicas in
    that zone first, then the others, each group in its preference order. With no zone the order
    is unchanged. (A replica in the client's zone coordinates with no cross-zone hop; it still
    contacts every replica the quorum needs.)

    >>> a, b, c = (normalize_node_url(f"h:{p}") for p in (1, 2, 3))
    >>> zones = {a: "x", b: "y", c: "y"}
    >>> [e.port for e in prefer_zone([a, b, c], "y", zones.get)]
    [2, 3, 1]
    >>> [e.port for e in prefer_zone([a, b, c], None, zones.get)]
    [1, 2, 3]
    """
    if not zone:
        return list(replicas)
    near = [e for e in replicas if zone_of(e) == zone]
    return near + [e for e in replicas if zone_of(e) != zone]


def plan_targets(
    routed: Sequence[Endpoint],
    configured: Sequence[Endpoint],
    rotation: int,
    other_members: Sequence[Endpoint],
    is_suspect: Callable[[Endpoint], bool],
) -> List[Endpoint]:
    """The order in which to try nodes: the key's usable replicas, then the configured nodes
    starting at ``rotation``, then other usable members; no duplicates, suspects moved last.

    >>> a, b, c = (normalize_node_url(f"h:{p}") for p in (1, 2, 3))
    >>> [e.port for e in plan_targets([c], [a, b], 1, [a, b, c], lambda e: e == b)]
    [3, 1, 2]
    """
    candidates: List[Endpoint] = list(routed)
    if configured:
        start = rotation % len(configured)
        candidates.extend(configured[start:])
        candidates.extend(configured[:start])
    candidates.extend(other_members)
    order = list(dict.fromkeys(candidates))
    return [e for e in order if not is_suspect(e)] + [e for e in order if is_suspect(e)]


@dataclass
class RefreshState:
    """When the ring was last read, and whether a read is under way."""

    in_progress: bool = False
    last_started: Optional[float] = None
    stale: bool = False

    def due(self, now: float, interval: float) -> bool:
        """Whether a background refresh should start now (``interval`` 0: never)."""
        if self.in_progress or interval <= 0:
            return False
        if self.last_started is None:
            return True
        since = now - self.last_started
        return since >= interval or (self.stale and since >= MIN_REFRESH_GAP)


class Router:
    """The routing state a client keeps: its configured nodes, its zone, the ring's table, the
    suspects, the rotation and the refresh schedule. Thread-safe; no I/O (the client fetches the
    ring)."""

    def __init__(self, nodes: Sequence[Endpoint], ring_refresh: float, zone: Optional[str] = None) -> None:
        self.nodes: List[Endpoint] = list(dict.fromkeys(nodes))
        self.ring_refresh = ring_refresh
        #: The zone whose replicas are tried first (``None``: preference order).
        self.zone: Optional[str] = zone or None
        self._first_ring_claimed = False
        self._lock = threading.Lock()
        self._table: Optional[RoutingTable] = None
        self._suspects: Dict[Endpoint, float] = {}
        self._rotation = 0
        self._refresh = RefreshState()

    @property
    def table(self) -> Optional[RoutingTable]:
        """The routing table in use (``None``: no ring yet, or routing is off)."""
        return self._table if self.ring_refresh > 0 else None

    def key_targets(self, bucket: bytes, key: bytes) -> List[Endpoint]:
        """Nodes to try for a key, best first."""
        table = self.table
        return self._plan(table.replicas_for_zone(bucket, key, self.zone) if table else (), table)

    def any_targets(self) -> List[Endpoint]:
        """Nodes to try for a request any node can answer."""
        return self._plan((), self.table)

    def _plan(self, routed: Sequence[Endpoint], table: Optional[RoutingTable]) -> List[Endpoint]:
        now = time.monotonic()
        with self._lock:
            rotation = self._rotation
            self._rotation += 1
            suspects = {e for e, since in self._suspects.items() if now - since < SUSPECT_FOR}
        return plan_targets(routed, self.nodes, rotation, table.members if table else (), suspects.__contains__)

    def install(self, table: RoutingTable) -> None:
        """Uses ``table`` from now on; an explicit read counts as the latest refresh."""
        with self._lock:
            self._table = table
            self._refresh.last_started = time.monotonic()
            self._refresh.stale = False

    def claim_first_ring(self) -> bool:
        """Whether the caller, about to send a key request, must read the ring first: true once,
        for a client with a zone that routes and has no ring yet (so its first request already
        goes to a replica in its zone). A failed read is not tried again here."""
        with self._lock:
            if self.zone is None or self.ring_refresh <= 0 or self._table is not None or self._first_ring_claimed:
                return False
            self._first_ring_claimed = True
            return True

    def claim_refresh(self) -> bool:
        """Whether a background ring read is due now; if so the caller must start one and call
        :meth:`refresh_done` when it ends, however it ends."""
        now = time.monotonic()
        with self._lock:
            if not self._refresh.due(now, self.ring_refresh):
                return False
            self._refresh = RefreshState(in_progress=True, last_started=now, stale=False)
            return True

    def refresh_done(self) -> None:
        """A background ring read ended."""
        with self._lock:
            self._refresh.in_progress = False

    def note_connect_failure(self, endpoint: Endpoint) -> None:
        """``endpoint`` refused a connection: try it last for a while, and re-read the ring soon."""
        with self._lock:
            self._suspects[endpoint] = time.monotonic()
            self._refresh.stale = True


# ----- the retry policy -----


class FailureKind(enum.Enum):
    """How a failed attempt failed, as far as the client can tell."""

    #: The connection (or its TLS handshake) could not be established, or no pooled connection
    #: was free in time: the request certainly was not sent.
    CONNECT = "connect"
    #: No answer within the attempt's deadline: the request may have been sent.
    TIMEOUT = "timeout"
    #: The connection broke (reset, closed before the answer): the request may have been sent.
    BROKEN = "broken"


class Idempotence(enum.Enum):
    """Whether a request may safely be sent twice."""

    #: Reads and idempotent metadata writes: any failed attempt may be retried elsewhere.
    IDEMPOTENT = "idempotent"
    #: Key writes: a second copy could create a sibling, so only unsent requests are retried.
    AT_MOST_ONCE = "at_most_once"


class RetryDecision(enum.Enum):
    """What to do after a failed attempt."""

    #: Send the request to the next node.
    TRY_NEXT_NODE = "try_next_node"
    #: Stop: the request may have been applied.
    OUTCOME_UNKNOWN = "outcome_unknown"


def retry_decision(idempotence: Idempotence, failure: FailureKind) -> RetryDecision:
    """The retry policy, as a pure function.

    >>> retry_decision(Idempotence.AT_MOST_ONCE, FailureKind.CONNECT).name
    'TRY_NEXT_NODE'
    >>> retry_decision(Idempotence.AT_MOST_ONCE, FailureKind.TIMEOUT).name
    'OUTCOME_UNKNOWN'
    >>> retry_decision(Idempotence.IDEMPOTENT, FailureKind.BROKEN).name
    'TRY_NEXT_NODE'
    """
    if failure is FailureKind.CONNECT or idempotence is Idempotence.IDEMPOTENT:
        return RetryDecision.TRY_NEXT_NODE
    return RetryDecision.OUTCOME_UNKNOWN


def backoff_delay(retry: int, base: float, cap: float, rng: Optional[random.Random] = None) -> float:
    """Seconds to wait before the ``retry``-th retry (1, 2, ...): ``base * 2**(retry-1)``, at
    most ``cap``, with "equal jitter" (between half and all of it).

    >>> backoff_delay(1, 0.0, 1.0)
    0.0
    >>> 0.15 <= backoff_delay(3, 0.1, 0.3) <= 0.3   # 0.1 * 2**2, capped at 0.3, jittered
    True
    """
    if base <= 0 or retry <= 0:
        return 0.0
    delay = min(cap, base * 2.0 ** min(retry - 1, 30))
    jitter: float = (rng or random).uniform(0, delay / 2)
    return delay / 2 + jitter


@dataclass
class Failure(Exception):
    """One failed attempt (raised by a client's transport, handled by :class:`Attempts`)."""

    kind: FailureKind
    detail: str
    #: The certificate did not verify (a :data:`FailureKind.CONNECT` failure).
    tls: bool = False
    #: An answer whose body was cut short: ``(status, headers, body so far)``.
    partial: Optional["Answer"] = None

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, whatever its status (header names lower-cased)."""

    endpoint: Endpoint
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """A header's value, or ``None``."""
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Request:
    """One HTTP request, ready to be sent to any node."""

    method: str
    #: Path and query string.
    target: str
    headers: Mapping[str, str]
    body: bytes
    idempotence: Idempotence
    #: ``(bucket, key)`` to route by, or ``None`` for any node.
    route: Optional[Tuple[bytes, bytes]]
    #: Seconds to wait for the answer (``None``: the client's request timeout).
    timeout: Optional[float]
    #: A description for messages, e.g. ``"PUT /kv/b/k"``.
    what: str


def _node_cannot_serve(answer: Answer) -> bool:
    """A 503 from a node that could not coordinate at all (no ring yet, shutting down)."""
    if answer.status != 503:
        return False
    try:
        doc = json.loads(answer.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("kind") in ("no_ring", "shutting_down")


class Attempts:
    """One request's way through the retry policy. The client loops::

        attempts = Attempts(request, targets, backoff)
        for endpoint in attempts:             # the next node to try, if any is left
            try:
                answer = send(endpoint)
            except Failure as failure:
                wait(attempts.failed(endpoint, failure))   # raises when the policy stops
                continue
            if attempts.accept(answer):
                return answer
        attempts.exhausted()                  # raises the error of the whole request
    """

    def __init__(
        self,
        request: Request,
        targets: Sequence[Endpoint],
        backoff: Tuple[float, float] = (0.0, 0.0),
        note_connect_failure: Optional[Callable[[Endpoint], None]] = None,
    ) -> None:
        if not targets:
            raise UnavailableError(f"{request.what}: no node to send it to")
        self._request = request
        self._targets = list(targets)[:MAX_ATTEMPTS]
        self._backoff = backoff
        self._note = note_connect_failure
        self._failures: List[Tuple[Endpoint, Failure]] = []
        self._index = 0

    def __iter__(self) -> "Attempts":
        return self

    def __next__(self) -> Endpoint:
        if self._index >= len(self._targets):
            raise StopIteration
        self._index += 1
        return self._targets[self._index - 1]

    @property
    def _last(self) -> bool:
        return self._index >= len(self._targets)

    def failed(self, endpoint: Endpoint, failure: Failure) -> float:
        """Records a failed attempt: raises :class:`~ringkv.RequestTimeoutError` (outcome
        unknown) when the policy forbids another, else returns the seconds to wait first."""
        if failure.kind is FailureKind.CONNECT and self._note is not None:
            self._note(endpoint)
        if retry_decision(self._request.idempotence, failure.kind) is RetryDecision.OUTCOME_UNKNOWN:
            raise RequestTimeoutError(
                f"{self._request.what} to {endpoint}: {failure.detail}; the write may or may not have been "
                "applied (it was sent, so it is not retried): read the key before writing again"
            )
        self._failures.append((endpoint, failure))
        if self._last:
            return 0.0
        return backoff_delay(len(self._failures), *self._backoff)

    def accept(self, answer: Answer) -> bool:
        """Whether ``answer`` is the request's; ``False``: try the next node."""
        if not self._last:
            if self._request.idempotence is Idempotence.IDEMPOTENT and _node_cannot_serve(answer):
                self._failures.append((answer.endpoint, Failure(FailureKind.BROKEN, "the node cannot serve now")))
                return False
            if answer.status == 507:  # nothing was written: another node may take it
                self._failures.append((answer.endpoint, Failure(FailureKind.CONNECT, "its disk is full")))
                return False
        return True

    def exhausted(self) -> Answer:
        """After the last node failed: raises the error of the whole request, or returns the
        answer the last node cut short (the caller reports what it could read of it)."""
        failures = self._failures
        last = failures[-1][1] if failures else None
        if last is not None and last.partial is not None:
            return last.partial  # the caller reports what it could read of it
        detail = "; ".join(f"{endpoint}: {failure.detail}" for endpoint, failure in failures)
        what = self._request.what
        if failures and all(f.tls for _, f in failures):
            raise TlsError(f"{what}: {detail}")
        if failures and all(f.kind is FailureKind.CONNECT for _, f in failures):
            raise UnavailableError(f"{what}: could not connect: {detail}")
        if any(f.kind is FailureKind.TIMEOUT for _, f in failures):
            raise RequestTimeoutError(f"{what}: no answer in time: {detail}")
        raise UnavailableError(f"{what}: transport failure: {detail}")
