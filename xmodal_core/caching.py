"""A process-wide cache of loaded things (models, encoders) that loads outside its lock.

`LoadCache.get(key, load)` runs `load()` at most once per key at a time: callers asking for
the same key wait on that key's own lock, while callers asking for other keys (or reading
what is already loaded) never wait behind a load. The result is published under the
cache's short-held lock.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Hashable


class LoadCache:
    """key -> loaded value; `get` loads once, `clear` forgets everything (a changed home, tests)."""

    def __init__(self) -> None:
        self._values: dict[Hashable, Any] = {}
        self._loading: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._values:
                return self._values[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:  # only callers of this key wait here, while it loads
            with self._lock:
                if key in self._values:
                    return self._values[key]
            value = load()
            with self._lock:
                self._values[key] = value
                self._loading.pop(key, None)
            return value

    def peek(self, key: Hashable) -> Any | None:
        """The loaded value, or None without loading."""
        with self._lock:
            return self._values.get(key)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._values

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)
