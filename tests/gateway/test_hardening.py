"""The gateway under hostile HTTP, over real sockets: malformed requests are answered in the
JSON error shape and leave no credential in the logs; odd path segments are 4xx, never 5xx;
a store that went bad is 503."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
from urllib.parse import quote, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.conftest import members_env, start_node, stop_node, wait_for

SIGNAL_SECRET = "signal-url-secret-0123456789"


async def raw(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is over a new connection; the status, headers and body answered."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


async def test_malformed_requests_are_answered_in_json_and_leave_no_credential_in_the_logs(node, caplog):
    caplog.set_level(logging.DEBUG)
    token = node.operator
    webhook = f"/v1/demo/channels/signal/bot?token={SIGNAL_SECRET}"
    malformed = [
        f"GET {webhook} HTTP/1.1 junk\r\nHost: x\r\n\r\n".encode(),  # a request line with a secret in it
        f"GET {webhook}\x7f HTTP/1.1\r\nHost: x\r\n\r\n".encode(),  # a URL with a byte HTTP forbids
        f"GET /v1/demo/flows HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\x01\r\n\r\n".encode(),
        f"GET /v1/demo/flows HTTP/1.1\r\nHost: x\r\nAuthorization : Bearer {token}\r\n\r\n".encode(),
        f"GET /v1/demo/flows HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}{'A' * 9000}\r\n\r\n".encode(),
        f"GET /v1/demo/flows HTTP/1.1\r\nHost: x\r\nX-Other: {'B' * 9000}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode(),
        f"POST {webhook} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".encode(),
        f"{token} {webhook} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),  # a token where the method goes
    ]
    for request in malformed:
        status, headers, body = await raw(node.url, request)
        assert status == 400 and headers["content-type"].startswith("application/json"), (request[:60], body)
        error = json.loads(body)["error"]
        assert set(error) == {"code", "message", "details"} and error["code"] == "bad_request"
        assert error["details"]["reason"] and error["message"]
        assert token.encode() not in body and SIGNAL_SECRET.encode() not in body
    # well-formed requests carrying credentials: a wrong token, a webhook's secret in its query
    for request in (f"GET /v1/demo/flows HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}x\r\n"
                    "Connection: close\r\n\r\n".encode(),
                    f"POST {webhook} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                    "Connection: close\r\n\r\n{}".encode()):
        status, headers, body = await raw(node.url, request)
        assert status in (401, 404) and json.loads(body)["error"]["code"] in ("unauthorized", "not_found")
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert token not in logged and SIGNAL_SECRET not in logged
    assert "refused a malformed request" in caplog.text


ODD = st.one_of(
    st.sampled_from(["..", ".", "..%2Fbeta", "%2e%2e%2fbeta", "a%2Fb", "%00", "%ff", "%ud800", "%", "%%", "a" * 5000,
                     "%2F" * 300, "web:bot", "\u202e", "😀" * 600, "~", "'", '"', "<script>", "a?b", "a#b"]),
    st.text(min_size=1, max_size=40).map(lambda s: quote(s, safe="")),
    st.text(alphabet="%2Ff./.:ab", min_size=1, max_size=12),
)
ROUTES = [
    ("GET", "/v1/demo/conversations/{}/bob", True), ("DELETE", "/v1/demo/conversations/web/{}", True),
    ("GET", "/v1/demo/conversations/{}/{}", True), ("GET", "/v1/{}/flows", True),
    ("GET", "/v1/demo/flows/{}", True), ("PUT", "/v1/tenants/{}", True), ("GET", "/v1/demo/bots/{}/{}", True),
    ("PUT", "/v1/demo/bots/{}/{}", True),
    ("POST", "/v1/{}/web/messages", False), ("GET", "/v1/demo/web/ws?user={}", False), ("GET", "/chat/{}", False),
    ("GET", "/v1/demo/channels/{}/{}", False), ("POST", "/v1/demo/channels/telegram/{}", False),
]


PRINTABLE_ASCII = "".join(map(chr, range(0x21, 0x7F)))  # sent as they are; the rest percent-encoded


def ask(url: str, method: str, path: str, token: str | None, body: bytes | None = None) -> int:
    """One blocking request with ``path`` sent exactly as given; the status answered (not 5xx:
    an AssertionError names the request)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest(method, quote(path, safe=PRINTABLE_ASCII), skip_accept_encoding=True)
        if token:
            connection.putheader("Authorization", f"Bearer {token}")
        connection.putheader("Content-Length", str(len(body or b"")))
        connection.endheaders(body)
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    assert response.status < 500, (method, path[:120], response.status, answer[:300])
    content_type = response.getheader("Content-Type", "")
    assert content_type.startswith(("application/json", "text/html")), (path[:99], answer[:99])
    return response.status


async def test_odd_path_segments_and_ids_are_4xx_never_5xx(node):
    await asyncio.to_thread(odd_requests, node.url, node.operator)  # blocking clients: the server runs on this loop


def odd_requests(url: str, token: str) -> None:
    # the reproductions of the issue, each named
    assert ask(url, "GET", "/v1/demo/conversations/..%2Fbeta/bob", token) == 400
    assert ask(url, "GET", "/v1/demo/conversations/web/" + "u" * 5000, token) == 400
    assert ask(url, "DELETE", "/v1/demo/conversations/web%2Fx/bob", token) == 400
    user = json.dumps({"user": "u" * 5000, "id": "1", "text": "hi"}).encode()
    assert ask(url, "POST", "/v1/demo/web/messages", None, user) == 400
    assert ask(url, "GET", "/v1/demo/web/ws?user=" + "u" * 5000, None) == 400

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(route=st.sampled_from(ROUTES), first=ODD, second=ODD)
    def fuzz(route, first, second):
        method, template, needs_token = route
        path = template.format(first, second) if template.count("{}") == 2 else template.format(first)
        body = json.dumps({"user": first, "id": second, "text": "hi"}).encode() if method == "POST" else None
        ask(url, method, path, token if needs_token else None, body)

    fuzz()


async def test_a_corrupted_store_answers_503_not_500(tmp_path, members):
    database = tmp_path / "parlour.db"
    node = await start_node(f"sqlite:///{database}", env=members_env(members.url))
    try:
        assert (await node.say("c", "hi"))[0] == 200
        for path in sorted(tmp_path.glob("parlour.db*")):  # the database, its WAL and shared memory: garbage
            with path.open("r+b") as file:
                file.write(b"\x5a" * max(path.stat().st_size, 4096))
        headers = node.auth()
        for path in ("/v1/demo/conversations/web/nobody", "/v1/demo/flows"):
            async with node.http.get(node.url + path, headers=headers) as response:
                body = await response.json()
                assert response.status == 503, (path, body)
                assert body["error"]["code"] == "store_unavailable" and "Retry-After" in response.headers
    finally:
        await stop_node(node)


UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


async def test_metrics_sockets_web_users_and_token_guesses_each_meet_their_bound(redis_server, members):
    node = await start_node(f"{redis_server.url}?prefix=bounds:", env=members_env(members.url),
                            user_rate_limit="2/minute", limits={"max_websockets": 2, "auth_failures": "3/minute"})
    try:
        # /metrics names tenants and bots: the operator's token only
        for headers, status in (({}, 401), (node.auth("demo"), 403), (node.auth(), 200)):
            async with node.http.get(f"{node.url}/metrics", headers=headers) as response:
                text = await response.text()
            assert response.status == status, text
            assert "parlour_http_requests_total" in text if status == 200 else json.loads(text)["error"]["code"]
        # one web user over its rate leaves the tenant's other users theirs
        assert [(await node.say("greedy", "hi", tenant="acme"))[0] for _ in range(3)] == [200, 200, 429]
        status, body = await node.say("greedy", "hi", tenant="acme")
        assert (status, body["error"]["code"]) == (429, "user_rate_limited")
        assert (await node.say("polite", "hi", tenant="acme"))[0] == 200
        # chat sockets: at most max_websockets on the node, whoever opens them
        first = await node.http.ws_connect(f"{node.url}/v1/demo/web/ws?user=a")
        second = await node.http.ws_connect(f"{node.url}/v1/acme/web/ws?user=b")
        async with node.http.get(f"{node.url}/v1/demo/web/ws?user=c", headers=UPGRADE) as response:
            body = await response.json()
            assert (response.status, body["error"]["code"]) == (503, "too_many_sockets")
            assert response.headers["Retry-After"] == "5"
        await first.close()
        assert await wait_for(lambda: _sockets(node, 1))
        third = await node.http.ws_connect(f"{node.url}/v1/demo/web/ws?user=c")
        await asyncio.gather(second.close(), third.close())
        # guessing tokens: after 3 wrong ones, this address is refused even the right one
        for n in range(3):
            wrong = {"Authorization": f"Bearer plr_{n}"}
            async with node.http.get(f"{node.url}/v1/demo/flows", headers=wrong) as response:
                assert response.status == 401
        async with node.http.get(f"{node.url}/v1/demo/flows", headers=node.auth()) as response:
            body = await response.json()
            assert (response.status, body["error"]["code"]) == (429, "too_many_failures")
            assert 1 <= int(response.headers["Retry-After"]) <= 60
    finally:
        await stop_node(node)


async def _sockets(node, count: int) -> bool:
    return node.gateway.web.open_sockets == count
