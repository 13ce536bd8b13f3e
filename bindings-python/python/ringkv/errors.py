"""The exceptions of ringkv.

Everything ringkv raises on purpose derives from :class:`RingkvError`; each class also derives
from the built-in exception that fits, so ``except ValueError`` or ``except TimeoutError`` work
as expected::

    RingkvError
    ├── InvalidRequestError (ValueError)   bad input: quorums, keys, values, configuration
    │   ├── UnknownNodeError               a node name the cluster does not have
    │   └── ContextError                   a context that is malformed or belongs to another key
    ├── QuorumError                        R or W replicas did not answer in time
    ├── ConflictError                      siblings where one value was expected
    ├── PreconditionFailedError            if_none_match / if_match did not hold: nothing written
    ├── UnavailableError (ConnectionError) the node cannot be reached or cannot serve (503, 429)
    │   └── TlsError                       the node's certificate did not verify: nothing was sent
    ├── RequestTimeoutError (TimeoutError) no answer in time: a write may or may not have applied
    ├── ServerError                        the node failed while handling the request
    └── SimulationError                    an internal error of the simulator (a bug: report it)

Wrong argument *types* raise the ordinary :class:`TypeError`.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

__all__ = [
    "RingkvError",
    "InvalidRequestError",
    "UnknownNodeError",
    "ContextError",
    "QuorumError",
    "ConflictError",
    "PreconditionFailedError",
    "UnavailableError",
    "TlsError",
    "RequestTimeoutError",
    "ServerError",
    "SimulationError",
]


class RingkvError(Exception):
    """Base class of every error ringkv raises on purpose."""


class InvalidRequestError(RingkvError, ValueError):
    """The request or configuration is invalid (an HTTP 400): nothing was changed.

    >>> import ringkv
    >>> try:
    ...     ringkv.Sim(nodes=3, n=3, r=4)
    ... except ringkv.InvalidRequestError as e:
    ...     print(e)
    invalid quorum: r = 4 is out of range for n = 3
    """


class UnknownNodeError(InvalidRequestError):
    """A node name that is not a node of the cluster."""


class ContextError(InvalidRequestError):
    """A context that cannot be decoded, or that was read from another key.

    A context only means something for the key it was read from: passing it to another key
    would supersede versions that key's history never contained.
    """


class QuorumError(RingkvError):
    """Fewer than R (read) or W/DW (write) replicas answered before the timeout.

    A write that failed its quorum may still have been applied on the replicas that answered:
    read the key before writing again.

    Attributes:
        quorum: ``"read"``, ``"write"`` or ``"durable"``.
        needed: how many replicas were needed.
        answered: the replicas that answered in time.
    """

    def __init__(
        self,
        message: str,
        *,
        quorum: Optional[str] = None,
        needed: Optional[int] = None,
        answered: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.quorum = quorum
        self.needed = needed
        self.answered: List[str] = list(answered)


class ConflictError(RingkvError):
    """The key has several sibling values where one was asked for (``result.value``).

    Resolve them: merge ``values`` as your application sees fit and put the result back with
    ``context``, which supersedes every sibling it has seen.

    Attributes:
        values: the sibling values.
        context: the context to write the resolution with.
    """

    def __init__(self, message: str, *, values: Sequence[bytes] = (), context: object = None) -> None:
        super().__init__(message)
        self.values: List[bytes] = list(values)
        self.context = context


class PreconditionFailedError(RingkvError):
    """A conditional write's condition did not hold (an HTTP 412): nothing was written.

    ``if_none_match=True`` found a value (the key is neither absent, deleted nor expired), or
    ``if_match`` found that the key changed since that context was read. The check is a read at
    R just before the write, best effort as in Riak: two writers checking at once (say on either
    side of a partition) can both pass, and their values become siblings.

    Attributes:
        context: the key's current context (``None`` when the key has no history): read the key
            again, or retry ``if_match`` with it.
        exists: whether the key has a live value (``None`` when the answer does not say, as
            over HTTP).
    """

    def __init__(self, message: str, *, context: object = None, exists: Optional[bool] = None) -> None:
        super().__init__(message)
        self.context = context
        self.exists = exists


class NothingToDeleteError(RingkvError, KeyError):
    """A delete without a context read the key first and found nothing to delete (absent, or
    already deleted): nothing was written. A delete is never answered as a success when it
    removed nothing."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnavailableError(RingkvError, ConnectionError):
    """The node cannot be reached (connection refused, reset) or cannot serve now (no ring,
    shutting down, overloaded, or holding as many watches as it may: an HTTP 429, try later or
    another node). Nothing was applied when the connection was refused."""


class TlsError(UnavailableError):
    """The TLS handshake with every node tried failed: typically the node's certificate does not
    chain to the client's ``ca_file`` (or to the system's trusted roots), or does not name the
    host of the URL. Nothing was sent. The message carries OpenSSL's reason."""


class RequestTimeoutError(RingkvError, TimeoutError):
    """No answer within the client's timeout, an answer cut off after a write was sent, or the
    server's ``outcome_unknown`` (a write whose quorum was not reached in time but which may
    still take effect). A write may or may not have been applied: read the key (and its
    context) before writing again. The clients never send a write twice once it may have left
    (a blind retry of a put without the new context would add a sibling); reads are retried on
    another node."""


class ServerError(RingkvError):
    """The node failed while carrying out the request (an HTTP 500)."""


class SimulationError(RingkvError):
    """An internal error of the simulator (a bug in ringkv): the simulator that raised it cannot
    be used any more. The message names the seed that reproduces it."""
