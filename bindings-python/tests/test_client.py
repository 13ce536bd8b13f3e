"""The live client: against a real `ringkv dev` cluster, and against a scripted HTTP server for
the answers a healthy cluster does not give on demand (quorum failures, errors, silence)."""

from __future__ import annotations

import datetime
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, Iterator, List, Tuple

import pytest

import ringkv
from ringkv.client import parse_multipart


# ----- against `ringkv dev` -----


def test_status_health_and_ring(dev_cluster) -> None:
    client = ringkv.Client(dev_cluster.urls[0])
    health = client.health()
    assert health["status"] == "ok" and health["members"] == 3 and health["alive_members"] == 3
    status = client.status()
    assert sorted(m["id"] for m in status["members"]) == ["n1", "n2", "n3"]
    assert all(m["status"] == "up" for m in status["members"]) and status["ring_version"] >= 1
    assert set(client.members()) == {"n1", "n2", "n3"}
    ring = client.ring()
    assert len(ring["partitions"]) == ring["partition_count"] and ring["target_n"] >= 1
    assert "ringkv" in client.metrics()
    props = client.bucket_props("anything")
    assert props["n"] == 3 and {"r", "w", "dw", "conflict_mode"} <= set(props)


def test_put_get_delete(dev_cluster, bucket: str) -> None:
    # ring_refresh=0: no routing, so the node named coordinates (routing: test_production_client.py).
    client = ringkv.Client(dev_cluster.urls[0], bucket=bucket, ring_refresh=0)
    absent = client.get("alice")
    assert absent.ok and absent.values == [] and absent.value is None and absent.context is None
    p = client.put("alice", b"milk")
    assert p.ok and p.written == b"milk" and isinstance(p.context, ringkv.Context)
    assert len(p.replicas) >= 2 and set(p.replicas) <= {"n1", "n2", "n3"} and p.node == "n1"
    # Another node answers the same.
    g = ringkv.Client(dev_cluster.urls[1], ring_refresh=0).get("alice", bucket=bucket)
    assert g.values == [b"milk"] and g.value == b"milk" and g.context == p.context and g.node == "n2"
    assert g.read_your_writes is True
    p2 = client.put("alice", b"milk,eggs", context=g.context)
    assert p2.context > g.context
    assert client.get("alice").values == [b"milk,eggs"]
    d = client.delete("alice", context=p2.context)
    assert d.ok
    gone = client.get("alice")
    assert gone.values == [] and gone.context is not None and gone.context > p2.context


def test_siblings_come_back_together_and_a_put_with_the_context_resolves_them(dev_cluster, bucket: str) -> None:
    a, b = (ringkv.Client(url, bucket=bucket) for url in dev_cluster.urls[:2])
    # Two writes without a context: neither supersedes the other.
    a.put("cart", b"milk")
    b.put("cart", b"bread\r\n--not-a-boundary\r\n\r\n")
    g = a.get("cart", r="all")
    assert g.siblings and sorted(g.values) == [b"bread\r\n--not-a-boundary\r\n\r\n", b"milk"]
    with pytest.raises(ringkv.ConflictError) as conflict:
        g.value  # noqa: B018 - the property raises
    assert conflict.value.context == g.context
    merged = b.put("cart", b"bread,milk", context=g.context)
    assert merged.ok
    assert a.get("cart", r="all").values == [b"bread,milk"]


def test_quorum_overrides(dev_cluster, bucket: str) -> None:
    client = ringkv.Client(dev_cluster.urls[2], bucket=bucket)
    one = client.put("k", b"v", w=1)
    assert len(one.replicas) >= 1
    everyone = client.put("k", b"w", context=one.context, w="all", dw=1)
    assert sorted(everyone.replicas) == ["n1", "n2", "n3"] and len(everyone.durable) >= 1
    assert client.get("k", r="all").values == [b"w"]
    weak = client.get("k", r=1)
    assert weak.values == [b"w"] and weak.read_your_writes is False
    defaults = ringkv.Client(dev_cluster.urls[2], bucket=bucket, r="all")
    assert len(defaults.get("k").replicas) == 3
    with pytest.raises(ringkv.InvalidRequestError) as error:
        client.get("k", r=5)  # more than N: the node refuses it
    assert "r = 5 is out of range for n = 3" in str(error.value)
    assert client.get("k", timeout_ms=2000).values == [b"w"]


def test_keys_and_buckets_are_arbitrary_bytes(dev_cluster, bucket: str) -> None:
    client = ringkv.Client(dev_cluster.urls[0])
    for key in (b"a/b", b"\xff\x00\x01", "ünïcode key".encode(), b"?x=1&y#z", b"%2F"):
        p = client.put(key, key * 2, bucket=bucket + "/x")
        assert client.get(key, bucket=bucket + "/x").values == [key * 2]
        assert p.context.key == key
    big = bytes(range(256)) * 4096
    client.put("big", big, bucket=bucket)
    assert client.get("big", bucket=bucket).value == big


def test_contexts_are_checked(dev_cluster, bucket: str) -> None:
    client = ringkv.Client(dev_cluster.urls[0], bucket=bucket)
    p = client.put("alice", b"milk")
    with pytest.raises(ringkv.ContextError, match="not .*/bob"):
        client.put("bob", b"x", context=p.context)
    with pytest.raises(ringkv.ContextError):
        client.put("alice", b"x", context="garbage!")
    # A stored base64 context (say, from a web form) is accepted.
    assert client.put("alice", b"milk,eggs", context=p.context.to_base64()).ok
    assert client.get("alice").values == [b"milk,eggs"]


def test_bad_requests_are_invalid_request_errors(dev_cluster, bucket: str) -> None:
    client = ringkv.Client(dev_cluster.urls[0], bucket=bucket)
    with pytest.raises(ringkv.InvalidRequestError, match="the key is empty"):
        client.get("")
    with pytest.raises(TypeError):
        client.put("k", "text")
    with pytest.raises(ringkv.InvalidRequestError, match="too long|over the limit") as error:
        client.get("k" * 70_000)
    assert len(str(error.value)) < 400


def test_unreachable_nodes_are_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ringkv.Client(f"http://127.0.0.1:{port}")
    with pytest.raises(ringkv.UnavailableError):
        client.get("k")
    with pytest.raises(ConnectionError):
        client.put("k", b"v")


def test_silence_is_a_timeout_and_nothing_is_retried() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: List[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)  # never answers

    threading.Thread(target=accept, daemon=True).start()
    try:
        # No ring read (ring_refresh=0): every connection accepted is the put's.
        client = ringkv.Client(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3, ring_refresh=0)
        started = time.monotonic()
        with pytest.raises(ringkv.RequestTimeoutError, match="may or may not have been applied"):
            client.put("k", b"v")
        assert time.monotonic() - started < 3
        time.sleep(0.1)
        assert len(accepted) == 1  # one attempt, no retry
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


# ----- against a scripted server -----

Answer = Tuple[int, Dict[str, str], bytes]


@pytest.fixture
def scripted() -> Iterator[Callable[[Answer], str]]:
    """A server that gives the scripted answer to every request; yields a function that sets
    the answer and returns the server's URL."""
    answer: List[Answer] = [(200, {}, b"")]
    received: List[Tuple[str, str, Dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if self.path == "/ring":  # the client's background ring read: this is no node
                self.send_error(404)
                return
            received.append((self.command, self.path, dict(self.headers.items())))
            status, headers, body = answer[0]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def script(new: Answer) -> str:
        answer[0] = new
        return f"http://127.0.0.1:{server.server_address[1]}"

    script.received = received  # type: ignore[attr-defined]  # (method, path, headers) of each request

    yield script
    server.shutdown()
    server.server_close()


def error_body(**fields: object) -> Tuple[Dict[str, str], bytes]:
    return {"Content-Type": "application/json", "X-Ringkv-Node": "n1"}, json.dumps(fields).encode()


def test_a_503_unavailable_is_a_quorum_error(scripted) -> None:
    headers, body = error_body(
        error="write quorum not reached: 2 needed, 1 answered in time",
        kind="unavailable",
        quorum="write",
        needed=2,
        answered=["n1"],
    )
    client = ringkv.Client(scripted((503, headers, body)))
    with pytest.raises(ringkv.QuorumError) as error:
        client.put("k", b"v")
    assert error.value.quorum == "write" and error.value.needed == 2 and error.value.answered == ["n1"]
    assert "2 needed, 1 answered" in str(error.value)


@pytest.mark.parametrize(
    "status, kind, expected",
    [
        (400, "bad_request", ringkv.InvalidRequestError),
        (413, "too_large", ringkv.InvalidRequestError),
        (503, "no_ring", ringkv.UnavailableError),
        (503, "shutting_down", ringkv.UnavailableError),
        (500, "failed", ringkv.ServerError),
        (408, "bad_request", ringkv.RequestTimeoutError),
        (412, "precondition_failed", ringkv.PreconditionFailedError),
        (405, "method_not_allowed", ringkv.RingkvError),
    ],
)
def test_error_answers_map_to_exceptions(scripted, status: int, kind: str, expected: type) -> None:
    headers, body = error_body(error=f"something about {kind}", kind=kind)
    client = ringkv.Client(scripted((status, headers, body)))
    with pytest.raises(expected, match=f"something about {kind}"):
        client.get("k")


def test_an_invalid_context_header_answer_is_a_context_error(scripted) -> None:
    headers, body = error_body(error="invalid context header: context checksum mismatch", kind="bad_request")
    client = ringkv.Client(scripted((400, headers, body)))
    with pytest.raises(ringkv.ContextError):
        client.put("k", b"v", context=ringkv.Context({"n1.0.0": 1}))


def test_a_300_answer_is_parsed(scripted) -> None:
    context = ringkv.Context({"n1.0.0": 1, "n2.0.0": 1}).to_base64()
    body = (
        b"--b0\r\nContent-Type: application/octet-stream\r\n\r\nmilk\r\n"
        b"--b0\r\nContent-Type: application/octet-stream\r\n\r\n\r\n"
        b"--b0\r\nContent-Type: application/octet-stream\r\n\r\n--b0-not-quite\r\n"
        b"--b0--\r\n"
    )
    headers = {
        "Content-Type": 'multipart/mixed; boundary="b0"',
        "X-Ringkv-Context": context,
        "X-Ringkv-Siblings": "3",
        "X-Ringkv-Replicas": "n1,n2",
        "X-Ringkv-Fallbacks": "",
        "X-Ringkv-Node": "n1",
    }
    g = ringkv.Client(scripted((300, headers, body))).get("k")
    assert g.values == [b"milk", b"", b"--b0-not-quite"]
    assert g.context == ringkv.Context.from_base64(context) and g.replicas == ["n1", "n2"] and g.fallbacks == []


def test_a_300_answer_that_lost_a_sibling_is_refused(scripted) -> None:
    headers = {"Content-Type": "multipart/mixed; boundary=b0", "X-Ringkv-Siblings": "3", "X-Ringkv-Node": "n1"}
    body = b"--b0\r\n\r\nmilk\r\n--b0--\r\n"
    with pytest.raises(ringkv.ServerError, match="3 siblings announced, 1 received"):
        ringkv.Client(scripted((300, headers, body))).get("k")


def test_multipart_parser() -> None:
    assert parse_multipart("multipart/mixed; boundary=X", b"--X\r\n\r\na\r\n--X--") == [b"a"]
    assert parse_multipart("multipart/mixed;boundary=X", b"preamble\r\n--X\r\n\r\n\r\n\r\n--X--\r\n") == [b"\r\n"]
    with pytest.raises(ringkv.ServerError, match="without a boundary"):
        parse_multipart("multipart/mixed", b"")
    with pytest.raises(ringkv.ServerError, match="no closing delimiter"):
        parse_multipart("multipart/mixed; boundary=X", b"--X\r\n\r\na")


# ----- expiry and conditional writes -----


def test_a_value_with_a_ttl_expires(dev_cluster, bucket: str) -> None:
    client = ringkv.Client(dev_cluster.urls[0], bucket=bucket)
    before_ms = time.time() * 1000
    created = client.put("s-1", b'{"user": 7}', ttl=1, if_none_match=True)
    g = ringkv.Client(dev_cluster.urls[1], bucket=bucket).get("s-1")
    assert g.values == [b'{"user": 7}'] and g.context == created.context
    # Milliseconds since the Unix epoch, at the coordinator's clock (this machine's).
    assert before_ms + 1000 - 2000 <= g.expires_at <= time.time() * 1000 + 1000 + 2000
    assert client.get("forever-" + bucket).expires_at is None
    time.sleep(max(0.0, g.expires_at / 1000 - time.time()) + 0.3)
    gone = client.get("s-1")
    assert gone.values == [] and gone.expires_at is None
    # An expired key reads as absent with a context; the next write supersedes it.
    assert gone.context is not None and gone.context >= created.context
    again = client.put("s-1", b'{"user": 8}', context=gone.context, if_none_match=True, ttl=datetime.timedelta(hours=1))
    g2 = client.get("s-1", r="all")
    assert g2.values == [b'{"user": 8}'] and g2.context == again.context
    assert g2.expires_at > time.time() * 1000 + 3500 * 1000


def test_sliding_expiry_against_a_cluster(dev_cluster, bucket: str) -> None:
    client = ringkv.Client(dev_cluster.urls[2], bucket=bucket)
    client.put("s", b"x", ttl="1500ms")
    for _ in range(3):  # a visit every second, for 3 s: past the first expiry
        time.sleep(1.0)
        g = client.get("s")
        assert g.values == [b"x"]
        client.put("s", g.value, context=g.context, ttl="1500ms")
    time.sleep(2.0)
    assert client.get("s").values == []


def test_if_none_match_against_a_cluster(dev_cluster, bucket: str) -> None:
    a, b = (ringkv.Client(url, bucket=bucket) for url in dev_cluster.urls[:2])
    first = a.put("users:alice", b"1", if_none_match=True)
    with pytest.raises(ringkv.PreconditionFailedError) as failed:
        b.put("users:alice", b"2", if_none_match=True)
    assert failed.value.context == first.context and failed.value.exists is None
    assert "precondition failed" in str(failed.value)
    assert a.get("users:alice", r="all").values == [b"1"]


def test_if_match_against_a_cluster(dev_cluster, bucket: str) -> None:
    client = ringkv.Client(dev_cluster.urls[0], bucket=bucket)
    v1 = client.put("doc", b"v1")
    v2 = client.put("doc", b"v2", if_match=v1.context)  # no context: replaces what v1 saw
    assert client.get("doc", r="all").values == [b"v2"]
    with pytest.raises(ringkv.PreconditionFailedError) as stale:
        client.put("doc", b"v3", if_match=v1.context.to_base64())
    assert stale.value.context == v2.context
    with pytest.raises(ringkv.PreconditionFailedError) as stale_delete:
        client.delete("doc", if_match=v1.context)
    assert stale_delete.value.context == v2.context
    assert client.get("doc").values == [b"v2"]
    deleted = client.delete("doc", if_match=stale.value.context)
    gone = client.get("doc")
    assert gone.values == [] and gone.context == deleted.context
    # Deleted, the key still has a history: a stale if_match learns the tombstone's context.
    with pytest.raises(ringkv.PreconditionFailedError) as after_delete:
        client.put("doc", b"v3", if_match=v2.context)
    assert after_delete.value.context == deleted.context


def test_a_bucket_default_ttl(dev_cluster, bucket: str) -> None:
    client = ringkv.Client(dev_cluster.urls[0], bucket=bucket)
    assert "default_ttl" not in client.bucket_props()
    client.set_bucket_props(n=3, w="all", default_ttl=datetime.timedelta(minutes=30))
    deadline = time.monotonic() + 20
    # Spread by gossip: every node knows it a moment later.
    while not all(ringkv.Client(url).bucket_props(bucket).get("default_ttl") == "30m" for url in dev_cluster.urls):
        assert time.monotonic() < deadline, "the bucket's properties did not spread"
        time.sleep(0.1)
    props = client.bucket_props()
    assert props["default_ttl"] == "30m" and props["w"] == "all" and props["r"] == "quorum"
    client.put("k", b"v")  # no ttl: the bucket's
    g = client.get("k")
    assert 29 * 60_000 < g.expires_at - time.time() * 1000 <= 30 * 60_000
    client.put("k2", b"v", ttl="2h")  # a ttl overrides it
    assert client.get("k2").expires_at - time.time() * 1000 > 60 * 60_000
    with pytest.raises(ringkv.InvalidRequestError, match="n = 0 is out of range"):
        client.set_bucket_props(n=0)


def test_a_412_answer_is_a_precondition_failed_error(scripted) -> None:
    context = ringkv.Context({"n1.0.0": 3}).to_base64()
    headers, body = error_body(error="precondition failed: the key has a value", kind="precondition_failed")
    url = scripted((412, {**headers, "X-Ringkv-Context": context}, body))
    client = ringkv.Client(url)
    with pytest.raises(ringkv.PreconditionFailedError) as failed:
        client.put("k", b"v", if_none_match=True, ttl="30m")
    assert failed.value.context == ringkv.Context.from_base64(context) and failed.value.context.key == b"k"
    assert "the key has a value" in str(failed.value)
    method, path, sent = scripted.received[-1]
    assert method == "PUT" and path == "/kv/default/k?ttl=30m" and sent["If-None-Match"] == "*"
    assert "If-Match" not in sent and "X-Ringkv-Context" not in sent
    # A delete with if_match sends it as its context too (a delete needs one), with no read first.
    with pytest.raises(ringkv.PreconditionFailedError):
        client.delete("k", if_match=context)
    method, path, sent = scripted.received[-1]
    assert method == "DELETE" and sent["If-Match"] == context and sent["X-Ringkv-Context"] == context
    assert len(scripted.received) == 2
    # Without a context header (the key has no history), the error has none.
    scripted((412, headers, body))
    with pytest.raises(ringkv.PreconditionFailedError) as failed:
        client.put("k", b"v", if_match=context, ttl=1.5)
    assert failed.value.context is None
    method, path, sent = scripted.received[-1]
    assert path == "/kv/default/k?ttl=1500ms" and sent["If-Match"] == context


def test_expires_at_is_read_from_the_answer(scripted) -> None:
    headers = {"Content-Type": "application/octet-stream", "X-Ringkv-Node": "n1", "X-Ringkv-Expires-At": "1767225600000"}
    assert ringkv.Client(scripted((200, headers, b"v"))).get("k").expires_at == 1767225600000
    headers["X-Ringkv-Expires-At"] = "soon"
    with pytest.raises(ringkv.ServerError, match="X-Ringkv-Expires-At"):
        ringkv.Client(scripted((200, headers, b"v"))).get("k")
