"""ringkv for Python: a Dynamo-style key-value store's protocol, simulated and live.

- :class:`Sim`: a whole cluster in this process over the real protocol code (``ringkv-core``):
  partitions, crashes, concurrent writes, siblings, and a checker that judges the history.
  Deterministic: the same seed gives the same run.
- :class:`Ring`: placement (consistent hashing, Q partitions or random tokens), preference
  lists, balance, and how much data a membership change moves.
- :class:`Context`, :class:`VectorClock`, :class:`Dot`, :class:`Causality`: versions, with the
  causal comparisons that tell why two values are siblings.
- :class:`Client`: a client for a live cluster (``ringkv dev`` starts one): keys one at a
  time or many at once, listings of a bucket's keys, and watches that wait for a change; over
  ``https://`` with a CA file, routed to the key's owners by the ring, pooled, and retried by
  the rules that never send a write twice. :class:`ringkv.aio.AsyncClient` is the same for
  asyncio.

>>> import ringkv
>>> sim = ringkv.Sim(nodes=5, n=3, r=2, w=2, seed=7)
>>> p = sim.put("cart", b"milk", node="n1")
>>> p.ok, sim.get("cart", node="n2").values
(True, [b'milk'])

Errors are in :mod:`ringkv.errors` (all re-exported here).
"""

from . import _native
from .client import Client
from .errors import (
    ConflictError,
    ContextError,
    InvalidRequestError,
    NothingToDeleteError,
    PreconditionFailedError,
    QuorumError,
    RequestTimeoutError,
    RingkvError,
    ServerError,
    SimulationError,
    TlsError,
    UnavailableError,
    UnknownNodeError,
)
from .results import KeyPage, MgetResult, Result
from .ring import Balance, Ring
from .sim import Replica, Sibling, Sim, Verdict
from .version import Causality, Context, Dot, VectorClock

__version__: str = _native.CORE_VERSION

__all__ = [
    "Sim",
    "Verdict",
    "Replica",
    "Sibling",
    "Ring",
    "Balance",
    "Client",
    "Result",
    "MgetResult",
    "KeyPage",
    "Context",
    "VectorClock",
    "Dot",
    "Causality",
    "RingkvError",
    "InvalidRequestError",
    "NothingToDeleteError",
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
    "__version__",
]
