"""A fake signal-cli-rest-api ``POST /v2/send``: each request is checked against
``api.SendMessageV2`` in the REST API's swagger
(tests/conformance/channels/specs/signal/EXTRACT_v2-send_v1-receive.json) and answered 201
``{"timestamp": "<n>"}`` (``api.SendMessageResponse``).

The recipient rules the swagger does not state are the REST API's own, from its
src/api/api.go (SendV2) and src/client/client.go (SendV2, ConvertGroupIdToInternalGroupId).
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from tests.channels.fake_api import FakeRequest, Spec

SPEC_FILE = Path(__file__).parents[1] / "conformance/channels/specs/signal/EXTRACT_v2-send_v1-receive.json"
SEND = {"$ref": "#/definitions/api.SendMessageV2"}
GROUP_PREFIX = "group."
FIRST_TIMESTAMP = 1_700_000_000_000  # a millisecond clock, as Signal's timestamps are

_SWAGGER = json.loads(SPEC_FILE.read_text())
_TYPES = {"string": str, "integer": int, "boolean": bool, "number": (int, float), "array": list, "object": dict}


def check(request: FakeRequest) -> list[str]:
    """What is wrong with ``request`` as a /v2/send call; empty if nothing."""
    if (request.method, request.path) != ("POST", "/v2/send"):
        return [f"{request.method} {request.path} is not POST /v2/send"]
    try:
        body = request.json
    except ValueError as exc:
        return [f"the body is not JSON: {exc}"]
    problems = _schema_problems(body, SEND, "body")
    if problems:
        return problems
    if not body["number"]:
        problems.append("number is empty (the REST API: 'please provide a valid number')")
    return problems + _recipient_problems(body["recipients"])


def answer(request: FakeRequest, n: int) -> tuple[int, Any]:
    return 201, {"timestamp": str(FIRST_TIMESTAMP + n)}


SPEC = Spec(check, answer)


def _schema_problems(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    """``value`` against a swagger 2 schema: types, enums, required and (stricter than the REST
    API, which ignores them) unknown properties."""
    if "$ref" in schema:
        schema = _SWAGGER["definitions"][schema["$ref"].rsplit("/", 1)[1]]
    expected = _TYPES.get(schema.get("type", "object"))
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        return [f"{where} is {json.dumps(value)[:40]}, not {schema.get('type', 'object')}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where} is {value!r}, not one of {schema['enum']}"]
    if isinstance(value, list):
        return [problem for n, item in enumerate(value)
                for problem in _schema_problems(item, schema.get("items", {}), f"{where}[{n}]")]
    if isinstance(value, dict):
        return _object_problems(value, schema, where)
    return []


def _object_problems(value: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
    properties = schema.get("properties", {})
    problems = [f"{where}.{key} is required" for key in schema.get("required", ()) if key not in value]
    problems += [f"{where}.{key} is not a field of this object" for key in value if key not in properties]
    return problems + [problem for key, item in value.items() if key in properties
                       for problem in _schema_problems(item, properties[key], f"{where}.{key}")]


def _recipient_problems(recipients: list[str]) -> list[str]:
    groups = [r for r in recipients if r.startswith(GROUP_PREFIX)]
    if not recipients:
        return ["recipients is empty (the REST API: 'please provide at least one recipient')"]
    if groups and len(groups) < len(recipients):
        return [("groups and phone numbers together in one request (the REST API refuses: "
                 "'Please split them up into multiple REST API calls')")]
    if len(groups) > 1:
        return ["more than one group in one request (the REST API refuses)"]
    return [f"{group} is not 'group.' + base64 ('Invalid group id')" for group in groups if not _is_base64(group)]


def _is_base64(group: str) -> bool:
    try:
        return bool(base64.b64decode(group.removeprefix(GROUP_PREFIX), validate=True))
    except (binascii.Error, ValueError):
        return False
