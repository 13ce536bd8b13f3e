"""What get, put and delete return, in the simulator and from a live cluster alike; and what
the live client's multi-get (:class:`MgetResult`) and listing (:class:`KeyPage`) return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

from .errors import (
    ConflictError,
    PreconditionFailedError,
    QuorumError,
    RingkvError,
    ServerError,
    UnavailableError,
)
from .version import Context, Dot

__all__ = ["Result", "MgetResult", "KeyPage", "key_text"]


def key_text(name: bytes) -> Union[str, bytes]:
    """A bucket or key for display: ``str`` when it is UTF-8, else the ``bytes``."""
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        return name


@dataclass(frozen=True)
class Result:
    """The outcome of one get, put or delete.

    >>> import ringkv
    >>> sim = ringkv.Sim(nodes=3, seed=1)
    >>> p = sim.put("cart", b"milk", node="n1")
    >>> p.ok, p.outcome, len(p.replicas)        # W = quorum = 2 acknowledgements
    (True, 'ok', 2)
    >>> g = sim.get("cart", node="n2")
    >>> g.values, g.value, g.siblings
    ([b'milk'], b'milk', False)

    In the simulator a quorum that was not reached, or a node that is down, is an outcome
    (``ok`` is False and ``outcome`` says why; ``raise_for_outcome()`` turns it into an
    exception); the live :class:`~ringkv.Client` raises instead.
    """

    #: ``"get"``, ``"put"``, ``"delete"``, or ``"watch"`` (live client only).
    op: str
    #: The bucket.
    bucket: bytes
    #: The key.
    key: bytes
    #: Whether the request reached its quorum (R replies for a get, W acks for a write).
    ok: bool
    #: ``"ok"``, ``"unavailable"`` (quorum not reached), ``"precondition_failed"`` (the write's
    #: ``if_none_match`` or ``if_match`` did not hold; ``context`` is the key's current one),
    #: ``"failed"``, ``"rejected"``, ``"refused"`` (the node is down), ``"lost"`` (it crashed
    #: before replying), ``"unchanged"`` (a watch that waited its whole time), or ``None`` while
    #: the request is still running.
    outcome: Optional[str]
    #: The sibling values a get returned (empty when the key is absent or deleted).
    values: List[bytes] = field(default_factory=list)
    #: The context to pass to the next write of this key (``None`` when there is none); after
    #: ``"precondition_failed"``, the key's current context.
    context: Optional[Context] = None
    #: Replicas that answered (a get) or acknowledged (a write).
    replicas: List[str] = field(default_factory=list)
    #: Of those, the fallbacks standing in for unreachable owners (sloppy quorum).
    fallbacks: List[str] = field(default_factory=list)
    #: Of a write's replicas, those that had made it durable.
    durable: List[str] = field(default_factory=list)
    #: The dot a write was given (simulator only: its identity in every clock).
    dot: Optional[Dot] = None
    #: The node asked (simulator) or the node that answered (client).
    node: Optional[str] = None
    #: False when ``r + w <= n`` for this request: a read may miss an acknowledged write.
    read_your_writes: Optional[bool] = None
    #: Why the request did not succeed.
    error: Optional[str] = None
    #: For ``"unavailable"``: the quorum that failed (``read``, ``write``, ``durable``).
    quorum: Optional[str] = None
    #: For ``"unavailable"``: how many replicas were needed.
    needed: Optional[int] = None
    #: The value a put wrote.
    written: Optional[bytes] = None
    #: Position in the simulator's history (simulator only).
    index: Optional[int] = None
    #: Virtual time the request started (simulator only).
    invoked_at: Optional[int] = None
    #: Virtual time it ended (simulator only; ``None`` while running).
    completed_at: Optional[int] = None
    #: When the values a get returned expire, in milliseconds at the coordinator's clock:
    #: virtual time in the simulator, milliseconds since the Unix epoch from a live cluster.
    #: ``None`` when one of them never expires (or there are none). Several siblings: the
    #: last of their expiries.
    expires_at: Optional[int] = None
    #: For ``"precondition_failed"`` (simulator only): whether the key has a live value.
    exists: Optional[bool] = None
    #: For a watch: whether the key changed (its values, possibly none if it was deleted, are
    #: then those of a get); ``False`` when the wait ended first, and ``context`` is the one to
    #: watch from next (``None`` for a key that still has no history). ``None`` for other ops.
    changed: Optional[bool] = None

    @property
    def found(self) -> bool:
        """Whether a get found at least one value."""
        return bool(self.values)

    @property
    def siblings(self) -> bool:
        """Whether a get found several concurrent values (siblings) to resolve."""
        return len(self.values) > 1

    @property
    def value(self) -> Optional[bytes]:
        """The single value of a get, ``None`` when absent; :class:`~ringkv.ConflictError` when
        there are siblings (read ``values`` and resolve them instead)."""
        if not self.values:
            return None
        if len(self.values) > 1:
            raise ConflictError(
                f"{key_text(self.bucket)!s}/{key_text(self.key)!s} has {len(self.values)} siblings: "
                "merge result.values and put the merge back with result.context",
                values=self.values,
                context=self.context,
            )
        return self.values[0]

    @property
    def latency_ms(self) -> Optional[int]:
        """Virtual time the request took (simulator only)."""
        if self.invoked_at is None or self.completed_at is None:
            return None
        return self.completed_at - self.invoked_at

    def raise_for_outcome(self) -> "Result":
        """Returns the result if it is ``ok``, else raises the exception the live client would."""
        if self.ok:
            return self
        message = self.error or f"{self.op} ended with outcome {self.outcome}"
        if self.outcome == "unavailable":
            raise QuorumError(message, quorum=self.quorum, needed=self.needed, answered=self.replicas)
        if self.outcome == "precondition_failed":
            raise PreconditionFailedError(message, context=self.context, exists=self.exists)
        if self.outcome in ("refused", "lost"):
            raise UnavailableError(message)
        if self.outcome == "failed":
            raise ServerError(message)
        raise RingkvError(message)

    def __repr__(self) -> str:
        name = f"{key_text(self.bucket)!s}/{key_text(self.key)!s}"
        parts = [f"{self.op} {name}", f"outcome={self.outcome!r}"]
        if self.node is not None:
            parts.append(f"node={self.node!r}")
        if self.changed is not None:
            parts.append(f"changed={self.changed!r}")
        if self.op in ("get", "watch") and self.ok and self.changed is not False:
            parts.append(f"values={self.values!r}")
        if self.expires_at is not None:
            parts.append(f"expires_at={self.expires_at}")
        if self.written is not None:
            parts.append(f"written={self.written!r}")
        if self.replicas:
            parts.append(f"replicas={self.replicas!r}")
        if self.fallbacks:
            parts.append(f"fallbacks={self.fallbacks!r}")
        if self.dot is not None:
            parts.append(f"dot={str(self.dot)!r}")
        if self.error:
            parts.append(f"error={self.error!r}")
        return "Result(" + ", ".join(parts) + ")"


@dataclass(frozen=True)
class MgetResult:
    """What :meth:`Client.mget <ringkv.Client.mget>` returns: each key's read, as a get of it
    would have answered.

    ``results[key]`` is the :class:`Result` of a key that was read (found or not: ``values`` is
    empty for an absent, deleted or expired key); ``errors[key]`` is the exception a get of that
    key would have raised (say a :class:`~ringkv.QuorumError`), for the keys whose read failed;
    ``unprocessed`` lists the keys not read because the answer passed its size limit (16 MiB of
    values): ask for them again. Every key asked is in exactly one of the three. Keys are
    ``bytes`` and in the order they were asked.

    ``mget[key]`` (``str`` or ``bytes``) is that key's result, raises its error, or raises
    ``KeyError`` for a key not read.
    """

    #: The bucket.
    bucket: bytes
    #: The keys read, with their results.
    results: Dict[bytes, Result] = field(default_factory=dict)
    #: The keys whose read failed, with the exception a get would have raised.
    errors: Dict[bytes, RingkvError] = field(default_factory=dict)
    #: The keys not read (the answer passed 16 MiB): read them again.
    unprocessed: List[bytes] = field(default_factory=list)
    #: The node that answered.
    node: Optional[str] = None

    @property
    def complete(self) -> bool:
        """Whether every key was read without error."""
        return not self.errors and not self.unprocessed

    def __getitem__(self, key: Union[str, bytes]) -> Result:
        name = _key_bytes(key)
        if name in self.results:
            return self.results[name]
        if name in self.errors:
            raise self.errors[name]
        state = "was not read (unprocessed)" if name in self.unprocessed else "was not asked for"
        raise KeyError(f"{key_text(name)!r} {state}")

    def __contains__(self, key: object) -> bool:
        """Whether the key was read (with or without a value)."""
        return isinstance(key, (str, bytes)) and _key_bytes(key) in self.results

    def __repr__(self) -> str:
        found = sum(1 for r in self.results.values() if r.values)
        return (
            f"MgetResult({key_text(self.bucket)!s}: {len(self.results)} read ({found} with values), "
            f"{len(self.errors)} failed, {len(self.unprocessed)} unprocessed)"
        )


@dataclass(frozen=True)
class KeyPage:
    """One page of a bucket's keys, from :meth:`Client.list_keys <ringkv.Client.list_keys>`.

    The keys are in listing order (by ring partition, not sorted). A page may be short, or
    even empty, and still not be the last: the listing is complete only when ``cursor`` is
    ``None``; otherwise pass ``cursor`` to the next call.
    """

    #: The bucket.
    bucket: bytes
    #: The page's keys.
    keys: List[bytes]
    #: Where the next page starts; ``None`` once the listing is complete.
    cursor: Optional[str]

    @property
    def complete(self) -> bool:
        """Whether this is the listing's last page."""
        return self.cursor is None


def _key_bytes(key: Union[str, bytes]) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"a key must be str or bytes, not {type(key).__name__}")
