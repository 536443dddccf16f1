"""Slack's ``chat.postMessage`` as a :class:`~tests.channels.fake_api.Spec` for the fake API.

``check`` holds a request to what Slack takes and parlour sends: ``POST /chat.postMessage``
with a bot token as a Bearer header and a JSON body whose parameters are the ones Slack's Web
API spec lists for the method (the extract in ``tests/conformance/channels/specs/slack/``
models them as formData; Slack takes JSON with the same names). That spec predates Block Kit
and types ``blocks`` as a loose array, so the blocks are held to the Block Kit reference
(docs.slack.dev/reference/block-kit) for the blocks parlour sends: section, actions of
buttons, image. ``answer`` is Slack's success answer, in the spec's success schema.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from tests.channels.fake_api import FakeRequest, Spec

EXTRACT = Path(__file__).parent.parent / "conformance/channels/specs/slack/EXTRACT_chat.postMessage.json"
OPERATION = json.loads(EXTRACT.read_text())["paths"]["/chat.postMessage"]["post"]
PARAMS = {p["name"]: p for p in OPERATION["parameters"] if p["in"] == "formData"}

# The spec types every form field a string; in JSON these take their natural types.
_JSON_TYPES: dict[str, tuple[type, ...]] = {"blocks": (list,), "attachments": (list,), "as_user": (bool, str)}
_SPEC_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "boolean": (bool,)}

MAX_TEXT_CHARS = 40_000  # chat.postMessage: Slack truncates text after 40,000 characters
MAX_BLOCKS = 50          # Block Kit "Blocks": up to 50 blocks in each message
_TOKEN = re.compile(r"Bearer xoxb-\S+")
_URL = re.compile(r"https?://\S+")


def check(request: FakeRequest) -> list[str]:
    """What is wrong with a request, as Slack would see it; empty when it would be posted."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    problems = []
    if (request.method, request.path) != ("POST", "/chat.postMessage"):
        problems.append(f"{request.method} {request.path}: only POST /chat.postMessage is served")
    if not _TOKEN.fullmatch(headers.get("authorization", "")):
        problems.append("Authorization must be 'Bearer xoxb-...', a bot token")
    if not headers.get("content-type", "").startswith("application/json"):
        problems.append("Content-Type must be application/json")
    try:
        body = json.loads(request.body)
    except ValueError:
        return [*problems, "the body is not JSON"]
    if not isinstance(body, dict):
        return [*problems, "the body is not a JSON object"]
    return problems + _params(body) + _blocks(body.get("blocks"))


def answer(request: FakeRequest, n: int) -> tuple[int, Any]:
    """Slack's answer to the n-th message posted: its channel and a ts unique to it."""
    body = request.json
    ts = f"{n:010d}.000100"
    message = {"type": "message", "subtype": "bot_message", "bot_id": "B0FAKEBOT01", "text": body["text"],
               "ts": ts, "blocks": body.get("blocks", [])}
    return 200, {"ok": True, "channel": body["channel"], "ts": ts, "message": message}


SPEC = Spec(check, answer)


def _params(body: dict[str, Any]) -> list[str]:
    problems = [f"{name} is not a chat.postMessage parameter" for name in sorted(set(body) - set(PARAMS))]
    problems += [f"{name} is required" for name, p in PARAMS.items() if p.get("required") and not body.get(name)]
    for name in set(body) & set(PARAMS):
        kinds = _JSON_TYPES.get(name) or _SPEC_TYPES[PARAMS[name]["type"]]
        if not isinstance(body[name], kinds):
            problems.append(f"{name} must be {' or '.join(k.__name__ for k in kinds)}")
    text = body.get("text")
    if not isinstance(text, str) or not text:
        problems.append("text is missing: parlour always sends it, as the notification fallback")
    elif len(text) > MAX_TEXT_CHARS:
        problems.append(f"text is {len(text)} characters, over {MAX_TEXT_CHARS} (msg_too_long)")
    return problems


def _blocks(blocks: Any) -> list[str]:
    if blocks is None:
        return []
    if not isinstance(blocks, list) or not blocks:
        return ["blocks must be a non-empty list"]
    problems = [] if len(blocks) <= MAX_BLOCKS else [f"{len(blocks)} blocks, over {MAX_BLOCKS} in a message"]
    for n, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in _BLOCKS:
            problems.append(f"blocks[{n}] is not a section, actions or image block")
            continue
        problems += _keys(block, _BLOCKS[kind][0], f"blocks[{n}]") + _BLOCKS[kind][1](block, f"blocks[{n}]")
        block_id = block.get("block_id", "")
        if not isinstance(block_id, str) or len(block_id) > 255:
            problems.append(f"blocks[{n}].block_id must be text of at most 255 characters")
    ids = Counter(e.get("action_id") for b in blocks if isinstance(b, dict) and b.get("type") == "actions"
                  for e in b.get("elements") or () if isinstance(e, dict) and "action_id" in e)
    problems += [f"action_id {i!r} is used {k} times: it must be unique" for i, k in ids.items() if k > 1]
    return problems


def _section(block: dict[str, Any], where: str) -> list[str]:
    # Section block: text, a text object of at most 3000 characters.
    return _text(block.get("text"), f"{where}.text", 3000, ("plain_text", "mrkdwn"))


def _actions(block: dict[str, Any], where: str) -> list[str]:
    # Actions block: elements, at most 25.
    elements = block.get("elements")
    if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
        return [f"{where}.elements must be a list of 1 to 25 elements"]
    return [p for n, e in enumerate(elements) for p in _button(e, f"{where}.elements[{n}]")]


def _button(element: Any, where: str) -> list[str]:
    # Button element: text plain_text <= 75, value <= 2000, action_id <= 255, url <= 3000.
    if not isinstance(element, dict) or element.get("type") != "button":
        return [f"{where} is not a button (parlour sends no other element)"]
    problems = _keys(element, {"type", "text", "value", "action_id", "url", "style"}, where)
    problems += _text(element.get("text"), f"{where}.text", 75, ("plain_text",))
    for name, limit in (("value", 2000), ("action_id", 255), ("url", 3000)):  # each optional
        value = element.get(name)
        if name in element and not (isinstance(value, str) and 1 <= len(value) <= limit):
            problems.append(f"{where}.{name} must be text of 1 to {limit} characters")
    return problems


def _image(block: dict[str, Any], where: str) -> list[str]:
    # Image block: image_url <= 3000 (a public URL), alt_text <= 2000, title plain_text <= 2000.
    url, alt = block.get("image_url"), block.get("alt_text")
    problems = []
    if not (isinstance(url, str) and len(url) <= 3000 and _URL.fullmatch(url)):
        problems.append(f"{where}.image_url must be an http(s) URL of at most 3000 characters")
    if not isinstance(alt, str) or not 1 <= len(alt) <= 2000:
        problems.append(f"{where}.alt_text must be text of 1 to 2000 characters")
    if "title" in block:
        problems += _text(block["title"], f"{where}.title", 2000, ("plain_text",))
    return problems


def _text(obj: Any, where: str, limit: int, kinds: tuple[str, ...]) -> list[str]:
    """A Block Kit text object: a type of ``kinds`` and 1 to ``limit`` characters."""
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        return [f"{where} must be a {' or '.join(kinds)} text object"]
    text = obj.get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        return [f"{where}.text must be text of 1 to {limit} characters"]
    return _keys(obj, {"type", "text", "emoji", "verbatim"}, where)


def _keys(obj: dict[str, Any], allowed: set[str], where: str) -> list[str]:
    return [f"{where}.{key} is not a field Block Kit defines there" for key in sorted(set(obj) - allowed)]


_BLOCKS = {
    "section": ({"type", "text", "block_id"}, _section),
    "actions": ({"type", "elements", "block_id"}, _actions),
    "image": ({"type", "image_url", "alt_text", "title", "block_id"}, _image),
}
