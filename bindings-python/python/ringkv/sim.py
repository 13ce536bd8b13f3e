"""The deterministic cluster simulator.

A :class:`Sim` runs a whole ringkv cluster in this process, over the real protocol code of
``ringkv-core``: nodes, a seeded network that delays and reorders (and, when asked, loses and
partitions) messages, disks, crashes and restarts, on a virtual clock that jumps from one thing
to the next. The same configuration and seed give the same run, event for event.

>>> import ringkv
>>> sim = ringkv.Sim(nodes=5, n=3, r=2, w=2, seed=7)
>>> sim.preference_list("cart:alice")                     # the key's three replicas
['n2', 'n3', 'n4']
>>> sim.put("cart:alice", b"milk", node="n1").ok
True
>>> sim.partition(["n1", "n2"], ["n3", "n4", "n5"])      # a replica on each side...
>>> sim.run(ms=5000)                                      # ...once failure detection notices
>>> a = sim.get("cart:alice", node="n1")
>>> b = sim.get("cart:alice", node="n3")
>>> sim.put("cart:alice", b"milk,eggs", context=a.context, node="n1").ok
True
>>> sim.put("cart:alice", b"bread", context=b.context, node="n3").ok
True
>>> sim.heal(); sim.run(ms=2000)
>>> g = sim.get("cart:alice", node="n5")
>>> sorted(g.values)                                      # concurrent writes: siblings
[b'bread', b'milk,eggs']
>>> sim.put("cart:alice", b"bread,eggs,milk", context=g.context, node="n5").ok
True
>>> sim.get("cart:alice", node="n1").values
[b'bread,eggs,milk']
>>> sim.check().ok
True

Writes need a reachable replica of the key: a coordinator that reaches none of the key's
preference list cannot write, even with a sloppy quorum (``ringkv-core`` forwards writes to an
owner). Failure detection takes a few seconds; until then requests to the other side time out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _native
from ._args import (
    Name,
    Quorum,
    Ttl,
    integer,
    name_bytes,
    node_name,
    optional_integer,
    optional_quorum,
    optional_ttl_ms,
    quorum,
    u32,
    value_bytes,
)
from .errors import InvalidRequestError, NothingToDeleteError
from .results import Result, key_text
from .ring import Ring
from .version import Context, Dot, VectorClock, check_condition, check_context

__all__ = ["Sim", "Verdict", "Replica", "Sibling"]

DEFAULT_BUCKET = "default"


@dataclass(frozen=True)
class Verdict:
    """The history checker's findings (:meth:`Sim.check`). True when the run passed.

    The checker asserts that no acknowledged write was lost (each is still a sibling or was
    superseded by a write whose context had seen it), that no read returned a value nobody
    wrote, and that every replica of every key converged, with no hint left behind.
    """

    #: Whether every check passed.
    ok: bool
    #: Operations in the history.
    operations: int
    #: Writes acknowledged to their clients.
    acknowledged_writes: int
    #: Of those, the ones still present as siblings at the end.
    present: int
    #: Of those, the ones superseded by a later write that saw them.
    superseded: int
    #: Of those, deletes whose tombstones were reaped.
    reaped: int
    #: Acknowledged writes lost: ``{"index": history index, "dot": (actor, counter)}``.
    lost: List[Dict[str, Any]] = field(default_factory=list)
    #: Gets that returned a value nobody wrote: ``(history index, value)``.
    phantom_reads: List[Tuple[int, bytes]] = field(default_factory=list)
    #: Keys whose replicas differ at the end.
    divergent: List[str] = field(default_factory=list)
    #: Keys whose final read (R = all) failed.
    unreadable: List[str] = field(default_factory=list)
    #: Pairs of acknowledged writes given the same dot.
    reused_dots: List[Tuple[int, int]] = field(default_factory=list)
    #: Hints still held at the end.
    hints_left: List[str] = field(default_factory=list)
    #: Final siblings that are not concurrent: ``(index of the write that had seen the other,
    #: index of the other)``.
    false_siblings: List[Tuple[int, int]] = field(default_factory=list)
    #: Gets that missed a write acknowledged before they were invoked (reported, not a
    #: failure): ``{"index", "missed", "staleness_ms"}``.
    stale_reads: List[Dict[str, Any]] = field(default_factory=list)
    #: Final siblings that an acknowledged write had seen and replaced, while that write's own
    #: sibling is gone (a deleted or replaced value that came back): ``(index of the write
    #: that came back, index of the one that had replaced it)``.
    resurrected: List[Tuple[int, int]] = field(default_factory=list)
    #: Records still on a node's disk when it was discarded after saying it was drained.
    discarded: List[str] = field(default_factory=list)
    #: Acknowledged puts with a time to live that are gone at the end and may be: their
    #: earliest possible expiry came before the final read (not a failure).
    expired: int = 0
    #: Gets that returned a value past its latest possible expiry (the put's completion, plus
    #: its time to live, plus ``max_clock_skew_ms``): ``{"index", "put", "late_ms"}``.
    expired_reads: List[Dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok

    def summary(self) -> str:
        """One line: the counts, and what failed if anything did."""
        line = (
            f"{'ok' if self.ok else 'FAILED'}: {self.operations} operations, "
            f"{self.acknowledged_writes} acknowledged writes ({self.present} present, "
            f"{self.superseded} superseded, {self.reaped} reaped"
            + (f", {self.expired} expired" if self.expired else "")
            + ")"
        )
        problems = [
            (len(self.lost), "lost"),
            (len(self.phantom_reads), "phantom reads"),
            (len(self.divergent), "divergent keys"),
            (len(self.unreadable), "unreadable keys"),
            (len(self.reused_dots), "reused dots"),
            (len(self.hints_left), "hints left"),
            (len(self.false_siblings), "false siblings"),
            (len(self.resurrected), "resurrected"),
            (len(self.discarded), "discarded records"),
            (len(self.expired_reads), "reads of expired values"),
        ]
        found = [f"{count} {what}" for count, what in problems if count]
        return line + ("; " + ", ".join(found) if found else "")


@dataclass(frozen=True)
class Sibling:
    """One sibling of a stored object: the value (``None`` for a delete's tombstone), the dot
    of the write that made it, and when it expires (``None``: never), in virtual ms. An
    expired sibling stays stored until a write replaces it or the key is reaped: reads leave
    it out."""

    value: Optional[bytes]
    dot: Dot
    timestamp: int
    deleted: bool
    expires_at: Optional[int] = None


@dataclass(frozen=True)
class Replica:
    """What one replica of a key stores (:meth:`Sim.replicas`): its siblings and the clock that
    covers every write it has seen. ``siblings`` is empty and ``clock`` ``None`` when it has no
    record (or a damaged one)."""

    node: str
    siblings: List[Sibling]
    clock: Optional[VectorClock]

    @property
    def values(self) -> List[bytes]:
        """The stored values (tombstones left out; expired values too stay until a write
        replaces them or the key is reaped, though reads no longer return them)."""
        return [s.value for s in self.siblings if s.value is not None]


def _result(raw: Dict[str, Any]) -> Result:
    bucket: bytes = raw["bucket"]
    key: bytes = raw["key"]
    context = raw["context"]
    dot = raw["dot"]
    return Result(
        op=raw["op"],
        bucket=bucket,
        key=key,
        ok=raw["ok"],
        outcome=raw["outcome"],
        values=list(raw["values"]),
        context=Context._wrap(context, bucket, key) if context is not None else None,
        replicas=list(raw["replicas"]),
        fallbacks=list(raw["fallbacks"]),
        durable=list(raw["durable"]),
        dot=Dot(*dot) if dot is not None else None,
        node=raw["node"],
        read_your_writes=raw["read_your_writes"],
        error=raw["error"],
        quorum=raw["quorum"],
        needed=raw["needed"],
        written=raw["value"],
        index=raw["index"],
        invoked_at=raw["invoked_at"],
        completed_at=raw["completed_at"],
        expires_at=raw["expires_at"],
        exists=raw["exists"],
    )


def _plain(raw: Dict[str, Any]) -> Dict[str, Any]:
    """A history entry as plain data: names as text, contexts as base64, dots as text."""
    entry = dict(raw)
    entry["bucket"] = key_text(raw["bucket"])
    entry["key"] = key_text(raw["key"])
    for name in ("context", "request_context"):
        context = raw[name]
        entry[name] = context.to_base64() if context is not None else None
    entry["dot"] = f"{raw['dot'][0]}:{raw['dot'][1]}" if raw["dot"] is not None else None
    entry["values"] = list(raw["values"])
    return entry


class Sim:
    """A simulated ringkv cluster of ``nodes`` nodes named ``n1``, ``n2``, ...

    Args:
        nodes: how many nodes.
        n, r, w, dw: replication factor and default quorums (a count, or ``"one"``,
            ``"quorum"``, ``"all"``) of every bucket.
        seed: the seed of every random choice: the same seed gives the same run.
        partitions: Q, the number of ring partitions (a power of two, at least ``nodes``).
        strategy: ``"partitions"`` (Q equal partitions, the default) or ``"tokens"``
            (random tokens, ``tokens_per_capacity`` per node).
        min_delay_ms, max_delay_ms: one-way message delays (uniform in between); with zones,
            the delays inside a zone.
        zones: zone names (data centres, racks) the nodes are placed in, round-robin: ``n1`` in
            the first, ``n2`` in the second, ... (``None``: no zones). Each node's ring member
            carries its zone, so a key's replicas spread over the zones.
        wan_delay_ms: ``(min, max)`` one-way delay of a message between two zones.
        n_per_zone: replicas per zone, e.g. ``{"a": 2, "b": 2, "c": 2}`` (``n`` must be their
            sum); with it ``r``/``w`` may be ``"local_quorum"``, ``"local_one"`` or
            ``"each_quorum"``, counted in the coordinator's zone.
        loss: probability that a message is lost.
        max_disk_latency_ms: longest storage operation.
        request_timeout_ms: how long a coordinator waits for its quorum.
        lose_unsynced_on_crash: whether a crash loses the writes a node never fsynced.
        conflict_mode: ``"siblings"`` (keep concurrent writes) or ``"lww"``, also spelled
            ``"last_writer_wins"`` (last writer wins: concurrent writes are lost).
        max_clock_entries, anti_entropy_interval_ms, gossip_interval_ms, max_clock_skew_ms:
            see ``ringkv_core::sim::SimConfig``.

    Every request method (:meth:`put`, :meth:`get`, :meth:`delete`) runs the cluster until the
    request completes and returns a :class:`~ringkv.Result`; pass ``wait=False`` to start it
    and let it complete during later :meth:`run` or :meth:`wait` calls (for concurrent
    requests). ``bucket`` is optional everywhere (``"default"``), and ``r``, ``w``, ``dw``,
    ``n`` and ``timeout_ms`` may be given per call.
    """

    def __init__(
        self,
        *,
        nodes: int = 5,
        n: int = 3,
        r: Quorum = "quorum",
        w: Quorum = "quorum",
        dw: Quorum = 0,
        seed: int = 0,
        partitions: int = 64,
        strategy: str = "partitions",
        tokens_per_capacity: int = 16,
        min_delay_ms: int = 1,
        max_delay_ms: int = 10,
        loss: float = 0.0,
        max_disk_latency_ms: int = 2,
        request_timeout_ms: int = 1000,
        lose_unsynced_on_crash: bool = False,
        conflict_mode: str = "siblings",
        max_clock_entries: int = 64,
        anti_entropy_interval_ms: int = 250,
        gossip_interval_ms: int = 200,
        max_clock_skew_ms: int = 0,
        zones: Optional[Sequence[str]] = None,
        wan_delay_ms: Tuple[int, int] = (20, 80),
        n_per_zone: Optional[Dict[str, int]] = None,
    ) -> None:
        if n_per_zone is not None and not isinstance(n_per_zone, dict):
            raise TypeError(f"n_per_zone must be a dict of zone to replicas, not {type(n_per_zone).__name__}")
        if zones is not None:
            if isinstance(zones, (str, bytes)) or not isinstance(zones, (list, tuple)):
                raise TypeError(f"zones must be a list of zone names, not {type(zones).__name__}")
            for zone in zones:
                if not isinstance(zone, str):
                    raise TypeError(f"a zone name must be a str, not {type(zone).__name__}")
        if (
            isinstance(wan_delay_ms, (str, bytes))
            or not isinstance(wan_delay_ms, (list, tuple))
            or len(wan_delay_ms) != 2
        ):
            raise TypeError("wan_delay_ms must be a pair (min, max) of milliseconds")
        if not isinstance(strategy, str):
            raise TypeError(f"strategy must be a str, not {type(strategy).__name__}")
        if not isinstance(conflict_mode, str):
            raise TypeError(f"conflict_mode must be a str, not {type(conflict_mode).__name__}")
        if not isinstance(lose_unsynced_on_crash, bool):
            raise TypeError(f"lose_unsynced_on_crash must be a bool, not {type(lose_unsynced_on_crash).__name__}")
        if isinstance(loss, bool) or not isinstance(loss, (int, float)):
            raise TypeError(f"loss must be a float, not {type(loss).__name__}")
        self._sim = _native.Sim(
            nodes=integer("nodes", nodes, 1),
            n=u32("n", n, 1),
            r=quorum("r", r),
            w=quorum("w", w),
            dw=quorum("dw", dw),
            seed=integer("seed", seed),
            partitions=u32("partitions", partitions, 1),
            strategy=strategy,
            tokens_per_capacity=u32("tokens_per_capacity", tokens_per_capacity, 1),
            min_delay_ms=integer("min_delay_ms", min_delay_ms),
            max_delay_ms=integer("max_delay_ms", max_delay_ms),
            loss=float(loss),
            max_disk_latency_ms=integer("max_disk_latency_ms", max_disk_latency_ms),
            request_timeout_ms=integer("request_timeout_ms", request_timeout_ms, 1),
            lose_unsynced_on_crash=lose_unsynced_on_crash,
            conflict_mode=conflict_mode,
            max_clock_entries=integer("max_clock_entries", max_clock_entries, 1),
            anti_entropy_interval_ms=integer("anti_entropy_interval_ms", anti_entropy_interval_ms, 1),
            gossip_interval_ms=integer("gossip_interval_ms", gossip_interval_ms, 1),
            max_clock_skew_ms=integer("max_clock_skew_ms", max_clock_skew_ms),
            zones=None if zones is None else list(zones),
            wan_min_delay_ms=integer("wan_delay_ms[0]", wan_delay_ms[0]),
            wan_max_delay_ms=integer("wan_delay_ms[1]", wan_delay_ms[1]),
            n_per_zone=None if n_per_zone is None else {
                str(zone): u32(f"n_per_zone[{zone!r}]", count, 1) for zone, count in n_per_zone.items()
            },
        )
        self._seed = seed
        self._events: List[Dict[str, Any]] = []

    # ----- requests -----

    def _request(
        self,
        op: str,
        key: Name,
        value: Optional[bytes],
        context: Union[Context, str, None],
        node: Optional[str],
        bucket: Name,
        r: Optional[Quorum],
        w: Optional[Quorum],
        dw: Optional[Quorum],
        n: Optional[int],
        timeout_ms: Optional[int],
        wait: bool,
        ttl: Optional[Ttl] = None,
        if_none_match: bool = False,
        if_match: Union[Context, str, None] = None,
    ) -> Result:
        bucket_b = name_bytes("bucket", bucket)
        key_b = name_bytes("key", key)
        node = "n1" if node is None else node_name(node)
        checked = check_context(context, bucket_b, key_b)
        matched = check_condition(if_none_match, if_match, bucket_b, key_b)
        ttl_ms = optional_ttl_ms("ttl", ttl)
        index = self._sim.submit(
            node,
            op,
            bucket_b,
            key_b,
            value=value,
            context=checked._native if checked is not None else None,
            r=optional_quorum("r", r),
            w=optional_quorum("w", w),
            dw=optional_quorum("dw", dw),
            n=None if n is None else u32("n", n, 1),
            timeout_ms=optional_integer("timeout_ms", timeout_ms, 1),
            ttl_ms=ttl_ms,
            if_none_match=if_none_match,
            if_match=matched._native if matched is not None else None,
        )
        raw = self._sim.wait(index) if wait else self._sim.operation(index)
        if raw["outcome"] == "rejected":
            raise InvalidRequestError(f"{node} refused the {op}: {raw['error']}")
        return _result(raw)

    def put(
        self,
        key: Name,
        value: bytes,
        *,
        context: Union[Context, str, None] = None,
        node: Optional[str] = None,
        bucket: Name = DEFAULT_BUCKET,
        w: Optional[Quorum] = None,
        dw: Optional[Quorum] = None,
        r: Optional[Quorum] = None,
        n: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        ttl: Optional[Ttl] = None,
        if_none_match: bool = False,
        if_match: Union[Context, str, None] = None,
        wait: bool = True,
    ) -> Result:
        """Writes ``value`` through ``node`` (default ``"n1"``) and runs until it completes.

        With ``context`` (from a get or put of this key) the write replaces exactly the
        siblings that context has seen; without one it adds a sibling next to what is there.

        ``ttl`` (seconds, a ``timedelta`` or a duration such as ``"30m"``; 1 ms to 10 years)
        makes the value expire: the coordinator fixes ``now + ttl`` at its clock, and from then
        on reads leave the value out (a key whose values all expired reads as absent, with a
        context that the next put supersedes). A put with the read's context and a new ``ttl``
        replaces the value and its expiry: a sliding session.

        ``if_none_match=True`` writes only if the key has no value (absent, deleted or
        expired); ``if_match`` (a context) only if the key's context is still that one
        (without ``context``, the write then replaces what ``if_match`` saw). One condition at
        most. The coordinator checks it with a read at R just before it writes; when it does
        not hold nothing is written and the outcome is ``"precondition_failed"``, with the
        key's current ``context`` (``raise_for_outcome()`` raises
        :class:`~ringkv.PreconditionFailedError`). Best effort, as in Riak: writers checking at
        the same time, say on either side of a partition, can all pass, and their values
        become siblings.

        >>> import ringkv
        >>> sim = ringkv.Sim(nodes=3, seed=1)
        >>> p = sim.put("cart", b"milk")
        >>> p.ok, p.node, len(p.replicas) >= 2
        (True, 'n1', True)
        >>> s = sim.put("session:42", b"{}", ttl="30m", if_none_match=True)
        >>> g = sim.get("session:42")
        >>> g.values, s.invoked_at <= g.expires_at - 30 * 60_000 <= s.completed_at   # 30 min after the put
        ([b'{}'], True)
        >>> sim.put("session:42", b"{}", if_none_match=True).outcome   # it has a value
        'precondition_failed'
        """
        return self._request(
            "put",
            key,
            value_bytes(value),
            context,
            node,
            bucket,
            r,
            w,
            dw,
            n,
            timeout_ms,
            wait,
            ttl=ttl,
            if_none_match=if_none_match,
            if_match=if_match,
        )

    def get(
        self,
        key: Name,
        *,
        node: Optional[str] = None,
        bucket: Name = DEFAULT_BUCKET,
        r: Optional[Quorum] = None,
        w: Optional[Quorum] = None,
        n: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        wait: bool = True,
    ) -> Result:
        """Reads every sibling of ``key`` and their context through ``node`` (default ``"n1"``).
        Expired values are left out; ``expires_at`` says when the values returned expire
        (virtual ms, ``None`` when one of them never does).

        >>> import ringkv
        >>> sim = ringkv.Sim(nodes=3, seed=1)
        >>> sim.get("nothing").values
        []
        """
        return self._request("get", key, None, None, node, bucket, r, w, None, n, timeout_ms, wait)

    def delete(
        self,
        key: Name,
        *,
        context: Union[Context, str, None] = None,
        node: Optional[str] = None,
        bucket: Name = DEFAULT_BUCKET,
        w: Optional[Quorum] = None,
        dw: Optional[Quorum] = None,
        r: Optional[Quorum] = None,
        n: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        if_match: Union[Context, str, None] = None,
        wait: bool = True,
    ) -> Result:
        """Deletes ``key``: a write of a tombstone that supersedes what ``context`` has seen.
        Without a context the key is read at ``node`` first and what that read returns is
        deleted (both show in the history); :class:`~ringkv.NothingToDeleteError` (a
        ``KeyError``) when the read finds nothing.

        ``if_match`` (a context) deletes only if the key's context is still that one, and is
        the delete's context when ``context`` is not given (no read first); otherwise the
        outcome is ``"precondition_failed"``, as for :meth:`put`.

        >>> import ringkv
        >>> sim = ringkv.Sim(nodes=3, seed=1)
        >>> p = sim.put("cart", b"milk")
        >>> sim.delete("cart", context=p.context).ok, sim.get("cart").values
        (True, [])
        """
        # Checked before the read below, so that a bad argument never reaches the cluster.
        bucket_b, key_b = name_bytes("bucket", bucket), name_bytes("key", key)
        check_context(context, bucket_b, key_b)
        matched = check_condition(False, if_match, bucket_b, key_b)
        if matched is not None and (context is None or (isinstance(context, Context) and context.is_empty)):
            # Delete what the matched context saw: it is the context of a read.
            context = matched
        if context is None or (isinstance(context, Context) and context.is_empty):
            # A delete needs the context of a read: read here first, as the live client does.
            read = self._request("get", key, None, None, node, bucket, r, None, None, n, timeout_ms, True)
            if not read.values:
                raise NothingToDeleteError(f"nothing to delete: {key!r} is absent or already deleted")
            context = read.context
        return self._request(
            "delete", key, None, context, node, bucket, r, w, dw, n, timeout_ms, wait, if_match=if_match
        )

    def wait(self, request: Union[Result, int]) -> Result:
        """Runs until a request started with ``wait=False`` has ended, and returns its result."""
        return _result(self._sim.wait(_index(request)))

    def result(self, request: Union[Result, int]) -> Result:
        """A request's result as it stands now (``outcome`` is ``None`` while it runs)."""
        return _result(self._sim.operation(_index(request)))

    # ----- faults -----

    def partition(self, *groups: Sequence[str]) -> None:
        """Cuts every link between the groups, both ways; nodes in no group keep their links.

        >>> import ringkv
        >>> sim = ringkv.Sim(nodes=5, seed=1)
        >>> sim.partition(["n1", "n2"], ["n3", "n4", "n5"])
        """
        if len(groups) < 2:
            raise InvalidRequestError("a partition needs at least two groups of nodes")
        clean: List[List[str]] = []
        for group in groups:
            if isinstance(group, str) or not isinstance(group, (list, tuple, set, frozenset)):
                raise TypeError(f"each group is a list of node names, not {type(group).__name__}")
            if not group:
                raise InvalidRequestError("a group of the partition is empty")
            clean.append([node_name(node) for node in group])
        seen: Dict[str, int] = {}
        for i, group in enumerate(clean):
            for node in group:
                if seen.setdefault(node, i) != i:
                    raise InvalidRequestError(f"{node} is in two groups of the partition")
        self._sim.partition(clean)

    def cut(self, from_node: str, to_node: str) -> None:
        """Cuts the link from ``from_node`` to ``to_node`` only (an asymmetric partition)."""
        self._sim.cut(node_name(from_node, "from_node"), node_name(to_node, "to_node"))

    def heal(self) -> None:
        """Restores every link."""
        self._sim.heal()

    def set_loss(self, loss: float) -> None:
        """Sets the probability that a message is lost."""
        if isinstance(loss, bool) or not isinstance(loss, (int, float)):
            raise TypeError(f"loss must be a float, not {type(loss).__name__}")
        self._sim.set_loss(float(loss))

    def crash(self, node: str) -> None:
        """Crashes a node: its memory and requests in flight are gone, its disk stays (less the
        unsynced writes with ``lose_unsynced_on_crash``). Requests to it are refused until
        :meth:`restart`."""
        self._sim.crash(node_name(node))

    def restart(self, node: str) -> None:
        """Restarts a crashed node over its disk, as a new incarnation (a new actor in clocks)."""
        self._sim.restart(node_name(node))

    def corrupt(self, node: str, key: Name, bucket: Name = DEFAULT_BUCKET) -> bool:
        """Flips a byte of ``node``'s stored record of ``key`` (disk damage, found by checksums
        and repaired); returns whether there was a record."""
        return self._sim.corrupt(node_name(node), name_bytes("bucket", bucket), name_bytes("key", key))

    def join(self, node: str, capacity: int = 1, zone: Optional[str] = None) -> None:
        """Starts a new node that joins the cluster through ``n1``; it takes partitions once it
        has pulled their data. It goes in ``zone``, or by default in the next zone of the
        round-robin (none in a cluster without zones)."""
        if zone is not None and not isinstance(zone, str):
            raise TypeError(f"zone must be a str, not {type(zone).__name__}")
        self._sim.join(node_name(node), u32("capacity", capacity, 1), zone)

    def leave(self, node: str) -> None:
        """Tells a node to leave: it hands its partitions over, then is removed from the ring."""
        self._sim.leave(node_name(node))

    # ----- zones -----

    def isolate_zone(self, zone: str) -> List[str]:
        """Cuts every link between ``zone``'s nodes and the other zones' nodes, both ways (its
        own links stay); returns its nodes.

        >>> import ringkv
        >>> sim = ringkv.Sim(nodes=6, zones=["a", "b", "c"], seed=1)
        >>> sim.isolate_zone("c")
        ['n3', 'n6']
        >>> sim.events[-1]["detail"]
        'isolate zone c (n3, n6): its links to every other zone cut, both ways'
        """
        return self._sim.isolate_zone(_zone(zone))

    def reconnect_zone(self, zone: str) -> None:
        """Restores the links between ``zone`` and the other zones (other cuts stay)."""
        self._sim.reconnect_zone(_zone(zone))

    def crash_zone(self, zone: str) -> List[str]:
        """Crashes every node of ``zone`` (disks kept); returns its nodes."""
        return self._sim.crash_zone(_zone(zone))

    def lose_zone(self, zone: str) -> List[str]:
        """Crashes every node of ``zone`` and loses their disks: they restart empty and get
        their data back from the other zones. Returns its nodes."""
        return self._sim.lose_zone(_zone(zone))

    def restart_zone(self, zone: str) -> None:
        """Restarts every crashed node of ``zone``."""
        self._sim.restart_zone(_zone(zone))

    def lose_disk(self, node: str) -> None:
        """Crashes ``node`` (if it is up) and replaces its disk with an empty one."""
        self._sim.lose_disk(node_name(node))

    # ----- running -----

    def run(self, ms: int) -> None:
        """Runs the cluster for ``ms`` milliseconds of virtual time."""
        self._sim.run(integer("ms", ms))

    def check(self) -> Verdict:
        """Heals the cluster, restarts crashed nodes, lets hints and read repair converge every
        key, and judges the whole history (this changes the cluster: do it at the end).

        >>> import ringkv
        >>> sim = ringkv.Sim(nodes=3, seed=1)
        >>> _ = sim.put("cart", b"milk")
        >>> verdict = sim.check()
        >>> verdict.ok, verdict.acknowledged_writes
        (True, 1)
        """
        raw = self._sim.check()
        return Verdict(
            ok=raw["ok"],
            operations=raw["operations"],
            acknowledged_writes=raw["acknowledged_writes"],
            present=raw["present"],
            superseded=raw["superseded"],
            reaped=raw["reaped"],
            lost=list(raw["lost"]),
            phantom_reads=list(raw["phantom_reads"]),
            divergent=list(raw["divergent"]),
            unreadable=list(raw["unreadable"]),
            reused_dots=list(raw["reused_dots"]),
            hints_left=list(raw["hints_left"]),
            false_siblings=list(raw["false_siblings"]),
            stale_reads=list(raw["stale_reads"]),
            resurrected=list(raw["resurrected"]),
            discarded=list(raw["discarded"]),
            expired=raw["expired"],
            expired_reads=list(raw["expired_reads"]),
        )

    def converged(self) -> bool:
        """Whether every key of the history has equal objects on all its replicas and no hint
        is left anywhere."""
        return self._sim.converged()

    def heal_and_converge(self, limit_ms: int = 60_000) -> Optional[int]:
        """Heals, restarts every node and runs, with no client read, until converged (hinted
        hand-off and anti-entropy alone); returns how many ms that took, or ``None``."""
        return self._sim.heal_and_converge(integer("limit_ms", limit_ms))

    # ----- looking inside -----

    @property
    def seed(self) -> int:
        """The seed of the run."""
        return self._seed

    @property
    def now(self) -> int:
        """Virtual time, in milliseconds."""
        return self._sim.now()

    @property
    def nodes(self) -> List[str]:
        """Every node, up or crashed."""
        return self._sim.nodes()

    @property
    def up(self) -> List[str]:
        """The nodes that are running."""
        return [node for node in self._sim.nodes() if self._sim.is_up(node)]

    def is_up(self, node: str) -> bool:
        """Whether ``node`` is running."""
        return self._sim.is_up(node_name(node))

    @property
    def zones(self) -> List[str]:
        """The zones the nodes were placed in, round-robin (``n1`` in the first, ``n2`` in the
        second, ...); empty for a cluster without zones."""
        return list(self._sim.config()["zones"])

    def zone_of(self, node: str) -> Optional[str]:
        """``node``'s zone (``None`` in a cluster without zones)."""
        return self._sim.zone_of(node_name(node))

    def nodes_in_zone(self, zone: str) -> List[str]:
        """The nodes of ``zone``, up or crashed."""
        return self._sim.nodes_in_zone(_zone(zone))

    @property
    def members(self) -> List[Dict[str, Any]]:
        """Every node with its zone and whether it runs: ``{"node", "zone", "up"}``.

        >>> import ringkv
        >>> sim = ringkv.Sim(nodes=4, zones=["east", "west"], wan_delay_ms=(30, 60), seed=1)
        >>> [(m["node"], m["zone"]) for m in sim.members]
        [('n1', 'east'), ('n2', 'west'), ('n3', 'east'), ('n4', 'west')]
        """
        return [
            {"node": node, "zone": self._sim.zone_of(node), "up": self._sim.is_up(node)}
            for node in self._sim.nodes()
        ]

    @property
    def config(self) -> Dict[str, Any]:
        """The configuration the cluster was built with."""
        return self._sim.config()

    @property
    def ring(self) -> Ring:
        """The ring the cluster places keys by now."""
        return Ring._wrap(self._sim.ring())

    def preference_list(self, key: Name, bucket: Name = DEFAULT_BUCKET) -> List[str]:
        """The ``n`` nodes that hold ``key``'s replicas, owner first."""
        return self.ring.preference_list(key, bucket=bucket, n=self.config["n"])

    @property
    def history(self) -> List[Dict[str, Any]]:
        """Every request so far, as plain data (one dict each: ``op``, ``node``, ``bucket``,
        ``key``, ``outcome``, ``values``, ``context`` as base64, ``dot`` as ``"actor:counter"``,
        a put's ``ttl_ms``, a get's ``expires_at``, ``exists`` after ``precondition_failed``,
        times...). ``pandas.DataFrame(sim.history)`` makes a table of it."""
        return [_plain(raw) for raw in self._sim.history()]

    @property
    def events(self) -> List[Dict[str, Any]]:
        """What happened inside, as plain data: one dict per event with ``at`` (virtual ms),
        ``node``, ``kind`` (``crashed``, ``restarted``, ``links``, ``dropped``, ``read_repair``,
        ``peer_down``, ``peer_up``, ``anti_entropy``, ``quorum_failed``, ...), a readable
        ``detail`` and the kind's own fields."""
        self._events.extend(self._sim.events(len(self._events)))
        return list(self._events)

    @property
    def hints(self) -> List[str]:
        """The hints nodes hold for unreachable owners, described."""
        return self._sim.hints()

    def replicas(self, key: Name, bucket: Name = DEFAULT_BUCKET) -> List[Replica]:
        """What each of ``key``'s replicas stores: siblings with their dots, and the clock.

        This is where to see *why* values are siblings: each was written with a dot that the
        other's writer had not seen.
        """
        replicas = []
        for raw in self._sim.replicas(name_bytes("bucket", bucket), name_bytes("key", key)):
            obj = raw["object"]
            if obj is None:
                replicas.append(Replica(node=raw["node"], siblings=[], clock=None))
                continue
            siblings = [
                Sibling(
                    value=s["value"],
                    dot=Dot(*s["dot"]),
                    timestamp=s["timestamp"],
                    deleted=s["deleted"],
                    expires_at=s["expires_at"],
                )
                for s in obj["siblings"]
            ]
            replicas.append(Replica(node=raw["node"], siblings=siblings, clock=VectorClock._wrap(obj["clock"])))
        return replicas

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Sim(nodes={c['nodes']}, n={c['n']}, r={c['r']!r}, w={c['w']!r}, seed={self._seed}"
            + (f", zones={c['zones']!r}" if c["zones"] else "")
            + f", now={self.now} ms, up={len(self.up)}/{len(self.nodes)})"
        )


def _zone(zone: str) -> str:
    if not isinstance(zone, str):
        raise TypeError(f"a zone name must be a str, not {type(zone).__name__}")
    return zone


def _index(request: Union[Result, int]) -> int:
    if isinstance(request, Result):
        if request.index is None:
            raise InvalidRequestError("this result does not come from a simulator")
        return request.index
    if isinstance(request, int) and not isinstance(request, bool):
        return integer("index", request)
    raise TypeError(f"expected a Result or a history index, not {type(request).__name__}")
