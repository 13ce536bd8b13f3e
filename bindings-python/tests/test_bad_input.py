"""Bad input is a Python exception with a clear message, never a crash of the interpreter."""

from __future__ import annotations

import datetime
import socket

import pytest

import ringkv
import ringkv._args


def _unreachable() -> str:
    """A loopback URL nothing listens on: a client that sent anything there would fail with
    UnavailableError, so any other error shows that nothing was sent."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


UNREACHABLE = _unreachable()


@pytest.fixture
def sim(seed: int) -> ringkv.Sim:
    return ringkv.Sim(nodes=3, seed=seed)


def test_the_hierarchy() -> None:
    assert issubclass(ringkv.InvalidRequestError, ringkv.RingkvError)
    assert issubclass(ringkv.InvalidRequestError, ValueError)
    assert issubclass(ringkv.UnknownNodeError, ringkv.InvalidRequestError)
    assert issubclass(ringkv.ContextError, ringkv.InvalidRequestError)
    assert issubclass(ringkv.QuorumError, ringkv.RingkvError)
    assert issubclass(ringkv.ConflictError, ringkv.RingkvError)
    assert issubclass(ringkv.UnavailableError, ConnectionError)
    assert issubclass(ringkv.RequestTimeoutError, TimeoutError)
    assert issubclass(ringkv.SimulationError, ringkv.RingkvError)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.put(123, b"v"), "key must be str or bytes, not int"),
        (lambda s: s.put("k", "text"), "a value must be bytes, not str"),
        (lambda s: s.put("k", 1.5), "a value must be bytes, not float"),
        (lambda s: s.get("k", bucket=None), "bucket must be str or bytes, not NoneType"),
        (lambda s: s.get("k", node=1), "node must be a node name (str), not int"),
        (lambda s: s.get("k", r=True), "r must be an int or one of"),
        (lambda s: s.get("k", r=2.0), "r must be an int or one of"),
        (lambda s: s.put("k", b"v", context=b"AQEG"), "context must be a Context"),
        (lambda s: s.run("1000"), "ms must be an int, not str"),
        (lambda s: s.partition("n1", "n2"), "each group is a list of node names"),
        (lambda s: s.wait("0"), "expected a Result or a history index"),
    ],
)
def test_wrong_types_are_type_errors(sim: ringkv.Sim, call, message: str) -> None:
    with pytest.raises(TypeError) as error:
        call(sim)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.put("k", b"v", node="n9"), 'unknown node "n9": the nodes are n1, n2, n3'),
        (lambda s: s.get("k", node="N1"), 'unknown node "N1"'),
        (lambda s: s.crash("n42"), 'unknown node "n42"'),
        (lambda s: s.restart(""), 'unknown node ""'),
        (lambda s: s.partition(["n1"], ["n2", "zz"]), 'unknown node "zz"'),
        (lambda s: s.cut("n1", "n7"), 'unknown node "n7"'),
        (lambda s: s.corrupt("x", "k"), 'unknown node "x"'),
        (lambda s: s.is_up("n0"), 'unknown node "n0"'),
    ],
)
def test_unknown_nodes(sim: ringkv.Sim, call, message: str) -> None:
    with pytest.raises(ringkv.UnknownNodeError) as error:
        call(sim)
    assert message in str(error.value)
    assert sim.history == []  # nothing was started


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.get("k", r=4), "r = 4 is out of range for n = 3"),
        (lambda s: s.get("k", r=0), "r = 0 is out of range for n = 3"),
        (lambda s: s.put("k", b"v", w="most"), 'w = \'most\' is not a quorum: use a count, "one", "quorum" or "all"'),
        (lambda s: s.put("k", b"v", w=-1), "w = -1 is not a number of replicas"),
        (lambda s: s.put("k", b"v", dw=4), "dw = 4 is out of range for n = 3"),
        (lambda s: s.get("k", n=5), "n = 5 is above the bucket's n = 3"),
        (lambda s: s.get("k", timeout_ms=0), "timeout_ms = 0 is out of range"),
    ],
)
def test_invalid_quorums_per_call(sim: ringkv.Sim, call, message: str) -> None:
    with pytest.raises(ringkv.InvalidRequestError) as error:
        call(sim)
    assert message in str(error.value)
    assert sim.history == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"nodes": 0}, "nodes = 0 is out of range"),
        ({"nodes": 3, "n": 4}, "n = 4 is out of range 1..=3"),
        ({"n": 0}, "n = 0 is out of range"),
        ({"n": 3, "r": 4}, "invalid quorum: r = 4 is out of range for n = 3"),
        ({"w": "sometimes"}, "is not a quorum"),
        ({"partitions": 100}, "partition count 100 is not a power of two"),
        ({"nodes": 5, "partitions": 4}, "5 members cannot share 4 partitions"),
        ({"strategy": "rings"}, 'unknown strategy "rings"'),
        ({"conflict_mode": "newest"}, 'unknown conflict mode "newest"'),
        ({"loss": 1.5}, "loss = 1.5 is not a probability"),
        ({"loss": float("nan")}, "is not a probability"),
        ({"request_timeout_ms": 0}, "request_timeout_ms = 0 is out of range"),
        ({"gossip_interval_ms": 0}, "gossip_interval_ms = 0 is out of range"),
        ({"min_delay_ms": 20, "max_delay_ms": 10}, "min_delay_ms = 20 is above max_delay_ms = 10"),
        ({"seed": -1}, "seed = -1 is out of range"),
        ({"seed": 2**64}, "seed = 18446744073709551616 is out of range"),
    ],
)
def test_invalid_configurations(kwargs, message: str) -> None:
    with pytest.raises(ringkv.InvalidRequestError) as error:
        ringkv.Sim(**kwargs)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"nodes": "5"}, {"seed": 1.0}, {"r": None}, {"loss": "none"}, {"lose_unsynced_on_crash": 1}, {"strategy": 2}],
)
def test_configuration_types(kwargs) -> None:
    with pytest.raises(TypeError):
        ringkv.Sim(**kwargs)


def test_positional_configuration_is_refused() -> None:
    with pytest.raises(TypeError):
        ringkv.Sim(5)  # type: ignore[misc]


def test_a_context_from_another_key_is_refused(sim: ringkv.Sim) -> None:
    a = sim.put("cart:alice", b"milk")
    with pytest.raises(ringkv.ContextError) as error:
        sim.put("cart:bob", b"eggs", context=a.context)
    assert "read from default/cart:alice, not default/cart:bob" in str(error.value)
    with pytest.raises(ringkv.ContextError):
        sim.put("cart:alice", b"eggs", context=a.context, bucket="other")
    with pytest.raises(ringkv.ContextError):
        sim.delete("cart:bob", context=a.context)
    assert len(sim.history) == 1
    # Moved on the Python side or sent as text, it still carries its key's fingerprint, and
    # the node refuses it: another key's context would drop values it never saw.
    with pytest.raises(ringkv.InvalidRequestError):
        sim.put("cart:bob", b"eggs", context=a.context.for_key("cart:bob"))
    with pytest.raises(ringkv.InvalidRequestError):
        sim.put("cart:carol", b"x", context=a.context.to_base64())


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("!!!", "not valid base64"),
        ("AQEGbjEuMC4wAQ", "older format"),
        ("AgEGbjEuMC4wAQYxJ3o", "checksum mismatch"),
        ("A" * 100_000, "exceeds the limit"),
    ],
)
def test_malformed_contexts(text: str, message: str) -> None:
    with pytest.raises(ringkv.ContextError) as error:
        ringkv.Context.from_base64(text)
    assert message in str(error.value)


def test_a_tampered_context_is_refused(sim: ringkv.Sim) -> None:
    token = sim.put("k", b"v").context.to_base64()
    tampered = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    with pytest.raises(ringkv.ContextError):
        sim.put("k", b"w", context=tampered)


def test_empty_and_oversized_keys(sim: ringkv.Sim) -> None:
    with pytest.raises(ringkv.InvalidRequestError, match="the key is empty"):
        sim.put("", b"v")
    with pytest.raises(ringkv.InvalidRequestError, match="the bucket is empty"):
        sim.get("k", bucket=b"")
    with pytest.raises(ringkv.InvalidRequestError, match="over the limit"):
        sim.put("k" * 70_000, b"v")
    with pytest.raises(ringkv.InvalidRequestError, match="the value is 8388609 bytes, over the limit"):
        sim.put("k", bytes(8 * 1024 * 1024 + 1))
    # Refused before it started: nothing is on the record.
    assert sim.history == []
    assert sim.put("k" * 65_536, b"v").ok  # the largest key allowed
    assert sim.check().ok


def test_bad_runs_and_indices(sim: ringkv.Sim) -> None:
    with pytest.raises(ringkv.InvalidRequestError):
        sim.run(-1)
    with pytest.raises(ringkv.InvalidRequestError):
        sim.run(2**63)
    with pytest.raises(ringkv.InvalidRequestError, match="no operation 5"):
        sim.wait(5)
    with pytest.raises(ringkv.InvalidRequestError, match="at least two groups"):
        sim.partition(["n1", "n2", "n3"])
    with pytest.raises(ringkv.InvalidRequestError, match="n1 is in two groups"):
        sim.partition(["n1"], ["n1", "n2"])
    with pytest.raises(ringkv.InvalidRequestError, match="n1 is already a node"):
        sim.join("n1")
    with pytest.raises(ringkv.InvalidRequestError, match="capacity"):
        sim.join("n9", capacity=0)
    with pytest.raises(ringkv.InvalidRequestError):
        sim.set_loss(-0.1)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: ringkv.Ring({}), ringkv.InvalidRequestError, "at least one member"),
        (lambda: ringkv.Ring("n1"), TypeError, "not a single name"),
        (lambda: ringkv.Ring(42), TypeError, "not int"),
        (lambda: ringkv.Ring({"a": 0}), ringkv.InvalidRequestError, "the capacity of a = 0 is out of range"),
        (lambda: ringkv.Ring({"a": "1"}), TypeError, "the capacity of a must be an int"),
        (lambda: ringkv.Ring({1: 1}), TypeError, "a member name is a str"),
        (lambda: ringkv.Ring({"": 1}), ringkv.InvalidRequestError, "a member name is empty"),
        (lambda: ringkv.Ring(["a", "a"]), ringkv.InvalidRequestError, "member a appears more than once"),
        (lambda: ringkv.Ring(["a"], partitions=3), ringkv.InvalidRequestError, "not a power of two"),
        (lambda: ringkv.Ring(["a"], partitions=2**21), ringkv.InvalidRequestError, "not a power of two between 1 and 1048576"),
        (lambda: ringkv.Ring(["a"], n=17), ringkv.InvalidRequestError, "target_n 17 is not between 1 and 16"),
        (lambda: ringkv.Ring(["a"], strategy="random"), ringkv.InvalidRequestError, 'unknown strategy "random"'),
        (lambda: ringkv.Ring(["a", "b", "c"], partitions=2), ringkv.InvalidRequestError, "3 members cannot share 2 partitions"),
        (
            lambda: ringkv.Ring({"a": 2**20}, strategy="tokens", tokens_per_capacity=16),
            ringkv.InvalidRequestError,
            "tokens",
        ),
        (lambda: ringkv.Ring(["a"], zones={"b": "z1"}), ringkv.InvalidRequestError, "not members: b"),
        (lambda: ringkv.Ring(["a", "b"]).preference_list(None), TypeError, "key must be str or bytes"),
        (lambda: ringkv.Ring(["a", "b"]).preference_list("k", n=0), ringkv.InvalidRequestError, "n = 0"),
        (lambda: ringkv.Ring(["a", "b"]).moved_by({"a": 1}), TypeError, "expected a Ring"),
        (lambda: ringkv.Ring(["a", "b"]).remove("c"), ringkv.InvalidRequestError, "c is not a member"),
        (lambda: ringkv.Ring(["a", "b"]).add("a"), ringkv.InvalidRequestError, "a is already a member"),
        (lambda: ringkv.Ring(["a"], partitions=4).partition_preference_list(4), ringkv.InvalidRequestError, "partition = 4"),
    ],
)
def test_bad_rings(call, error, message: str) -> None:
    with pytest.raises(error) as raised:
        call()
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: ringkv.VectorClock({"a": -1}), ringkv.InvalidRequestError),
        (lambda: ringkv.VectorClock({"a": 2**64}), ringkv.InvalidRequestError),
        (lambda: ringkv.VectorClock({1: 1}), TypeError),
        (lambda: ringkv.VectorClock({"a": "1"}), TypeError),
        (lambda: ringkv.VectorClock([("a", 1)]), TypeError),
        (lambda: ringkv.VectorClock({"a": 1}).covers("a"), TypeError),
        (lambda: ringkv.VectorClock({"a": 1}).compare({"a": 1}), TypeError),
        (lambda: ringkv.Context.from_base64(b"AQ"), TypeError),
        (lambda: ringkv.Client(8087), TypeError),
        (lambda: ringkv.Client("ftp://127.0.0.1:8087"), ringkv.InvalidRequestError),
        (lambda: ringkv.Client("http://127.0.0.1:8087/prefix"), ringkv.InvalidRequestError),
        (lambda: ringkv.Client([]), ringkv.InvalidRequestError),
        (lambda: ringkv.Client("https://127.0.0.1:8087", ca_file="/nonexistent/ca.pem"), ringkv.InvalidRequestError),
        (lambda: ringkv.Client("http://127.0.0.1:8087", ring_refresh=-1), ringkv.InvalidRequestError),
        (lambda: ringkv.Client("http://127.0.0.1:8087", max_connections=0), ringkv.InvalidRequestError),
        (lambda: ringkv.Client("http://127.0.0.1:99999"), ringkv.InvalidRequestError),
        (lambda: ringkv.Client("http://127.0.0.1:8087", timeout=0), ringkv.InvalidRequestError),
        (lambda: ringkv.Client("http://127.0.0.1:8087", r="many"), ringkv.InvalidRequestError),
    ],
)
def test_bad_versions_and_clients(call, error) -> None:
    with pytest.raises(error):
        call()


def test_the_interpreter_survives_a_storm_of_bad_calls(seed: int) -> None:
    """Throw many malformed calls at one simulator; it stays usable and correct."""
    sim = ringkv.Sim(nodes=3, seed=seed)
    bad = [
        lambda: sim.put(None, b"x"),
        lambda: sim.put("k", None),
        lambda: sim.get("k", node="nope"),
        lambda: sim.get("k", r="zero"),
        lambda: sim.get("k", r=99),
        lambda: sim.run(-5),
        lambda: sim.partition([], []),
        lambda: sim.put("k", b"x", context="not base64!"),
        lambda: ringkv.Ring({"a": 1}, partitions=0),
        lambda: ringkv.Sim(nodes=10**9),
    ]
    for _ in range(20):
        for call in bad:
            with pytest.raises((TypeError, ringkv.RingkvError)):
                call()
    assert sim.put("k", b"fine").ok
    assert sim.get("k").values == [b"fine"]
    assert sim.check().ok


# ----- time to live and write conditions -----

TEN_YEARS_MS = 10 * 365 * 24 * 3600 * 1000


def test_the_longest_ttl_is_the_cores() -> None:
    assert ringkv._args.MAX_TTL_MS == TEN_YEARS_MS


@pytest.mark.parametrize(
    "ttl, message",
    [
        (0, "ttl = 0 s: a time to live must be at least 1 ms"),
        (-30, "ttl = -30 s: a time to live must be at least 1 ms"),
        (0.0004, "at least 1 ms"),
        ("0", "ttl = '0': a time to live must be at least 1 ms"),
        ("0ms", "at least 1 ms"),
        (datetime.timedelta(0), "at least 1 ms"),
        (datetime.timedelta(seconds=-1), "at least 1 ms"),
        (float("nan"), "a finite number of seconds"),
        (float("inf"), "a finite number of seconds"),
        ("3651d", f"a time to live is at most {TEN_YEARS_MS} ms (10 years)"),
        (f"{TEN_YEARS_MS + 1}ms", "at most"),
        (datetime.timedelta(days=3651), "at most"),
        (TEN_YEARS_MS // 1000 + 1, "at most"),
        ("30 minutes", "ttl: '30 minutes' is not a duration: expected a whole number with a unit ms, s, m, h or d"),
        ("", "is not a duration"),
        ("1.5s", "is not a duration"),
        ("-5s", "is not a duration"),
        ("5S", "is not a duration"),
    ],
)
def test_bad_ttls_are_refused_before_anything_is_sent(sim: ringkv.Sim, ttl, message: str) -> None:
    with pytest.raises(ringkv.InvalidRequestError) as error:
        sim.put("k", b"v", ttl=ttl)
    assert message in str(error.value)
    assert sim.history == []
    client = ringkv.Client(UNREACHABLE)  # an attempt would be an UnavailableError
    with pytest.raises(ringkv.InvalidRequestError) as error:
        client.put("k", b"v", ttl=ttl)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "ttl, ms",
    [
        (30, 30_000),
        (1.5, 1_500),
        (0.001, 1),
        (datetime.timedelta(minutes=30), 1_800_000),
        (datetime.timedelta(microseconds=1500), 2),
        ("30m", 1_800_000),
        (" 90 ", 90_000),
        ("1500ms", 1_500),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("3650d", TEN_YEARS_MS),
    ],
)
def test_ttl_spellings(sim: ringkv.Sim, ttl, ms: int) -> None:
    p = sim.put("k", b"v", ttl=ttl)
    assert p.ok and sim.history[-1]["ttl_ms"] == ms


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.put("k", b"v", ttl=True), "ttl must be seconds, a timedelta or a duration such as '30m', not bool"),
        (lambda s: s.put("k", b"v", ttl=[30]), "not list"),
        (lambda s: s.put("k", b"v", ttl=b"30m"), "not bytes"),
        (lambda s: s.put("k", b"v", if_none_match="yes"), "if_none_match must be a bool, not str"),
        (lambda s: s.put("k", b"v", if_none_match=1), "if_none_match must be a bool, not int"),
        (lambda s: s.put("k", b"v", if_match=b"AQEG"), "if_match must be a Context"),
        (lambda s: s.delete("k", if_match=42), "if_match must be a Context"),
        (lambda s: s.get("k", ttl=30), "unexpected keyword argument 'ttl'"),
        (lambda s: s.delete("k", ttl=30), "unexpected keyword argument 'ttl'"),
        (lambda s: s.delete("k", if_none_match=True), "unexpected keyword argument 'if_none_match'"),
    ],
)
def test_wrong_condition_and_ttl_types(sim: ringkv.Sim, call, message: str) -> None:
    with pytest.raises(TypeError) as error:
        call(sim)
    assert message in str(error.value)
    assert sim.history == []


def test_both_conditions_at_once_are_refused(sim: ringkv.Sim) -> None:
    p = sim.put("k", b"v")
    for target in (sim, ringkv.Client(UNREACHABLE)):
        with pytest.raises(ringkv.InvalidRequestError, match="if_none_match and if_match together: give one"):
            target.put("k", b"v", if_none_match=True, if_match=p.context)
    # The native layer refuses it too, whoever calls it.
    with pytest.raises(ringkv.InvalidRequestError, match="if_none_match and if_match together"):
        sim._sim.submit("n1", "put", b"default", b"k", value=b"v", if_none_match=True, if_match=p.context._native)
    assert len(sim.history) == 1


def test_an_if_match_context_of_another_key_is_refused(sim: ringkv.Sim) -> None:
    a = sim.put("session:a", b"v")
    client = ringkv.Client(UNREACHABLE)
    for call in (
        lambda: sim.put("session:b", b"v", if_match=a.context),
        lambda: sim.delete("session:b", if_match=a.context),
        lambda: sim.put("session:a", b"v", if_match=a.context, bucket="other"),
        lambda: client.put("session:b", b"v", if_match=a.context),
        lambda: client.delete("session:b", if_match=a.context),
    ):
        with pytest.raises(ringkv.ContextError) as error:
            call()
        assert "the if_match context was read from default/session:a, not " in str(error.value)
    # Moved on the Python side, it still carries its key's fingerprint: the core refuses it.
    with pytest.raises(ringkv.InvalidRequestError, match="another key"):
        sim.put("session:b", b"v", if_match=a.context.for_key("session:b"))
    assert len(sim.history) == 1  # nothing was started, not even a delete's read


@pytest.mark.parametrize(
    "if_match, error, message",
    [
        (ringkv.Context.empty(), ringkv.InvalidRequestError, "if_match is an empty context"),
        ("garbage!", ringkv.ContextError, "not valid base64"),
        ("", ringkv.ContextError, "empty"),
    ],
)
def test_bad_if_match_contexts(sim: ringkv.Sim, if_match, error, message: str) -> None:
    for call in (
        lambda: sim.put("k", b"v", if_match=if_match),
        lambda: sim.delete("k", if_match=if_match),
        lambda: ringkv.Client(UNREACHABLE).put("k", b"v", if_match=if_match),
        lambda: ringkv.Client(UNREACHABLE).delete("k", if_match=if_match),
    ):
        with pytest.raises(error) as raised:
            call()
        assert message in str(raised.value)
    assert sim.history == []


def test_the_native_layer_checks_ttls_and_conditions_as_the_core_does(sim: ringkv.Sim) -> None:
    native = sim._sim
    context = sim.put("k", b"v").context._native
    cases = [
        (dict(op="put", value=b"v", ttl_ms=0), "ttl must be at least 1 ms"),
        (dict(op="put", value=b"v", ttl_ms=TEN_YEARS_MS + 1), "over the maximum"),
        (dict(op="delete", context=context, ttl_ms=1000), "a ttl applies to puts only"),
        (dict(op="get", ttl_ms=1000), "a ttl applies to puts only"),
        (dict(op="delete", context=context, if_none_match=True), "a delete cannot require the key to be absent"),
        (dict(op="get", if_match=context), "applies to puts and deletes only"),
    ]
    for kwargs, message in cases:
        op = kwargs.pop("op")
        with pytest.raises(ringkv.InvalidRequestError) as error:
            native.submit("n1", op, b"default", b"k", **kwargs)
        assert message in str(error.value), (op, kwargs, str(error.value))
    assert len(sim.history) == 1


def test_bad_default_ttls_for_bucket_props() -> None:
    client = ringkv.Client(UNREACHABLE)
    with pytest.raises(ringkv.InvalidRequestError, match="default_ttl = 0 s: a time to live must be at least 1 ms"):
        client.set_bucket_props("sessions", n=3, default_ttl=0)
    with pytest.raises(ringkv.InvalidRequestError, match="default_ttl: 'soon' is not a duration"):
        client.set_bucket_props("sessions", n=3, default_ttl="soon")
    with pytest.raises(TypeError):
        client.set_bucket_props("sessions", default_ttl="30m")  # type: ignore[call-arg]  # n is required
