"""The WhatsApp Cloud API's ``POST /{phone_number_id}/messages`` as a fake :class:`Spec`.

A request is checked against Meta's own OpenAPI (the extract in
tests/conformance/channels/specs/whatsapp/), with the defects that SOURCES.md lists put right,
so that Meta's own request examples pass:

- every message schema is ``allOf: [BaseMessageProperties, {additionalProperties: false, ...}]``,
  which refuses the base's own fields: each is merged into one object, still closed;
- ``recipient_type`` is required by the schema but optional in the docs (default
  ``individual``), and ``type`` defaults to ``text`` (Meta's "Send Text Message with Preview
  URL" example has neither);
- ``BodyObject.text`` says 1024 for every interactive type, while the list-messages doc says
  4096 for lists: 4096 here, and 1024 is checked for reply buttons below;
- the extract (v23.0) predates business-scoped user ids (BSUIDs). Meta's "Business-scoped user
  IDs" page (2026) adds ``recipient``, for a BSUID or parent BSUID, next to ``to``, for a phone
  number: one of the two is needed, and ``to`` wins when both are given. A BSUID in ``to`` is
  read as a phone number and the message silently dropped (chatwoot/chatwoot#15150), so this
  fake refuses it.

Then what the docs say and the schema does not (:func:`_rules`): a text body of 1 to 4096
characters, a caption of at most 1024 and only on image, video and document, the interactive
type matching its action, unique button titles and row ids, at most 10 rows in all, section
titles when there are several.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from tests.channels.fake_api import FakeRequest, Spec

EXTRACT = (Path(__file__).resolve().parents[1] / "conformance" / "channels" / "specs" / "whatsapp"
           / "EXTRACT_send-message_and_webhook.json")
PATH = re.compile(r"(/v[0-9]+\.[0-9]+)?/[^/]+/messages")  # /{Version}/{Phone-Number-ID}/messages
BEARER = re.compile(r"Bearer\s+[A-Za-z0-9\-_.]+.*")  # components/parameters/Authorization
TEXT_MAX, CAPTION_MAX, BUTTON_BODY_MAX, LIST_BODY_MAX, ROWS_MAX = 4096, 1024, 1024, 4096, 10
BSUID = re.compile(r"[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}")  # "CC." and up to 128 letters and digits


def _relaxed(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The spec's schemas with the defects put right, and the schema name of each ``type``."""
    schemas = copy.deepcopy(spec["components"]["schemas"])
    base = schemas["BaseMessageProperties"]
    base["required"] = [name for name in base["required"] if name not in ("recipient_type", "to")]
    base["properties"]["recipient"] = {"type": "string", "pattern": f"^{BSUID.pattern}$",
                                       "description": "A BSUID or parent BSUID, for a user known by no phone number"}
    mapping = {kind: ref.rsplit("/", 1)[1] for kind, ref in schemas["Message"]["discriminator"]["mapping"].items()}
    for name in set(mapping.values()):
        first, own = schemas[name]["allOf"]
        if first != {"$ref": "#/components/schemas/BaseMessageProperties"}:
            raise RuntimeError(f"the extract has changed: {name} is no longer allOf [BaseMessageProperties, ...]")
        schemas[name] = {**own, "properties": base["properties"] | own["properties"],
                         "required": base["required"] + own["required"]}
    schemas["BodyObject"]["properties"]["text"]["maxLength"] = LIST_BODY_MAX
    return {"components": {"schemas": schemas}}, mapping


SPEC_JSON = json.loads(EXTRACT.read_text())
_SCHEMAS, MESSAGE_TYPES = _relaxed(SPEC_JSON)
_VALIDATORS = {kind: Draft202012Validator({"$ref": f"#/components/schemas/{name}", **_SCHEMAS})
               for kind, name in MESSAGE_TYPES.items()}


def examples() -> dict[str, dict[str, Any]]:
    """Meta's request examples for sending a message, by name."""
    content = SPEC_JSON["paths"]["/{Version}/{Phone-Number-ID}/messages"]["post"]["requestBody"]["content"]
    return {name: example["value"] for name, example in content["application/json"]["examples"].items()}


def check(request: FakeRequest) -> list[str]:
    problems = _http(request)
    try:
        body = request.json
    except (ValueError, RecursionError):
        return [*problems, "body: not JSON"]
    if not isinstance(body, dict):
        return [*problems, "body: not a JSON object"]
    return problems + _schema(body) + _rules(body)


def answer(request: FakeRequest, n: int) -> tuple[int, Any]:
    """Meta's answer: the contact as ``wa_id`` when sent to a phone number, as ``user_id``
    when sent to a BSUID alone."""
    to, recipient = request.json.get("to"), request.json.get("recipient")
    contact = ({"input": str(to), "wa_id": "".join(c for c in str(to) if c.isdigit())} if to
               else {"input": recipient, "user_id": recipient})
    return 200, {"messaging_product": "whatsapp", "contacts": [contact], "messages": [{"id": f"wamid.{n}"}]}


SPEC = Spec(check, answer)


def _header(request: FakeRequest, name: str) -> str:
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), "")


def _http(request: FakeRequest) -> list[str]:
    problems = []
    if request.method != "POST":
        problems.append(f"method: expected POST, got {request.method}")
    if not PATH.fullmatch(request.path):
        problems.append(f"path: expected /{{phone_number_id}}/messages, got {request.path}")
    if _header(request, "Content-Type").split(";")[0].strip().lower() != "application/json":
        problems.append(f"Content-Type: expected application/json, got {_header(request, 'Content-Type')!r}")
    if not BEARER.fullmatch(_header(request, "Authorization")):
        problems.append("Authorization: expected 'Bearer <access token>'")
    return problems


def _schema(body: dict[str, Any]) -> list[str]:
    kind = body.get("type", "text")
    if kind not in _VALIDATORS:
        return [f"$.type: {kind!r} is not one of {sorted(_VALIDATORS)}"]
    return [_describe(error) for error in _VALIDATORS[kind].iter_errors({**body, "type": kind})]


def _describe(error: ValidationError) -> str:
    while error.context:  # a oneOf: say what is wrong in the branch the body meant
        error = best_match(_meant(error.context))
    return f"{error.json_path}: {error.message}"


def _meant(errors: list[ValidationError]) -> list[ValidationError]:
    """The errors of the oneOf branches whose required properties are all there (reply
    buttons when there are ``buttons``), or all of them when there is none."""
    missing = {e.relative_schema_path[0] for e in errors if e.validator == "required" and not e.relative_path}
    return [e for e in errors if e.relative_schema_path[0] not in missing] or errors


def _rules(body: dict[str, Any]) -> list[str]:
    kind = body.get("type", "text")
    problems = [] if body.get("messaging_product") == "whatsapp" else ["$.messaging_product: must be 'whatsapp'"]
    problems += _address(body)
    content = body.get(kind)
    if not isinstance(content, dict):
        return problems  # the schema has said so
    if kind == "text" and not (isinstance(content.get("body"), str) and 0 < len(content["body"]) <= TEXT_MAX):
        problems.append(f"$.text.body: 1 to {TEXT_MAX} characters")
    if "caption" in content and kind not in ("image", "video", "document"):
        problems.append(f"$.{kind}.caption: only image, video and document messages have a caption")
    if len(str(content.get("caption", ""))) > CAPTION_MAX:
        problems.append(f"$.{kind}.caption: at most {CAPTION_MAX} characters")
    if kind == "interactive" and isinstance(content.get("action"), dict):
        problems += _interactive(content.get("type"), content.get("body"), content["action"])
    return problems


def _address(body: dict[str, Any]) -> list[str]:
    if not body.get("to") and not body.get("recipient"):
        return ["$: 'to' (a phone number) or 'recipient' (a BSUID) is required"]
    if isinstance(body.get("to"), str) and BSUID.fullmatch(body["to"]):
        return ["$.to: a BSUID goes in 'recipient'; in 'to' it is read as a phone number and the message is lost"]
    return []


def _interactive(kind: Any, body: Any, action: dict[str, Any]) -> list[str]:
    if kind not in ("button", "list"):
        return []
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        return [f"$.interactive.body.text: a {kind} message needs body text"]
    if kind == "list":
        return _list(action)
    problems = [] if "buttons" in action else ["$.interactive.action: a button message needs 'buttons'"]
    if len(text) > BUTTON_BODY_MAX:
        problems.append(f"$.interactive.body.text: at most {BUTTON_BODY_MAX} characters with reply buttons")
    replies = [b.get("reply") for b in action.get("buttons") or [] if isinstance(b, dict)]
    return problems + _unique("button titles", [r.get("title") for r in replies if isinstance(r, dict)])


def _list(action: dict[str, Any]) -> list[str]:
    sections = [s for s in action.get("sections") or [] if isinstance(s, dict)]
    rows = [r for s in sections for r in s.get("rows") or [] if isinstance(r, dict)]
    problems = [] if "button" in action else ["$.interactive.action: a list message needs 'button'"]
    if not 0 < len(rows) <= ROWS_MAX:
        problems.append(f"$.interactive.action.sections: 1 to {ROWS_MAX} rows in all, got {len(rows)}")
    if len(sections) > 1 and not all(s.get("title") for s in sections):
        problems.append("$.interactive.action.sections: every section needs a title when there are several")
    return problems + _unique("row ids", [r.get("id") for r in rows])


def _unique(what: str, values: list[Any]) -> list[str]:
    return [] if len(set(map(str, values))) == len(values) else [f"$.interactive.action: {what} must be unique"]
