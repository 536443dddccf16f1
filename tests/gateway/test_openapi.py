"""The running gateway against its own ``GET /openapi.json``: schemathesis generates requests for
every operation the document lists, sends them to a real node, and every answer must be one the
document describes (status code, content type, body, headers), with no server error it does not
own up to.

The node serves from the test's event loop, so schemathesis (blocking ``requests`` calls, driven
by hypothesis) runs in a worker thread while the loop answers.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CheckContext
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# per operation and way of calling it: the whole test stays near a minute on 2 cores (more to fuzz longer)
EXAMPLES = int(os.environ.get("PARLOUR_OPENAPI_EXAMPLES", "30"))


def server_error_documented(ctx: CheckContext, response, case) -> None:
    """A 5xx only where the operation documents it, and never the catch-all ``internal``
    (an exception a handler did not expect): schemathesis's ``not_a_server_error`` refuses
    every 5xx, which would refuse the documented ``turn_failed`` and ``not_ready`` too."""
    if response.status_code < 500:
        return
    code = (response.json() or {}).get("error", {}).get("code") if _is_json(response) else None
    documented = str(response.status_code) in case.operation.responses.status_codes
    assert documented and code != "internal", (
        f"server error {response.status_code} {code!r} (documented: {documented}): {response.text[:500]}")


def _is_json(response) -> bool:
    return "json" in response.headers.get("content-type", [""])[0]


CHECKS = [server_error_documented, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]


@dataclass(frozen=True)
class Way:
    """One way of calling the operations: with which token, on which tenant, with what data."""

    name: str
    token: str | None
    examples: int
    tenant: str | None = None  # None: generated
    mode: GenerationMode = GenerationMode.POSITIVE
    secured_only: bool = False
    statuses: frozenset[int] = field(default_factory=frozenset)  # when set, every answer is one of these


def ways(node) -> list[Way]:
    return [
        Way("operator, generated tenant", node.operator, EXAMPLES),
        Way("operator, tenant demo", node.operator, EXAMPLES, tenant="demo"),
        Way("operator, invalid data", node.operator, EXAMPLES // 2, mode=GenerationMode.NEGATIVE),
        Way("operator, invalid data, tenant demo", node.operator, EXAMPLES // 2, tenant="demo",
            mode=GenerationMode.NEGATIVE),
        Way("tenant token of demo", node.tokens["demo"], EXAMPLES // 3, tenant="demo", secured_only=True),
        Way("no token", None, EXAMPLES // 3, secured_only=True, statuses=frozenset({401})),
        Way("a token that is not one", "not-a-token", EXAMPLES // 3, secured_only=True, statuses=frozenset({401})),
    ]


COUNT = [0]


def run_operation(operation, way: Way, base_url: str) -> None:
    """``way.examples`` generated calls of ``operation``; raises the first failure hypothesis finds
    (shrunk), with the request to reproduce it."""
    secured = bool(operation.definition.raw.get("security"))
    path = {"tenant": way.tenant} if way.tenant and operation.get_parameter("tenant", "path") else None
    strategy = operation.as_strategy(generation_mode=way.mode, path_parameters=path)

    @settings(max_examples=way.examples, deadline=None, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def calls(case):
        if secured:  # schemathesis made up a token: replace it
            case.headers.pop("Authorization", None)
            if way.token:
                case.headers["Authorization"] = f"Bearer {way.token}"
        t1 = time.perf_counter()
        try:
            response = case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)
        finally:
            el = time.perf_counter() - t1
            COUNT[0] += 1
            if el > 1:
                print("SLOW", round(el, 1), case.as_curl_command(), flush=True)
        if way.statuses:
            assert response.status_code in way.statuses, (
                f"{way.name}: {response.status_code} {response.text[:300]}\n{case.as_curl_command()}")

    try:
        calls()
    except Unsatisfiable:
        if way.mode is GenerationMode.POSITIVE:
            raise  # else: the operation has nothing that can be made invalid


def run_all(raw: dict, node_url: str, all_ways: list[Way]) -> tuple[list[str], dict[str, float]]:
    schema = schemathesis.openapi.from_dict(raw)
    failures, seconds = [], {}
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        if operation.method.upper() == "GET" and operation.path.endswith("/web/ws"):
            pass
        started = time.perf_counter()
        for way in all_ways:
            if way.secured_only and not operation.definition.raw.get("security"):
                continue
            t0 = time.perf_counter()
            try:
                run_operation(operation, way, node_url)
            except (Exception, BaseExceptionGroup) as exc:  # every operation runs; the failures are listed at the end
                failures.append(f"{operation.label} ({way.name}):\n{exc}")
            print("TIMING", operation.label, way.name, round(time.perf_counter() - t0, 2), COUNT, flush=True)
        seconds[operation.label] = time.perf_counter() - started
    return failures, seconds


async def test_the_server_answers_as_its_openapi_says(node):
    async with node.http.get(f"{node.url}/openapi.json") as response:
        assert response.status == 200
        raw = await response.json()
    failures, seconds = await asyncio.to_thread(run_all, raw, node.url, ways(node))
    print({label: round(s, 1) for label, s in seconds.items()})
    assert len(seconds) == sum(len(methods) for methods in raw["paths"].values())
    assert not failures, "\n\n".join(failures)
