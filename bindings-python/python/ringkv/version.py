"""Versions: dots, vector clocks, and the opaque context of a key.

Every write is named by a :class:`Dot` ``(actor, counter)``: the node incarnation that
coordinated it and that actor's counter. An object's :class:`VectorClock` covers every write it
has seen. A get returns a :class:`Context` (the clock); a put with it replaces exactly the
siblings it has seen. Two values are *siblings* when neither write had seen the other: their
clocks compare :attr:`Causality.CONCURRENT`.

>>> from ringkv import VectorClock, Causality
>>> alice = VectorClock({"n1.0.0": 2})
>>> bob = VectorClock({"n1.0.0": 1, "n3.0.0": 1})
>>> alice.compare(bob)
<Causality.CONCURRENT: 'concurrent'>
>>> merged = alice.merge(bob)
>>> merged
VectorClock({'n1.0.0': 2, 'n3.0.0': 1})
>>> merged > alice and merged > bob
True

The comparisons are the core's (``ringkv-core``'s ``VersionVector::compare``); ``<`` is
"happened before", and two concurrent clocks are neither ``<``, ``>`` nor ``==``.
"""

from __future__ import annotations

import enum
from typing import Dict, ItemsView, Iterator, Mapping, NamedTuple, Optional, Tuple, Union

from . import _native
from .errors import ContextError, InvalidRequestError

__all__ = ["Causality", "Dot", "VectorClock", "Context"]

_MAX_COUNTER = 2**64 - 1


class Causality(str, enum.Enum):
    """How two histories relate (compare equal to their names, e.g. ``"concurrent"``)."""

    #: The first is strictly older: the second has seen all of it and more.
    BEFORE = "before"
    #: The first has seen all of the second and more.
    AFTER = "after"
    #: Both have seen exactly the same writes.
    EQUAL = "equal"
    #: Each has seen a write the other has not: their values are siblings.
    CONCURRENT = "concurrent"

    def __str__(self) -> str:
        return self.value


class Dot(NamedTuple):
    """The name of one write: ``(actor, counter)``, shown as ``actor:counter``.

    >>> from ringkv import Dot
    >>> str(Dot("n1.0.0", 3))
    'n1.0.0:3'
    """

    actor: str
    counter: int

    def __str__(self) -> str:
        return f"{self.actor}:{self.counter}"


DotLike = Union[Dot, Tuple[str, int]]


def _dot(dot: DotLike) -> Dot:
    if isinstance(dot, tuple) and len(dot) == 2 and isinstance(dot[0], str):
        counter = dot[1]
        if isinstance(counter, int) and not isinstance(counter, bool) and 0 <= counter <= _MAX_COUNTER:
            return Dot(dot[0], counter)
    raise TypeError(f"expected a Dot or an (actor, counter) pair, not {dot!r}")


class VectorClock:
    """A version vector: for each actor, the highest counter seen (immutable).

    >>> from ringkv import VectorClock
    >>> a = VectorClock({"n1.0.0": 1})
    >>> b = a.increment("n2.0.0")
    >>> b
    VectorClock({'n1.0.0': 1, 'n2.0.0': 1})
    >>> a < b, b.covers(("n2.0.0", 1)), b["n3.0.0"]
    (True, True, 0)
    """

    __slots__ = ("_native",)

    def __init__(self, entries: Optional[Mapping[str, int]] = None) -> None:
        if entries is None:
            entries = {}
        if not isinstance(entries, Mapping):
            raise TypeError(
                f"a VectorClock is made from a mapping of actor to counter, not {type(entries).__name__}"
            )
        clean: Dict[str, int] = {}
        for actor, counter in entries.items():
            if not isinstance(actor, str):
                raise TypeError(f"an actor is a str, not {type(actor).__name__}")
            if not isinstance(counter, int) or isinstance(counter, bool):
                raise TypeError(f"the counter of {actor!r} is an int, not {type(counter).__name__}")
            if not 0 <= counter <= _MAX_COUNTER:
                raise InvalidRequestError(f"the counter of {actor!r} is {counter}: counters are 0..2**64-1")
            clean[actor] = counter
        self._native = _native.VersionVector(clean)

    @classmethod
    def _wrap(cls, native: "_native.VersionVector") -> "VectorClock":
        clock = cls.__new__(cls)
        clock._native = native
        return clock

    @property
    def entries(self) -> Dict[str, int]:
        """``{actor: counter}`` in actor order."""
        return dict(self._native.entries())

    def items(self) -> ItemsView[str, int]:
        """``(actor, counter)`` pairs in actor order."""
        return self.entries.items()

    def __getitem__(self, actor: str) -> int:
        if not isinstance(actor, str):
            raise TypeError(f"an actor is a str, not {type(actor).__name__}")
        return self._native.get(actor)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self._native)

    def compare(self, other: "VectorClock") -> Causality:
        """How this clock relates to ``other``."""
        return Causality(self._native.compare(_clock(other)._native))

    def descends(self, other: "VectorClock") -> bool:
        """Whether this clock has seen everything ``other`` has (``self >= other``)."""
        return self._native.descends(_clock(other)._native)

    def concurrent_with(self, other: "VectorClock") -> bool:
        """Whether each has seen a write the other has not."""
        return self.compare(other) is Causality.CONCURRENT

    def covers(self, dot: DotLike) -> bool:
        """Whether the write named ``dot`` has been seen."""
        d = _dot(dot)
        return self._native.covers(d.actor, d.counter)

    def merge(self, other: "VectorClock") -> "VectorClock":
        """The pointwise maximum: a clock that has seen what either has."""
        return VectorClock._wrap(self._native.merge(_clock(other)._native))

    def increment(self, actor: str) -> "VectorClock":
        """This clock with ``actor``'s counter one higher (what a write through ``actor`` does)."""
        entries = self.entries
        entries[actor] = entries.get(actor, 0) + 1
        return VectorClock(entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self.compare(other) is Causality.EQUAL

    def __hash__(self) -> int:
        return hash(tuple(self._native.entries()))

    def __le__(self, other: "VectorClock") -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return other.descends(self)

    def __lt__(self, other: "VectorClock") -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self.compare(other) is Causality.BEFORE

    def __ge__(self, other: "VectorClock") -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self.descends(other)

    def __gt__(self, other: "VectorClock") -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self.compare(other) is Causality.AFTER

    def __repr__(self) -> str:
        return f"VectorClock({self.entries!r})"


def _clock(value: object) -> VectorClock:
    if isinstance(value, VectorClock):
        return value
    if isinstance(value, Context):
        return value.clock
    raise TypeError(f"expected a VectorClock, not {type(value).__name__}")


class Context:
    """The causal context of a key: what a get (or put) returns, to pass to the next put.

    It is opaque on the wire (``to_base64()``, the ``X-Ringkv-Context`` header) but not here:
    ``clock`` shows which writes it has seen, and contexts compare causally, which is how a
    notebook can tell why two values are siblings.

    A context remembers the bucket and key it was read from, and ringkv refuses to use it for
    another key (:class:`~ringkv.ContextError`): it would supersede versions that key never had.

    >>> from ringkv import Context, VectorClock
    >>> ctx = Context(VectorClock({"n1.0.0": 2}))
    >>> Context.from_base64(ctx.to_base64()) == ctx
    True
    >>> ctx.covers(("n1.0.0", 1))
    True
    """

    __slots__ = ("_native", "bucket", "key")

    def __init__(
        self,
        clock: Optional[Union[VectorClock, Mapping[str, int]]] = None,
        *,
        bucket: Optional[bytes] = None,
        key: Optional[bytes] = None,
    ) -> None:
        if clock is not None and not isinstance(clock, VectorClock):
            clock = VectorClock(clock)
        self._native = _native.Context(clock._native if clock is not None else None)
        #: The bucket the context was read from (``None``: unknown, accepted for any key).
        self.bucket: Optional[bytes] = bucket
        #: The key the context was read from (``None``: unknown, accepted for any key).
        self.key: Optional[bytes] = key

    @classmethod
    def _wrap(
        cls, native: "_native.Context", bucket: Optional[bytes] = None, key: Optional[bytes] = None
    ) -> "Context":
        context = cls.__new__(cls)
        context._native = native
        context.bucket = bucket
        context.key = key
        return context

    @classmethod
    def empty(cls) -> "Context":
        """The context of a client that has read nothing: a put with it supersedes nothing."""
        return cls()

    @classmethod
    def from_base64(
        cls, text: str, *, bucket: Union[str, bytes, None] = None, key: Union[str, bytes, None] = None
    ) -> "Context":
        """Decodes the HTTP form; raises :class:`~ringkv.ContextError` when it is not a context."""
        if not isinstance(text, str):
            raise TypeError(f"a base64 context is a str, not {type(text).__name__}")
        if not text.strip():
            raise ContextError("invalid context: empty (use Context.empty() for no context)")
        return cls._wrap(
            _native.Context.from_base64(text),
            _optional_bytes("bucket", bucket),
            _optional_bytes("key", key),
        )

    def to_base64(self) -> str:
        """The HTTP form: unpadded URL-safe base64 with a checksum."""
        return self._native.to_base64()

    def for_key(self, key: Union[str, bytes], bucket: Union[str, bytes] = "default") -> "Context":
        """The same context, bound to another key (only when you know its history applies)."""
        return Context._wrap(self._native, _optional_bytes("bucket", bucket), _optional_bytes("key", key))

    @property
    def clock(self) -> VectorClock:
        """The writes this context has seen."""
        return VectorClock._wrap(self._native.clock)

    @property
    def is_empty(self) -> bool:
        """Whether the context has seen nothing."""
        return self._native.is_empty

    def compare(self, other: Union["Context", VectorClock]) -> Causality:
        """How this context's history relates to ``other``'s."""
        return self.clock.compare(_clock(other))

    def descends(self, other: Union["Context", VectorClock]) -> bool:
        """Whether this context has seen everything ``other`` has."""
        return self.clock.descends(_clock(other))

    def concurrent_with(self, other: Union["Context", VectorClock]) -> bool:
        """Whether each has seen a write the other has not."""
        return self.compare(other) is Causality.CONCURRENT

    def covers(self, dot: DotLike) -> bool:
        """Whether the write named ``dot`` has been seen (a put with this context supersedes it)."""
        return self.clock.covers(dot)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        return self.compare(other) is Causality.EQUAL

    def __hash__(self) -> int:
        return hash(self.clock)

    def __le__(self, other: "Context") -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        return self.clock <= other.clock

    def __lt__(self, other: "Context") -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        return self.clock < other.clock

    def __ge__(self, other: "Context") -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        return self.clock >= other.clock

    def __gt__(self, other: "Context") -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        return self.clock > other.clock

    def __str__(self) -> str:
        return self.to_base64()

    def __repr__(self) -> str:
        where = ""
        if self.key is not None:
            where = f", key={_show(self.key)!r}"
            if self.bucket is not None:
                where = f", bucket={_show(self.bucket)!r}" + where
        return f"Context({self.clock.entries!r}{where})"


def _show(name: bytes) -> Union[str, bytes]:
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        return name


def _optional_bytes(what: str, value: Union[str, bytes, None]) -> Optional[bytes]:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def check_context(
    context: Union[Context, str, None], bucket: bytes, key: bytes, what: str = "context"
) -> Optional[Context]:
    """The context to send with a write to ``bucket``/``key``: refuses one read from another key.
    ``what`` names the argument in messages (``context`` or ``if_match``)."""
    if context is None:
        return None
    if isinstance(context, str):
        return Context.from_base64(context, bucket=bucket, key=key)
    if not isinstance(context, Context):
        raise TypeError(
            f"{what} must be a Context (from a get or put), a base64 str or None, not {type(context).__name__}"
        )
    if context.key is not None and (context.key != key or (context.bucket is not None and context.bucket != bucket)):
        origin = f"{_show(context.bucket or b'?')!s}/{_show(context.key)!s}"
        target = f"{_show(bucket)!s}/{_show(key)!s}"
        raise ContextError(
            f"{'this context' if what == 'context' else f'the {what} context'} was read from {origin}, "
            f"not {target}: a context only applies to the key it "
            "came from (use context.for_key(...) if you really mean to move it)"
        )
    return context


#: Why a write with both conditions is refused (as the HTTP API refuses both headers).
BOTH_CONDITIONS = (
    "if_none_match and if_match together: give one condition (if_none_match creates the key only "
    "if it has no value, if_match writes only over the context given)"
)


def check_condition(
    if_none_match: object, if_match: Union[Context, str, None], bucket: bytes, key: bytes
) -> Optional[Context]:
    """Checks a write's condition: ``if_none_match`` a bool, ``if_match`` a non-empty context of
    ``bucket``/``key``, not both. Returns the ``if_match`` context."""
    if not isinstance(if_none_match, bool):
        raise TypeError(f"if_none_match must be a bool, not {type(if_none_match).__name__}")
    matched = check_context(if_match, bucket, key, "if_match")
    if if_none_match and matched is not None:
        raise InvalidRequestError(BOTH_CONDITIONS)
    if matched is not None and matched.is_empty:
        raise InvalidRequestError(
            "if_match is an empty context: pass the context of a read of the key "
            "(or if_none_match=True to create it only if it has no value)"
        )
    return matched
