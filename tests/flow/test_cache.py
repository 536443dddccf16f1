"""The compile cache: one compilation per source, a bounded number kept."""

from __future__ import annotations

import pytest

from parlour.flow.cache import CompileCache

FLOW = "flow: f{n}\nstart: a\nnodes:\n  a: {{say: 'hi {n}', end: true}}\n"


def test_a_source_compiles_once_and_only_the_latest_are_kept():
    cache = CompileCache(max_entries=2)
    first = cache.compile(FLOW.format(n=0), "f0.yaml")
    assert cache.compile(FLOW.format(n=0), "f0.yaml") is first and (cache.hits, cache.misses) == (1, 1)
    assert cache.compile(FLOW.format(n=0), "other.yaml") is not first  # problems name the path
    cache.compile(FLOW.format(n=1), "f1.yaml")
    assert len(cache) == 2
    assert cache.compile(FLOW.format(n=0), "f0.yaml") is not first  # evicted, compiled again
    assert first[0].id == "f0" and not [p for p in first[3] if p.severity == "error"]


def test_a_cache_holds_at_least_one_flow():
    with pytest.raises(ValueError):
        CompileCache(max_entries=0)
