"""Expiry (ttl) and conditional writes (if_none_match, if_match) in the simulator: sessions that
expire on the virtual clock, sliding expiry, and conditions under a partition."""

from __future__ import annotations

import datetime
import random
from typing import List

import pytest

import ringkv
from conftest import seeds


def split_key(sim: ringkv.Sim, side_a: List[str], prefix: str) -> str:
    """A key with a replica on each side of the partition: both sides can write it."""
    for i in range(1000):
        key = f"{prefix}:{i}"
        owners = sim.preference_list(key)
        if any(o in side_a for o in owners) and any(o not in side_a for o in owners):
            return key
    raise AssertionError("no key straddles the partition")


def test_a_session_expires_and_a_put_with_the_context_supersedes_it(seed: int) -> None:
    sim = ringkv.Sim(nodes=5, seed=seed)
    created = sim.put("session:42", b'{"user": 7}', ttl=30, if_none_match=True, node="n1")
    assert created.ok, created
    alive = sim.get("session:42", node="n2")
    assert alive.values == [b'{"user": 7}']
    # The coordinator fixed the expiry at its clock (virtual ms): 30 s after it took the put.
    assert created.invoked_at + 30_000 <= alive.expires_at <= created.completed_at + 30_000
    assert all(s.expires_at == alive.expires_at for r in sim.replicas("session:42") for s in r.siblings)

    sim.run(ms=alive.expires_at - sim.now - 100)
    assert sim.get("session:42", node="n3").values == [b'{"user": 7}']  # 100 ms to go
    sim.run(ms=alive.expires_at - sim.now)
    gone = sim.get("session:42", node="n3")
    assert gone.ok and gone.values == [] and not gone.found and gone.expires_at is None
    # Like a deleted key, an expired one keeps its history: the next write supersedes it.
    assert gone.context is not None and not gone.context.is_empty and gone.context >= created.context
    again = sim.put("session:42", b'{"user": 8}', context=gone.context, if_none_match=True, node="n3")
    assert again.ok, again  # if_none_match passes: an expired value is no value
    g = sim.get("session:42", node="n4")
    assert g.values == [b'{"user": 8}'] and g.expires_at is None and not g.siblings
    for replica in sim.replicas("session:42"):
        assert [s.value for s in replica.siblings] == [b'{"user": 8}'], replica  # replaced, not beside it
    verdict = sim.check()
    assert verdict.ok, verdict.summary()
    assert verdict.expired == 0 and verdict.expired_reads == [] and verdict.superseded >= 1


def test_an_expired_value_left_alone_is_counted_as_expired(seed: int) -> None:
    sim = ringkv.Sim(nodes=3, seed=seed)
    sim.put("a", b"short", ttl=datetime.timedelta(seconds=2))
    sim.put("b", b"forever")
    sim.run(ms=3000)
    assert sim.get("a").values == [] and sim.get("b").values == [b"forever"]
    verdict = sim.check()
    assert verdict.ok, verdict.summary()
    assert verdict.expired == 1 and verdict.present == 1 and "1 expired" in verdict.summary()
    entries = [h for h in sim.history if h["op"] == "put"]
    assert [h["ttl_ms"] for h in entries] == [2000, None]


def test_sliding_expiry(seed: int) -> None:
    """Each access writes the session back with the read's context and a fresh ttl."""
    sim = ringkv.Sim(nodes=5, seed=seed)
    ttl = "10s"
    sim.put("session:1", b"cart=milk", ttl=ttl)
    for _ in range(5):  # a visit every 8 s, for 40 s: far past the first expiry
        sim.run(ms=8000)
        g = sim.get("session:1")
        assert g.values == [b"cart=milk"], g
        refreshed = sim.put("session:1", g.values[0], context=g.context, ttl=ttl)
        assert refreshed.ok
        assert sim.get("session:1").expires_at >= refreshed.invoked_at + 10_000
    sim.run(ms=9000)
    assert sim.get("session:1").values == [b"cart=milk"]
    sim.run(ms=2000)  # 11 s without a visit
    assert sim.get("session:1").values == []
    verdict = sim.check()
    assert verdict.ok and verdict.expired == 1, verdict.summary()


def test_a_put_without_ttl_over_an_expiring_value_makes_it_permanent(seed: int) -> None:
    sim = ringkv.Sim(nodes=3, seed=seed)
    p = sim.put("k", b"temporary", ttl=5)
    sim.put("k", b"kept", context=p.context)
    sim.run(ms=6000)
    assert sim.get("k").values == [b"kept"]


def test_if_none_match_creates_once(seed: int) -> None:
    sim = ringkv.Sim(nodes=5, seed=seed)
    first = sim.put("users:alice", b"1", if_none_match=True)
    assert first.ok and first.exists is None
    second = sim.put("users:alice", b"2", if_none_match=True, node="n3")
    assert not second.ok and second.outcome == "precondition_failed"
    assert second.exists is True and second.context == first.context and second.dot is None
    assert "precondition failed: the key has a value" in second.error
    with pytest.raises(ringkv.PreconditionFailedError) as failed:
        second.raise_for_outcome()
    assert failed.value.context == first.context and failed.value.exists is True
    assert isinstance(failed.value, ringkv.RingkvError)
    assert sim.get("users:alice").values == [b"1"]  # nothing was written
    # Deleted, the key has no value again: a create passes.
    sim.delete("users:alice", context=first.context)
    assert sim.put("users:alice", b"3", if_none_match=True).ok
    assert sim.get("users:alice").values == [b"3"]
    assert sim.check().ok


def test_if_match_with_a_stale_context_fails_with_the_current_context(seed: int) -> None:
    sim = ringkv.Sim(nodes=5, seed=seed)
    v1 = sim.put("doc", b"v1")
    reader_a = sim.get("doc", node="n2")
    reader_b = sim.get("doc", node="n4")
    # A writes first, with the context it read: it passes.
    a = sim.put("doc", b"v2 by a", if_match=reader_a.context, node="n2")
    assert a.ok, a
    # B's context is stale now: nothing is written, and B learns the current context.
    b = sim.put("doc", b"v2 by b", if_match=reader_b.context, node="n4")
    assert b.outcome == "precondition_failed" and b.exists is True
    assert b.context == a.context and b.context > reader_b.context
    with pytest.raises(ringkv.PreconditionFailedError) as failed:
        b.raise_for_outcome()
    assert failed.value.context == a.context
    assert sim.get("doc").values == [b"v2 by a"]
    # Retrying with the current context passes, and replaces A's value (no sibling).
    retried = sim.put("doc", b"v3 by b", if_match=failed.value.context, node="n4")
    assert retried.ok and sim.get("doc", r="all").values == [b"v3 by b"]
    # A base64 context is accepted too, as from a web form.
    stale = sim.put("doc", b"x", if_match=v1.context.to_base64())
    assert stale.outcome == "precondition_failed"
    # On an absent key, if_match fails with no context to offer.
    absent = sim.put("never", b"x", if_match=ringkv.Context({"n1.0.0": 1}))
    assert absent.outcome == "precondition_failed" and absent.exists is False and absent.context is None
    assert sim.check().ok


def test_conditional_deletes(seed: int) -> None:
    sim = ringkv.Sim(nodes=5, seed=seed)
    p = sim.put("session:7", b"x", ttl="1h")
    newer = sim.put("session:7", b"y", context=p.context, ttl="1h")
    stale = sim.delete("session:7", if_match=p.context)
    assert stale.outcome == "precondition_failed" and stale.context == newer.context
    assert sim.get("session:7").values == [b"y"]
    # The matched context is the delete's context: no read first.
    before = len(sim.history)
    deleted = sim.delete("session:7", if_match=newer.context)
    assert deleted.ok and len(sim.history) == before + 1
    assert sim.get("session:7").values == []
    assert sim.check().ok


def test_if_none_match_racing_during_a_partition_makes_siblings(seed: int) -> None:
    """Both sides of a partition create the same key: each check reads its own side only, so
    both pass (best effort, as in Riak) and the values become siblings. Nothing is lost, and
    once healed the condition holds again."""
    sim = ringkv.Sim(nodes=5, n=3, r=2, w=2, seed=seed)
    side_a, side_b = ["n1", "n2"], ["n3", "n4", "n5"]
    key = split_key(sim, side_a, "users")
    sim.partition(side_a, side_b)
    sim.run(ms=5000)  # the failure detectors notice the cut
    phone = sim.put(key, b"alice@phone", if_none_match=True, node="n1")
    laptop = sim.put(key, b"alice@laptop", if_none_match=True, node="n3")
    assert phone.ok and laptop.ok, (phone, laptop)
    assert phone.context.compare(laptop.context) is ringkv.Causality.CONCURRENT
    sim.heal()
    sim.run(ms=3000)
    g = sim.get(key, node="n5")
    assert sorted(g.values) == [b"alice@laptop", b"alice@phone"]
    late = sim.put(key, b"alice@tablet", if_none_match=True, node="n2")
    assert late.outcome == "precondition_failed" and late.context == g.context
    merged = sim.put(key, b"alice@phone", if_match=g.context, node="n2")
    assert merged.ok and sim.get(key, node="n4", r="all").values == [b"alice@phone"]
    verdict = sim.check()
    assert verdict.ok, verdict.summary()


def test_expiry_with_skewed_clocks_is_judged_with_the_bound(seed: int) -> None:
    sim = ringkv.Sim(nodes=5, seed=seed, max_clock_skew_ms=300)
    for i in range(10):
        sim.put(f"s{i}", b"v", ttl="2s", node=f"n{i % 5 + 1}")
    for step in range(40):
        sim.run(ms=100)
        sim.get(f"s{step % 10}", node=f"n{step % 5 + 1}")
    verdict = sim.check()
    assert verdict.ok and verdict.expired_reads == [], verdict.summary()
    assert verdict.expired == 10


@pytest.mark.parametrize("campaign_seed", seeds(3))
def test_session_campaigns_pass_the_checker(campaign_seed: int) -> None:
    """Random session traffic (creates, sliding refreshes, conditional saves, logouts) under
    partitions and crashes; the checker finds no lost write and no read of an expired value."""
    print(f"seed = {campaign_seed}  (replay: RINGKV_SEED={campaign_seed})")
    rng = random.Random(campaign_seed)
    sim = ringkv.Sim(nodes=5, seed=campaign_seed, loss=0.02, max_clock_skew_ms=50)
    contexts = {}
    outcomes = set()
    # 80 steps, and more (at most 240) until a conditional write was refused: whether 80 steps
    # of a seed saw one depends on every random draw in the simulator, so any change there
    # could leave a seed that proves nothing about preconditions.
    for step in range(240):
        if step >= 80 and "precondition_failed" in outcomes:
            break
        roll = rng.random()
        if roll < 0.05:
            split = rng.randint(1, 4)
            sim.partition([f"n{i}" for i in range(1, split + 1)], [f"n{i}" for i in range(split + 1, 6)])
        elif roll < 0.10:
            sim.heal()
        elif roll < 0.12:
            sim.crash(f"n{rng.randint(1, 5)}")
        elif roll < 0.17:
            sim.restart(f"n{rng.randint(1, 5)}")
        key = f"session:{rng.randint(0, 4)}"
        node = f"n{rng.randint(1, 5)}"
        ttl = rng.choice([1, 2, "1500ms", datetime.timedelta(seconds=3)])
        action = rng.random()
        if action < 0.3:
            result = sim.put(key, b"new", ttl=ttl, if_none_match=True, node=node)
        elif action < 0.6:
            g = sim.get(key, node=node)
            result = g
            if g.values:
                result = sim.put(key, g.values[0], if_match=g.context, ttl=ttl, node=node)
        elif action < 0.9 and key in contexts:
            result = sim.put(key, b"saved", if_match=contexts[key], ttl=ttl, node=node)
        elif key in contexts:
            result = sim.delete(key, if_match=contexts[key], node=node)
        else:
            result = sim.get(key, node=node)
        outcomes.add(result.outcome)
        if result.context is not None and not result.context.is_empty:
            contexts[key] = result.context
        sim.run(ms=rng.randint(0, 400))
    verdict = sim.check()
    assert verdict.ok, verdict.summary()
    assert verdict.acknowledged_writes > 0 and "precondition_failed" in outcomes


def test_a_write_after_a_key_is_reaped_gets_a_fresh_dot(seed: int) -> None:
    """Reaping removes a key's object, and with it the dots it held: the coordinator's next write
    must still get a dot above every one it removed, or a client holding an older context would
    replace the new value without having seen it."""
    sim = ringkv.Sim(nodes=3, n=3, seed=seed)
    first = sim.put("session:9", b"a", ttl=1, node="n1")
    refreshed = sim.put("session:9", b"a", context=first.context, ttl=1, node="n2")
    sim.run(ms=60_000)  # expired, then reaped (the simulator's grace is 10 s)
    assert any(e["kind"] == "tombstone_reaped" for e in sim.events)
    again = sim.put("session:9", b"b", if_none_match=True, node="n1")
    assert again.ok
    assert again.dot != first.dot, f"dot {again.dot} reused"
    # A client that still holds the refreshed session's context must not replace b unseen.
    sim.put("session:9", b"stale", context=refreshed.context, node="n3")
    assert sorted(sim.get("session:9", r="all").values) == [b"b", b"stale"]
    assert sim.check().ok
