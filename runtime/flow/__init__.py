"""The flow language: load flows, check them, and run them with the pure interpreter.

This package is parlour's core and imports nothing of the runtime around it (only the leaf
module :mod:`parlour.errors`): no Ray, no Redis, no aiohttp, no clock.

>>> from parlour.flow import UserMessage, advance, load_catalog
>>> catalog = load_catalog(["flows/"])
>>> turn = advance(catalog, None, UserMessage("hi"), now=0.0)
>>> turn.replies[0].text
'Hi there! Welcome to the club.'
"""

from .compiled import Catalog, Flow
from .events import (
    AgentAction,
    Button,
    CancelTimer,
    Effect,
    End,
    Error,
    Event,
    Forward,
    Handoff,
    HttpRequest,
    HttpResult,
    Reply,
    Resume,
    Secret,
    Send,
    Start,
    StartTimer,
    TicketChanged,
    TimerFired,
    Turn,
    Unhandled,
    UserMessage,
)
from .interpreter import advance
from .loader import Loaded, load_catalog, load_flow, load_paths, load_text
from .model import json_schema
from .state import State

__all__ = [
    "AgentAction", "Button", "CancelTimer", "Catalog", "Effect", "End", "Error", "Event", "Flow", "Forward", "Handoff",
    "HttpRequest", "HttpResult", "Loaded", "Reply", "Resume", "Secret", "Send", "Start", "StartTimer", "State",
    "TicketChanged", "TimerFired", "Turn", "Unhandled", "UserMessage", "advance", "json_schema", "load_catalog",
    "load_flow", "load_paths", "load_text",
]
