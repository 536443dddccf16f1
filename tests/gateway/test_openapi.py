"""The running gateway against its own ``GET /openapi.json``: schemathesis generates requests for
every operation the document lists and sends them to a real node; every answer must be one the
document describes (status code, content type, body, headers), and no 5xx may come back that the
document does not own up to.

Each operation is called in several ways (:func:`ways`): with the operator's token on generated
paths and on resources that exist (so that the 2xx answers are reached, not only the 404s), with
invalid data, with a tenant's token, with no token or a wrong one (401), and with a few hostile
bodies that generation hardly ever makes (:data:`HOSTILE`). The node serves from
the test's event loop, so schemathesis (blocking ``requests`` calls, driven by hypothesis) runs in
a worker thread while the loop answers.

``PARLOUR_OPENAPI_EXAMPLES=300 pytest tests/gateway/test_openapi.py`` fuzzes longer.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CheckContext
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# calls per operation and way of calling it: the whole test takes about a minute on 2 cores
EXAMPLES = int(os.environ.get("PARLOUR_OPENAPI_EXAMPLES", "40"))
KNOWN_USER = "openapi-known-user"
NO_2XX = {"GET /v1/{tenant}/web/ws",  # its one success is 101 Switching Protocols, which needs a WebSocket client
          # a channel's webhook succeeds only when signed with the bot's secret, which generated calls never are
          "POST /v1/{tenant}/channels/{channel}/{bot}", "GET /v1/{tenant}/channels/{channel}/{bot}"}
BOT = {"api_base": "http://127.0.0.1:9", "token": "1:x", "secret_token": "openapi-secret"}
BOT_PATH = {"channel": "telegram", "bot": "support"}  # the bot and webhook operations' existing bot
SECRET = {"value": "openapi-secret-value"}  # the secrets operations' existing secret is OPENAPI_KEY
QUICK_WAIT_S = 0.05
"""A mailbox read's valid ``wait_s`` is cut to this: held for real, the generated waits (up to
30 s each, on mailboxes that stay empty) would make the test last an hour."""
HOSTILE = {  # bodies generation hardly ever makes, sent to every operation that takes one: a 4xx is the answer
    "nested 30,000 deep": b"[" * 30_000 + b"]" * 30_000,
    "a NUL": b"\x00",
    "not UTF-8": b"\xff\xfe",
    "a lone surrogate": b'"\\ud800"',
    "empty": b"",
}


def server_error_documented(ctx: CheckContext, response, case) -> None:
    """A 5xx only where the operation documents one, and never the catch-all ``internal`` (an
    exception no handler expected). Schemathesis's own ``not_a_server_error`` refuses every 5xx,
    the documented ``turn_failed`` and ``not_ready`` too."""
    if response.status_code < 500:
        return
    code = _error_code(response)
    if code == "internal":
        raise AssertionError(f"{response.status_code} `internal` (an exception no handler expected) from "
                             f"{case.operation.label}: {response.text[:500]}")
    if str(response.status_code) not in case.operation.responses.status_codes:
        raise AssertionError(f"{response.status_code} {code!r} is not documented for {case.operation.label}: "
                             f"{response.text[:500]}")


def _error_code(response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


CHECKS = [server_error_documented, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]


@dataclass(frozen=True)
class Way:
    """One way of calling the operations: with which token (``None``: none), the path parameters
    and bodies that are fixed (the rest is generated), valid or invalid data."""

    name: str
    token: str | None
    examples: int
    path: dict[str, str] = field(default_factory=dict)
    bodies: dict[str, tuple[Any, str]] = field(default_factory=dict)  # operationId: (body, media type)
    mode: GenerationMode = GenerationMode.POSITIVE
    secured_only: bool = False
    statuses: frozenset[int] = frozenset()  # when given, every answer must be one of these
    hostile: bool = False  # send :data:`HOSTILE` as the body, not generated ones


DOOMED = """
flow: doomed
triggers: [{keyword: [doomed]}]
start: bye
nodes: {bye: {say: bye, end: true}}
"""


async def existing(node) -> tuple[dict[str, str], dict[str, tuple[Any, str]]]:
    """Path parameters naming resources the node has (a tenant, its first flow, a conversation),
    and bodies that succeed on them (the flow's current source, which schemathesis sends as YAML
    again; a rollback to the version it was)."""
    status, _ = await node.say(KNOWN_USER, "hi")
    assert status == 200
    async with node.http.get(f"{node.url}/v1/demo/flows", headers=node.auth()) as response:
        first = (await response.json())["flows"][0]
    async with node.http.get(f"{node.url}/v1/demo/flows/{first['flow']}", headers=node.auth()) as response:
        source = (await response.json())["source"]
    async with node.http.put(f"{node.url}/v1/demo/bots/telegram/support", headers=node.auth(), json=BOT) as response:
        assert response.status == 201, await response.text()
    async with node.http.put(f"{node.url}/v1/demo/secrets/OPENAPI_KEY", headers=node.auth(), json=SECRET) as response:
        assert response.status == 201, await response.text()
    async with node.http.put(f"{node.url}/v1/demo/flows/doomed", headers=node.auth(), data=DOOMED) as response:
        assert response.status == 201, await response.text()  # for the DELETE: the others need theirs
    tickets = []
    for user in ("openapi-handoff", "openapi-handoff-closed"):  # the support flow: a ticket each
        for text in ("help", "agent"):
            assert (await node.say(user, text))[0] == 200
        async with node.http.get(f"{node.url}/v1/demo/handoffs", headers=node.auth()) as response:
            tickets = [t["id"] for t in (await response.json())["tickets"]]
    path = {"tenant": "demo", "flow": first["flow"], "channel": "web", "user": KNOWN_USER, "bot": "support",
            "name": "OPENAPI_KEY", "ticket": tickets[0], "closed_ticket": tickets[1], "doomed_flow": "doomed"}
    return path, {"putFlow": (yaml.safe_load(source), "application/yaml"),
                  "assignHandoff": ({"agent": "kim"}, "application/json"),
                  "agentMessage": ({"text": "Hello from the OpenAPI test."}, "application/json"),
                  "closeHandoff": ({}, "application/json"), "resumeHandoff": ({}, "application/json"),
                  "rollbackFlow": ({"version": first["current"]}, "application/json"),
                  "putBot": (BOT, "application/json"), "putSecret": (SECRET, "application/json")}


def fixed_path(operation, path: dict[str, str]) -> dict[str, str]:
    """``path``'s values for the operation's path parameters (a bot's channel where it names a bot)."""
    if "{bot}" in operation.path and path:
        path = {**path, **BOT_PATH}
    if operation.method.upper() == "DELETE" and operation.path.endswith("/flows/{flow}") and path:
        path = {**path, "flow": path["doomed_flow"]}  # deleted once, then 404
    if operation.path.endswith("/close") and path:  # its own ticket: the resume's stays open until it runs
        path = {**path, "ticket": path["closed_ticket"]}
    return {name: value for name, value in path.items() if operation.get_parameter(name, "path")}


def ways(node, path: dict[str, str], bodies: dict[str, tuple[Any, str]]) -> list[Way]:
    operator, few = node.operator, max(1, EXAMPLES // 4)
    return [
        Way("operator", operator, EXAMPLES),
        Way("operator, existing resources", operator, EXAMPLES, path=path),
        Way("operator, existing resources, bodies that succeed", operator, few, path=path, bodies=bodies),
        Way("operator, invalid data", operator, EXAMPLES // 2, mode=GenerationMode.NEGATIVE),
        Way("operator, invalid data, existing resources", operator, EXAMPLES // 2, path=path,
            mode=GenerationMode.NEGATIVE),
        Way("the token of tenant demo", node.tokens["demo"], few, path=path, secured_only=True),
        Way("no token", None, few, secured_only=True, statuses=frozenset({401})),
        Way("a token that is not one", "plr_not-a-token", few, secured_only=True, statuses=frozenset({401})),
        Way("operator, existing resources, hostile bodies", operator, len(HOSTILE), path=path, hostile=True),
    ]


def run_way(operation, way: Way, base_url: str, session: requests.Session, seen: set[int]) -> None:
    """Up to ``way.examples`` generated calls of ``operation``; raises the first failure
    hypothesis finds (shrunk), with a curl command that repeats it."""
    secured = bool(operation.definition.raw.get("security"))
    fixed: dict[str, Any] = {"path_parameters": fixed_path(operation, way.path) or None}
    if (operation_id := operation.definition.raw.get("operationId")) in way.bodies:
        fixed["body"], fixed["media_type"] = way.bodies[operation_id]

    @settings(max_examples=way.examples, deadline=None, database=None, print_blob=False,
              phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=way.mode, **fixed))
    def calls(case):
        if secured:  # schemathesis makes up a bearer token: this way's replaces it
            case.headers.pop("Authorization", None)
            if way.token:
                case.headers["Authorization"] = f"Bearer {way.token}"
        wait_s = (case.query or {}).get("wait_s")
        if isinstance(wait_s, (int, float)) and not isinstance(wait_s, bool) and 0 < wait_s <= 30:
            case.query["wait_s"] = min(wait_s, QUICK_WAIT_S)
        max_s = (case.query or {}).get("max_s")
        if operation.path.endswith("/events") and (max_s is None or (
                isinstance(max_s, (int, float)) and not isinstance(max_s, bool) and 0 < max_s <= 3600)):
            case.query = {**(case.query or {}), "max_s": QUICK_WAIT_S}  # a stream lasts an hour by default
        response = case.call_and_validate(base_url=base_url, session=session, checks=CHECKS, timeout=30)
        seen.add(response.status_code)
        assert not way.statuses or response.status_code in way.statuses, (
            f"{response.status_code}, expected {sorted(way.statuses)}: {response.text[:300]}\n"
            f"{case.as_curl_command(base_url=base_url)}")

    try:
        calls()
    except Unsatisfiable:
        if way.mode is GenerationMode.POSITIVE:
            raise  # else the operation has nothing to make invalid once its path is fixed


def send_hostile(operation, way: Way, base_url: str, session: requests.Session, seen: set[int]) -> list[str]:
    """Each of :data:`HOSTILE` as the body of ``operation`` (on ``way``'s path and token): what failed."""
    failures = []
    path = fixed_path(operation, way.path)
    headers = {"Authorization": f"Bearer {way.token}"} if operation.definition.raw.get("security") else None
    for name, body in HOSTILE.items():
        case = operation.Case(path_parameters=path, headers=headers, body=body, media_type="application/json")
        try:
            seen.add(case.call_and_validate(base_url=base_url, session=session, checks=CHECKS, timeout=30).status_code)
        except FailureGroup as exc:
            failures.append(f"{operation.method.upper()} {case.formatted_path} with {name} as its body:\n" + "\n".join(
                f"- {failure.title}: {failure.message}" for failure in exc.exceptions))
    return failures


def run_all(raw: dict, base_url: str, all_ways: list[Way]) -> tuple[list[str], dict[str, set[int]]]:
    """Every operation in every way that applies to it: the failures, and the statuses seen."""
    schema = schemathesis.openapi.from_dict(raw, config=schemathesis.Config())
    failures, seen = [], defaultdict(set)
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            for way in all_ways:
                if way.secured_only and not operation.definition.raw.get("security"):
                    continue
                if way.hostile:
                    if operation.body:
                        failures += send_hostile(operation, way, base_url, session, seen[operation.label])
                    continue
                try:
                    run_way(operation, way, base_url, session, seen[operation.label])
                except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - every way runs; failures are listed
                    failures.append(f"{operation.label} ({way.name}):\n{exc}")
    return failures, seen


async def test_the_server_answers_as_its_openapi_says(node):
    async with node.http.get(f"{node.url}/openapi.json") as response:
        assert response.status == 200
        raw = await response.json()
    all_ways = ways(node, *await existing(node))

    failures, seen = await asyncio.to_thread(run_all, raw, node.url, all_ways)

    if failures:
        pytest.fail(f"{len(failures)} failed:\n\n" + "\n\n".join(failures), pytrace=False)
    operations = {f"{method.upper()} {path}" for path, methods in raw["paths"].items() for method in methods}
    assert set(seen) == operations
    assert {label for label, statuses in seen.items() if not any(200 <= s < 300 for s in statuses)} == NO_2XX, seen
