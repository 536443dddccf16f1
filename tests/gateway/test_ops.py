"""Operations over real HTTP: liveness, readiness (with the store down), the node's metrics."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.conftest import start_node, stop_node
from tests.redis_server import RedisServer


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def scrape(node) -> dict:
    async with node.http.get(f"{node.url}/metrics", headers=node.auth()) as response:
        assert response.status == 200 and response.content_type == "text/plain"
        return samples(await response.text())


async def test_health_and_readiness(node):
    async with node.http.get(f"{node.url}/healthz") as response:
        assert response.status == 200 and await response.json() == {"status": "ok"}
    async with node.http.get(f"{node.url}/readyz") as response:
        assert response.status == 200 and (await response.json())["hosts"] == 1


async def test_metrics_cover_the_gateway_and_the_hosts(node):
    await node.say("m", "hi", id="m-1")
    await node.say("m", "hi", id="m-1")  # a channel's retry: a dedup hit
    await node.say("m", "hi", id="m-2", tenant="nobody")
    figures = await scrape(node)
    host = next(labels for name, labels in figures if name == "parlour_host_turns_total")
    route = "/v1/{tenant}/web/messages"

    def requests(status: str) -> float:
        return figures[("parlour_http_requests_total",
                        frozenset({("route", route), ("channel", "web"), ("status", status)}))]
    assert requests("200") == 2 and requests("404") == 1
    assert figures[("parlour_host_turns_total", host)] >= 1
    assert figures[("parlour_host_dedup_hits_total", host)] == 1
    assert figures[("parlour_turn_duration_seconds_count", frozenset({("channel", "web")}))] == 2
    assert figures[("parlour_host_resident_conversations", host)] >= 1
    assert figures[("parlour_store_commit_duration_seconds_count", host)] >= 1
    assert figures[("parlour_host_batch_size_sum", host)] >= 2
    assert ("parlour_host_errors_total", frozenset({*host, ("kind", "turn")})) in figures
    assert dict(host)["host"].startswith("gw")


async def test_only_a_channels_own_routes_count_under_its_name(node):
    """Admin and ops routes count under channel="" even when their path says `web`; a webhook
    counts under its channel, and a made-up channel in its path under none."""
    await node.say("w", "hi")
    requests = [("GET", "/v1/demo/conversations/web/w", node.auth("demo"), 200),
                ("GET", "/healthz", {}, 200),
                ("POST", "/v1/demo/channels/telegram/nobot", {}, 404),
                ("POST", "/v1/demo/channels/made-up-x/nobot", {}, 404)]
    for method, path, headers, status in requests:
        async with node.http.request(method, node.url + path, headers=headers) as response:
            assert response.status == status, await response.text()
    figures = await scrape(node)
    counted = {(dict(labels)["route"], dict(labels)["channel"]) for name, labels in figures
               if name == "parlour_http_requests_total"}
    assert {("/v1/{tenant}/web/messages", "web"), ("/v1/{tenant}/conversations/{channel}/{user}", ""),
            ("/healthz", ""), ("/v1/{tenant}/channels/{channel}/{bot}", "telegram"),
            ("/v1/{tenant}/channels/{channel}/{bot}", "")} <= counted, counted
    assert {channel for _, channel in counted} == {"web", "telegram", ""}


async def test_readiness_fails_while_the_store_is_down_and_returns_after(tmp_path, members):
    redis = RedisServer(tmp_path).start()
    node = await start_node(f"{redis.url}?prefix=ready:&timeout_s=0.5")
    try:
        redis.kill()
        async with node.http.get(f"{node.url}/readyz") as response:
            body = await response.json()
            assert response.status == 503 and body["error"]["code"] == "not_ready"
            assert "store" in body["error"]["details"]
            assert response.headers["Retry-After"] == "1"
        status, body = await node.say("d", "hi")
        assert status == 503 and body["error"]["code"] == "unavailable"
        redis.start()
        for _ in range(100):
            async with node.http.get(f"{node.url}/readyz") as response:
                if response.status == 200:
                    break
            await asyncio.sleep(0.2)
        assert response.status == 200
        assert (await node.say("d", "hi"))[0] == 200
    finally:
        await stop_node(node)
        redis.stop()
