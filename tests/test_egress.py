"""The egress policy (issue 12, finding 3): what a flow's http node may reach.

The policy's table is tested on addresses alone (no connection is made to any address that is
not loopback: the workplace forbids it); the enforcement is tested with real HTTP to loopback
servers that record whether they were hit. A tripwire (``only_loopback``) makes any attempt to
connect elsewhere fail the test instead of leaving the machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from parlour.actors.host import Host, HostConfig
from parlour.egress import Egress, EgressDenied, EgressPolicy, EgressSessions, default_denial, parse_allow
from parlour.flow import HttpRequest, UserMessage
from parlour.http import HttpCaller
from parlour.messages import Inbound
from parlour.store.memory import MemoryStore
from tests.actors.test_host import Clock, _claim_all, deploy, key, outbox_texts, until
from tests.servers import Recorder, members_app, serve

# ------------------------------------------------------------------ the table, on addresses


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1, a loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1, a private"),
    ("2002:7f00:1::1", "6to4 form of 127.0.0.1, a loopback"),
    ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254, a link-local"),
    ("::127.0.0.1", "deprecated IPv4-compatible"), ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
    ("10.1.2.3", "private"), ("172.31.0.1", "private"), ("192.168.1.1", "private"), ("fd00::1", "private"),
    ("fec0::1", "private (site-local)"), ("100.64.0.1", "shared"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("0.1.2.3", "unspecified"), ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"), ("192.0.0.8", "reserved"), ("1::1", "reserved"),
    ("192.0.2.1", "documentation"), ("2001:db8::1", "documentation"), ("198.18.0.1", "benchmarking"),
])
def test_addresses_that_are_not_public_are_denied_by_default_with_their_reason(address, kind):
    why = default_denial(ipaddress.ip_address(address))
    assert why is not None and f" {kind}" in why and why.startswith(str(ipaddress.ip_address(address)))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "2a00:1450::1",
                                     "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address):
    assert default_denial(ipaddress.ip_address(address)) is None
    assert EgressPolicy().denial(ipaddress.ip_address(address)) is None


def test_an_allowed_range_lets_its_addresses_and_their_mapped_forms_through_and_nothing_else():
    policy = EgressPolicy.allowing(["127.0.0.0/8", "10.1.0.0/16", "fd00::/8"])
    allowed = ["127.0.0.1", "::ffff:127.0.0.1", "10.1.200.3", "fd12::1"]
    denied = ["10.2.0.1", "::1", "169.254.169.254", "192.168.0.1", "2002:7f00:1::1"]
    assert [a for a in allowed + denied if policy.denial(ipaddress.ip_address(a)) is None] == allowed


def test_an_allowed_host_name_is_allowed_whatever_it_resolves_to_and_only_it():
    policy = EgressPolicy.allowing(["Members.Internal.", "*.corp.example"])
    assert policy.admit("members.internal", ["10.0.0.5", "127.0.0.1"]) == [0, 1]
    assert policy.admit("api.eu.corp.example.", ["10.0.0.6"]) == [0]
    for host in ("corp.example", "members.internal.evil.example", "evilcorp.example", "10.0.0.5"):
        with pytest.raises(EgressDenied):
            policy.admit(host, ["10.0.0.5"])


def test_a_name_with_public_and_private_addresses_keeps_only_the_public_ones():
    assert EgressPolicy().admit("mixed.example", ["127.0.0.1", "93.184.216.34", "::1", "2606:4700::1"]) == [1, 3]
    with pytest.raises(EgressDenied, match=r"^localhost resolves to 127\.0\.0\.1, a loopback address; ::1, a loopback"):
        EgressPolicy().admit("localhost", ["127.0.0.1", "::1"])
    with pytest.raises(EgressDenied, match=r"^not-an-address is not an address parlour can check"):
        EgressPolicy().admit("not-an-address", ["not-an-address"])


@pytest.mark.parametrize("entry", ["127.0.0.1/8", "10.0.0.0/33", "1.2.3", "::1/129", "*", "", "a b", "-x.example",
                                   "x" * 64 + ".example", "exa_mple.org", "http://10.0.0.1", "*.0.5", "*.1"])
def test_a_bad_allow_entry_is_refused_with_its_text(entry):
    with pytest.raises(ValueError, match="egress allow entry"):
        parse_allow(entry)


def test_allow_entries_that_parse():
    assert parse_allow("10.0.0.0/8") == ("network", ipaddress.ip_network("10.0.0.0/8"))
    assert parse_allow("::1") == ("network", ipaddress.ip_network("::1/128"))
    assert parse_allow("API.Example.org.") == ("host", "api.example.org")
    assert parse_allow("*.internal") == ("host", "*.internal")


def test_the_message_names_where_the_operator_allows_it():
    egress = Egress.from_allows({"alpha": ["10.0.0.0/8"]})
    denied = EgressDenied("127.0.0.1", "127.0.0.1 is a loopback address")
    assert egress.message("beta", denied) == \
        "egress denied: 127.0.0.1 is a loopback address (to allow it: tenants.beta.egress.allow)"
    assert egress.policy("alpha") != egress.policy("beta") == egress.policy(None) == EgressPolicy()


# ------------------------------------------------------------------ enforced, on loopback


@pytest.fixture
async def only_loopback(monkeypatch):
    """Any connection to an address outside loopback fails (and is listed) instead of leaving
    the machine: the tests below must not send traffic anywhere else, even on code that lets
    a flow try."""
    loop = asyncio.get_running_loop()
    tried: list = []
    connect = loop.sock_connect

    async def sock_connect(sock: socket.socket, address):
        target = ipaddress.ip_address(address[0].split("%")[0])
        if not (getattr(target, "ipv4_mapped", None) or target).is_loopback:
            tried.append(address)
            raise ConnectionRefusedError(f"the test refuses to connect to {address[0]}")
        return await connect(sock, address)

    monkeypatch.setattr(loop, "sock_connect", sock_connect)
    return tried


def get(url: str, retries: int = 0) -> HttpRequest:
    return HttpRequest(request_id="r1", method="GET", url=url, retries=retries, timeout_s=5)


async def test_a_call_to_the_nodes_own_loopback_port_is_denied_and_never_reaches_it(only_loopback):
    recorder = Recorder()
    async with serve(members_app(recorder)) as base, HttpCaller() as call:
        result = await call(get(f"{base}/metrics"), "alpha")
    assert result.error == ("egress denied: 127.0.0.1 is a loopback address "
                            "(to allow it: tenants.alpha.egress.allow)")
    assert result.status is None and recorder.requests == []


@pytest.mark.parametrize("host, url_host, why", [
    ("::1", "[::1]", "::1 is a loopback address"),
    ("127.0.0.1", "[::ffff:127.0.0.1]", "is an IPv4-mapped form of 127.0.0.1, a loopback address"),
    ("127.0.0.1", "localhost", "localhost resolves to 127.0.0.1, a loopback address"),
])
async def test_loopback_in_other_spellings_is_denied(only_loopback, host, url_host, why):
    recorder = Recorder()
    async with serve(members_app(recorder), host) as base, HttpCaller() as call:
        port = base.rsplit(":", 1)[1]
        result = await call(get(f"http://{url_host}:{port}/openapi.json"), "alpha")
    assert result.error is not None and result.error.startswith("egress denied: ") and why in result.error
    assert recorder.requests == [] and only_loopback == []


async def test_the_metadata_address_is_denied_before_any_connection(only_loopback):
    async with HttpCaller() as call:
        result = await call(get("http://169.254.169.254/latest/meta-data/"), "alpha")
    assert result.error == ("egress denied: 169.254.169.254 is a link-local address "
                            "(to allow it: tenants.alpha.egress.allow)")
    assert only_loopback == []  # not even tried


def redirect_app(target: str, recorder: Recorder) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        recorder.requests.append({"path": request.path})
        raise web.HTTPFound(target)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


async def test_a_redirect_from_an_allowed_host_to_loopback_is_denied_at_the_hop(only_loopback):
    """``localhost`` is allowed by name (as an operator allows its members API); the address it
    redirects to is not."""
    hidden, outer = Recorder(), Recorder()
    egress = Egress.from_allows({"alpha": ["localhost"]})
    async with serve(members_app(hidden)) as inner, serve(redirect_app(f"{inner}/admin", outer)) as front, \
            HttpCaller(egress=egress) as call:
        port = front.rsplit(":", 1)[1]
        result = await call(get(f"http://localhost:{port}/start"), "alpha")
    assert len(outer.requests) == 1 and hidden.requests == []
    assert result.error == ("egress denied: 127.0.0.1 is a loopback address "
                            "(to allow it: tenants.alpha.egress.allow)")


async def test_with_loopback_allowed_the_same_calls_work(only_loopback):
    hidden, outer = Recorder(), Recorder()
    egress = Egress.from_allows({"alpha": ["127.0.0.0/8", "::1"]})
    async with serve(members_app(hidden)) as inner, serve(redirect_app(f"{inner}/admin", outer)) as front, \
            serve(members_app(hidden), "::1") as inner6, HttpCaller(egress=egress) as call:
        port = inner.rsplit(":", 1)[1]
        results = [await call(get(url), "alpha") for url in (
            f"{inner}/metrics", f"http://[::ffff:127.0.0.1]:{port}/x", f"http://localhost:{port}/y",
            f"{front}/redirected", f"{inner6}/v6")]
        other = await call(get(f"{inner}/metrics"), "beta")  # another tenant's policy is its own
    assert [r.status for r in results] == [201] * 5, [r.error for r in results]
    assert [r["path"] for r in hidden.requests] == ["/metrics", "/x", "/y", "/admin", "/v6"]
    assert other.error is not None and other.error.startswith("egress denied:")


async def test_a_denied_call_is_not_retried():
    async with HttpCaller(backoff_s=3600.0) as call:  # a retry would wait an hour
        result = await asyncio.wait_for(call(get("http://127.0.0.1:9/", retries=5), "alpha"), 10)
    assert result.error is not None and result.error.startswith("egress denied:")


async def test_a_denied_call_is_a_flow_error_the_flow_routes_with_on_error(only_loopback):
    recorder = Recorder()
    async with serve(members_app(recorder)) as url, HttpCaller() as http:
        store = MemoryStore()
        await deploy(store)
        host = Host("h", store, HostConfig(partitions=64, timer_poll_s=0.01, env={"t": {"API": url}}),
                    _claim_all, http=http, clock=Clock())
        await host.start()
        await host.deliver([Inbound(key("a"), "m1", UserMessage("call"))])

        async def answered():
            return len(await outbox_texts(store, "a")) == 2
        await until(answered)
        await host.stop()
    assert await outbox_texts(store, "a") == [
        "calling", "call failed: egress denied: 127.0.0.1 is a loopback address (to allow it: tenants.t.egress.allow)"]
    assert recorder.requests == []


class Rebinding(AbstractResolver):
    """A DNS server an attacker runs with a TTL of 0: a public address, then loopback."""

    def __init__(self, port: int):
        self.answers = [["93.184.216.34", "127.0.0.1"], ["127.0.0.1"]]
        self.port = port

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": a, "port": self.port, "family": socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST} for a in self.answers.pop(0)]

    async def close(self):
        pass


async def test_each_connection_uses_only_the_addresses_checked_for_it(only_loopback):
    """No DNS-rebinding gap: the answers the check saw are the ones connected to, each time."""
    recorder = Recorder()
    async with serve(members_app(recorder)) as base:
        sessions = EgressSessions(resolver=Rebinding(int(base.rsplit(":", 1)[1])), use_dns_cache=False)
        try:
            session = sessions.get(EgressPolicy())
            with pytest.raises(aiohttp.ClientConnectorError):  # the public address alone was tried
                async with session.get("http://rebind.example/"):
                    pass
            with pytest.raises(EgressDenied, match="rebind.example resolves to 127.0.0.1, a loopback"):
                async with session.get("http://rebind.example/"):
                    pass
        finally:
            await sessions.aclose()
    assert [a[0] for a in only_loopback] == ["93.184.216.34"] and recorder.requests == []
