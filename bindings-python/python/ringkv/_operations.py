"""The live clients' operations without I/O: each forms its requests and reads their answers.

An operation is a generator: it yields a :class:`~ringkv._routing.Request`, is sent the
:class:`~ringkv._routing.Answer` (whatever its status), and returns the result or raises the
error of the answer. :class:`ringkv.Client` runs them over a pool of blocking connections,
:class:`ringkv.aio.AsyncClient` over asyncio streams; what a call sends and how its answer is
judged is written here once. An operation that needs two requests (a delete without a context
reads first) simply yields twice.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import urllib.parse
from typing import Any, Dict, Generator, Iterable, List, Mapping, Optional, Tuple, TypeVar, Union

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
from ._routing import SERVER_ANSWER_GRACE, Answer, Idempotence, Request
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

T = TypeVar("T")
#: An operation: yields requests, is sent their answers, returns its result.
Operation = Generator[Request, Answer, T]

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

    >>> from ringkv._operations import parse_multipart
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


def seconds(what: str, value: object) -> float:
    """A positive number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not value > 0:
        raise InvalidRequestError(f"{what} = {value} must be positive")
    return float(value)


def error_from_answer(status: int, body: bytes, what: str) -> RingkvError:
    """The exception an error answer stands for."""
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


def _json_answer(answer: Answer, what: str) -> Any:
    if answer.status != 200:
        raise error_from_answer(answer.status, answer.body, what)
    try:
        return json.loads(answer.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ServerError(f"{what}: the answer is not JSON: {error}") from None


class Operations:
    """The defaults a client was made with, and every operation as a generator."""

    def __init__(
        self,
        *,
        timeout: float,
        bucket: Name,
        r: Optional[Quorum],
        w: Optional[Quorum],
        dw: Optional[Quorum],
        max_value_bytes: int,
    ) -> None:
        self.timeout = seconds("timeout", timeout)
        self.max_value_bytes = integer("max_value_bytes", max_value_bytes, 1)
        self.bucket = name_bytes("bucket", bucket)
        self.r = optional_quorum("r", r)
        self.w = optional_quorum("w", w)
        self.dw = optional_quorum("dw", dw)

    # ----- forming requests -----

    def _base_timeout(self, request_timeout: Optional[float]) -> float:
        return self.timeout if request_timeout is None else seconds("request_timeout", request_timeout)

    def _stretched(self, request_timeout: Optional[float], timeout_ms: Optional[int]) -> float:
        """The attempt's timeout: the client's (or the call's), stretched to the server's own
        deadline plus a grace so its answer comes first."""
        base = self._base_timeout(request_timeout)
        return base if timeout_ms is None else max(base, timeout_ms / 1000 + SERVER_ANSWER_GRACE)

    @staticmethod
    def _request(
        method: str,
        path: str,
        *,
        query: Optional[Mapping[str, str]] = None,
        body: bytes = b"",
        headers: Optional[Mapping[str, str]] = None,
        idempotence: Idempotence = Idempotence.IDEMPOTENT,
        route: Optional[Tuple[bytes, bytes]] = None,
        timeout: Optional[float] = None,
        what: Optional[str] = None,
    ) -> Request:
        target = path + ("?" + urllib.parse.urlencode(query) if query else "")
        return Request(
            method=method,
            target=target,
            headers=dict(headers or {}),
            body=body,
            idempotence=idempotence,
            route=route,
            timeout=timeout,
            what=what or f"{method} {_short(path)}",
        )

    def bucket_of(self, bucket: Optional[Name]) -> bytes:
        """The bucket of a call (the client's default when ``None``)."""
        return self.bucket if bucket is None else name_bytes("bucket", bucket)

    def _kv(
        self,
        key: Name,
        bucket: Optional[Name],
        r: Optional[Quorum],
        w: Optional[Quorum],
        dw: Optional[Quorum],
        n: Optional[int],
        timeout_ms: Optional[int],
    ) -> Tuple[bytes, bytes, str, Dict[str, str]]:
        bucket_b = self.bucket_of(bucket)
        key_b = name_bytes("key", key)
        path = "/kv/" + urllib.parse.quote(bucket_b, safe="") + "/" + urllib.parse.quote(key_b, safe="")
        query: Dict[str, str] = {}
        for name, value, default in (("r", r, self.r), ("w", w, self.w), ("dw", dw, self.dw)):
            chosen = optional_quorum(name, value) if value is not None else default
            if chosen is not None:
                query[name] = chosen
        if n is not None:
            query["n"] = str(u32("n", n, 1))
        if timeout_ms is not None:
            query["timeout_ms"] = str(optional_integer("timeout_ms", timeout_ms, 1))
        return bucket_b, key_b, path, query

    # ----- keys -----

    def get(
        self,
        key: Name,
        *,
        bucket: Optional[Name] = None,
        r: Optional[Quorum] = None,
        n: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        request_timeout: Optional[float] = None,
    ) -> Operation[Result]:
        """``GET /kv/{bucket}/{key}``."""
        bucket_b, key_b, path, query = self._kv(key, bucket, r, None, None, n, timeout_ms)
        timeout = self._stretched(request_timeout, timeout_ms)
        answer = yield self._request("GET", path, query=query, route=(bucket_b, key_b), timeout=timeout)
        return self._read_answer("get", bucket_b, key_b, path, answer)

    def _read_answer(self, op: str, bucket: bytes, key: bytes, path: str, answer: Answer) -> Result:
        """A GET's answer (200 one value, 300 siblings, 404 none) as a result; else its error."""
        status = answer.status
        if status == 200:
            values = [answer.body]
        elif status == 300:
            values = parse_multipart(answer.header("Content-Type") or "", answer.body)
            expected = answer.header(HEADER_SIBLINGS)
            if expected is not None and expected.isdigit() and int(expected) != len(values):
                raise ServerError(f"GET {path}: {expected} siblings announced, {len(values)} received")
        elif status == 404 and answer.header(HEADER_NODE) is not None and not _is_json(answer):
            values = []
        else:
            raise error_from_answer(status, answer.body, f"GET {path}")
        result = self._result(op, bucket, key, answer, values)
        expires_at = (answer.header(HEADER_EXPIRES_AT) or "").strip()
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
        request_timeout: Optional[float] = None,
    ) -> Operation[Result]:
        """``PUT /kv/{bucket}/{key}``: sent at most once; a value over ``max_value_bytes`` is
        refused here, unsent, as the Rust client does (the node would refuse it with 413)."""
        data = value_bytes(value)
        if len(data) > self.max_value_bytes:
            raise InvalidRequestError(
                f"a value of {len(data)} bytes is over the limit of {self.max_value_bytes} "
                "(max_value_bytes; the node's own limit refuses it too): nothing was sent"
            )
        bucket_b, key_b, path, query = self._kv(key, bucket, None, w, dw, n, timeout_ms)
        timeout = self._stretched(request_timeout, timeout_ms)
        headers = {"Content-Type": "application/octet-stream"}
        checked = check_context(context, bucket_b, key_b)
        if checked is not None and not checked.is_empty:
            headers[HEADER_CONTEXT] = checked.to_base64()
        headers.update(_condition_headers(if_none_match, if_match, bucket_b, key_b))
        ttl_ms = optional_ttl_ms("ttl", ttl)
        if ttl_ms is not None:
            query["ttl"] = format_duration_ms(ttl_ms)
        answer = yield self._request(
            "PUT",
            path,
            query=query,
            body=data,
            headers=headers,
            idempotence=Idempotence.AT_MOST_ONCE,
            route=(bucket_b, key_b),
            timeout=timeout,
        )
        if answer.status == 412:
            raise _precondition_failed(answer, f"PUT {path}", bucket_b, key_b)
        if answer.status not in (200, 204):
            raise error_from_answer(answer.status, answer.body, f"PUT {path}")
        return dataclasses.replace(self._result("put", bucket_b, key_b, answer, []), written=data)

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
        request_timeout: Optional[float] = None,
    ) -> Operation[Result]:
        """``DELETE /kv/{bucket}/{key}``, after a read when no context is given."""
        # Checked before the read below, so that a bad argument never reaches the node.
        bucket_b, key_b, path, query = self._kv(key, bucket, None, w, dw, n, timeout_ms)
        timeout = self._stretched(request_timeout, timeout_ms)
        check_context(context, bucket_b, key_b)
        matched = check_condition(False, if_match, bucket_b, key_b)
        if matched is not None and (context is None or (isinstance(context, Context) and context.is_empty)):
            context = matched
        if context is None or (isinstance(context, Context) and context.is_empty):
            read = yield from self.get(
                key, bucket=bucket, r=r, n=n, timeout_ms=timeout_ms, request_timeout=request_timeout
            )
            if not read.values:
                raise NothingToDeleteError(f"nothing to delete: {key!r} is absent or already deleted")
            context = read.context
        headers: Dict[str, str] = {}
        checked = check_context(context, bucket_b, key_b)
        if checked is not None and not checked.is_empty:
            headers[HEADER_CONTEXT] = checked.to_base64()
        headers.update(_condition_headers(False, matched, bucket_b, key_b))
        answer = yield self._request(
            "DELETE",
            path,
            query=query,
            headers=headers,
            idempotence=Idempotence.AT_MOST_ONCE,
            route=(bucket_b, key_b),
            timeout=timeout,
        )
        if answer.status == 412:
            raise _precondition_failed(answer, f"DELETE {path}", bucket_b, key_b)
        if answer.status not in (200, 204):
            raise error_from_answer(answer.status, answer.body, f"DELETE {path}")
        return self._result("delete", bucket_b, key_b, answer, [])

    def _result(self, op: str, bucket: bytes, key: bytes, answer: Answer, values: List[bytes]) -> Result:
        token = answer.header(HEADER_CONTEXT)
        context = None
        if token:
            try:
                context = Context.from_base64(token, bucket=bucket, key=key)
            except ContextError as error:
                raise ServerError(f"the node sent an invalid context: {error}") from None
        ryw = answer.header(HEADER_READ_YOUR_WRITES)
        return Result(
            op=op,
            bucket=bucket,
            key=key,
            ok=True,
            outcome="ok",
            values=values,
            context=context,
            replicas=_ids(answer.header(HEADER_REPLICAS)),
            fallbacks=_ids(answer.header(HEADER_FALLBACKS)),
            durable=_ids(answer.header(HEADER_DURABLE)),
            node=answer.header(HEADER_NODE),
            read_your_writes=None if ryw is None else ryw == "true",
        )

    # ----- many keys, a bucket's keys, and watching a key -----

    def _bucket_path(self, bucket: Optional[Name]) -> Tuple[bytes, str]:
        bucket_b = self.bucket_of(bucket)
        return bucket_b, "/kv/" + urllib.parse.quote(bucket_b, safe="")

    def mget(
        self,
        keys: Iterable[Name],
        *,
        bucket: Optional[Name] = None,
        r: Optional[Quorum] = None,
        n: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        request_timeout: Optional[float] = None,
    ) -> Operation[MgetResult]:
        """``POST /kv/{bucket}?mget`` (a read: retried like one)."""
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
        chosen = optional_quorum("r", r) if r is not None else self.r
        if chosen is not None:
            query["r"] = chosen
        if n is not None:
            query["n"] = str(u32("n", n, 1))
        if timeout_ms is not None:
            query["timeout_ms"] = str(integer("timeout_ms", timeout_ms, 1))
        timeout = self._stretched(request_timeout, timeout_ms)
        body = json.dumps({"keys": [_key_doc(name) for name in names]}).encode("utf-8")
        what = f"POST {path}?mget"
        answer = yield self._request(
            "POST",
            path,
            query=query,
            body=body,
            headers={"Content-Type": "application/json"},
            timeout=timeout,
            what=what,
        )
        if answer.status != 200:
            raise error_from_answer(answer.status, answer.body, what)
        node = answer.header(HEADER_NODE)
        results: Dict[bytes, Result] = {}
        errors: Dict[bytes, RingkvError] = {}
        unprocessed: Optional[List[bytes]] = None
        for line in answer.body.split(b"\n"):
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
            return error_from_answer(status, json.dumps(error).encode("utf-8"), f"{what}, key {key_text(key)!r}")
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
        request_timeout: Optional[float] = None,
    ) -> Operation[KeyPage]:
        """``GET /kv/{bucket}?list``."""
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
        if timeout_ms is not None:
            query["timeout_ms"] = str(integer("timeout_ms", timeout_ms, 1))
        timeout = self._stretched(request_timeout, timeout_ms)
        what = f"GET {path}?list"
        answer = yield self._request("GET", path, query=query, timeout=timeout, what=what)
        doc = _json_answer(answer, what)
        if not isinstance(doc, dict) or "keys" not in doc:
            raise ServerError(f"{what}: not a page of keys: {answer.body[:120]!r}")
        next_cursor = doc.get("cursor")
        if next_cursor is not None and (not isinstance(next_cursor, str) or not next_cursor):
            raise ServerError(f"{what}: an invalid cursor: {next_cursor!r}")
        keys = [_key_from_doc(item, what) for item in _list(doc["keys"], what)]
        return KeyPage(bucket=bucket_b, keys=keys, cursor=next_cursor)

    def check_listing(self, bucket: Optional[Name], page_size: int, timeout_ms: Optional[int]) -> bytes:
        """Checks :meth:`iter_keys`' arguments now (a generator would defer them)."""
        integer("page_size", page_size, 1, MAX_LIST_LIMIT)
        if timeout_ms is not None:
            integer("timeout_ms", timeout_ms, 1)
        return self.bucket_of(bucket)

    def watch(
        self,
        key: Name,
        context: Union[Context, str, None],
        *,
        bucket: Optional[Name] = None,
        timeout: Ttl = 60,
        r: Optional[Quorum] = None,
        request_timeout: Optional[float] = None,
    ) -> Operation[Result]:
        """``GET /kv/{bucket}/{key}?changed_since=`` (a long poll)."""
        bucket_b, key_b, path, query = self._kv(key, bucket, r, None, None, None, None)
        wait_ms = wait_to_ms("timeout", timeout, MAX_WATCH_WAIT_MS)
        checked = check_context(context, bucket_b, key_b)
        query["changed_since"] = "*" if checked is None or checked.is_empty else checked.to_base64()
        query["timeout_ms"] = str(wait_ms)
        # The node answers at the end of the wait; its reads and the way back get the usual time.
        answer = yield self._request(
            "GET",
            path,
            query=query,
            route=(bucket_b, key_b),
            timeout=wait_ms / 1000 + self._base_timeout(request_timeout),
        )
        if answer.status == 304:
            unchanged = self._result("watch", bucket_b, key_b, answer, [])
            return dataclasses.replace(unchanged, outcome="unchanged", changed=False)
        result = self._read_answer("watch", bucket_b, key_b, path, answer)
        return dataclasses.replace(result, changed=True)

    # ----- the cluster -----

    def health(self, request_timeout: Optional[float] = None) -> Operation[Dict[str, Any]]:
        """``GET /health`` (a 503 with a health document is an answer too)."""
        answer = yield self._request("GET", "/health", timeout=self._base_timeout(request_timeout))
        try:
            doc = json.loads(answer.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise error_from_answer(answer.status, answer.body, "GET /health") from None
        if answer.status not in (200, 503) or not isinstance(doc, dict) or "status" not in doc:
            raise error_from_answer(answer.status, answer.body, "GET /health")
        return doc

    def json_doc(self, path: str, request_timeout: Optional[float] = None) -> Operation[Any]:
        """``GET {path}``, a JSON document."""
        answer = yield self._request("GET", path, timeout=self._base_timeout(request_timeout))
        return _json_answer(answer, f"GET {path}")

    def ring(self, request_timeout: Optional[float] = None) -> Operation[Tuple[Dict[str, Any], Answer]]:
        """``GET /ring``, and the answer it came in (for its endpoint)."""
        answer = yield self._request("GET", "/ring", timeout=self._base_timeout(request_timeout))
        doc = _json_answer(answer, "GET /ring")
        if not isinstance(doc, dict):
            raise ServerError("GET /ring: the answer is not an object")
        return doc, answer

    def metrics(self, request_timeout: Optional[float] = None) -> Operation[str]:
        """``GET /metrics``: Prometheus text."""
        answer = yield self._request("GET", "/metrics", timeout=self._base_timeout(request_timeout))
        if answer.status != 200:
            raise error_from_answer(answer.status, answer.body, "GET /metrics")
        return answer.body.decode("utf-8", "replace")

    def bucket_props(self, bucket: Optional[Name] = None) -> Operation[Dict[str, Any]]:
        """``GET /buckets/{bucket}/props``."""
        bucket_b = self.bucket_of(bucket)
        return self.json_doc("/buckets/" + urllib.parse.quote(bucket_b, safe="") + "/props")

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
    ) -> Operation[None]:
        """``PUT /buckets/{bucket}/props`` (idempotent: retried like a read)."""
        bucket_b = self.bucket_of(bucket)
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
        answer = yield self._request(
            "PUT",
            path,
            body=json.dumps(doc).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            timeout=self.timeout,
        )
        if answer.status not in (200, 204):
            raise error_from_answer(answer.status, answer.body, f"PUT {path}")


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


def _is_json(answer: Answer) -> bool:
    return "json" in (answer.header("Content-Type") or "")


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


def _precondition_failed(answer: Answer, what: str, bucket: bytes, key: bytes) -> PreconditionFailedError:
    """A 412: the condition did not hold, nothing was written; the answer carries the key's
    current context (none when the key has no history)."""
    error = error_from_answer(412, answer.body, what)
    token = answer.header(HEADER_CONTEXT)
    context = None
    if token:
        try:
            context = Context.from_base64(token, bucket=bucket, key=key)
        except ContextError as invalid:
            raise ServerError(f"the node sent an invalid context: {invalid}") from None
    return PreconditionFailedError(str(error), context=context)
