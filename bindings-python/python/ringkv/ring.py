"""Placement: which nodes hold the replicas of a key.

A key is hashed (MD5 of bucket and key) to a 128-bit position. With the ``"partitions"``
strategy (Dynamo's strategy 3, ringkv's default) the ring is cut into Q equal partitions that
nodes own in proportion to their capacity; with ``"tokens"`` every node is hashed to random
tokens, as in the original Dynamo design. A key's *preference list* walks clockwise from its
position and collects ``n`` distinct nodes.

>>> import ringkv
>>> ring = ringkv.Ring(members={"n1": 1, "n2": 1, "n3": 2}, partitions=256, n=3)
>>> ring.ownership()
{'n1': 64, 'n2': 64, 'n3': 128}
>>> sorted(ring.preference_list("alice", bucket="carts"))
['n1', 'n2', 'n3']
>>> bigger = ring.add("n4", capacity=2)
>>> bigger.ownership()
{'n1': 43, 'n2': 43, 'n3': 85, 'n4': 85}
>>> round(ring.moved_by(bigger, n=1), 3)   # the new node's share, and not a key more
0.332
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

from . import _native
from ._args import Name, integer, name_bytes, u32
from .errors import InvalidRequestError

__all__ = ["Ring", "Balance"]

DEFAULT_BUCKET = "default"

Members = Union[Mapping[str, int], Iterable[str]]


@dataclass(frozen=True)
class Balance:
    """How evenly a ring spreads load, against each member's fair (capacity-weighted) share.

    ``ratio[name]`` is the member's share of all ``n`` replicas of the key space divided by its
    share of the total capacity: 1.0 everywhere is a perfect balance. ``max_ratio`` is the
    busiest member's (the one that fills up first), ``stdev`` the spread of the ratios.
    """

    #: The replica count the loads are for.
    n: int
    #: Each member's share of all ``n`` replicas of the key space.
    load: Dict[str, float]
    #: Each member's fair share: its capacity over the total.
    fair: Dict[str, float]
    #: ``load / fair`` per member.
    ratio: Dict[str, float]
    #: The largest ratio (1.0 when perfectly balanced).
    max_ratio: float
    #: The smallest ratio.
    min_ratio: float
    #: Standard deviation of the ratios (0.0 when perfectly balanced).
    stdev: float


def _member_specs(
    members: Members, zones: Optional[Mapping[str, str]]
) -> List[Tuple[str, int, Optional[str]]]:
    if isinstance(members, (str, bytes)):
        raise TypeError("members is a mapping of name to capacity, or a list of names, not a single name")
    if isinstance(members, Mapping):
        pairs = list(members.items())
    else:
        try:
            pairs = [(name, 1) for name in members]
        except TypeError:
            raise TypeError(
                f"members is a mapping of name to capacity, or a list of names, not {type(members).__name__}"
            ) from None
    if zones is not None and not isinstance(zones, Mapping):
        raise TypeError(f"zones is a mapping of name to zone, not {type(zones).__name__}")
    specs = []
    seen = set()
    for name, capacity in pairs:
        if not isinstance(name, str):
            raise TypeError(f"a member name is a str, not {type(name).__name__}")
        if not name:
            raise InvalidRequestError("a member name is empty")
        if name in seen:
            raise InvalidRequestError(f"member {name} appears more than once")
        seen.add(name)
        capacity = u32(f"the capacity of {name}", capacity, 1)
        zone = zones.get(name) if zones is not None else None
        if zone is not None and not isinstance(zone, str):
            raise TypeError(f"the zone of {name} is a str, not {type(zone).__name__}")
        specs.append((name, capacity, zone))
    if not specs:
        raise InvalidRequestError("a ring needs at least one member")
    if zones is not None:
        unknown = sorted(set(zones) - seen)
        if unknown:
            raise InvalidRequestError(f"zones names nodes that are not members: {', '.join(map(str, unknown))}")
    return specs


class Ring:
    """The placement of the key space on a membership (immutable: changes make new rings).

    Args:
        members: ``{name: capacity}`` (a bigger capacity owns proportionally more), or a list
            of names (capacity 1 each).
        partitions: Q, a power of two (at least the number of members for ``"partitions"``).
        n: the replica count placement plans for (preference lists default to it), 1..16.
        strategy: ``"partitions"`` or ``"tokens"``.
        tokens_per_capacity: tokens per unit of capacity for ``"tokens"``.
        zones: optional ``{name: zone}``; replicas go to distinct zones where possible.
    """

    __slots__ = ("_ring",)

    def __init__(
        self,
        members: Members,
        *,
        partitions: int = 256,
        n: int = 3,
        strategy: str = "partitions",
        tokens_per_capacity: int = 16,
        zones: Optional[Mapping[str, str]] = None,
    ) -> None:
        if not isinstance(strategy, str):
            raise TypeError(f"strategy must be a str, not {type(strategy).__name__}")
        self._ring = _native.Ring(
            _member_specs(members, zones),
            partitions=u32("partitions", partitions, 1),
            target_n=integer("n", n, 1, 2**32),
            strategy=strategy,
            tokens_per_capacity=u32("tokens_per_capacity", tokens_per_capacity, 1),
        )

    @classmethod
    def _wrap(cls, native: "_native.Ring") -> "Ring":
        ring = cls.__new__(cls)
        ring._ring = native
        return ring

    # ----- the configuration -----

    @property
    def members(self) -> Dict[str, int]:
        """``{name: capacity}``, sorted by name."""
        return {name: capacity for name, capacity, _ in self._ring.members()}

    @property
    def zones(self) -> Dict[str, Optional[str]]:
        """``{name: zone}`` (``None`` for a member in no zone)."""
        return {name: zone for name, _, zone in self._ring.members()}

    @property
    def partitions(self) -> int:
        """Q, the number of partitions."""
        return self._ring.partitions

    @property
    def n(self) -> int:
        """The replica count placement plans for."""
        return self._ring.target_n

    @property
    def strategy(self) -> str:
        """``"partitions"`` or ``"tokens"``."""
        return self._ring.strategy

    @property
    def tokens_per_capacity(self) -> Optional[int]:
        """Tokens per unit of capacity (``"tokens"`` only)."""
        return self._ring.tokens_per_capacity

    def __len__(self) -> int:
        return len(self._ring.members())

    # ----- keys -----

    @staticmethod
    def position(key: Name, bucket: Name = DEFAULT_BUCKET) -> int:
        """The key's 128-bit position on the ring."""
        return _native.Ring.position(name_bytes("bucket", bucket), name_bytes("key", key))

    def partition_of(self, key: Name, bucket: Name = DEFAULT_BUCKET) -> int:
        """The partition holding the key."""
        return self._ring.partition_of(name_bytes("bucket", bucket), name_bytes("key", key))

    def preference_list(self, key: Name, bucket: Name = DEFAULT_BUCKET, n: Optional[int] = None) -> List[str]:
        """The ``n`` (default: the ring's) distinct nodes that hold the key, owner first."""
        return self._ring.preference_list(name_bytes("bucket", bucket), name_bytes("key", key), self._n(n))

    def extended_preference_list(
        self, key: Name, bucket: Name = DEFAULT_BUCKET, n: Optional[int] = None
    ) -> List[str]:
        """The preference list followed by every other member: the fallbacks a sloppy quorum
        writes to when owners are unreachable."""
        return self._ring.extended_preference_list(
            name_bytes("bucket", bucket), name_bytes("key", key), self._n(n)
        )

    def partition_owners(self) -> List[str]:
        """The owner of each partition, in ring order (for drawing the ring)."""
        return self._ring.partition_owners()

    def partition_preference_list(self, partition: int, n: Optional[int] = None) -> List[str]:
        """The preference list of a partition."""
        partition = integer("partition", partition, 0, self.partitions - 1)
        return self._ring.partition_preference_list(partition, self._n(n))

    def _n(self, n: Optional[int]) -> int:
        return self.n if n is None else integer("n", n, 1, 2**32)

    # ----- balance -----

    def ownership(self) -> Dict[str, int]:
        """How many partitions each member owns (is first replica for)."""
        return self._ring.partition_counts()

    def key_share(self) -> Dict[str, float]:
        """The fraction of the key space each member is first replica for (sums to 1)."""
        return self._ring.key_share()

    def replica_load(self, n: Optional[int] = None) -> Dict[str, float]:
        """Each member's share of all ``n`` replicas of the key space (sums to 1): how the
        cluster's storage is spread."""
        return self._ring.replica_load(self._n(n))

    def balance(self, n: Optional[int] = None) -> Balance:
        """Load against fair share, per member and summarized (see :class:`Balance`).

        >>> import ringkv
        >>> ringkv.Ring({"a": 1, "b": 1, "c": 1, "d": 1}, partitions=64, n=1).balance().max_ratio
        1.0
        """
        n = self._n(n)
        load = self.replica_load(n)
        members = self.members
        total = sum(members.values())
        fair = {name: capacity / total for name, capacity in members.items()}
        ratio = {name: load[name] / fair[name] for name in members}
        values = list(ratio.values())
        mean = sum(values) / len(values)
        stdev = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        return Balance(
            n=n,
            load=load,
            fair=fair,
            ratio=ratio,
            max_ratio=max(values),
            min_ratio=min(values),
            stdev=stdev,
        )

    # ----- change -----

    def with_members(self, members: Members, zones: Optional[Mapping[str, str]] = None) -> "Ring":
        """The ring for a new membership, claimed from this one so that as few partitions as
        possible move (the ``"tokens"`` strategy rebuilds: only arcs next to new or departed
        tokens move)."""
        return Ring._wrap(self._ring.with_members(_member_specs(members, zones)))

    def add(self, name: str, capacity: int = 1, zone: Optional[str] = None) -> "Ring":
        """This ring with one more member."""
        if not isinstance(name, str):
            raise TypeError(f"a member name is a str, not {type(name).__name__}")
        if name in self.members:
            raise InvalidRequestError(f"{name} is already a member")
        members = dict(self.members)
        members[name] = capacity
        zones = {k: v for k, v in self.zones.items() if v is not None}
        if zone is not None:
            zones[name] = zone
        return self.with_members(members, zones or None)

    def remove(self, name: str) -> "Ring":
        """This ring without ``name``."""
        if name not in self.members:
            raise InvalidRequestError(f"{name} is not a member")
        members = {k: v for k, v in self.members.items() if k != name}
        zones = {k: v for k, v in self.zones.items() if v is not None and k != name}
        return self.with_members(members, zones or None)

    def moved_by(self, other: "Ring", n: Optional[int] = None) -> float:
        """The fraction of the key space whose set of ``n`` replicas differs in ``other``
        (exact, over the arcs of both rings): the share of data a change moves."""
        return self._ring.moved_fraction(_ring(other)._ring, self._n(n))

    def owners_moved_by(self, other: "Ring") -> float:
        """The fraction of the key space whose first replica differs in ``other``."""
        return self._ring.moved_fraction(_ring(other)._ring, 1)

    def partitions_moved_by(self, other: "Ring") -> int:
        """How many partitions change owner in ``other``."""
        return self._ring.partitions_moved(_ring(other)._ring)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ring):
            return NotImplemented
        return self._ring.same_as(other._ring)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        extra = f", tokens_per_capacity={self.tokens_per_capacity}" if self.strategy == "tokens" else ""
        return (
            f"Ring(members={self.members!r}, partitions={self.partitions}, n={self.n}, "
            f"strategy={self.strategy!r}{extra})"
        )


def _ring(value: object) -> Ring:
    if not isinstance(value, Ring):
        raise TypeError(f"expected a Ring, not {type(value).__name__}")
    return value
