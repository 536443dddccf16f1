"""The HTTP caller against a real aiohttp server on loopback."""

import asyncio
import random

import pytest
from aiohttp import web

from parlour.flow import HttpRequest, Secret
from parlour.http import HttpCaller

from .servers import Recorder, loopback_egress, members_app, serve

EGRESS = loopback_egress()  # the test APIs listen on loopback


def request(url: str, **kwargs) -> HttpRequest:
    return HttpRequest(request_id="r1", method=kwargs.pop("method", "POST"), url=url, **kwargs)


async def test_secrets_are_filled_in_at_send_time():
    recorder = Recorder()
    async with serve(members_app(recorder)) as base, HttpCaller({"TOKEN": "s3cret"}, egress=EGRESS) as call:
        result = await call(request(f"{base}/members", headers=(("Authorization", Secret("TOKEN", "Bearer ")),),
                                    query=(("key", Secret("TOKEN")), ("q", "x")), json={"name": "Ada"}))
    assert result.ok and result.json == {"id": 1} and result.request_id == "r1"
    sent = recorder.requests[0]
    assert sent["headers"]["Authorization"] == "Bearer s3cret"
    assert sent["query"] == {"key": "s3cret", "q": "x"}
    assert sent["body"] == '{"name": "Ada"}'


async def test_a_missing_secret_is_an_error_result_and_nothing_is_sent():
    recorder = Recorder()
    async with serve(members_app(recorder)) as base, HttpCaller({}, egress=EGRESS) as call:
        result = await call(request(f"{base}/x", headers=(("Authorization", Secret("TOKEN")),)))
    assert result.error == "secret 'TOKEN' is not set" and not result.ok
    assert recorder.requests == []


async def test_5xx_and_429_are_retried_then_succeed():
    recorder = Recorder(script=[(503, {"e": 1}), (429, {"e": 2})])
    caller = HttpCaller(backoff_s=0.001, rng=random.Random(1), egress=EGRESS)
    async with serve(members_app(recorder)) as base, caller as call:
        result = await call(request(f"{base}/members", retries=2))
    assert result.status == 201 and len(recorder.requests) == 3


async def test_retries_run_out_on_the_last_failure():
    recorder = Recorder(script=[(500, None)] * 5)
    async with serve(members_app(recorder)) as base, HttpCaller(backoff_s=0.001, egress=EGRESS) as call:
        result = await call(request(f"{base}/members", retries=1))
    assert result.status == 500 and not result.ok and len(recorder.requests) == 2


async def test_other_4xx_are_not_retried():
    recorder = Recorder(script=[(404, {"detail": "no"})])
    async with serve(members_app(recorder)) as base, HttpCaller(backoff_s=0.001, egress=EGRESS) as call:
        result = await call(request(f"{base}/members", retries=3, method="GET"))
    assert result.status == 404 and result.json == {"detail": "no"} and len(recorder.requests) == 1


async def test_a_timeout_is_an_error_result():
    recorder = Recorder(delay_s=1.0)
    async with serve(members_app(recorder)) as base, HttpCaller(egress=EGRESS) as call:
        result = await call(request(f"{base}/slow", timeout_s=0.05))
    assert result.error == "timed out after 0.05 s" and result.status is None


async def test_a_refused_connection_is_an_error_result():
    async with HttpCaller(egress=EGRESS) as call:
        result = await call(request("http://127.0.0.1:9/nothing-listens-here"))
    assert result.error and "Connect" in result.error


async def test_form_and_raw_bodies():
    recorder = Recorder()
    async with serve(members_app(recorder)) as base, HttpCaller(egress=EGRESS) as call:
        await call(request(f"{base}/f", form=(("a", "1"), ("b", "two words"))))
        await call(request(f"{base}/b", body="plain text"))
    assert recorder.requests[0]["body"] == "a=1&b=two+words"
    assert recorder.requests[1]["body"] == "plain text"


def special_app(recorder: Recorder, other: str = "") -> web.Application:
    """Routes that misbehave: a redirect to ``other``, a large body, a bogus charset, deep JSON."""

    async def redirect(request):
        raise web.HTTPFound(f"{other}/landing")

    async def landing(request):
        recorder.requests.append({"path": request.path, "headers": dict(request.headers)})
        return web.json_response({"landed": True})

    async def big(request):
        return web.Response(body=b'{"items": "' + b"x" * int(request.query["n"]) + b'"}',
                            content_type="application/json")

    async def charset(request):
        return web.Response(body=b'{"ok": 1}', headers={"Content-Type": "application/json; charset=bogus"})

    async def deep(request):
        return web.Response(text="[" * 100_000 + "]" * 100_000, content_type="application/json")

    app = web.Application()
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/landing", landing)
    app.router.add_get("/big", big)
    app.router.add_get("/charset", charset)
    app.router.add_get("/deep", deep)
    return app


async def test_a_request_with_secrets_does_not_follow_a_redirect_to_another_host():
    elsewhere, here = Recorder(), Recorder()
    async with serve(special_app(elsewhere)) as other, serve(special_app(here, other)) as base, \
            HttpCaller({"KEY": "s3cr3t"}, egress=EGRESS) as call:
        result = await call(request(f"{base}/redirect", method="GET", headers=(("X-Api-Key", Secret("KEY")),)))
        plain = await call(request(f"{base}/redirect", method="GET"))
    assert result.status == 302 and "does not follow redirects" in result.error
    assert plain.ok and plain.json == {"landed": True}  # without secrets, redirects are followed
    assert [r["headers"].get("X-Api-Key") for r in elsewhere.requests] == [None]


def test_secret_values_are_masked_in_error_text():
    from parlour.http import _mask
    assert _mask("InvalidURL: http://h/x?key=s3cr3t&b=1", ["s3cr3t", ""]) == "InvalidURL: http://h/x?key=***&b=1"


async def test_bodies_are_read_whole_up_to_the_limit():
    async with serve(special_app(Recorder())) as base, HttpCaller(egress=EGRESS) as call:
        whole = await call(request(f"{base}/big?n=300000", method="GET"))
        over = await call(request(f"{base}/big?n=2000000", method="GET"))
    assert whole.ok and len(whole.json["items"]) == 300_000
    assert over.error == "the response body is over 1,048,576 bytes" and over.status == 200


async def test_odd_responses_are_results_not_exceptions():
    async with serve(special_app(Recorder())) as base, HttpCaller(egress=EGRESS) as call:
        charset = await call(request(f"{base}/charset", method="GET"))
        deep = await call(request(f"{base}/deep", method="GET"))
    assert charset.ok and charset.json == {"ok": 1}
    assert deep.ok and deep.json is None and deep.text.startswith("[[[")


def test_secret_values_are_masked_in_every_form_a_url_carries():
    from parlour.http import _mask
    text = "url='http://h/x?key=ab/c%2Bd%3D%3D&k2=ab%2Fc%2Bd%3D%3D&k3=ab%2Fc+d' ab/c+d=="
    assert "ab" not in _mask(text, ["ab/c+d==", "ab/c d"]).replace("***", "")


async def test_a_malformed_response_is_an_error_result_without_the_url():
    async def broken(reader, writer):
        await reader.read(1024)
        writer.write(b"HTTP/1.1 200 OK\r\nthis header has no colon\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(broken, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, HttpCaller({"KEY": "ab/c+d=="}, egress=EGRESS) as call:
        result = await call(request(f"http://127.0.0.1:{port}/x", method="GET", query=(("key", Secret("KEY")),)))
    assert result.error and "ab" not in result.error and "/x" not in result.error


async def test_a_body_that_cannot_be_encoded_or_decoded_is_not_an_exception():
    recorder = Recorder()
    async with serve(members_app(recorder)) as base, HttpCaller(egress=EGRESS) as call:
        sent = await call(request(f"{base}/members", body="lone \ud800 surrogate"))
    assert sent.status == 201 and recorder.requests[0]["body"] == "lone ? surrogate"


@pytest.mark.parametrize("charset", ["bogus", "rot13", "base64", None])
def test_a_charset_that_is_not_a_text_encoding_reads_as_utf8(charset):
    from parlour.http import _decode
    assert _decode('{"a": "é"}'.encode(), charset) == '{"a": "é"}'


# ---------------------------------------------------------------- issue 12, finding 1: secrets are a tenant's


def echo_app(recorder: Recorder) -> web.Application:
    """An API that echoes what it was sent, in its body (text and JSON, keys too) and headers;
    ``?status=`` picks the status."""

    async def echo(request):
        key = request.headers.get("X-Key", "")
        recorder.requests.append({"headers": dict(request.headers), "query": dict(request.query)})
        body = {"you_sent": key, key or "none": "as a key", "nested": [{"q": dict(request.query)}],
                "escaped": "".join(f"\\u{ord(c):04x}" for c in key)}
        named = {f"X-{key}": "1"} if key.isascii() and key.isalnum() else {}  # a header name is a token
        return web.json_response(body, status=int(request.query.get("status", 200)), headers={"X-Echo": key, **named})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


class Tenants(dict):
    """A secret source with a mapping per tenant, as the hosts' vault is; and, as a mapping,
    every tenant's secrets together: what a node-wide caller (at 4489cc0) was given."""

    def __init__(self, by_tenant: dict[str, dict[str, str]]):
        super().__init__({name: value for values in by_tenant.values() for name, value in values.items()})
        self.by_tenant = by_tenant

    def secrets_of(self, tenant):
        return self.by_tenant.get(tenant, {})


async def test_a_flow_of_alpha_cannot_send_a_secret_of_beta():
    recorder = Recorder()
    vault = Tenants({"alpha": {"ALPHA_API_KEY": "alpha-secret"}, "beta": {"BETA_API_KEY": "beta-secret-value"}})
    async with serve(echo_app(recorder)) as base, HttpCaller(vault, egress=loopback_egress("alpha", "beta")) as call:
        stolen = await call(request(f"{base}/steal", headers=(("X-Key", Secret("BETA_API_KEY")),)), "alpha")
        own = await call(request(f"{base}/mine", headers=(("X-Key", Secret("ALPHA_API_KEY")),)), "alpha")
    assert stolen.error == "secret 'BETA_API_KEY' is not set" and not stolen.ok
    assert own.ok and len(recorder.requests) == 1 and recorder.requests[0]["headers"]["X-Key"] == "alpha-secret"


async def test_a_plain_mapping_of_secrets_is_no_named_tenants():
    """``HttpCaller({...})`` (``parlour chat``, flow tests) serves its one unnamed tenant: a
    request of a named tenant gets none of them (at 4489cc0 every tenant got them all)."""
    recorder = Recorder()
    caller = HttpCaller({"BETA_API_KEY": "beta-secret-value"}, egress=EGRESS)
    async with serve(echo_app(recorder)) as base, caller as call:
        stolen = await call(request(f"{base}/steal", headers=(("X-Key", Secret("BETA_API_KEY")),)), "alpha")
        unnamed = await call(request(f"{base}/chat", headers=(("X-Key", Secret("BETA_API_KEY")),)))
    assert [r["headers"]["X-Key"] for r in recorder.requests] == ["beta-secret-value"]  # the unnamed call only
    assert stolen.error == "secret 'BETA_API_KEY' is not set" and unnamed.ok


@pytest.mark.parametrize("status", [200, 400])
@pytest.mark.parametrize("secret", ["s3cr3t/+é&", "s3cr3tToken"])
async def test_an_api_that_echoes_a_secret_gives_back_only_stars(status, secret):
    """Text, JSON (strings, keys, nested), headers (names and values): masked before the result
    leaves the caller, so neither `vars` nor `error.json` (on a 400) can hold the secret."""
    async with serve(echo_app(Recorder())) as base, HttpCaller({"KEY": secret}, egress=EGRESS) as call:
        result = await call(request(f"{base}/echo?status={status}", method="GET",
                                    headers=(("X-Key", Secret("KEY")),), query=(("k", Secret("KEY", "p:")),)))
    assert result.status == status
    seen = repr((result.json, result.text, result.headers, result.error))
    assert "s3cr3t" not in seen and "***" in seen
    assert result.json["you_sent"] == "***" and result.json["***"] == "as a key"
    assert result.json["nested"][0]["q"]["k"] == "p:***" and result.headers["X-Echo"] == "***"
    assert secret.isalnum() is ("X-***" in result.headers)


async def test_a_parser_error_quoting_the_secret_as_bytes_is_masked():
    async def broken(reader, writer):
        await reader.read(1024)
        writer.write("HTTP/1.1 200 OK\r\nX-s3cr3t/é: 1\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(broken, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, HttpCaller({"KEY": "s3cr3t/é"}, egress=EGRESS) as call:
        result = await call(request(f"http://127.0.0.1:{port}/x", method="GET", headers=(("X-Key", Secret("KEY")),)))
    assert result.error and "s3cr3t" not in result.error


def test_every_form_of_a_secret_is_masked():
    import base64
    import json

    from parlour.http import _mask
    secret = 'a"b\\c/é'
    forms = [secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
             base64.b64encode(secret.encode()).decode().rstrip("="), "a%22b%5Cc%2F%C3%A9", "a\"b\\c/Ã©",
             "a&quot;b\\c/é"]
    assert _mask(" | ".join(forms), [secret]).replace("***", "").replace(" | ", "") == ""


def test_a_body_too_deep_to_mask_is_kept_as_masked_text_only():
    from parlour.flow import HttpResult
    from parlour.http import _mask_result
    deep: list = ["s3cr3t"]
    for _ in range(5000):
        deep = [deep]
    result = _mask_result(HttpResult("r1", 200, json=deep, text='[[["s3cr3t"]]]'), ["s3cr3t"])
    assert result.json is None and result.text == '[[["***"]]]'
