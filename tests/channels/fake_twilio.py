"""A fake Twilio Messages API: each request is checked against CreateMessage in Twilio's own
OpenAPI (tests/conformance/channels/specs/twilio/EXTRACT_Messages-create.json) and answered
201 with the shape of that operation's example response.

Rules that are Twilio's but not in the OpenAPI are marked with where they come from.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.channels.fake_api import FakeRequest, Spec

SPEC_FILE = Path(__file__).parents[1] / "conformance/channels/specs/twilio/EXTRACT_Messages-create.json"
PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"

_API = json.loads(SPEC_FILE.read_text())
_OPERATION = _API["paths"][PATH]["post"]
_FORM = _OPERATION["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
_ACCOUNT_SID = re.compile(_OPERATION["parameters"][0]["schema"]["pattern"])
_EXAMPLE = _OPERATION["responses"]["201"]["content"]["application/json"]["examples"]["create"]["value"]
_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")

BODY_LIMIT = 1600  # Body: "Can be up to 1,600 characters in length."
MEDIA_LIMIT = 10  # MediaUrl: "You can include up to ten media_url parameters per message."

# format "phone-number": an E.164 number, a channel address (whatsapp:+1...), a short code or an
# alphanumeric sender id (Twilio's docs: up to 11 letters, digits and spaces).
_PHONE = re.compile(r"^(\+[1-9]\d{1,14}|[a-z]+:\S+|\d{3,8}|(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11})$")


def check(request: FakeRequest) -> list[str]:
    """What is wrong with ``request`` as a CreateMessage call; empty if nothing."""
    match = _PATH.match(request.path)
    if request.method != "POST" or match is None:
        return [f"{request.method} {request.path} is not POST {PATH}"]
    account = match.group(1)
    problems = [] if _ACCOUNT_SID.match(account) else [f"AccountSid {account!r} is not AC + 32 hex digits"]
    problems += _auth_problems(request.headers, account)
    content_type = _header(request.headers, "Content-Type") or ""
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return [*problems, f"Content-Type is {content_type!r}, not application/x-www-form-urlencoded"]
    try:
        pairs = parse_qsl(request.body.decode(), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as exc:
        return [*problems, f"the body is not a form: {exc}"]
    return problems + _form_problems(pairs)


def answer(request: FakeRequest, n: int) -> tuple[int, Any]:
    """201 with the example's shape, for this message: sid ``SM...``, status ``queued``."""
    account = _PATH.match(request.path).group(1)
    pairs = parse_qsl(request.body.decode(), keep_blank_values=True)
    form = dict(pairs)
    sid = f"SM{n:032x}"
    uri = f"/2010-04-01/Accounts/{account}/Messages/{sid}"
    return 201, _EXAMPLE | {
        "sid": sid, "account_sid": account, "status": "queued", "date_sent": None,
        "to": form["To"], "from": form.get("From"), "messaging_service_sid": form.get("MessagingServiceSid"),
        "body": form.get("Body", ""), "num_media": str(sum(k == "MediaUrl" for k, _ in pairs)),
        "uri": f"{uri}.json", "subresource_uris": {"media": f"{uri}/Media.json"},
    }


SPEC = Spec(check, answer)


def _header(headers: dict[str, str], name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name.lower()), None)


def _auth_problems(headers: dict[str, str], account: str) -> list[str]:
    """HTTP Basic with the account SID as the user and a token (security ``accountSid_authToken``)."""
    scheme, _, encoded = (_header(headers, "Authorization") or "").partition(" ")
    if scheme != "Basic":
        return ["no HTTP Basic Authorization header"]
    try:
        user, colon, token = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, ValueError):
        return ["the Authorization header is not base64 of user:password"]
    if not colon or not token:
        return ["Basic credentials without an auth token"]
    return [] if user == account else [f"Basic credentials are for {user!r}, not the account in the path"]


def _form_problems(pairs: list[tuple[str, str]]) -> list[str]:
    properties = _FORM["properties"]
    counts = Counter(key for key, _ in pairs)
    form = dict(pairs)
    problems = [f"unknown parameter {key}" for key in counts if key not in properties]
    problems += [f"{key} is given {n} times" for key, n in counts.items()
                 if n > 1 and properties.get(key, {}).get("type") != "array"]
    problems += [f"missing required parameter {key}" for key in _FORM.get("required", ()) if not form.get(key)]
    problems += [problem for key, value in pairs if key in properties
                 for problem in _value_problems(key, value, _resolve(properties[key]))]
    if not (form.get("From") or form.get("MessagingServiceSid")):
        problems.append("neither From nor MessagingServiceSid: the message has no sender")
    if not (form.get("Body") or form.get("MediaUrl") or form.get("ContentSid")):
        problems.append("no Body, MediaUrl or ContentSid (Twilio error 21619)")
    if len(form.get("Body", "")) > BODY_LIMIT:
        problems.append(f"Body has {len(form['Body'])} characters, over {BODY_LIMIT}")
    if counts["MediaUrl"] > MEDIA_LIMIT:
        problems.append(f"{counts['MediaUrl']} MediaUrl, over {MEDIA_LIMIT}")
    return problems


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return _API["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def _value_problems(key: str, value: str, schema: dict[str, Any]) -> list[str]:
    """``value`` (a form field is always text) against its parameter's schema."""
    if schema.get("type") == "array":
        return _value_problems(key, value, schema["items"])
    if "enum" in schema and value not in schema["enum"]:
        return [f"{key}={value!r} is not one of {schema['enum']}"]
    kind, fmt = schema.get("type"), schema.get("format")
    if kind == "boolean" and value not in ("true", "false"):
        return [f"{key}={value!r} is not a boolean"]
    if kind == "integer" and not re.fullmatch(r"-?\d+", value):
        return [f"{key}={value!r} is not an integer"]
    if kind == "number" and not re.fullmatch(r"-?\d+(\.\d+)?", value):
        return [f"{key}={value!r} is not a number"]
    if "pattern" in schema and not re.search(schema["pattern"], value):
        return [f"{key}={value!r} does not match {schema['pattern']}"]
    if fmt == "phone-number" and not _PHONE.match(value):
        return [f"{key}={value!r} is not a phone number or channel address"]
    if fmt == "uri" and urlsplit(value).scheme not in ("http", "https"):
        return [f"{key}={value!r} is not an http(s) URL"]
    return []
