"""A web session store on ringkv, with sliding expiry.

Sessions live in a bucket of a live cluster, one key per session id, as JSON. Every write gives
the session a fresh time to live, so a session expires after ``ttl`` without a visit; ringkv
drops it by itself (no sweeper). Conditional writes keep it safe under concurrent requests:

- a new session is created with ``if_none_match=True``, so two ids that clash never share data;
- every other write is ``if_match`` the context the request read: a refresh or save never
  brings back a session that was logged out (deleted) or replaced meanwhile, and a stale write
  re-reads instead of clobbering a newer one;
- siblings (two writes that both passed their check, say on either side of a partition) are
  resolved on the next read: the most recently updated copy wins.

Run it against a cluster (``ringkv dev``)::

    python session_store.py http://127.0.0.1:8087      # then open http://127.0.0.1:8000

and every page view counts the visits of its session; ``/logout`` ends it.
"""

from __future__ import annotations

import datetime
import http.cookies
import json
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import ringkv

Ttl = Union[int, float, datetime.timedelta, str]


class SessionExpired(ringkv.RingkvError):
    """The session is gone (expired, or logged out by another request): start a new one."""


@dataclass
class Session:
    """A session as a request sees it: its id, its data, and the context of the read or write
    that gave them (the next write is conditional on it)."""

    id: str
    data: Dict[str, Any]
    context: ringkv.Context
    #: When it expires unless used again, in ms since the Unix epoch (from the node's clock).
    expires_at: Optional[int] = None


def _encode(data: Dict[str, Any]) -> bytes:
    return json.dumps({"data": data, "updated_ms": int(time.time() * 1000)}, sort_keys=True).encode()


def _newest(values: List[bytes]) -> Dict[str, Any]:
    """The data of the most recently updated sibling (ties broken by the bytes, so every
    reader picks the same one)."""
    docs = sorted((json.loads(value)["updated_ms"], value) for value in values)
    return dict(json.loads(docs[-1][1])["data"])


class SessionStore:
    """Sessions in ``bucket``, each expiring ``ttl`` after its last write.

    ``client`` is a :class:`ringkv.Client` (or anything with its ``get``, ``put`` and
    ``delete``); ``new_id`` makes session ids (random, 128 bits, by default).
    """

    def __init__(
        self,
        client: ringkv.Client,
        *,
        bucket: str = "sessions",
        ttl: Ttl = datetime.timedelta(minutes=30),
        new_id: Callable[[], str] = lambda: secrets.token_urlsafe(16),
        attempts: int = 5,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.ttl = ttl
        self.new_id = new_id
        self.attempts = attempts

    def create(self, data: Dict[str, Any]) -> Session:
        """A new session holding ``data``; ``if_none_match`` makes sure its id was free."""
        for _ in range(self.attempts):
            session_id = self.new_id()
            try:
                written = self.client.put(
                    session_id, _encode(data), bucket=self.bucket, ttl=self.ttl, if_none_match=True
                )
            except ringkv.PreconditionFailedError:
                continue  # the id is taken: draw another
            return Session(session_id, dict(data), written.context)
        raise ringkv.RingkvError(f"no free session id in {self.attempts} attempts")

    def load(self, session_id: str, *, refresh: bool = True) -> Optional[Session]:
        """The session, or ``None`` when it does not exist (never did, expired, logged out).

        With ``refresh`` its time to live starts again (sliding expiry): the data is written
        back ``if_match`` the read's context, which also replaces any siblings. When another
        request wrote in between, it reads again rather than overwrite that write.
        """
        for _ in range(self.attempts):
            read = self.client.get(session_id, bucket=self.bucket)
            if not read.values:
                return None
            data = _newest(read.values)
            if not refresh:
                return Session(session_id, data, read.context, read.expires_at)
            try:
                written = self.client.put(
                    session_id, _encode(data), bucket=self.bucket, ttl=self.ttl, if_match=read.context
                )
            except ringkv.PreconditionFailedError:
                continue  # changed since the read: read the newer state
            return Session(session_id, data, written.context)
        raise ringkv.RingkvError(f"session {session_id} kept changing during {self.attempts} reads")

    def save(self, session: Session) -> None:
        """Writes ``session.data`` with a fresh time to live. A write in between by another
        request (a refresh, a save) is overwritten: this save is the newest. Raises
        :class:`SessionExpired` when the session is gone: it is never brought back."""
        context = session.context
        for _ in range(self.attempts):
            try:
                written = self.client.put(
                    session.id, _encode(session.data), bucket=self.bucket, ttl=self.ttl, if_match=context
                )
            except ringkv.PreconditionFailedError:
                current = self.client.get(session.id, bucket=self.bucket)
                if not current.values:
                    raise SessionExpired(f"session {session.id} expired or was logged out") from None
                context = current.context
                continue
            session.context = written.context
            return
        raise ringkv.RingkvError(f"session {session.id} kept changing during {self.attempts} saves")

    def destroy(self, session: Session) -> None:
        """Logs the session out: deletes it, whatever was written since it was read."""
        context: Optional[ringkv.Context] = session.context
        for _ in range(self.attempts):
            try:
                self.client.delete(session.id, bucket=self.bucket, if_match=context)
                return
            except ringkv.PreconditionFailedError:
                current = self.client.get(session.id, bucket=self.bucket)
                if not current.values:
                    return  # already gone
                context = current.context
        raise ringkv.RingkvError(f"session {session.id} kept changing during {self.attempts} deletes")


# ----- a tiny WSGI application: a visit counter per session -----

COOKIE = "sid"


def make_app(store: SessionStore) -> Callable[..., Iterable[bytes]]:
    """A WSGI app: ``/`` counts the visits of the session in the ``sid`` cookie (creating one
    when there is none, or it expired), ``/logout`` ends the session."""

    def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        cookies = http.cookies.SimpleCookie(environ.get("HTTP_COOKIE", ""))
        session_id = cookies[COOKIE].value if COOKIE in cookies else None
        session = store.load(session_id, refresh=False) if session_id else None
        headers = [("Content-Type", "text/plain; charset=utf-8")]
        if environ.get("PATH_INFO") == "/logout":
            if session is not None:
                store.destroy(session)
            headers.append(("Set-Cookie", f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly"))
            start_response("200 OK", headers)
            return [b"logged out\n"]
        if session is None:
            session = store.create({"visits": 1})
        else:
            session.data["visits"] = session.data.get("visits", 0) + 1
            try:
                store.save(session)  # also refreshes the time to live
            except SessionExpired:
                session = store.create({"visits": 1})
        headers.append(("Set-Cookie", f"{COOKIE}={session.id}; Path=/; HttpOnly; SameSite=Lax"))
        start_response("200 OK", headers)
        return [f"visits: {session.data['visits']}\n".encode()]

    return app


def main(argv: List[str]) -> None:
    from wsgiref.simple_server import make_server

    url = argv[1] if len(argv) > 1 else "http://127.0.0.1:8087"
    store = SessionStore(ringkv.Client(url), ttl="30m")
    with make_server("127.0.0.1", 8000, make_app(store)) as server:
        print(f"sessions in {url}, bucket {store.bucket!r}; serving http://127.0.0.1:8000")
        server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
