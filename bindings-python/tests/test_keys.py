"""Many keys at once (mget), a bucket's keys (list_keys, iter_keys) and watching a key (watch):
against a real `ringkv dev` cluster, against a scripted HTTP server for the answers a healthy
cluster does not give on demand, and bad input refused before anything is sent."""

from __future__ import annotations

import base64
import datetime
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Iterator, List, Optional, Tuple
from urllib.parse import quote_plus

import pytest

import ringkv


def _unreachable() -> str:
    """A loopback URL nothing listens on: a client that sent anything there would fail with
    UnavailableError, so any other error shows that nothing was sent."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


UNREACHABLE = _unreachable()


# ----- multi-get against `ringkv dev` -----


def test_mget_reads_present_absent_sibling_deleted_and_binary_keys(dev_cluster, bucket: str) -> None:
    a, b = (ringkv.Client(url, bucket=bucket) for url in dev_cluster.urls[:2])
    a.put("alice", b"milk", w="all")
    a.put("cart", b"bread", w="all")
    b.put("cart", b"eggs", w="all")  # no context: a sibling
    a.put(b"\xff\x00bin", b"\x00\x01", w="all")
    gone = a.put("gone", b"x", w="all")
    a.delete("gone", context=gone.context, w="all")
    a.put("session", b"s", ttl="1h", w="all")
    keys = ["session", "nobody", b"\xff\x00bin", "cart", "gone", "alice"]

    m = b.mget(keys, r="all")

    assert m.complete and m.errors == {} and m.unprocessed == []
    # In the order asked, as bytes, whatever order the node answered in.
    assert list(m.results) == [k if isinstance(k, bytes) else k.encode() for k in keys]
    assert m["alice"].values == [b"milk"] and m["alice"].value == b"milk"
    assert m["alice"].context == a.get("alice", r="all").context and m["alice"].context.key == b"alice"
    assert m["nobody"].values == [] and m["nobody"].context is None and m["nobody"].found is False
    assert m[b"\xff\x00bin"].values == [b"\x00\x01"]
    assert sorted(m["cart"].values) == [b"bread", b"eggs"] and m["cart"].siblings
    assert m["gone"].values == [] and m["gone"].context is not None and m["gone"].context > gone.context
    assert m["session"].expires_at > time.time() * 1000 + 3500 * 1000 and m["alice"].expires_at is None
    assert m.node == "n2" and all(r.op == "get" and r.ok and r.bucket == bucket.encode() for r in m.results.values())
    assert "alice" in m and b"alice" in m and "carol" not in m
    with pytest.raises(KeyError, match="not asked"):
        m["carol"]
    # A multi-get's context resolves siblings as a get's does.
    b.put("cart", b"bread,eggs", context=m["cart"].context, w="all")
    assert a.mget(["cart"], r="all")["cart"].values == [b"bread,eggs"]


def test_mget_of_many_keys_from_any_node(dev_cluster, bucket: str) -> None:
    client = ringkv.Client(dev_cluster.urls[0], bucket=bucket)
    keys = [f"k{i:04}" for i in range(300)]
    for key in keys[::3]:
        client.put(key, key.encode())
    m = ringkv.Client(dev_cluster.urls[2]).mget(keys, bucket=bucket, timeout_ms=5000)
    assert m.complete and len(m.results) == 300
    assert {k.decode() for k, r in m.results.items() if r.values} == set(keys[::3])
    assert all(r.values == [k] for k, r in m.results.items() if r.values)


def test_mget_refuses_bad_key_lists_before_sending() -> None:
    client = ringkv.Client(UNREACHABLE)
    for keys, message in [
        ([], "at least one key"),
        ([f"k{i}" for i in range(1001)], "1001 keys: at most 1000"),
        (["a", "b", b"a"], "names the key 'a' twice"),
        (["a", ""], "the key is empty"),
    ]:
        with pytest.raises(ringkv.InvalidRequestError, match=message):
            client.mget(keys)
    with pytest.raises(TypeError, match="not a single key"):
        client.mget("alice")
    with pytest.raises(TypeError, match="not a single key"):
        client.mget(b"alice")
    with pytest.raises(TypeError, match="list of keys"):
        client.mget(7)
    with pytest.raises(TypeError, match="key must be str or bytes"):
        client.mget(["a", 7])
    with pytest.raises(ringkv.InvalidRequestError, match="not a quorum"):
        client.mget(["a"], r="most")
    with pytest.raises(ringkv.InvalidRequestError, match="timeout_ms = 0"):
        client.mget(["a"], timeout_ms=0)
    # 1,000 distinct keys are fine: the attempt reaches the (absent) node.
    with pytest.raises(ringkv.UnavailableError):
        client.mget([f"k{i}" for i in range(1000)])


# ----- listing against `ringkv dev` -----


def test_iter_keys_walks_exactly_the_live_keys(dev_cluster, bucket: str) -> None:
    client = ringkv.Client(dev_cluster.urls[0], bucket=bucket, w="all")
    keys = [f"user:{i:03}".encode() for i in range(280)] + [b"\xff\xfe" + bytes([i]) for i in range(20)]
    written = {key: client.put(key, b"v") for key in keys}
    deleted = set(keys[::4])
    for key in deleted:
        client.delete(key, context=written[key].context)
    live = set(keys) - deleted

    for url in dev_cluster.urls:
        for page_size in (1000, 37):
            walked = list(ringkv.Client(url).iter_keys(bucket=bucket, page_size=page_size))
            assert len(walked) == len(set(walked)), f"duplicates from {url} (page_size {page_size})"
            missing, extra = sorted(live - set(walked)), sorted(set(walked) - live)
            assert not missing and not extra, f"from {url}: missing {missing[:5]}, extra {extra[:5]}"

    # Page by page: a page may be short or empty, only a null cursor ends the listing.
    pages: List[ringkv.KeyPage] = []
    cursor: Optional[str] = None
    while True:
        page = client.list_keys(limit=50, cursor=cursor)
        assert len(page.keys) <= 50 and page.bucket == bucket.encode()
        pages.append(page)
        if page.complete:
            break
        cursor = page.cursor
    assert pages[-1].cursor is None and sum(len(p.keys) for p in pages) == len(live)


def test_listing_an_empty_bucket(dev_cluster, bucket: str) -> None:
    client = ringkv.Client(dev_cluster.urls[1])
    assert list(client.iter_keys(bucket=bucket)) == []


def test_a_cursor_the_node_cannot_read_is_an_invalid_request(dev_cluster, bucket: str) -> None:
    client = ringkv.Client(dev_cluster.urls[0], bucket=bucket)
    for key in ("a", "b", "c"):
        client.put(key, b"v", w="all")
    with pytest.raises(ringkv.InvalidRequestError, match="cursor"):
        client.list_keys(cursor="garbage!")
    with pytest.raises(ringkv.InvalidRequestError, match="cursor"):
        client.list_keys(cursor="AAAA")
    page = client.list_keys(limit=1)
    assert page.cursor is not None
    with pytest.raises(ringkv.InvalidRequestError, match="another bucket"):
        client.list_keys(bucket=bucket + "-other", cursor=page.cursor)
    # In its own bucket, the cursor goes on where the page ended.
    seen, cursor = list(page.keys), page.cursor
    while cursor is not None:
        rest = client.list_keys(cursor=cursor)
        seen += rest.keys
        cursor = rest.cursor
    assert sorted(seen) == [b"a", b"b", b"c"]


def test_listing_arguments_are_checked_before_sending() -> None:
    client = ringkv.Client(UNREACHABLE)
    for call, error, message in [
        (lambda: client.list_keys(limit=0), ringkv.InvalidRequestError, "limit = 0 is out of range 1..1000"),
        (lambda: client.list_keys(limit=1001), ringkv.InvalidRequestError, "limit = 1001"),
        (lambda: client.list_keys(limit="10"), TypeError, "limit must be an int"),
        (lambda: client.list_keys(limit=True), TypeError, "limit must be an int"),
        (lambda: client.list_keys(cursor=""), ringkv.InvalidRequestError, "pass None to start"),
        (lambda: client.list_keys(cursor=b"abc"), TypeError, "cursor must be a str"),
        (lambda: client.list_keys(bucket=""), ringkv.InvalidRequestError, "the bucket is empty"),
        (lambda: client.list_keys(timeout_ms=0), ringkv.InvalidRequestError, "timeout_ms = 0"),
        # Checked when called, not at the first next().
        (lambda: client.iter_keys(page_size=0), ringkv.InvalidRequestError, "page_size = 0"),
        (lambda: client.iter_keys(page_size=5000), ringkv.InvalidRequestError, "page_size = 5000"),
        (lambda: client.iter_keys(bucket=3), TypeError, "bucket must be str or bytes"),
    ]:
        with pytest.raises(error, match=message):
            call()
    with pytest.raises(ringkv.UnavailableError):
        client.list_keys(limit=1000)
    with pytest.raises(ringkv.UnavailableError):
        next(client.iter_keys(page_size=1))


# ----- watch against `ringkv dev` -----


def test_a_watch_returns_the_write_it_waited_for(dev_cluster, bucket: str) -> None:
    a, b = (ringkv.Client(url, bucket=bucket) for url in dev_cluster.urls[:2])
    first = a.put("config", b"v1", w="all")
    writer = threading.Timer(0.5, lambda: b.put("config", b"v2", context=first.context))
    started = time.monotonic()
    writer.start()
    try:
        w = a.watch("config", first.context, timeout=20)
    finally:
        writer.join()
    waited = time.monotonic() - started
    assert w.changed is True and w.op == "watch" and w.outcome == "ok"
    assert w.values == [b"v2"] and w.context > first.context
    assert 0.4 <= waited < 10, f"the watch answered after {waited:.2f} s"
    # What the watch returned is a context like any other.
    assert a.put("config", b"v3", context=w.context).ok


def test_a_watch_with_the_latest_context_waits_and_returns_unchanged(dev_cluster, bucket: str) -> None:
    client = ringkv.Client(dev_cluster.urls[2], bucket=bucket)
    client.put("config", b"v1", w="all")
    latest = client.get("config", r="all")
    started = time.monotonic()
    w = client.watch("config", latest.context, timeout=1)
    waited = time.monotonic() - started
    assert w.changed is False and w.outcome == "unchanged" and w.ok and w.values == []
    assert w.context == latest.context  # the one to watch from next
    assert 0.9 <= waited < 6, f"a 1 s watch answered after {waited:.2f} s"
    # A context given as its base64, and a timedelta.
    again = client.watch("config", latest.context.to_base64(), timeout=datetime.timedelta(milliseconds=200))
    assert again.changed is False


def test_a_watch_without_a_context_waits_for_the_first_write(dev_cluster, bucket: str) -> None:
    a, b = (ringkv.Client(url, bucket=bucket) for url in dev_cluster.urls[1:])
    nothing = a.watch("new", None, timeout=0.3)
    assert nothing.changed is False and nothing.context is None
    writer = threading.Timer(0.3, lambda: b.put("new", b"hello"))
    writer.start()
    try:
        w = a.watch("new", nothing.context, timeout="20s")
    finally:
        writer.join()
    assert w.changed and w.values == [b"hello"]
    # The key has a history now: watching it "from nothing" answers at once.
    started = time.monotonic()
    assert a.watch("new", None, timeout=20).values == [b"hello"]
    assert time.monotonic() - started < 5


def test_an_old_context_answers_at_once_and_a_delete_is_a_change(dev_cluster, bucket: str) -> None:
    client = ringkv.Client(dev_cluster.urls[0], bucket=bucket)
    v1 = client.put("k", b"v1", w="all")
    v2 = client.put("k", b"v2", context=v1.context, w="all")
    started = time.monotonic()
    w = client.watch("k", v1.context, timeout=20, r="all")
    assert w.changed and w.values == [b"v2"] and time.monotonic() - started < 5
    threading.Timer(0.3, lambda: client.delete("k", context=v2.context)).start()
    deleted = client.watch("k", v2.context, timeout=20)
    assert deleted.changed and deleted.values == [] and deleted.context > v2.context


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"timeout": 0}, ringkv.InvalidRequestError, "timeout = 0 s is outside 1 ms to 10m"),
        ({"timeout": -1}, ringkv.InvalidRequestError, "outside 1 ms to 10m"),
        ({"timeout": 601}, ringkv.InvalidRequestError, "timeout = 601 s is outside"),
        ({"timeout": "11m"}, ringkv.InvalidRequestError, "timeout = '11m' is outside"),
        ({"timeout": "soon"}, ringkv.InvalidRequestError, "is not a duration"),
        ({"timeout": float("nan")}, ringkv.InvalidRequestError, "finite"),
        ({"timeout": datetime.timedelta(0)}, ringkv.InvalidRequestError, "outside"),
        ({"timeout": True}, TypeError, "not bool"),
        ({"timeout": [1]}, TypeError, "timeout must be seconds"),
        ({"r": 0.5}, TypeError, "r must be"),
        ({"bucket": ""}, ringkv.InvalidRequestError, "the bucket is empty"),
    ],
)
def test_watch_arguments_are_checked_before_sending(kwargs: Dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        ringkv.Client(UNREACHABLE).watch("k", None, **kwargs)  # type: ignore[arg-type]


def test_a_watch_refuses_a_context_of_another_key_or_no_context() -> None:
    client = ringkv.Client(UNREACHABLE)
    other = ringkv.Context({"n1.0.0": 1}).for_key("other")
    with pytest.raises(ringkv.ContextError, match="not default/k"):
        client.watch("k", other)
    with pytest.raises(ringkv.ContextError):
        client.watch("k", "garbage!")
    with pytest.raises(TypeError, match="context must be a Context"):
        client.watch("k", 7)  # type: ignore[arg-type]
    with pytest.raises(ringkv.UnavailableError):  # 10 minutes is the longest wait
        client.watch("k", None, timeout=600)


# ----- against a scripted server -----


class Script:
    """What the scripted server answers: a status, headers, and body chunks (sent as they are,
    with chunked transfer encoding when ``chunked``); ``cut`` drops the connection after them."""

    def __init__(self) -> None:
        self.status = 200
        self.headers: Dict[str, str] = {}
        self.chunks: List[bytes] = []
        self.chunked = False
        self.cut = False
        self.delay = 0.0
        self.received: List[Tuple[str, str, bytes]] = []


@pytest.fixture
def scripted() -> Iterator[Tuple[Script, str]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/ring":  # the client's background ring read: this is no node
                self.send_error(404)
                return
            script.received.append((self.command, self.path, body))
            time.sleep(script.delay)
            self.send_response(script.status)
            for name, value in script.headers.items():
                self.send_header(name, value)
            if script.chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(sum(map(len, script.chunks))))
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in script.chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if script.chunked else chunk)
                self.wfile.flush()
            if script.chunked and not script.cut:
                self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield script, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def ndjson(*docs: object) -> List[bytes]:
    return [json.dumps(doc).encode() + b"\n" for doc in docs]


NDJSON = {"Content-Type": "application/x-ndjson", "X-Ringkv-Node": "n3"}
B64 = base64.b64encode


def test_an_mget_request_and_its_streamed_answer(scripted) -> None:
    script, url = scripted
    context = ringkv.Context({"n1.0.0": 2}).to_base64()
    script.headers = NDJSON
    script.chunked = True
    script.chunks = ndjson(
        {"key": {"base64": B64(b"\xff").decode()}, "status": 200, "values": [B64(b"bin").decode()], "context": context},
        {
            "key": "a",
            "status": 503,
            "error": "unavailable",
            "message": "read quorum not reached: 2 needed, 1 answered in time",
        },
        {"key": "b", "status": 404},
        {"key": "c", "status": 500, "error": "failed", "message": "storage failed"},
        {"unprocessed": ["d", {"base64": B64(b"\xfe").decode()}]},
    )
    m = ringkv.Client(url).mget(["a", "b", "c", "d", b"\xff", b"\xfe"], bucket="bkt", r="all", timeout_ms=3000)
    method, path, body = script.received[-1]
    assert method == "POST" and path == "/kv/bkt?mget=&r=all&timeout_ms=3000"
    assert json.loads(body) == {"keys": ["a", "b", "c", "d", {"base64": "/w=="}, {"base64": "/g=="}]}
    assert list(m.results) == [b"b", b"\xff"] and m.unprocessed == [b"d", b"\xfe"] and not m.complete
    assert m[b"\xff"].values == [b"bin"] and m[b"\xff"].context.key == b"\xff" and m[b"\xff"].node == "n3"
    assert m["b"].values == [] and m["b"].context is None
    assert isinstance(m.errors[b"a"], ringkv.QuorumError) and isinstance(m.errors[b"c"], ringkv.ServerError)
    with pytest.raises(ringkv.QuorumError, match="key 'a': read quorum not reached"):
        m["a"]
    with pytest.raises(KeyError, match="unprocessed"):
        m["d"]
    assert "2 read (1 with values), 2 failed, 2 unprocessed" in repr(m)


@pytest.mark.parametrize(
    "chunks, chunked, cut, error, message",
    [
        # The answer ended without its final line.
        (ndjson({"key": "a", "status": 404}), False, False, ringkv.ServerError, "cut short after 1 of 2 keys"),
        # The connection dropped in the middle of a chunked answer.
        (ndjson({"key": "a", "status": 404}), True, True, ringkv.ServerError, "cut short after 1 of 2 keys"),
        (ndjson({"key": "z", "status": 404}, {"unprocessed": []}), False, False, ringkv.ServerError, "not asked for"),
        (ndjson({"key": "a", "status": 404}, {"key": "a", "status": 404}), False, False, ringkv.ServerError, "two answers"),
        (ndjson({"key": "a", "status": 404}, {"unprocessed": []}), False, False, ringkv.ServerError, "neither answered"),
        (ndjson({"unprocessed": ["a", "b"]}, {"key": "a", "status": 404}), False, False, ringkv.ServerError, "after the"),
        (
            ndjson({"key": "a", "status": 200, "values": []}, {"unprocessed": ["b"]}),
            False,
            False,
            ringkv.ServerError,
            "status 200 with 0 values",
        ),
        (ndjson({"key": "a", "status": 200, "values": ["***"]}), False, False, ringkv.ServerError, "invalid base64"),
        ([b"not json\n"], False, False, ringkv.ServerError, "not JSON"),
    ],
)
def test_a_broken_mget_answer_is_an_error(scripted, chunks, chunked: bool, cut: bool, error: type, message: str) -> None:
    script, url = scripted
    script.headers, script.chunks, script.chunked, script.cut = NDJSON, chunks, chunked, cut
    with pytest.raises(error, match=message):
        ringkv.Client(url, timeout=3).mget(["a", "b"])


@pytest.mark.parametrize(
    "status, kind, expected",
    [
        (400, "bad_request", ringkv.InvalidRequestError),
        (413, "too_large", ringkv.InvalidRequestError),
        (429, "too_many_watches", ringkv.UnavailableError),
        (503, "no_ring", ringkv.UnavailableError),
    ],
)
def test_error_answers_of_the_bucket_requests(scripted, status: int, kind: str, expected: type) -> None:
    script, url = scripted
    script.status, script.headers = status, {"Content-Type": "application/json", "X-Ringkv-Node": "n1"}
    script.chunks = [json.dumps({"error": f"something about {kind}", "kind": kind}).encode()]
    client = ringkv.Client(url)
    for call in (lambda: client.mget(["a"]), lambda: client.list_keys(), lambda: client.watch("k", None)):
        with pytest.raises(expected, match=f"something about {kind}"):
            call()


def test_a_listing_with_no_replica_of_a_partition_is_a_quorum_error(scripted) -> None:
    script, url = scripted
    script.status, script.headers = 503, {"Content-Type": "application/json", "X-Ringkv-Node": "n1"}
    script.chunks = [
        json.dumps(
            {
                "error": "read quorum not reached: 1 needed, 0 answered in time",
                "kind": "unavailable",
                "quorum": "read",
                "needed": 1,
                "answered": [],
            }
        ).encode()
    ]
    with pytest.raises(ringkv.QuorumError, match="1 needed, 0 answered") as error:
        ringkv.Client(url).list_keys()
    assert error.value.needed == 1 and error.value.answered == []


def test_a_listing_page_is_parsed(scripted) -> None:
    script, url = scripted
    script.headers = {"Content-Type": "application/json", "X-Ringkv-Node": "n1"}
    script.chunks = [json.dumps({"keys": ["a", {"base64": "/w=="}], "cursor": "AQID"}).encode()]
    page = ringkv.Client(url).list_keys(bucket=b"b/x", limit=2, cursor="AAA")
    assert page.keys == [b"a", b"\xff"] and page.cursor == "AQID" and not page.complete
    assert script.received[-1][:2] == ("GET", "/kv/b%2Fx?list=&limit=2&cursor=AAA")
    script.chunks = [json.dumps({"keys": [], "cursor": None}).encode()]
    assert ringkv.Client(url).list_keys().complete
    script.chunks = [json.dumps({"keys": [7], "cursor": None}).encode()]
    with pytest.raises(ringkv.ServerError, match="not a key"):
        ringkv.Client(url).list_keys()


def test_a_304_is_an_unchanged_watch_with_the_context_to_watch_from(scripted) -> None:
    script, url = scripted
    context = ringkv.Context({"n1.0.0": 4})
    script.status, script.headers, script.chunks = 304, {"X-Ringkv-Context": context.to_base64(), "X-Ringkv-Node": "n2"}, []
    w = ringkv.Client(url).watch(b"k\xff", context.for_key(b"k\xff", bucket="b"), bucket="b", timeout=2.5, r=1)
    assert w.changed is False and w.outcome == "unchanged" and w.context == context and w.context.key == b"k\xff"
    assert w.node == "n2" and "changed=False" in repr(w)
    method, path, _ = script.received[-1]
    assert method == "GET" and path == f"/kv/b/k%FF?r=1&changed_since={quote_plus(context.to_base64())}&timeout_ms=2500"
    # A key that had no history: no context in the answer, changed_since=* was sent.
    script.headers = {"X-Ringkv-Node": "n2"}
    assert ringkv.Client(url).watch("k", None, timeout=1).context is None
    assert script.received[-1][1] == "/kv/default/k?changed_since=%2A&timeout_ms=1000"
    # An empty context is "no history" too.
    ringkv.Client(url).watch("k", ringkv.Context.empty(), timeout=1)
    assert "changed_since=%2A" in script.received[-1][1]


def test_a_watch_answer_with_siblings(scripted) -> None:
    script, url = scripted
    script.status = 300
    script.headers = {"Content-Type": "multipart/mixed; boundary=b0", "X-Ringkv-Siblings": "2", "X-Ringkv-Node": "n1"}
    script.chunks = [b"--b0\r\n\r\nmilk\r\n--b0\r\n\r\nbread\r\n--b0--\r\n"]
    w = ringkv.Client(url).watch("cart", None)
    assert w.changed is True and w.values == [b"milk", b"bread"] and w.siblings


def test_a_watch_waits_longer_than_the_client_timeout(scripted) -> None:
    """A watch's HTTP timeout is its wait plus the client's timeout, not the client's alone."""
    script, url = scripted
    script.status, script.headers, script.delay = 304, {"X-Ringkv-Node": "n1"}, 0.8
    client = ringkv.Client(url, timeout=0.3)
    assert client.watch("k", None, timeout=1).changed is False
    with pytest.raises(ringkv.RequestTimeoutError):
        client.get("k")
