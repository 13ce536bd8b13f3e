"""Ring: placement, preference lists, balance and movement."""

from __future__ import annotations

import hashlib
import struct

import pytest

import ringkv

EIGHT = {f"n{i}": 1 for i in range(1, 9)}


def test_the_issue_example() -> None:
    ring = ringkv.Ring(members={"n1": 1, "n2": 1, "n3": 2}, partitions=256, n=3, strategy="partitions")
    assert ring.ownership() == {"n1": 64, "n2": 64, "n3": 128}  # proportional to capacity
    assert ring.key_share() == pytest.approx({"n1": 0.25, "n2": 0.25, "n3": 0.5})
    assert ring.members == {"n1": 1, "n2": 1, "n3": 2}
    assert (ring.partitions, ring.n, ring.strategy, len(ring)) == (256, 3, "partitions", 3)
    replicas = ring.preference_list("alice", bucket="carts")
    assert sorted(replicas) == ["n1", "n2", "n3"]
    assert ring.preference_list("alice", bucket="carts", n=1) == replicas[:1]


def test_positions_are_md5_of_bucket_and_key() -> None:
    bucket, key = b"carts", b"alice"
    digest = hashlib.md5(struct.pack(">I", len(bucket)) + bucket + key).digest()
    assert ringkv.Ring.position("alice", "carts") == int.from_bytes(digest, "big")
    ring = ringkv.Ring(EIGHT, partitions=256)
    assert ring.partition_of("alice", "carts") == int.from_bytes(digest, "big") >> 120
    # The length prefix keeps bucket and key apart.
    assert ringkv.Ring.position("c", "ab") != ringkv.Ring.position("bc", "a")


def test_preference_lists_are_distinct_stable_prefixes() -> None:
    ring = ringkv.Ring(EIGHT, partitions=64, n=3)
    for i in range(200):
        key = f"user{i}"
        full = ring.preference_list(key, n=8)
        assert len(set(full)) == 8
        assert ring.preference_list(key) == full[:3]
        extended = ring.extended_preference_list(key)
        assert extended[:3] == full[:3] and sorted(extended) == sorted(EIGHT)
        assert ring.preference_list(key, n=3) == ring.partition_preference_list(ring.partition_of(key), 3)
        assert ring.partition_owners()[ring.partition_of(key)] == full[0]


def test_zones_spread_replicas() -> None:
    zones = {"a": "z1", "b": "z1", "c": "z2", "d": "z2", "e": "z3", "f": "z3"}
    ring = ringkv.Ring(dict.fromkeys(zones, 1), partitions=64, n=3, zones=zones)
    assert ring.zones == zones
    for i in range(100):
        replicas = ring.preference_list(f"k{i}")
        assert len({zones[r] for r in replicas}) == 3


def test_balance_partitions_against_tokens() -> None:
    partitions = ringkv.Ring(EIGHT, partitions=256, n=3)
    tokens = ringkv.Ring(EIGHT, partitions=256, n=3, strategy="tokens", tokens_per_capacity=16)
    assert tokens.strategy == "tokens" and tokens.tokens_per_capacity == 16
    assert partitions.tokens_per_capacity is None
    even = partitions.balance()
    assert even.max_ratio == pytest.approx(1.0) and even.stdev == pytest.approx(0.0)
    uneven = tokens.balance(n=1)
    assert uneven.max_ratio > 1.1 and uneven.stdev > 0.05
    for ring in (partitions, tokens):
        assert sum(ring.key_share().values()) == pytest.approx(1.0)
        assert sum(ring.replica_load().values()) == pytest.approx(1.0)
        assert sum(ring.ownership().values()) == 256
    weighted = ringkv.Ring({"small": 1, "big": 3}, partitions=256, n=1).balance()
    assert weighted.fair == {"small": 0.25, "big": 0.75}
    assert weighted.ratio == pytest.approx({"small": 1.0, "big": 1.0})


def test_a_join_moves_the_newcomers_share_and_no_more() -> None:
    ring = ringkv.Ring(EIGHT, partitions=256, n=3)
    bigger = ring.add("n9")
    assert bigger.members["n9"] == 1 and bigger.ownership()["n9"] in (28, 29)
    # Only the partitions the newcomer takes change owner...
    assert ring.partitions_moved_by(bigger) == bigger.ownership()["n9"]
    assert ring.owners_moved_by(bigger) == pytest.approx(bigger.ownership()["n9"] / 256)
    # ...and about n times that share of keys sees a replica change.
    assert 0.1 < ring.moved_by(bigger) < 3 * 29 / 256 + 0.01
    assert ring.moved_by(ring) == 0.0
    assert bigger.remove("n9").ownership() == ring.ownership()
    # Building from scratch instead of from the old assignment moves far more.
    scratch = ringkv.Ring({**EIGHT, "n9": 1}, partitions=256, n=3)
    assert ring.moved_by(scratch) > ring.moved_by(bigger)


def test_rings_are_deterministic_values() -> None:
    assert ringkv.Ring(EIGHT) == ringkv.Ring(dict(reversed(list(EIGHT.items()))))
    assert ringkv.Ring(EIGHT) != ringkv.Ring(EIGHT, strategy="tokens")
    assert ringkv.Ring(EIGHT).with_members(EIGHT) == ringkv.Ring(EIGHT)
    assert ringkv.Ring(["a", "b"]).members == {"a": 1, "b": 1}
    assert "partitions=256" in repr(ringkv.Ring(EIGHT))


def test_the_simulators_ring_is_the_same_ring() -> None:
    sim = ringkv.Sim(nodes=5, n=3, seed=1)
    ring = ringkv.Ring([f"n{i}" for i in range(1, 6)], partitions=64, n=3)
    assert sim.ring == ring
    for key in ("cart", "alice", "bob"):
        assert sim.preference_list(key) == ring.preference_list(key)
        assert sorted(sim.put(key, b"v", w="all").replicas) == sorted(ring.preference_list(key))


def test_member_names_and_zones_are_trimmed() -> None:
    # The core parses member specs for both bindings: names and zones are trimmed alike.
    ring = ringkv.Ring(members={" n1 ": 1, "n2": 1}, zones={" n1 ": " z1 "}, partitions=8, n=2)
    assert sorted(ring.members) == ["n1", "n2"]
    assert ring.zones["n1"] == "z1"

