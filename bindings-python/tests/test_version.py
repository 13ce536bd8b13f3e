"""Versions: dots, vector clocks and contexts, with the core's causal comparison."""

from __future__ import annotations

import ringkv
from ringkv import Causality, Context, Dot, VectorClock


def test_vector_clock_comparisons() -> None:
    a = VectorClock({"x": 1})
    b = a.increment("y")
    c = a.increment("z")
    assert b.entries == {"x": 1, "y": 1} and b["y"] == 1 and b["nobody"] == 0 and len(b) == 2
    assert a.compare(b) is Causality.BEFORE and b.compare(a) is Causality.AFTER
    assert b.compare(c) is Causality.CONCURRENT and b.concurrent_with(c)
    assert a.compare(VectorClock({"x": 1})) is Causality.EQUAL and a == VectorClock({"x": 1})
    assert a < b and a <= b and b > a and b >= a
    assert not (b < c or b > c or b == c or b <= c or b >= c)
    merged = b.merge(c)
    assert merged == VectorClock({"x": 1, "y": 1, "z": 1}) and merged > b and merged > c
    assert merged.covers(Dot("y", 1)) and merged.covers(("z", 1)) and not merged.covers(("y", 2))
    assert VectorClock({"x": 0}) == VectorClock() and len(VectorClock({"x": 0})) == 0
    assert Causality.CONCURRENT == "concurrent" and str(Causality.BEFORE) == "before"
    assert hash(VectorClock({"a": 1, "b": 2})) == hash(VectorClock({"b": 2, "a": 1}))
    assert repr(b) == "VectorClock({'x': 1, 'y': 1})" and list(b) == ["x", "y"]


def test_contexts_round_trip_and_compare() -> None:
    ctx = Context(VectorClock({"n1.0.0": 2, "n3.0.0": 1}))
    token = ctx.to_base64()
    assert str(ctx) == token and "=" not in token
    back = Context.from_base64(token)
    assert back == ctx and back.clock.entries == {"n1.0.0": 2, "n3.0.0": 1}
    assert Context.empty().is_empty and not ctx.is_empty
    older = Context({"n1.0.0": 1})
    assert older < ctx and older.compare(ctx) is Causality.BEFORE and ctx.descends(older)
    assert Context({"n2.0.0": 1}).concurrent_with(ctx)
    assert ctx.covers(("n1.0.0", 2)) and not ctx.covers(("n1.0.0", 3))
    assert Context.from_base64(token, key="cart").key == b"cart"
    assert "key='cart'" in repr(Context.from_base64(token, bucket="b", key="cart"))


def test_contexts_from_the_simulator_explain_siblings(seed: int) -> None:
    sim = ringkv.Sim(nodes=3, seed=seed)
    base = sim.put("k", b"base")
    a = sim.put("k", b"a", context=base.context, node="n1", wait=False)
    b = sim.put("k", b"b", context=base.context, node="n2", wait=False)
    a, b = sim.wait(a), sim.wait(b)
    assert a.context > base.context and b.context > base.context
    # Both writes were made from the same read through different coordinators, and neither saw
    # the other: concurrent, so both are kept as siblings.
    assert a.context.compare(b.context) is Causality.CONCURRENT
    assert not a.context.covers(b.dot) and not b.context.covers(a.dot)
    sim.run(ms=500)
    g = sim.get("k", r="all")
    assert sorted(g.values) == [b"a", b"b"]
    assert g.context.covers(a.dot) and g.context.covers(b.dot) and not g.context.covers(base.dot._replace(counter=99))
    assert str(a.dot) == f"{a.dot.actor}:{a.dot.counter}" and isinstance(a.dot, Dot)
