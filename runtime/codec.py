"""Bytes for the store: conversation state as msgpack, with the schema version inside.

>>> unpack_state(pack_state(state)) == state
True
"""

from __future__ import annotations

import msgpack

from .errors import StateError
from .flow.state import State


def pack_state(state: State) -> bytes:
    return msgpack.packb(state.to_data(), use_bin_type=True)


def unpack_state(data: bytes) -> State:
    """The state in ``data``, migrated to the current schema; :class:`StateError` if unreadable."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise StateError(f"conversation state is not msgpack: {exc}") from exc
    if not isinstance(value, dict):
        raise StateError(f"conversation state is a {type(value).__name__}, not a map")
    return State.from_data(value)
