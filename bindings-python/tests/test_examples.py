"""The example web session store (examples/session_store.py), against a live `ringkv dev`
cluster: sliding expiry, creation with if_none_match, conditional saves and logouts, and its
WSGI app."""

from __future__ import annotations

import importlib.util
import io
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

import ringkv

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "session_store.py"


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("session_store", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["session_store"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["session_store"]


@pytest.fixture
def store(example: ModuleType, dev_cluster) -> Any:
    """A store in a fresh bucket of the live cluster, sessions expiring after 1.5 s."""
    client = ringkv.Client(dev_cluster.urls[0])
    return example.SessionStore(client, bucket=f"sessions-{uuid.uuid4().hex[:8]}", ttl="1500ms")


def test_sessions_slide_and_expire(store: Any) -> None:
    session = store.create({"user": 7})
    assert store.load(session.id).data == {"user": 7}
    for _ in range(3):  # a visit every second, for 3 s: each one starts the ttl again
        time.sleep(1.0)
        loaded = store.load(session.id)
        assert loaded is not None and loaded.data == {"user": 7}
    peek = store.load(session.id, refresh=False)
    assert peek.expires_at is not None and 0 < peek.expires_at - time.time() * 1000 <= 1500
    time.sleep(2.0)  # no visit for longer than the ttl
    assert store.load(session.id) is None
    # A stale copy cannot bring it back.
    with pytest.raises(Exception) as gone:
        store.save(session)
    assert type(gone.value).__name__ == "SessionExpired"


def test_a_clashing_id_is_never_shared(example: ModuleType, store: Any) -> None:
    taken = store.create({"user": "first"})
    ids = iter([taken.id, "fresh-" + uuid.uuid4().hex])
    clashing = example.SessionStore(store.client, bucket=store.bucket, ttl=store.ttl, new_id=lambda: next(ids))
    second = clashing.create({"user": "second"})  # if_none_match refused the taken id
    assert second.id != taken.id
    assert store.load(taken.id).data == {"user": "first"}
    assert store.load(second.id).data == {"user": "second"}


def test_a_save_after_a_concurrent_refresh_wins_and_a_logout_sticks(store: Any) -> None:
    session = store.create({"cart": []})
    a = store.load(session.id, refresh=False)
    b = store.load(session.id)  # another request refreshes: the context changes
    assert b.context != a.context
    a.data["cart"].append("milk")
    store.save(a)  # if_match fails once, re-reads, writes over the refresh
    assert store.load(session.id).data == {"cart": ["milk"]}
    store.destroy(b)  # b's context is stale: destroy re-reads and deletes anyway
    assert store.load(session.id) is None
    with pytest.raises(Exception) as gone:
        store.save(a)  # logged out: never brought back
    assert type(gone.value).__name__ == "SessionExpired"
    assert store.load(session.id) is None


def test_siblings_are_resolved_by_the_newest_update(example: ModuleType, store: Any) -> None:
    # Two blind writes (as two sides of a partition could make): siblings.
    client = store.client
    client.put("s", example._encode({"n": 1}), bucket=store.bucket, ttl="1m")
    time.sleep(0.01)
    client.put("s", example._encode({"n": 2}), bucket=store.bucket, ttl="1m")
    assert len(client.get("s", bucket=store.bucket, r="all").values) == 2
    assert store.load("s").data == {"n": 2}  # the refresh replaced both
    assert client.get("s", bucket=store.bucket, r="all").values != [] and not client.get(
        "s", bucket=store.bucket, r="all"
    ).siblings


def request(app: Any, path: str, cookie: Optional[str] = None) -> Tuple[str, Dict[str, str], str]:
    from wsgiref.util import setup_testing_defaults

    environ: Dict[str, Any] = {"PATH_INFO": path, "wsgi.input": io.BytesIO()}
    if cookie:
        environ["HTTP_COOKIE"] = cookie
    setup_testing_defaults(environ)
    answer: List[Any] = []
    body = b"".join(app(environ, lambda status, headers: answer.extend([status, dict(headers)])))
    return answer[0], answer[1], body.decode()


def test_the_wsgi_app_counts_visits_per_session(example: ModuleType, store: Any) -> None:
    app = example.make_app(store)
    status, headers, body = request(app, "/")
    assert status == "200 OK" and body == "visits: 1\n"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert cookie.startswith("sid=")
    assert request(app, "/", cookie)[2] == "visits: 2\n"
    assert request(app, "/", cookie)[2] == "visits: 3\n"
    assert request(app, "/")[2] == "visits: 1\n"  # another browser, another session
    status, headers, body = request(app, "/logout", cookie)
    assert body == "logged out\n" and "Max-Age=0" in headers["Set-Cookie"]
    status, headers, body = request(app, "/", cookie)  # the old cookie: a new session
    assert body == "visits: 1\n" and headers["Set-Cookie"].split(";")[0] != cookie
    # Left alone longer than the ttl, a session is gone.
    cookie = headers["Set-Cookie"].split(";")[0]
    time.sleep(2.0)
    assert request(app, "/", cookie)[2] == "visits: 1\n"
