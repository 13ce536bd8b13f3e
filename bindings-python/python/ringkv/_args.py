"""Argument checks shared by the simulator, the ring and the client: wrong types raise
``TypeError``, wrong values ``InvalidRequestError``, each with a message naming the argument."""

from __future__ import annotations

import datetime
import math
from typing import Optional, Tuple, Union

from . import _native
from .errors import InvalidRequestError

Name = Union[str, bytes]
Quorum = Union[int, str]
#: A time to live as the client takes it: seconds, a ``timedelta``, or a duration such as ``"30m"``.
Ttl = Union[int, float, datetime.timedelta, str]

#: Longest time to live a put may ask for (10 years), as the core checks it.
MAX_TTL_MS: int = _native.MAX_TTL_MS

_MAX_U64 = 2**64 - 1
_MAX_U32 = 2**32 - 1


def name_bytes(what: str, value: object) -> bytes:
    """A bucket or key as bytes (``str`` is UTF-8 encoded); never empty."""
    if isinstance(value, str):
        data = value.encode("utf-8")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    else:
        raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")
    if not data:
        raise InvalidRequestError(f"the {what} is empty")
    return data


def value_bytes(value: object) -> bytes:
    """A value to store: bytes-like only (encode text yourself, so the encoding is explicit)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        raise TypeError(f"a value must be bytes, not str: encode it first, e.g. {value[:20]!r}.encode()")
    raise TypeError(f"a value must be bytes, not {type(value).__name__}")


def node_name(value: object, what: str = "node") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a node name (str), not {type(value).__name__}")
    return value


def integer(what: str, value: object, minimum: int = 0, maximum: int = _MAX_U64) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise InvalidRequestError(f"{what} = {value} is out of range {minimum}..{maximum}")
    return value


def u32(what: str, value: object, minimum: int = 0) -> int:
    return integer(what, value, minimum, _MAX_U32)


def optional_integer(what: str, value: object, minimum: int = 0) -> Optional[int]:
    return None if value is None else integer(what, value, minimum)


def quorum(what: str, value: object) -> str:
    """A quorum as the core parses it: a count, ``"one"``, ``"quorum"``, ``"all"``, or one counted
    in zones: ``"local_one"``, ``"local_quorum"`` (in the coordinator's zone), ``"each_quorum"``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f'{what} must be an int or one of "one", "quorum", "all", not {type(value).__name__}')
    if isinstance(value, int):
        if not 0 <= value <= _MAX_U32:
            raise InvalidRequestError(f"{what} = {value} is not a number of replicas")
        return str(value)
    names = ("one", "quorum", "all", "local_one", "local_quorum", "each_quorum")
    if value.strip().lower() not in names and not value.strip().isdigit():
        raise InvalidRequestError(f'{what} = {value!r} is not a quorum: use a count, "one", "quorum" or "all"')
    return value.strip().lower()


def optional_quorum(what: str, value: object) -> Optional[str]:
    return None if value is None else quorum(what, value)


_UNITS = {"ms": 1, "": 1_000, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = (
    "expected a whole number with a unit ms, s, m, h or d (30m, 90s, 1500ms), or a number of seconds"
)


def parse_duration_ms(text: str) -> int:
    """Reads a duration as the server does (``ringkv_client::api::parse_duration_ms``): a whole
    number followed by ``ms``, ``s``, ``m``, ``h`` or ``d``, or a bare number of seconds.

    >>> from ringkv._args import parse_duration_ms
    >>> parse_duration_ms("30m"), parse_duration_ms("1500ms"), parse_duration_ms(" 90 ")
    (1800000, 1500, 90000)
    """
    stripped = text.strip()
    digits = len(stripped) - len(stripped.lstrip("0123456789"))
    number, unit = stripped[:digits], stripped[digits:]
    if not number or unit not in _UNITS:
        raise InvalidRequestError(f"{text!r} is not a duration: {_DURATION}")
    return int(number) * _UNITS[unit]


def format_duration_ms(ms: int) -> str:
    """Writes a duration in the largest unit that divides it, as the server does
    (``ringkv_client::api::format_duration_ms``); :func:`parse_duration_ms` reads it back.

    >>> from ringkv._args import format_duration_ms
    >>> format_duration_ms(1_800_000), format_duration_ms(1500), format_duration_ms(86_400_000)
    ('30m', '1500ms', '1d')
    """
    for unit, scale in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms and ms % scale == 0:
            return f"{ms // scale}{unit}"
    return f"{ms}ms"


def ttl_to_ms(what: str, value: object) -> int:
    """A time to live in milliseconds, checked as the core checks it (1 ms to 10 years): seconds
    (``int``, or ``float`` rounded to the millisecond), a ``datetime.timedelta``, or a duration
    string such as ``"30m"`` (see :func:`parse_duration_ms`).

    >>> import datetime
    >>> from ringkv._args import ttl_to_ms
    >>> ttl_to_ms("ttl", 30), ttl_to_ms("ttl", 0.25), ttl_to_ms("ttl", datetime.timedelta(minutes=30)), ttl_to_ms("ttl", "2h")
    (30000, 250, 1800000, 7200000)
    """
    ms, given = _duration_ms(what, value, "'30m'", "a time to live")
    return _ttl_range(what, ms, given)


def optional_ttl_ms(what: str, value: object) -> Optional[int]:
    return None if value is None else ttl_to_ms(what, value)


def wait_to_ms(what: str, value: object, maximum_ms: int) -> int:
    """A wait in milliseconds, 1 ms to ``maximum_ms``, given as a time to live is (seconds, a
    ``datetime.timedelta`` or a duration string such as ``"30s"``).

    >>> from ringkv._args import wait_to_ms
    >>> wait_to_ms("timeout", 1, 600_000), wait_to_ms("timeout", 0.5, 600_000), wait_to_ms("timeout", "2m", 600_000)
    (1000, 500, 120000)
    """
    ms, given = _duration_ms(what, value, "'30s'", "a wait")
    if not 1 <= ms <= maximum_ms:
        raise InvalidRequestError(f"{given} is outside 1 ms to {format_duration_ms(maximum_ms)}")
    return ms


def _duration_ms(what: str, value: object, example: str, noun: str) -> Tuple[int, str]:
    """Milliseconds (not range-checked) and how the caller gave them, for messages."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be seconds, a timedelta or a duration such as {example}, not bool")
    if isinstance(value, str):
        try:
            ms = parse_duration_ms(value)
        except InvalidRequestError as error:
            raise InvalidRequestError(f"{what}: {error}") from None
        return ms, f"{what} = {value!r}"
    if isinstance(value, datetime.timedelta):
        # Whole microseconds (exact), rounded to the millisecond.
        micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        return _round_half_up(micros, 1_000), f"{what} = {value!r}"
    if isinstance(value, int):
        return value * 1000, f"{what} = {value} s"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequestError(f"{what} = {value}: {noun} must be a finite number of seconds")
        return math.floor(value * 1000 + 0.5), f"{what} = {value} s"
    raise TypeError(
        f"{what} must be seconds, a timedelta or a duration such as {example}, not {type(value).__name__}"
    )


def _ttl_range(what: str, ms: int, given: str) -> int:
    if ms < 1:
        raise InvalidRequestError(
            f"{given}: a time to live must be at least 1 ms (0 or less would expire the value as it is written)"
        )
    if ms > MAX_TTL_MS:
        raise InvalidRequestError(f"{given}: a time to live is at most {MAX_TTL_MS} ms (10 years)")
    return ms


def _round_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)
