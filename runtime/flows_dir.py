"""Where the bundled flows are (the demo tenant's, and the docs')."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def bundled_flows() -> Path:
    return Path(str(files("parlour.flows")))
