"""Argument checks shared by the simulator, the ring and the client: wrong types raise
``TypeError``, wrong values ``InvalidRequestError``, each with a message naming the argument."""

from __future__ import annotations

from typing import Optional, Union

from .errors import InvalidRequestError

Name = Union[str, bytes]
Quorum = Union[int, str]

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
    """A quorum as the core parses it: a count, ``"one"``, ``"quorum"`` or ``"all"``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f'{what} must be an int or one of "one", "quorum", "all", not {type(value).__name__}')
    if isinstance(value, int):
        if not 0 <= value <= _MAX_U32:
            raise InvalidRequestError(f"{what} = {value} is not a number of replicas")
        return str(value)
    if value.strip().lower() not in ("one", "quorum", "all") and not value.strip().isdigit():
        raise InvalidRequestError(f'{what} = {value!r} is not a quorum: use a count, "one", "quorum" or "all"')
    return value.strip().lower()


def optional_quorum(what: str, value: object) -> Optional[str]:
    return None if value is None else quorum(what, value)
