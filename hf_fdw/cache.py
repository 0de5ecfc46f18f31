"""Answers already paid for: a bounded, expiring cache shared by one backend.

Keys hold everything that changes an answer (the URL, model, task, the
model's parameters and options, its labels, and the inputs), so a changed
parameter is never served from an old answer. Entries expire after the
model's ``cache_ttl``; the cache holds at most ``MAX_BYTES`` of values
(estimated) and forgets the least recently used first. Each PostgreSQL backend
has its own; ``hf_fdw.clear_cache()`` empties the current backend's.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

MAX_BYTES = 64 * 1024 * 1024

_MISSING = object()


def _size(value: Any) -> int:
    """A cheap estimate of the memory a cached value holds."""
    if isinstance(value, str):
        return 64 + len(value)
    if isinstance(value, list):
        return 64 + 32 * len(value)
    return 64


def model_key(*parts: Any) -> str:
    """One string for everything about a model that shapes its answers."""
    return json.dumps(parts, sort_keys=True, default=str)


class AnswerCache:
    """LRU with a time to live per entry and a bound on total size."""

    def __init__(
        self, max_bytes: int = MAX_BYTES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, int, Any]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> Any:
        """The value for ``key``, or ``MISSING`` when absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return _MISSING
        expires, size, value = entry
        if expires <= self._clock():
            self._drop(key)
            return _MISSING
        self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        if ttl <= 0:
            return
        if key in self._entries:
            self._drop(key)
        size = _size(value)
        if size > self.max_bytes:
            return
        self._entries[key] = (self._clock() + ttl, size, value)
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def clear(self) -> int:
        """Forget everything; return how many entries there were."""
        count = len(self._entries)
        self._entries.clear()
        self._bytes = 0
        return count

    def _drop(self, key: Hashable) -> None:
        _, size, _ = self._entries.pop(key)
        self._bytes -= size


MISSING = _MISSING

# The backend's one cache, shared by every model's foreign table.
shared = AnswerCache()
