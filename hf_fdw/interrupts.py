"""Read PostgreSQL's own cancel flags from inside the backend, safely.

A Python call that waits on the network is not interrupted by
``statement_timeout``, ``pg_cancel_backend`` or ``pg_terminate_backend``:
PostgreSQL only sets a flag and expects the running code to look at it.
Calling the server's ``ProcessInterrupts`` from Python would unwind through
the interpreter's frames and crash the backend, so hf_fdw only *reads* the
flags (``QueryCancelPending``, ``ProcDiePending``), through ctypes, and ends
its own work with an ordinary error. PostgreSQL clears the cancel request when
the statement aborts, so the session goes on working; a termination request
stays pending and ends the backend at its next check.

Outside a PostgreSQL backend (tests, the local server) the flags do not exist
and nothing is ever pending.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

# PostgreSQL's TimeoutId: STARTUP_PACKET_TIMEOUT, DEADLOCK_TIMEOUT,
# LOCK_TIMEOUT, STATEMENT_TIMEOUT, ... (the same first four in 14 to 18).
_STATEMENT_TIMEOUT = 3


class _Flags:
    def __init__(self, process: ctypes.CDLL) -> None:
        self.cancel = ctypes.c_int.in_dll(process, "QueryCancelPending")
        self.die = ctypes.c_int.in_dll(process, "ProcDiePending")
        try:
            indicator = process.get_timeout_indicator
            indicator.restype = ctypes.c_bool
            indicator.argtypes = [ctypes.c_int, ctypes.c_bool]
            self.timeout_indicator = indicator
        except AttributeError:
            self.timeout_indicator = None
        try:
            started = process.GetCurrentStatementStartTimestamp
            started.restype = ctypes.c_int64
            started.argtypes = []
            self.statement_start = started
        except AttributeError:
            self.statement_start = None


@lru_cache(maxsize=1)
def _flags() -> _Flags | None:
    try:
        return _Flags(ctypes.CDLL(None))
    except (OSError, ValueError):
        return None


def pending() -> str | None:
    """Why PostgreSQL wants the current statement to stop, or None."""
    flags = _flags()
    if flags is None:
        return None
    if flags.die.value:
        return "terminating connection due to administrator command"
    if flags.cancel.value:
        if flags.timeout_indicator and flags.timeout_indicator(
            _STATEMENT_TIMEOUT, False
        ):
            return "canceling statement due to statement timeout"
        return "canceling statement due to user request"
    return None


def statement_id() -> int | None:
    """The current statement's start time, which tells statements apart."""
    flags = _flags()
    if flags is None or flags.statement_start is None:
        return None
    return int(flags.statement_start())
