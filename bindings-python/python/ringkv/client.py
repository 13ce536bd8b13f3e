"""A client for a live ringkv cluster, over its HTTP API (standard library only).

>>> import ringkv                                          # doctest: +SKIP
>>> db = ringkv.Client("http://127.0.0.1:8087")            # doctest: +SKIP
>>> db.put("alice", b"milk", bucket="carts")               # doctest: +SKIP
>>> g = db.get("alice", bucket="carts")                    # doctest: +SKIP
>>> g.values, g.context                                    # doctest: +SKIP
>>> db.put("alice", b"milk,eggs", context=g.context, bucket="carts")   # doctest: +SKIP

Sessions: a value written with ``ttl`` expires; ``if_none_match=True`` creates a key only if it
has no value, ``if_match`` writes only over an unchanged context::

    db.put("s-42", b'{"user": 7}', bucket="sessions", ttl="30m", if_none_match=True)
    g = db.get("s-42", bucket="sessions")          # g.expires_at: ms since the Unix epoch
    db.put("s-42", g.value, context=g.context, bucket="sessions", ttl="30m")   # sliding expiry

Many keys at once, a bucket's keys, and waiting for a change::

    m = db.mget(["alice", "bob"], bucket="carts")   # m["alice"].values, m.errors, m.unprocessed
    for key in db.iter_keys(bucket="carts"):        # every key, page by page (a scan: admin, export)
        ...
    w = db.watch("alice", g.context, bucket="carts", timeout=30)   # w.changed, w.values, w.context

Every call is one HTTP request to the node in the URL, which coordinates it (or forwards it to
an owner of the key). The client never retries: a put that timed out may have been applied,
and writing it again without the new context would make a sibling of the same change. Failures
are exceptions (see :mod:`ringkv.errors`): :class:`~ringkv.QuorumError` when too few replicas
answered, :class:`~ringkv.InvalidRequestError` for a request the node refused,
:class:`~ringkv.PreconditionFailedError` when a write's condition did not hold,
:class:`~ringkv.UnavailableError` when the node cannot be reached,
:class:`~ringkv.RequestTimeoutError` when it did not answer in time.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import http.client
import json
import socket
import urllib.parse
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from ._args import (
    Name,
    Quorum,
    Ttl,
    format_duration_ms,
    integer,
    name_bytes,
    optional_integer,
    optional_quorum,
    optional_ttl_ms,
    quorum,
    ttl_to_ms,
    u32,
    value_bytes,
    wait_to_ms,
)
from .errors import (
    ContextError,
    InvalidRequestError,
    NothingToDeleteError,
    PreconditionFailedError,
    QuorumError,
    RequestTimeoutError,
    RingkvError,
    ServerError,
    UnavailableError,
)
from .results import KeyPage, MgetResult, Result, key_text
from .version import Context, check_condition, check_context

__all__ = ["Client", "parse_multipart"]

DEFAULT_BUCKET = "default"

# Header names: client/src/api.rs.
HEADER_CONTEXT = "X-Ringkv-Context"
HEADER_REPLICAS = "X-Ringkv-Replicas"
HEADER_FALLBACKS = "X-Ringkv-Fallbacks"
HEADER_DURABLE = "X-Ringkv-Durable"
HEADER_READ_YOUR_WRITES = "X-Ringkv-Read-Your-Writes"
HEADER_SIBLINGS = "X-Ringkv-Siblings"
HEADER_NODE = "X-Ringkv-Node"
HEADER_EXPIRES_AT = "X-Ringkv-Expires-At"

# Limits of the bucket requests: core/src/listing.rs, client/src/api.rs, core/src/request.rs.
#: Keys a listing page holds at most.
MAX_LIST_LIMIT = 1_000
#: Keys a multi-get may name at most.
MAX_MGET_KEYS = 1_000
#: The longest a watch waits, in milliseconds (10 minutes).
MAX_WATCH_WAIT_MS = 600_000


def parse_multipart(content_type: str, body: bytes) -> List[bytes]:
    """The parts of a ``multipart/mixed`` body (RFC 2046), as a 300 answer carries siblings.

    >>> from ringkv.client import parse_multipart
    >>> body = b"--XY\\r\\nContent-Type: application/octet-stream\\r\\n\\r\\nmilk\\r\\n--XY\\r\\n\\r\\nbread\\r\\n--XY--\\r\\n"
    >>> parse_multipart("multipart/mixed; boundary=XY", body)
    [b'milk', b'bread']
    """
    boundary = None
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise ServerError(f"a multipart answer without a boundary: {content_type!r}")
    delimiter = b"\r\n--" + boundary.encode("utf-8")
    # Every delimiter is preceded by CRLF, the first one included once the body gets one. A
    # delimiter line is the delimiter, then "--" (the last one) or optional padding and CRLF.
    data = b"\r\n" + body
    starts: List[int] = []  # where each delimiter begins
    contents: List[int] = []  # where the part after it begins
    position = 0
    while True:
        found = data.find(delimiter, position)
        if found < 0:
            raise ServerError("a malformed multipart answer: no closing delimiter")
        after = found + len(delimiter)
        if data.startswith(b"--", after):
            starts.append(found)
            break
        line_end = after
        while data[line_end : line_end + 1] in (b" ", b"\t"):
            line_end += 1
        if data.startswith(b"\r\n", line_end):
            starts.append(found)
            contents.append(line_end + 2)
            position = line_end + 2
        else:
            position = after  # the boundary inside a line is not a delimiter
    parts: List[bytes] = []
    for content, end in zip(contents, starts[1:]):
        part = data[content:end]
        if part.startswith(b"\r\n"):  # no headers
            parts.append(part[2:])
            continue
        headers_end = part.find(b"\r\n\r\n")
        if headers_end < 0:
            raise ServerError("a malformed multipart answer: a part without the end of its headers")
        parts.append(part[headers_end + 4 :])
    return parts


def _ids(value: Optional[str]) -> List[str]:
    return [part for part in (value or "").split(",") if part]


class Client:
    """A client for one node of a live cluster.

    Args:
        url: the node's HTTP address, e.g. ``"http://127.0.0.1:8087"``.
        timeout: seconds to wait for an answer (a request with ``timeout_ms`` waits at least
            that plus one second, so the node's own quorum timeout answers first).
        bucket: the default bucket of every call.
        r, w, dw: default quorum overrides of every call (``None``: the bucket's).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8087",
        *,
        timeout: float = 10.0,
        bucket: Name = DEFAULT_BUCKET,
        r: Optional[Quorum] = None,
        w: Optional[Quorum] = None,
        dw: Optional[Quorum] = None,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        parsed = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if parsed.scheme != "http":
            raise InvalidRequestError(f"unsupported URL scheme {parsed.scheme!r}: ringkv nodes speak http")
        if not parsed.hostname:
            raise InvalidRequestError(f"no host in URL {url!r}")
        try:
            port = parsed.port or 80
        except ValueError as error:
            raise InvalidRequestError(f"invalid port in URL {url!r}: {error}") from None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
        if not timeout > 0:
            raise InvalidRequestError(f"timeout = {timeout} must be positive")
        self.url = f"http://{parsed.hostname}:{port}"
        self._host = parsed.hostname
        self._port = port
        self._prefix = parsed.path.rstrip("/")
        self.timeout = float(timeout)
        self.bucket = name_bytes("bucket", bucket)
        self._r = optional_quorum("r", r)
        self._w = optional_quorum("w", w)
        self._dw = optional_quorum("dw", dw)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # ----- HTTP -----

    @contextlib.contextmanager
    def _exchange(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Mapping[str, str]] = None,
        body: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[http.client.HTTPResponse]:
        """Sends one request and yields its response, whose body the caller reads (whole, or
        line by line as it streams); failures to send or to read are ringkv errors."""
        target = self._prefix + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        # One connection per request: nothing is ever re-sent on a fresh connection behind the
        # caller's back.
        connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout or self.timeout)
        try:
            connection.request(method, target, body=body, headers=dict(headers or {}))
            yield connection.getresponse()
        except RingkvError:
            raise  # from the caller's reading (some are OSErrors too)
        except socket.timeout:
            raise RequestTimeoutError(
                f"{method} {self.url}{_short(target)}: no answer within {timeout or self.timeout:g} s; "
                "a write may or may not have been applied: read the key before writing again"
            ) from None
        except (ConnectionError, OSError, http.client.HTTPException) as error:
            raise UnavailableError(f"{method} {self.url}{_short(target)}: {error}") from error
        finally:
            connection.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Mapping[str, str]] = None,
        body: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Tuple[int, http.client.HTTPMessage, bytes]:
        with self._exchange(method, path, query=query, body=body, headers=headers, timeout=timeout) as response:
            return response.status, response.headers, response.read()

    @staticmethod
    def _error(status: int, body: bytes, what: str) -> RingkvError:
        try:
            doc = json.loads(body.decode("utf-8")) if body else {}
        except (UnicodeDecodeError, ValueError):
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        detail = doc.get("error") or body[:200].decode("utf-8", "replace") or f"HTTP {status}"
        if status in (414, 431) and not doc:
            detail = f"HTTP {status}: the key or bucket is too long for a request line"
        message = f"{_short(what)}: {detail}"
        kind = doc.get("kind", "")
        if kind == "unavailable":
            return QuorumError(
                message, quorum=doc.get("quorum"), needed=doc.get("needed"), answered=doc.get("answered", [])
            )
        if status == 408 or kind == "outcome_unknown":
            return RequestTimeoutError(message)
        if status == 412 or kind == "precondition_failed":
            return PreconditionFailedError(message)
        if status in (400, 413, 414, 431) or kind in ("bad_request", "too_large"):
            if "context" in str(doc.get("error", "")):
                return ContextError(message)
            return InvalidRequestError(message)
        # 429: this node holds as many watches as it may (another node may not).
        if status in (429, 503) or kind in ("no_ring", "shutting_down", "overloaded", "too_many_watches"):
            return UnavailableError(message)
        if status >= 500:
            return ServerError(message)
        return RingkvError(f"{message} (HTTP {status})")

    def _json(self, path: str) -> Any:
        status, _, body = self._send("GET", path)
        if status != 200:
            raise self._error(status, body, f"GET {path}")
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise ServerError(f"GET {path}: the answer is not JSON: {error}") from None

    # ----- keys -----

    def _kv(
        self,
        key: Name,
        bucket: Optional[Name],
        r: Optional[Quorum],
        w: Optional[Quorum],
        dw: Optional[Quorum],
        n: Optional[int],
        timeout_ms: Optional[int],
    ) -> Tuple[bytes, bytes, str, Dict[str, str], Optional[float]]:
        bucket_b = self.bucket if bucket is None else name_bytes("bucket", bucket)
        key_b = name_bytes("key", key)
        path = "/kv/" + urllib.parse.quote(bucket_b, safe="") + "/" + urllib.parse.quote(key_b, safe="")
        query: Dict[str, str] = {}
        for name, value, default in (("r", r, self._r), ("w", w, self._w), ("dw", dw, self._dw)):
            chosen = optional_quorum(name, value) if value is not None else default
            if chosen is not None:
                query[name] = chosen
        if n is not None:
            query["n"] = str(u32("n", n, 1))
        timeout = None
        if timeout_ms is not None:
            query["timeout_ms"] = str(optional_integer("timeout_ms", timeout_ms, 1))
            timeout = max(self.timeout, timeout_ms / 1000 + 1)
        return bucket_b, key_b, path, query, timeout

    def get(
        self,
        key: Name,
        *,
        bucket: Optional[Name] = None,
        r: Optional[Quorum] = None,
        n: Optional[int] = None,
        timeout_ms: Optional[int] = None,
    ) -> Result:
        """Reads every sibling of ``key`` and their context.

        ``values`` is empty when the key is absent, deleted or expired (such a key still has a
        context); several values are siblings to resolve (``result.value`` raises
        :class:`~ringkv.ConflictError` then). ``expires_at`` is when the values expire, in
        milliseconds since the Unix epoch at the answering node's clock (``None`` when one of
        them never does).
        """
        bucket_b, key_b, path, query, timeout = self._kv(key, bucket, r, None, None, n, timeout_ms)
        status, headers, body = self._send("GET", path, query=query, timeout=timeout)
        return self._read_answer("get", bucket_b, key_b, path, status, headers, body)

    def _read_answer(
        self,
        op: str,
        bucket: bytes,
        key: bytes,
        path: str,
        status: int,
        headers: http.client.HTTPMessage,
        body: bytes,
    ) -> Result:
        """A GET's answer (200 one value, 300 siblings, 404 none) as a result; else its error."""
        if status == 200:
            values = [body]
        elif status == 300:
            values = parse_multipart(headers.get("Content-Type", ""), body)
            expected = headers.get(HEADER_SIBLINGS)
            if expected is not None and expected.isdigit() and int(expected) != len(values):
                raise ServerError(f"GET {path}: {expected} siblings announced, {len(values)} received")
        elif status == 404 and headers.get(HEADER_NODE) is not None and not _is_json(headers):
            values = []
        else:
            raise self._error(status, body, f"GET {path}")
        result = self._result(op, bucket, key, headers, values)
        expires_at = (headers.get(HEADER_EXPIRES_AT) or "").strip()
        if expires_at:
            if not (expires_at.isascii() and expires_at.isdigit()):
                raise ServerError(f"GET {path}: an invalid {HEADER_EXPIRES_AT} header: {expires_at[:40]!r}")
            result = dataclasses.replace(result, expires_at=int(expires_at))
        return result

    def put(
        self,
        key: Name,
        value: bytes,
        *,
        context: Union[Context, str, None] = None,
        bucket: Optional[Name] = None,
        w: Optional[Quorum] = None,
        dw: Optional[Quorum] = None,
        n: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        ttl: Optional[Ttl] = None,
        if_none_match: bool = False,
        if_match: Union[Context, str, None] = None,
    ) -> Result:
        """Writes ``value``; with ``context`` (from a get of this key) it replaces exactly the
        siblings that context has seen, without it adds a sibling. Returns the new context.

        ``ttl`` (seconds, a ``timedelta`` or a duration such as ``"30m"``; 1 ms to 10 years,
        sent as ``?ttl=``) makes the value expire; without one the bucket's ``default_ttl``
        applies, if it has one. ``if_none_match=True`` (``If-None-Match: *``) writes only if
        the key has no value (absent, deleted or expired); ``if_match`` (``If-Match``, a
        context) only if the key's context is still that one, and without ``context`` the
        write replaces what that context saw. One condition at most; when it does not hold,
        nothing is written and :class:`~ringkv.PreconditionFailedError` carries the key's
        current context. Best effort: writers checking at the same time (on either side of a
        partition) can all pass, and their values become siblings.
        """
        data = value_bytes(value)
        bucket_b, key_b, path, query, timeout = self._kv(key, bucket, None, w, dw, n, timeout_ms)
        headers = {"Content-Type": "application/octet-stream"}
        checked = check_context(context, bucket_b, key_b)
        if checked is not None and not checked.is_empty:
            headers[HEADER_CONTEXT] = checked.to_base64()
        headers.update(_condition_headers(if_none_match, if_match, bucket_b, key_b))
        ttl_ms = optional_ttl_ms("ttl", ttl)
        if ttl_ms is not None:
            query["ttl"] = format_duration_ms(ttl_ms)
        status, answer_headers, body = self._send("PUT", path, query=query, body=data, headers=headers, timeout=timeout)
        if status == 412:
            raise _precondition_failed(answer_headers, body, f"PUT {path}", bucket_b, key_b)
        if status not in (200, 204):
            raise self._error(status, body, f"PUT {path}")
        result = self._result("put", bucket_b, key_b, answer_headers, [])
        return _with_written(result, data)

    def delete(
        self,
        key: Name,
        *,
        context: Union[Context, str, None] = None,
        bucket: Optional[Name] = None,
        r: Optional[Quorum] = None,
        w: Optional[Quorum] = None,
        dw: Optional[Quorum] = None,
        n: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        if_match: Union[Context, str, None] = None,
    ) -> Result:
        """Deletes ``key``: a tombstone superseding what ``context`` has seen.

        Without a context the key is read first (``r`` as for :meth:`get`) and what that read
        returns is deleted; :class:`~ringkv.NothingToDeleteError` (a ``KeyError``) when it finds
        nothing (absent, or already deleted): nothing is written then.

        ``if_match`` (a context; ``If-Match``) deletes only if the key's context is still that
        one, and is the delete's context when ``context`` is not given (no read first);
        otherwise :class:`~ringkv.PreconditionFailedError`, with the current context.
        """
        # Checked before the read below, so that a bad argument never reaches the node.
        bucket_b, key_b, _, _, _ = self._kv(key, bucket, None, w, dw, n, timeout_ms)
        check_context(context, bucket_b, key_b)
        matched = check_condition(False, if_match, bucket_b, key_b)
        if matched is not None and (context is None or (isinstance(context, Context) and context.is_empty)):
            context = matched
        if context is None or (isinstance(context, Context) and context.is_empty):
            read = self.get(key, bucket=bucket, r=r, n=n, timeout_ms=timeout_ms)
            if not read.values:
                raise NothingToDeleteError(f"nothing to delete: {key!r} is absent or already deleted")
            context = read.context
        bucket_b, key_b, path, query, timeout = self._kv(key, bucket, None, w, dw, n, timeout_ms)
        headers: Dict[str, str] = {}
        checked = check_context(context, bucket_b, key_b)
        if checked is not None and not checked.is_empty:
            headers[HEADER_CONTEXT] = checked.to_base64()
        headers.update(_condition_headers(False, matched, bucket_b, key_b))
        status, answer_headers, body = self._send("DELETE", path, query=query, headers=headers, timeout=timeout)
        if status == 412:
            raise _precondition_failed(answer_headers, body, f"DELETE {path}", bucket_b, key_b)
        if status not in (200, 204):
            raise self._error(status, body, f"DELETE {path}")
        return self._result("delete", bucket_b, key_b, answer_headers, [])

    def _result(
        self, op: str, bucket: bytes, key: bytes, headers: http.client.HTTPMessage, values: List[bytes]
    ) -> Result:
        token = headers.get(HEADER_CONTEXT)
        context = None
        if token:
            try:
                context = Context.from_base64(token, bucket=bucket, key=key)
            except ContextError as error:
                raise ServerError(f"the node sent an invalid context: {error}") from None
        ryw = headers.get(HEADER_READ_YOUR_WRITES)
        return Result(
            op=op,
            bucket=bucket,
            key=key,
            ok=True,
            outcome="ok",
            values=values,
            context=context,
            replicas=_ids(headers.get(HEADER_REPLICAS)),
            fallbacks=_ids(headers.get(HEADER_FALLBACKS)),
            durable=_ids(headers.get(HEADER_DURABLE)),
            node=headers.get(HEADER_NODE),
            read_your_writes=None if ryw is None else ryw == "true",
        )

    # ----- many keys, a bucket's keys, and watching a key -----

    def _bucket_path(self, bucket: Optional[Name]) -> Tuple[bytes, str]:
        bucket_b = self.bucket if bucket is None else name_bytes("bucket", bucket)
        return bucket_b, "/kv/" + urllib.parse.quote(bucket_b, safe="")

    def mget(
        self,
        keys: Iterable[Name],
        *,
        bucket: Optional[Name] = None,
        r: Optional[Quorum] = None,
        n: Optional[int] = None,
        timeout_ms: Optional[int] = None,
    ) -> MgetResult:
        """Reads many keys of a bucket in one request (``POST /kv/{bucket}?mget``): each key is
        read as :meth:`get` reads it (at ``r``, within ``timeout_ms``), in parallel on the node.

        ``keys``: 1 to 1,000 distinct keys (``str`` or ``bytes``). The answer streams, one key
        at a time, and is read as it comes. One key's failure does not fail the others: it is
        in ``errors``, as the exception a get of that key would have raised. Keys left over
        once the answer reached 16 MiB of values are in ``unprocessed``: ask for them again.
        Raises (nothing read) for a request the node refused as a whole, and
        :class:`~ringkv.ServerError` when the answer was cut short.

        >>> m = db.mget(["alice", "bob", b"\\xff"], bucket="carts")   # doctest: +SKIP
        >>> m["alice"].values, m["bob"].value, m.errors, m.unprocessed   # doctest: +SKIP
        """
        if isinstance(keys, (str, bytes, bytearray, memoryview)):
            raise TypeError("keys must be a list of keys (str or bytes), not a single key")
        try:
            items = list(keys)
        except TypeError:
            raise TypeError(f"keys must be a list of keys (str or bytes), not {type(keys).__name__}") from None
        names = [name_bytes("key", key) for key in items]
        if not names:
            raise InvalidRequestError("mget needs at least one key")
        if len(names) > MAX_MGET_KEYS:
            raise InvalidRequestError(
                f"mget of {len(names)} keys: at most {MAX_MGET_KEYS} at once (split the keys)"
            )
        seen = set()
        for name in names:
            if name in seen:
                raise InvalidRequestError(f"mget names the key {key_text(name)!r} twice")
            seen.add(name)
        bucket_b, path = self._bucket_path(bucket)
        query: Dict[str, str] = {"mget": ""}
        chosen = optional_quorum("r", r) if r is not None else self._r
        if chosen is not None:
            query["r"] = chosen
        if n is not None:
            query["n"] = str(u32("n", n, 1))
        timeout = None
        if timeout_ms is not None:
            query["timeout_ms"] = str(integer("timeout_ms", timeout_ms, 1))
            timeout = max(self.timeout, timeout_ms / 1000 + 1)
        body = json.dumps({"keys": [_key_doc(name) for name in names]}).encode("utf-8")
        what = f"POST {path}?mget"
        results: Dict[bytes, Result] = {}
        errors: Dict[bytes, RingkvError] = {}
        unprocessed: Optional[List[bytes]] = None
        with self._exchange(
            "POST", path, query=query, body=body, headers={"Content-Type": "application/json"}, timeout=timeout
        ) as response:
            if response.status != 200:
                raise self._error(response.status, response.read(), what)
            node = response.headers.get(HEADER_NODE)
            while True:
                line = response.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                if unprocessed is not None:
                    raise ServerError(f"{what}: a line after the multi-get's last one: {line[:80]!r}")
                doc = _json_line(line, what)
                if "unprocessed" in doc:
                    unprocessed = [_key_from_doc(item, what) for item in _list(doc["unprocessed"], what)]
                    continue
                key = _key_from_doc(doc.get("key"), what)
                if key not in seen:
                    raise ServerError(f"{what}: an answer for a key not asked for: {key_text(key)!r}")
                if key in results or key in errors:
                    raise ServerError(f"{what}: two answers for the key {key_text(key)!r}")
                item = self._mget_item(doc, bucket_b, key, node, what)
                if isinstance(item, Result):
                    results[key] = item
                else:
                    errors[key] = item
        if unprocessed is None:
            raise ServerError(
                f"{what}: the answer was cut short after {len(results) + len(errors)} of {len(names)} keys "
                "(no final line): read the keys again"
            )
        left = set(unprocessed)
        missing = seen - set(results) - set(errors) - left
        if missing or not left <= seen:
            raise ServerError(
                f"{what}: {len(missing)} keys neither answered nor unprocessed, "
                f"{len(left - seen)} unprocessed keys not asked for"
            )
        return MgetResult(
            bucket=bucket_b,
            results={name: results[name] for name in names if name in results},
            errors={name: errors[name] for name in names if name in errors},
            unprocessed=[name for name in names if name in left],
            node=node,
        )

    def _mget_item(
        self, doc: Dict[str, Any], bucket: bytes, key: bytes, node: Optional[str], what: str
    ) -> Union[Result, RingkvError]:
        """One line of a multi-get: the key's result, or the error a get would have raised."""
        status = doc.get("status")
        if not isinstance(status, int) or isinstance(status, bool):
            raise ServerError(f"{what}: a line without a status: {json.dumps(doc)[:120]}")
        values = [_base64(value, what) for value in _list(doc.get("values", []), what)]
        if status not in (200, 300, 404):
            error = {"error": doc.get("message") or doc.get("error") or f"HTTP {status}", "kind": doc.get("error", "")}
            return self._error(status, json.dumps(error).encode("utf-8"), f"{what}, key {key_text(key)!r}")
        if (status == 200) != (len(values) == 1) or (status == 300) != (len(values) > 1):
            raise ServerError(f"{what}: status {status} with {len(values)} values for {key_text(key)!r}")
        context = None
        token = doc.get("context")
        if token is not None:
            if not isinstance(token, str):
                raise ServerError(f"{what}: a context that is not text: {token!r}")
            try:
                context = Context.from_base64(token, bucket=bucket, key=key)
            except ContextError as error:
                raise ServerError(f"the node sent an invalid context: {error}") from None
        expires_at = doc.get("expires_at")
        if expires_at is not None and (not isinstance(expires_at, int) or isinstance(expires_at, bool)):
            raise ServerError(f"{what}: an invalid expires_at: {expires_at!r}")
        return Result(
            op="get",
            bucket=bucket,
            key=key,
            ok=True,
            outcome="ok",
            values=values,
            context=context,
            node=node,
            expires_at=expires_at,
        )

    def list_keys(
        self,
        *,
        bucket: Optional[Name] = None,
        limit: int = 100,
        cursor: Optional[str] = None,
        timeout_ms: Optional[int] = None,
    ) -> KeyPage:
        """One page of a bucket's keys (``GET /kv/{bucket}?list``): up to ``limit`` (1 to 1,000)
        keys, starting where ``cursor`` (the previous page's) says, or at the beginning.

        A listing is a scan, for admin and export, not for serving requests: it asks one replica
        of each partition (no quorum), so a key written or deleted a moment ago may be missing
        or still listed. Keys come as ``bytes``, in partition order (not sorted). A page may be
        short, or empty, and still have a ``cursor``: the listing is complete only when
        ``page.cursor`` is ``None``. A cursor the node cannot read (altered, or of another
        bucket) is an :class:`~ringkv.InvalidRequestError`; a partition none of whose replicas
        answered, a :class:`~ringkv.QuorumError`.

        >>> page = db.list_keys(bucket="carts", limit=500)               # doctest: +SKIP
        >>> page.keys, page.cursor                                       # doctest: +SKIP
        """
        limit = integer("limit", limit, 1, MAX_LIST_LIMIT)
        if cursor is not None:
            if not isinstance(cursor, str):
                raise TypeError(f"cursor must be a str (a page's cursor) or None, not {type(cursor).__name__}")
            if not cursor:
                raise InvalidRequestError("the cursor is empty: pass None to start a listing")
        bucket_b, path = self._bucket_path(bucket)
        query: Dict[str, str] = {"list": "", "limit": str(limit)}
        if cursor is not None:
            query["cursor"] = cursor
        timeout = None
        if timeout_ms is not None:
            query["timeout_ms"] = str(integer("timeout_ms", timeout_ms, 1))
            timeout = max(self.timeout, timeout_ms / 1000 + 1)
        what = f"GET {path}?list"
        status, _, body = self._send("GET", path, query=query, timeout=timeout)
        if status != 200:
            raise self._error(status, body, what)
        try:
            doc = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise ServerError(f"{what}: the answer is not JSON: {error}") from None
        if not isinstance(doc, dict) or "keys" not in doc:
            raise ServerError(f"{what}: not a page of keys: {body[:120]!r}")
        next_cursor = doc.get("cursor")
        if next_cursor is not None and (not isinstance(next_cursor, str) or not next_cursor):
            raise ServerError(f"{what}: an invalid cursor: {next_cursor!r}")
        keys = [_key_from_doc(item, what) for item in _list(doc["keys"], what)]
        return KeyPage(bucket=bucket_b, keys=keys, cursor=next_cursor)

    def iter_keys(
        self, *, bucket: Optional[Name] = None, page_size: int = 1000, timeout_ms: Optional[int] = None
    ) -> Iterator[bytes]:
        """Every key of a bucket, as ``bytes``: :meth:`list_keys` page after page (``page_size``
        keys each, 1 to 1,000) until the listing is complete. Lazy: a page is asked for when
        the previous one is used up. What :meth:`list_keys` says of consistency holds here too.

        >>> live = set(db.iter_keys(bucket="carts"))                     # doctest: +SKIP
        """
        # Checked now, not at the first next(): a generator would defer them.
        page_size = integer("page_size", page_size, 1, MAX_LIST_LIMIT)
        bucket_b = self.bucket if bucket is None else name_bytes("bucket", bucket)
        if timeout_ms is not None:
            integer("timeout_ms", timeout_ms, 1)
        return self._walk_keys(bucket_b, page_size, timeout_ms)

    def _walk_keys(self, bucket: bytes, page_size: int, timeout_ms: Optional[int]) -> Iterator[bytes]:
        cursor: Optional[str] = None
        while True:
            page = self.list_keys(bucket=bucket, limit=page_size, cursor=cursor, timeout_ms=timeout_ms)
            yield from page.keys
            if page.cursor is None:
                return
            cursor = page.cursor

    def watch(
        self,
        key: Name,
        context: Union[Context, str, None],
        *,
        bucket: Optional[Name] = None,
        timeout: Ttl = 60,
        r: Optional[Quorum] = None,
    ) -> Result:
        """Waits until ``key`` holds a write that ``context`` has not seen, for at most
        ``timeout`` (seconds, a ``timedelta`` or ``"30s"``; 1 ms to 10 minutes, default 60 s).
        A long poll: ``GET /kv/{bucket}/{key}?changed_since=<context>``.

        ``context`` is the context of a read of this key (a :class:`~ringkv.Context` or its
        base64), or ``None`` to wait for the first write of a key with no history. The result
        is a :class:`~ringkv.Result` with ``op == "watch"`` either way:

        - ``changed`` is True: the key changed, and the result is what a :meth:`get` returns
          (``values``, possibly none when it was deleted, and ``context``); it comes at once
          when the key already holds such a write;
        - ``changed`` is False: the wait ended first (``outcome == "unchanged"``, no values);
          ``context`` is the one to watch from next.

        So a loop that follows a key reads::

            context = None
            while True:
                w = db.watch("config", context, timeout=30)
                if w.changed:
                    apply(w.values)
                context = w.context

        Each watch holds a place on the node until it answers: a node holding as many as it
        may answers 429, an :class:`~ringkv.UnavailableError` (try later or another node).
        """
        bucket_b, key_b, path, query, _ = self._kv(key, bucket, r, None, None, None, None)
        wait_ms = wait_to_ms("timeout", timeout, MAX_WATCH_WAIT_MS)
        checked = check_context(context, bucket_b, key_b)
        query["changed_since"] = "*" if checked is None or checked.is_empty else checked.to_base64()
        query["timeout_ms"] = str(wait_ms)
        # The node answers at the end of the wait; its reads and the way back get the usual time.
        status, headers, body = self._send("GET", path, query=query, timeout=wait_ms / 1000 + self.timeout)
        if status == 304:
            unchanged = self._result("watch", bucket_b, key_b, headers, [])
            return dataclasses.replace(unchanged, outcome="unchanged", changed=False)
        result = self._read_answer("watch", bucket_b, key_b, path, status, headers, body)
        return dataclasses.replace(result, changed=True)

    # ----- the cluster -----

    def health(self) -> Dict[str, Any]:
        """``GET /health``: ``status``, ``node``, ``alive_members``, ``members``."""
        status, _, body = self._send("GET", "/health")
        try:
            doc = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise self._error(status, body, "GET /health") from None
        if status not in (200, 503) or not isinstance(doc, dict) or "status" not in doc:
            raise self._error(status, body, "GET /health")
        return doc

    def status(self) -> Dict[str, Any]:
        """``GET /cluster``: the node's view of the cluster (members, their status and
        partitions, ring version, hints pending, partitions moving)."""
        return self._json("/cluster")

    def ring(self) -> Dict[str, Any]:
        """``GET /ring``: the partition table (every partition's preference list)."""
        return self._json("/ring")

    def members(self) -> Dict[str, Dict[str, Any]]:
        """The members by id, from :meth:`status`."""
        return {member["id"]: member for member in self.status()["members"]}

    def metrics(self) -> str:
        """``GET /metrics``: Prometheus text."""
        status, _, body = self._send("GET", "/metrics")
        if status != 200:
            raise self._error(status, body, "GET /metrics")
        return body.decode("utf-8", "replace")

    def bucket_props(self, bucket: Optional[Name] = None) -> Dict[str, Any]:
        """``GET /buckets/{bucket}/props``: ``n``, ``r``, ``w``, ``dw``, ``conflict_mode``,
        ``siblings_warn``, ``max_siblings``, ``max_object_bytes``, and ``default_ttl`` (a
        duration such as ``"30m"``, absent when values do not expire by default)."""
        bucket_b = self.bucket if bucket is None else name_bytes("bucket", bucket)
        return self._json("/buckets/" + urllib.parse.quote(bucket_b, safe="") + "/props")

    def set_bucket_props(
        self,
        bucket: Optional[Name] = None,
        *,
        n: int,
        r: Optional[Quorum] = None,
        w: Optional[Quorum] = None,
        dw: Optional[Quorum] = None,
        conflict_mode: Optional[str] = None,
        siblings_warn: Optional[int] = None,
        max_siblings: Optional[int] = None,
        max_object_bytes: Optional[int] = None,
        default_ttl: Optional[Ttl] = None,
    ) -> None:
        """``PUT /buckets/{bucket}/props``: sets every property of a bucket at once; those not
        given take their defaults (``quorum``, ``quorum``, ``0``, ``siblings``, ..., no
        ``default_ttl``). ``default_ttl`` (seconds, a ``timedelta`` or ``"30m"``) makes the
        values of puts without a ``ttl`` expire after it. The cluster spreads the change by
        gossip: other nodes apply it a moment later."""
        bucket_b = self.bucket if bucket is None else name_bytes("bucket", bucket)
        doc: Dict[str, Any] = {"n": u32("n", n, 1)}
        for name, value in (("r", r), ("w", w), ("dw", dw)):
            if value is not None:
                doc[name] = quorum(name, value)
        if conflict_mode is not None:
            if not isinstance(conflict_mode, str):
                raise TypeError(f"conflict_mode must be a str, not {type(conflict_mode).__name__}")
            doc["conflict_mode"] = conflict_mode
        for name, value in (("siblings_warn", siblings_warn), ("max_siblings", max_siblings)):
            if value is not None:
                doc[name] = u32(name, value)
        if max_object_bytes is not None:
            doc["max_object_bytes"] = integer("max_object_bytes", max_object_bytes)
        if default_ttl is not None:
            doc["default_ttl"] = format_duration_ms(ttl_to_ms("default_ttl", default_ttl))
        path = "/buckets/" + urllib.parse.quote(bucket_b, safe="") + "/props"
        status, _, body = self._send(
            "PUT", path, body=json.dumps(doc).encode("utf-8"), headers={"Content-Type": "application/json"}
        )
        if status not in (200, 204):
            raise self._error(status, body, f"PUT {path}")


def _key_doc(key: bytes) -> Union[str, Dict[str, str]]:
    """A key in a JSON document: its text when it is UTF-8, else ``{"base64": ...}``."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(key).decode("ascii")}


def _key_from_doc(doc: object, what: str) -> bytes:
    if isinstance(doc, str):
        return doc.encode("utf-8")
    if isinstance(doc, dict) and set(doc) == {"base64"} and isinstance(doc["base64"], str):
        return _base64(doc["base64"], what)
    raise ServerError(f"{what}: not a key: {json.dumps(doc)[:120]}")


def _base64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise ServerError(f"{what}: not base64 text: {text!r}"[:200])
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ServerError(f"{what}: invalid base64: {text[:60]!r}") from None


def _list(value: object, what: str) -> List[Any]:
    if not isinstance(value, list):
        raise ServerError(f"{what}: expected a list, not {json.dumps(value)[:120]}")
    return value


def _json_line(line: bytes, what: str) -> Dict[str, Any]:
    try:
        doc = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ServerError(f"{what}: a line that is not JSON ({error}): {line[:80]!r}") from None
    if not isinstance(doc, dict):
        raise ServerError(f"{what}: a line that is not an object: {line[:80]!r}")
    return doc


def _short(text: str, limit: int = 100) -> str:
    """A path for a message: long keys cut in the middle."""
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 4 :]}"


def _is_json(headers: http.client.HTTPMessage) -> bool:
    return "json" in (headers.get("Content-Type") or "")


def _with_written(result: Result, data: bytes) -> Result:
    return dataclasses.replace(result, written=data)


def _condition_headers(
    if_none_match: object, if_match: Union[Context, str, None], bucket: bytes, key: bytes
) -> Dict[str, str]:
    """``If-None-Match: *`` or ``If-Match: <context>``, checked first (one at most, a context of
    this key)."""
    matched = check_condition(if_none_match, if_match, bucket, key)
    if if_none_match:
        return {"If-None-Match": "*"}
    if matched is not None:
        return {"If-Match": matched.to_base64()}
    return {}


def _precondition_failed(
    headers: http.client.HTTPMessage, body: bytes, what: str, bucket: bytes, key: bytes
) -> PreconditionFailedError:
    """A 412: the condition did not hold, nothing was written; the answer carries the key's
    current context (none when the key has no history)."""
    error = Client._error(412, body, what)
    token = headers.get(HEADER_CONTEXT)
    context = None
    if token:
        try:
            context = Context.from_base64(token, bucket=bucket, key=key)
        except ContextError as invalid:
            raise ServerError(f"the node sent an invalid context: {invalid}") from None
    return PreconditionFailedError(str(error), context=context)
