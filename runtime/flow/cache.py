"""Compiled flows, kept by their source: a flow is compiled once per process, not once per
upload, per check with the tenant's other flows, and per host reload.

A compiled flow is immutable data (:class:`~parlour.flow.compiled.Flow`), so one compilation
serves every caller. The cache is keyed by the SHA-256 of the source and its path (problems
name the path), and keeps the ``max_entries`` most recently used results; it is safe to use
from threads (uploads compile in one, off the event loop).

>>> cache = CompileCache(max_entries=256)
>>> flow, spec, smap, problems = cache.compile(text, "registration.yaml")
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from .loader import compile_source

DEFAULT_ENTRIES = 256


class CompileCache:
    def __init__(self, max_entries: int = DEFAULT_ENTRIES):
        if max_entries < 1:
            raise ValueError(f"a compile cache holds at least one flow, not {max_entries}")
        self.max_entries = max_entries
        self.hits = self.misses = 0
        self._results: OrderedDict[tuple[bytes, str], tuple] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, text: str, path: str) -> tuple:
        """What :func:`~parlour.flow.loader.compile_source` returns for ``text`` at ``path``."""
        key = (hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest(), path)
        with self._lock:
            found = self._results.get(key)
            if found is not None:
                self._results.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        result = compile_source(text, path)  # outside the lock: two threads may both compile, once
        with self._lock:
            self._results[key] = result
            while len(self._results) > self.max_entries:
                self._results.popitem(last=False)
        return result

    def __len__(self) -> int:
        return len(self._results)


COMPILED = CompileCache()
"""The process's cache: the gateway's uploads and a host's flows share it."""
