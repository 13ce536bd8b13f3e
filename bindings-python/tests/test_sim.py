"""The simulation API: the contract scripts and notebooks rely on."""

from __future__ import annotations

import random
from typing import List, Tuple

import pytest

import ringkv
from conftest import seeds


def replica_on_each_side(sim: ringkv.Sim, side_a: List[str], key: str) -> bool:
    owners = sim.preference_list(key)
    return any(o in side_a for o in owners) and any(o not in side_a for o in owners)


def split_key(sim: ringkv.Sim, side_a: List[str]) -> str:
    """A key with a replica on each side of the partition: both sides can write it."""
    for i in range(1000):
        key = f"cart:{i}"
        if replica_on_each_side(sim, side_a, key):
            return key
    raise AssertionError("no key straddles the partition")


def concurrent_writes(seed: int) -> Tuple[ringkv.Sim, str, ringkv.Result, ringkv.Result]:
    """Two sides of a partition update the same cart from the same read."""
    sim = ringkv.Sim(nodes=5, n=3, r=2, w=2, seed=seed)
    side_a, side_b = ["n1", "n2"], ["n3", "n4", "n5"]
    key = split_key(sim, side_a)
    first = sim.put(key, b"milk", node="n1")
    assert first.ok, first
    sim.partition(side_a, side_b)
    sim.run(ms=5000)  # the failure detectors notice; writes go to fallbacks from now on
    a = sim.get(key, node="n1")
    b = sim.get(key, node="n3")
    assert a.ok and b.ok, (a, b)
    pa = sim.put(key, b"milk,eggs", context=a.context, node="n1")
    pb = sim.put(key, b"bread", context=b.context, node="n3")
    assert pa.ok and pb.ok, (pa, pb)
    return sim, key, pa, pb


def test_contract_of_the_issue(seed: int) -> None:
    sim = ringkv.Sim(nodes=5, n=3, r=2, w=2, seed=seed)
    assert sim.nodes == ["n1", "n2", "n3", "n4", "n5"]
    p = sim.put("cart", b"milk", node="n1")
    assert p.ok is True
    assert isinstance(p.context, ringkv.Context)
    assert len(p.replicas) >= 2 and set(p.replicas) <= set(sim.nodes)
    assert p.dot is not None and p.context.covers(p.dot)
    g = sim.get("cart", node="n2")
    assert g.ok and g.values == [b"milk"] and isinstance(g.context, ringkv.Context)
    assert g.context == p.context
    p2 = sim.put("cart", b"milk,eggs", context=g.context, node="n2")
    assert p2.ok and p2.context > g.context
    assert sim.get("cart", node="n3").values == [b"milk,eggs"]
    d = sim.delete("cart", context=p2.context, node="n2")
    assert d.ok
    gone = sim.get("cart", node="n4")
    assert gone.ok and gone.values == [] and gone.value is None and not gone.found
    assert gone.context is not None and not gone.context.is_empty  # the tombstone's history
    sim.partition(["n1", "n2"], ["n3", "n4", "n5"])
    sim.heal()
    sim.crash("n3")
    assert sim.up == ["n1", "n2", "n4", "n5"] and not sim.is_up("n3")
    sim.restart("n3")
    before = sim.now
    sim.run(ms=1000)
    assert sim.now == before + 1000
    assert isinstance(sim.history, list) and isinstance(sim.events, list)
    verdict = sim.check()
    assert verdict.ok, verdict.summary()
    assert verdict.acknowledged_writes == 3


def test_a_partition_gives_siblings_and_a_put_with_the_context_merges_them(seed: int) -> None:
    sim, key, pa, pb = concurrent_writes(seed)
    # Neither write had seen the other: their contexts are concurrent.
    assert pa.context.compare(pb.context) is ringkv.Causality.CONCURRENT
    assert not pa.context.covers(pb.dot) and not pb.context.covers(pa.dot)
    sim.heal()
    sim.run(ms=3000)
    g = sim.get(key, node="n5")
    assert g.ok and g.siblings, g
    assert sorted(g.values) == [b"bread", b"milk,eggs"]
    with pytest.raises(ringkv.ConflictError) as conflict:
        g.value  # noqa: B018 - the property raises
    assert sorted(conflict.value.values) == sorted(g.values)
    # The read's context has seen both writes.
    assert g.context.covers(pa.dot) and g.context.covers(pb.dot)
    assert g.context >= pa.context and g.context >= pb.context
    merged = sim.put(key, b"bread,eggs,milk", context=g.context, node="n5")
    assert merged.ok
    for node in sim.nodes:
        assert sim.get(key, node=node).values == [b"bread,eggs,milk"], node
    verdict = sim.check()
    assert verdict.ok, verdict.summary()
    assert verdict.superseded >= 2  # both siblings were superseded by the merge


def test_replicas_show_why_values_are_siblings(seed: int) -> None:
    sim, key, pa, pb = concurrent_writes(seed)
    sim.heal()
    sim.run(ms=3000)
    sim.get(key, node="n1", r="all")  # read repair brings every replica up to date
    sim.run(ms=500)
    replicas = sim.replicas(key)
    assert [r.node for r in replicas] == sim.preference_list(key)
    for replica in replicas:
        dots = {s.dot for s in replica.siblings}
        assert dots == {pa.dot, pb.dot}, replica
        assert replica.clock is not None and replica.clock.covers(pa.dot) and replica.clock.covers(pb.dot)
        assert sorted(replica.values) == [b"bread", b"milk,eggs"]


def test_two_blind_writes_through_one_coordinator_are_siblings_not_a_lost_update(seed: int) -> None:
    sim = ringkv.Sim(nodes=3, seed=seed)
    first = sim.put("k", b"a", node="n1", wait=False)
    second = sim.put("k", b"b", node="n1", wait=False)
    assert first.outcome is None and second.outcome is None  # still running
    first, second = sim.wait(first), sim.wait(second)
    assert first.ok and second.ok and first.dot != second.dot
    assert sorted(sim.get("k").values) == [b"a", b"b"]


def test_crash_and_restart_keep_stored_data(seed: int) -> None:
    sim = ringkv.Sim(nodes=5, n=3, seed=seed)
    owners = sim.preference_list("cart")
    p = sim.put("cart", b"milk", node=owners[0], w="all")
    assert p.ok and sorted(p.replicas) == sorted(owners)
    for node in owners:
        sim.crash(node)
    assert sim.get("cart", node=owners[0]).outcome == "refused"
    # The disks survive the crash.
    assert all(r.values == [b"milk"] for r in sim.replicas("cart"))
    for node in owners:
        sim.restart(node)
    sim.run(ms=3000)
    g = sim.get("cart", node=owners[1], r="all")
    assert g.ok and g.values == [b"milk"] and g.context == p.context
    assert sim.check().ok


def test_a_crashed_node_refuses_and_a_restarted_one_writes_with_a_new_actor(seed: int) -> None:
    sim = ringkv.Sim(nodes=3, seed=seed)
    before = sim.put("k", b"v1", node="n1")
    sim.crash("n1")
    refused = sim.put("k", b"v2", node="n1")
    assert not refused.ok and refused.outcome == "refused"
    with pytest.raises(ringkv.UnavailableError):
        refused.raise_for_outcome()
    assert [e["kind"] for e in sim.events if e["node"] == "n1"][-1] == "crashed"
    sim.restart("n1")
    sim.run(ms=3000)
    g = sim.get("k", node="n1")
    after = sim.put("k", b"v2", context=g.context, node="n1")
    assert after.ok and after.dot.actor != before.dot.actor  # a new incarnation, a new actor
    assert any(e["kind"] == "restarted" and e["node"] == "n1" for e in sim.events)


def test_quorums_and_timeouts_per_call(seed: int) -> None:
    sim = ringkv.Sim(nodes=5, n=3, r=2, w=2, seed=seed, request_timeout_ms=1000)
    owners = sim.preference_list("k")
    one = sim.put("k", b"x", node=owners[0], w=1)
    assert one.ok and len(one.replicas) == 1
    everyone = sim.put("k", b"y", node=owners[0], context=one.context, w="all")
    assert everyone.ok and sorted(everyone.replicas) == sorted(owners)
    assert sim.get("k", node=owners[0], r="one").ok
    # One replica down, not yet suspected: a fallback joins at a fraction of the per-call
    # timeout, and R = all is met before it ends.
    sim.crash(owners[2])
    late = sim.get("k", node=owners[0], r="all", timeout_ms=200)
    assert late.ok and late.latency_ms < 200
    # Every other node down: nobody can stand in, and the per-call timeout bounds the wait.
    others = [f"n{i}" for i in range(1, 6) if f"n{i}" != owners[0]]
    for node in others:
        sim.crash(node)
    failed = sim.get("k", node=owners[0], r="all", timeout_ms=200)
    assert not failed.ok and failed.outcome == "unavailable" and failed.quorum == "read"
    for node in others:
        sim.restart(node)
    with pytest.raises(ringkv.QuorumError) as error:
        failed.raise_for_outcome()
    assert error.value.needed == 3 and error.value.quorum == "read"
    # R + W <= N is allowed and reported.
    weak = sim.get("k", node=owners[0], r=1, w=1)
    assert weak.ok and weak.read_your_writes is False
    assert sim.get("k", node=owners[0]).read_your_writes is True


def test_buckets_are_separate_key_spaces(seed: int) -> None:
    sim = ringkv.Sim(nodes=3, seed=seed)
    sim.put("k", b"in default")
    sim.put("k", b"in carts", bucket="carts")
    assert sim.get("k").values == [b"in default"]
    assert sim.get("k", bucket="carts").values == [b"in carts"]
    assert sim.get(b"k", bucket=b"carts").values == [b"in carts"]  # bytes names too
    binary = sim.put(b"\xff\x00key", b"v", bucket=b"\x01")
    assert binary.ok and sim.get(b"\xff\x00key", bucket=b"\x01").values == [b"v"]


def test_same_seed_same_run(seed: int) -> None:
    def scenario(s: int) -> ringkv.Sim:
        sim = ringkv.Sim(nodes=5, seed=s, loss=0.05)
        rng = random.Random(s)
        for i in range(30):
            node = f"n{rng.randint(1, 5)}"
            key = f"k{rng.randint(0, 3)}"
            if i == 10:
                sim.partition(["n1", "n2"], ["n3", "n4", "n5"])
            if i == 20:
                sim.heal()
                sim.crash("n4")
            g = sim.get(key, node=node)
            sim.put(key, f"v{i}".encode(), context=g.context, node=node)
            sim.run(ms=rng.randint(0, 300))
        return sim

    one, two = scenario(seed), scenario(seed)
    assert one.history == two.history
    assert one.events == two.events
    assert one.check() == two.check()
    other = scenario(seed + 1)
    assert [e["at"] for e in other.events] != [e["at"] for e in one.events]


def test_history_and_events_are_plain_data(seed: int) -> None:
    sim = ringkv.Sim(nodes=3, seed=seed)
    p = sim.put("cart", b"milk", node="n2")
    sim.get("cart", node="n3")
    sim.crash("n1")
    sim.put("cart", b"eggs", node="n1")
    history = sim.history
    assert [h["op"] for h in history] == ["put", "get", "put"]
    first = history[0]
    assert first["key"] == "cart" and first["bucket"] == "default" and first["node"] == "n2"
    assert first["outcome"] == "ok" and first["value"] == b"milk" and first["dot"] == str(p.dot)
    assert first["context"] == p.context.to_base64()
    assert first["completed_at"] >= first["invoked_at"]
    assert history[1]["values"] == [b"milk"]
    assert history[2]["outcome"] == "refused" and history[2]["ok"] is False
    for entry in history:
        for value in entry.values():
            assert value is None or isinstance(value, (str, int, bool, bytes, list)), (entry, value)
    events = sim.events
    assert {"at", "node", "kind", "detail"} <= set(events[-1])
    assert any(e["kind"] == "crashed" and e["node"] == "n1" for e in events)
    # The trace only grows, and each read returns all of it.
    sim.run(ms=1000)
    assert sim.events[: len(events)] == events


def test_lww_buckets_lose_concurrent_writes(seed: int) -> None:
    sim = ringkv.Sim(nodes=3, seed=seed, conflict_mode="lww")
    a = sim.put("k", b"a", node="n1", wait=False)
    b = sim.put("k", b"b", node="n2", wait=False)
    assert sim.wait(a).ok and sim.wait(b).ok
    sim.run(ms=1000)
    assert len(sim.get("k", r="all").values) == 1


@pytest.mark.parametrize("name", ["lww", "last_writer_wins", "LWW"])
def test_every_spelling_of_last_writer_wins_is_accepted(name: str) -> None:
    # The core parses conflict modes for every binding and the server: they accept the same names.
    sim = ringkv.Sim(nodes=3, conflict_mode=name)
    assert sim.config["conflict_mode"] == "lww"


def test_join_takes_partitions(seed: int) -> None:
    sim = ringkv.Sim(nodes=3, seed=seed)
    sim.put("k", b"v")
    sim.join("n4")
    sim.run(ms=20_000)
    ring = sim.ring
    assert "n4" in ring.members and ring.ownership()["n4"] > 0
    assert sim.get("k", r="all").values == [b"v"]
    assert sim.check().ok


def test_corruption_is_detected_and_repaired(seed: int) -> None:
    sim = ringkv.Sim(nodes=3, seed=seed)
    sim.put("k", b"v", w="all")
    assert sim.corrupt("n1", "k")
    assert not sim.corrupt("n1", "never-written")
    sim.get("k", node="n2", r="all")
    sim.run(ms=2000)
    assert any(e["kind"] == "checksum_failure" for e in sim.events)
    assert sim.check().ok


@pytest.mark.parametrize("campaign_seed", seeds(4))
def test_random_campaigns_pass_the_checker(campaign_seed: int) -> None:
    """Random clients, partitions, loss and crashes; the checker finds no lost write."""
    print(f"seed = {campaign_seed}  (replay: RINGKV_SEED={campaign_seed})")
    rng = random.Random(campaign_seed)
    sim = ringkv.Sim(nodes=5, seed=campaign_seed, loss=0.02)
    contexts = {}
    for _ in range(60):
        roll = rng.random()
        if roll < 0.05:
            split = rng.randint(1, 4)
            sim.partition([f"n{i}" for i in range(1, split + 1)], [f"n{i}" for i in range(split + 1, 6)])
        elif roll < 0.10:
            sim.heal()
        elif roll < 0.13:
            sim.crash(f"n{rng.randint(1, 5)}")
        elif roll < 0.18:
            sim.restart(f"n{rng.randint(1, 5)}")
        key = f"k{rng.randint(0, 4)}"
        node = f"n{rng.randint(1, 5)}"
        if rng.random() < 0.4:
            g = sim.get(key, node=node)
            if g.context is not None:
                contexts[key] = g.context
        elif rng.random() < 0.9:
            p = sim.put(key, f"v{rng.random()}".encode(), context=contexts.get(key), node=node)
            if p.context is not None:
                contexts[key] = p.context
        else:
            try:
                sim.delete(key, context=contexts.get(key), node=node)
            except ringkv.NothingToDeleteError:
                pass
        sim.run(ms=rng.randint(0, 200))
    verdict = sim.check()
    assert verdict.ok, verdict.summary()
    assert verdict.acknowledged_writes > 0


def test_a_delete_without_a_context_reads_first_and_never_reports_a_no_op() -> None:
    sim = ringkv.Sim(nodes=3, seed=11)
    with pytest.raises(ringkv.NothingToDeleteError):
        sim.delete("nobody")
    sim.put("cart", b"milk")
    d = sim.delete("cart", node="n2")
    assert d.ok
    assert sim.get("cart", node="n3").values == []
    with pytest.raises(ringkv.NothingToDeleteError):
        sim.delete("cart")
    # Both the read and the delete are in the history, so the checker judges them.
    assert sim.check().ok


def test_zones_place_nodes_round_robin_and_zone_faults_lose_nothing(seed: int) -> None:
    sim = ringkv.Sim(nodes=6, zones=["a", "b", "c"], wan_delay_ms=(30, 60), seed=seed)
    assert sim.zones == ["a", "b", "c"]
    assert [(m["node"], m["zone"], m["up"]) for m in sim.members] == [
        ("n1", "a", True), ("n2", "b", True), ("n3", "c", True),
        ("n4", "a", True), ("n5", "b", True), ("n6", "c", True),
    ]
    assert sim.nodes_in_zone("b") == ["n2", "n5"] and sim.zone_of("n6") == "c"
    assert (sim.config["wan_min_delay_ms"], sim.config["wan_max_delay_ms"]) == (30, 60)
    # The ring's members carry their zones, and a key has one replica in each zone.
    assert sim.ring.zones == {m["node"]: m["zone"] for m in sim.members}
    assert sorted(sim.zone_of(node) for node in sim.preference_list("cart")) == ["a", "b", "c"]
    sim.run(ms=1000)
    # A quorum of 2 of 3 zones takes at least one round trip between zones.
    p = sim.put("cart", b"milk", node="n1")
    assert p.ok and p.completed_at - p.invoked_at >= 60
    assert sim.isolate_zone("c") == ["n3", "n6"]
    assert sim.events[-1]["kind"] == "links" and "isolate zone c" in sim.events[-1]["detail"]
    sim.run(ms=5000)
    assert sim.put("cart", b"eggs", context=p.context, node="n2").ok  # zones a and b serve
    assert sim.lose_zone("c") == ["n3", "n6"]
    kinds = [e["kind"] for e in sim.events[-5:]]
    assert "zone" in kinds and "disk_lost" in kinds and "crashed" in kinds
    assert [m["up"] for m in sim.members if m["zone"] == "c"] == [False, False]
    sim.reconnect_zone("c")
    sim.restart_zone("c")
    assert sim.heal_and_converge(120_000) is not None
    assert all(r.values == [b"eggs"] for r in sim.replicas("cart"))
    assert sim.check().ok
    sim.join("n7")  # the round-robin goes on
    assert sim.zone_of("n7") == "a"
    sim.join("x1", zone="c")
    assert sim.zone_of("x1") == "c"
    with pytest.raises(ringkv.InvalidRequestError, match='unknown zone "d": the zones are a, b, c'):
        sim.isolate_zone("d")
    with pytest.raises(ringkv.InvalidRequestError, match="given twice"):
        ringkv.Sim(zones=["a", "a"])
    with pytest.raises(ringkv.InvalidRequestError, match="wan_min_delay_ms = 90"):
        ringkv.Sim(zones=["a"], wan_delay_ms=(90, 80))
    with pytest.raises(TypeError):
        ringkv.Sim(zones="abc")
    plain = ringkv.Sim(nodes=3, seed=seed)
    assert plain.zones == [] and plain.members[0]["zone"] is None
    with pytest.raises(ringkv.InvalidRequestError, match="no zones"):
        plain.crash_zone("a")


def test_local_quorums_with_replicas_per_zone_need_no_other_zone(seed: int) -> None:
    sim = ringkv.Sim(nodes=9, n=6, n_per_zone={"a": 2, "b": 2, "c": 2}, zones=["a", "b", "c"],
                     wan_delay_ms=(20, 80), seed=seed)
    assert sim.config["n_per_zone"] == {"a": 2, "b": 2, "c": 2}
    assert sorted(r.node and sim.zone_of(r.node) for r in sim.replicas("cart")) == ["a", "a", "b", "b", "c", "c"]
    sim.run(ms=1000)
    sim.isolate_zone("b")
    sim.isolate_zone("c")
    p = sim.put("cart", b"milk", node="n1", w="local_quorum")
    assert p.ok and p.completed_at - p.invoked_at < 40  # zone a's two replicas, no WAN trip
    g = sim.get("cart", node="n4", r="LOCAL_QUORUM")
    assert g.ok and g.values == [b"milk"]
    assert sim.heal_and_converge(60_000) is not None and sim.check().ok
