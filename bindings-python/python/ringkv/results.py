"""What get, put and delete return, in the simulator and from a live cluster alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Union

from .errors import (
    ConflictError,
    PreconditionFailedError,
    QuorumError,
    RingkvError,
    ServerError,
    UnavailableError,
)
from .version import Context, Dot

__all__ = ["Result", "key_text"]


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

    #: ``"get"``, ``"put"`` or ``"delete"``.
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
    #: before replying), or ``None`` while the request is still running.
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
        if self.op == "get" and self.ok:
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
