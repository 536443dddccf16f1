"""The values a conversation may hold: plain data that msgpack stores.

Variables, saved answers and API responses all pass through :func:`plain`, which turns dates
into ISO text and Jinja's undefined into None, and refuses what the stores cannot keep.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from jinja2 import Undefined

from .bounds import MAX_TEXT
from .expressions import RenderError

INT_MIN, INT_MAX = -(2 ** 63), 2 ** 64 - 1  # what msgpack stores
MAX_DEPTH = 64


def plain(value: Any, name: str, depth: int = 0) -> Any:
    """``value`` as plain data, or :class:`RenderError` saying why ``name`` cannot hold it."""
    if depth > MAX_DEPTH:
        raise RenderError(f"{name!r} cannot hold data nested more than {MAX_DEPTH} levels deep")
    if type(value) is int and not INT_MIN <= value <= INT_MAX:
        raise RenderError(f"{name!r} cannot hold {value}: integers are limited to 64 bits")
    if isinstance(value, (str, list, tuple, dict)) and len(value) > MAX_TEXT:
        raise RenderError(f"{name!r} cannot hold {len(value):,} characters or items (at most {MAX_TEXT:,})")
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, str):  # Markup and other str subclasses
        return str(value)
    if isinstance(value, Undefined):
        return None
    if isinstance(value, (list, tuple)):
        return [plain(v, name, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v, name, depth + 1) for k, v in value.items()}
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise RenderError(f"{name!r} cannot hold a {type(value).__name__}")
