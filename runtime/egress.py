"""What a tenant's flow may reach over the network: the egress policy, and the aiohttp
connector that enforces it on the addresses a socket actually connects to.

A flow's ``http`` node and a bot's ``api_base`` are URLs a tenant chooses. Without a policy
they reach the node's own ``/metrics``, Ray's ports, a cloud's metadata service
(``169.254.169.254``) and any service on loopback or the private network: directly, through a
redirect, or through a name that resolves there.

- **Denied by default**: every address that is not public, each with its reason (loopback,
  private, link-local, multicast, reserved, unspecified, shared, documentation, benchmarking).
  An IPv6 address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, 6to4 ``2002::/16``,
  NAT64 ``64:ff9b::/96``) is judged by that IPv4 address; IPv4-compatible ``::a.b.c.d`` and
  Teredo are denied outright. The table is written out here, not taken from ``ipaddress``'s
  ``is_global``, whose answers change between Python releases (3.11.7 calls ``::127.0.0.1``,
  ``fec0::1`` and every multicast address global).
- **Allowed by the operator**, per tenant (``tenants.<t>.egress.allow``): ranges (CIDR, or one
  address) and host names (``members.internal``, or ``*.internal`` for every name below it).
- **Enforced where aiohttp turns a host into the addresses it connects to**
  (:class:`GuardedConnector`): the addresses a name resolves to are filtered, and those
  connected are the ones checked (no second lookup, so no DNS-rebinding gap); an IP literal,
  which aiohttp does not hand to its resolver, is checked there too; every connection goes
  through it, so every redirect hop does.

>>> policy = EgressPolicy.allowing(["10.1.2.0/24", "members.internal"])
>>> policy.denial(ip_address("127.0.0.1"))
'127.0.0.1 is a loopback address'
>>> policy.denial(ip_address("10.1.2.3")) is None
True
"""

from __future__ import annotations

import asyncio
import inspect
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult
from yarl import URL

from .errors import ParlourError

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# IANA's special-purpose registries, with what a message calls each range. Any IPv4 address
# not listed is public; an IPv6 one is public only inside 2000::/3 (global unicast).
_DENIED_V4: tuple[tuple[Network, str], ...] = tuple((ip_network(n), why) for n, why in (
    ("0.0.0.0/8", "an unspecified ('this network')"),
    ("10.0.0.0/8", "a private"),
    ("100.64.0.0/10", "a shared (carrier-grade NAT)"),
    ("127.0.0.0/8", "a loopback"),
    ("169.254.0.0/16", "a link-local"),
    ("172.16.0.0/12", "a private"),
    ("192.0.0.0/24", "a reserved (IETF protocol assignments)"),
    ("192.0.2.0/24", "a documentation"),
    ("192.88.99.0/24", "a reserved (6to4 relay anycast)"),
    ("192.168.0.0/16", "a private"),
    ("198.18.0.0/15", "a benchmarking"),
    ("198.51.100.0/24", "a documentation"),
    ("203.0.113.0/24", "a documentation"),
    ("224.0.0.0/4", "a multicast"),
    ("240.0.0.0/4", "a reserved"),
))
_DENIED_V6: tuple[tuple[Network, str], ...] = tuple((ip_network(n), why) for n, why in (
    ("::/128", "an unspecified"),
    ("::1/128", "a loopback"),
    ("::/96", "a deprecated IPv4-compatible"),
    ("64:ff9b:1::/48", "a private (local NAT64)"),
    ("100::/64", "a reserved (discard-only)"),
    ("2001::/32", "a Teredo"),
    ("2001::/23", "a reserved (IETF protocol assignments)"),
    ("2001:db8::/32", "a documentation"),
    ("3fff::/20", "a documentation"),
    ("fc00::/7", "a private (unique local)"),
    ("fe80::/10", "a link-local"),
    ("fec0::/10", "a private (site-local)"),
    ("ff00::/8", "a multicast"),
))
_GLOBAL_UNICAST_V6 = ip_network("2000::/3")
_MAPPED = ip_network("::ffff:0:0/96")
_NAT64 = ip_network("64:ff9b::/96")
_HOST_NAME = re.compile(r"(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class EgressDenied(ParlourError):
    """A connection the egress policy does not allow: ``str(exc)`` says which address and why
    (``127.0.0.1 is a loopback address``). Never retried."""

    def __init__(self, host: str, reason: str):
        self.host, self.reason = host, reason
        super().__init__(reason)


def embedded_ipv4(address: Address) -> tuple[IPv4Address, str] | None:
    """The IPv4 address an IPv6 one carries, and the form's name; None for a plain one."""
    if not isinstance(address, IPv6Address):
        return None
    if address in _MAPPED:
        return IPv4Address(int(address) & 0xFFFF_FFFF), "an IPv4-mapped form"
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFF_FFFF), "a NAT64 form"
    if address.sixtofour is not None:  # in 2002::/16
        return address.sixtofour, "a 6to4 form"
    return None


def default_denial(address: Address) -> str | None:
    """Why ``address`` is denied unless allowed (``'127.0.0.1 is a loopback address'``), or
    None for a public address."""
    embedded = embedded_ipv4(address)
    if embedded is not None:
        inner, form = embedded
        why = default_denial(inner)
        return None if why is None else f"{address} is {form} of {why.replace(' is ', ', ', 1)}"
    table = _DENIED_V4 if isinstance(address, IPv4Address) else _DENIED_V6
    for network, kind in table:
        if address in network:
            return f"{address} is {kind} address"
    if isinstance(address, IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return f"{address} is a reserved address (not global unicast)"
    return None


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """The addresses one tenant's calls may connect to: public ones, and what ``networks``
    and ``hosts`` allow. Frozen and hashable: connections are pooled per policy."""

    networks: tuple[Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def allowing(cls, entries: Iterable[str]) -> EgressPolicy:
        """A policy that allows ``entries``: CIDR ranges, addresses, host names, ``*.suffix``;
        ValueError naming the first entry that is none of these."""
        networks, hosts = [], set()
        for entry in entries:
            kind, value = parse_allow(entry)
            if kind == "network":
                networks.append(value)
            else:
                hosts.add(value)
        return cls(tuple(networks), frozenset(hosts))

    def allows_host(self, host: str) -> bool:
        """Whether the operator allowed ``host`` by name (its addresses are not checked then);
        never an IP literal, which only a range allows."""
        name = host.rstrip(".").lower()
        if not self.hosts or _is_address(name):
            return False
        return name in self.hosts or any(h.startswith("*.") and name.endswith(h[1:]) for h in self.hosts)

    def denial(self, address: Address) -> str | None:
        """Why a connection to ``address`` is denied, or None if it is allowed."""
        why = default_denial(address)
        if why is None:
            return None
        mapped = address.ipv4_mapped if isinstance(address, IPv6Address) else None
        # An IPv4-mapped address is the IPv4 one on a dual-stack socket: allowing one allows both.
        if any(a in n for n in self.networks for a in (address, mapped) if a is not None and a.version == n.version):
            return None
        return why

    def admit(self, host: str, addresses: Sequence[str]) -> list[int]:
        """The indexes of ``addresses`` (what ``host`` resolved to) a connection may use;
        :class:`EgressDenied` if none."""
        if self.allows_host(host):
            return list(range(len(addresses)))
        allowed, denied = [], []
        for index, text in enumerate(addresses):
            try:
                why = self.denial(ip_address(text))
            except ValueError:
                why = f"{text} is not an address parlour can check"
            if why:
                denied.append(why)
            else:
                allowed.append(index)
        if not allowed:
            literal = len(addresses) == 1 and addresses[0] == host
            raise EgressDenied(host, denied[0] if literal or not denied else f"{host} resolves to {_joined(denied)}")
        return allowed


def _is_address(text: str) -> bool:
    try:
        ip_address(text)
        return True
    except ValueError:
        return False


def _joined(reasons: list[str]) -> str:
    """``['::1 is a loopback address', ...]`` as ``::1, a loopback address, and ...``."""
    shown = [r.replace(" is ", ", ", 1) for r in reasons[:3]]
    return "; ".join(shown) + (f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else "")


def parse_allow(entry: str) -> tuple[str, Any]:
    """``('network', IPv4Network)`` or ``('host', 'name')`` for one ``egress.allow`` entry."""
    if not isinstance(entry, str) or not entry.strip():
        raise ValueError(f"an egress allow entry is a CIDR range or a host name, got {entry!r}")
    text = entry.strip()
    try:
        return "network", ip_network(text, strict=True)
    except ValueError as exc:
        if "/" in text or ":" in text or text.replace(".", "").isdigit():
            raise ValueError(f"egress allow entry {entry!r} is not a CIDR range: {exc}") from None
    name = text.rstrip(".").lower()
    # A name's last label is never all digits: `*.0.5` would otherwise allow 10.0.0.5 by name.
    if name == "*" or len(name) > 253 or not _HOST_NAME.fullmatch(name) or name.rsplit(".", 1)[-1].isdigit():
        raise ValueError(f"egress allow entry {entry!r} is neither a CIDR range (10.0.0.0/8, ::1) nor a host name "
                         "(api.internal, *.internal; to allow every address write 0.0.0.0/0 and ::/0)")
    return "host", name


@dataclass(frozen=True)
class Egress:
    """Every tenant's policy, and where the operator changes it (for the messages).

    >>> egress = Egress.from_allows({"acme": ["127.0.0.0/8"]})
    >>> egress.where("acme")
    'tenants.acme.egress.allow'
    """

    policies: Mapping[str, EgressPolicy] = field(default_factory=dict)
    default: EgressPolicy = EgressPolicy()
    hint: str = "tenants.{tenant}.egress.allow"

    @classmethod
    def from_allows(cls, allows: Mapping[str, Sequence[str]] | None, default: Sequence[str] = (),
                    hint: str = "tenants.{tenant}.egress.allow") -> Egress:
        """From plain data: each tenant's ``egress.allow`` entries (what crosses to a host)."""
        return cls({t: EgressPolicy.allowing(a) for t, a in (allows or {}).items()}, EgressPolicy.allowing(default),
                   hint)

    def policy(self, tenant: str | None) -> EgressPolicy:
        return self.policies.get(tenant, self.default) if tenant is not None else self.default

    def where(self, tenant: str | None) -> str:
        return self.hint.format(tenant=tenant or "<tenant>")

    def message(self, tenant: str | None, exc: EgressDenied) -> str:
        """What a flow (or a dead letter) is told: ``egress denied: ... (tenants.t.egress.allow)``."""
        return f"egress denied: {exc} (to allow it: {self.where(tenant)})"


async def check_url(url: str, policy: EgressPolicy, timeout_s: float = 2.0) -> None:
    """:class:`EgressDenied` if ``policy`` denies every address ``url``'s host is (or resolves
    to now): an early answer for a URL that is saved to be called later (a bot's ``api_base``).
    A name that does not resolve in ``timeout_s`` passes: the connection is checked anyway."""
    try:
        host = URL(url).raw_host
    except ValueError:
        return
    if not host or policy.allows_host(host):
        return
    try:
        ip_address(host)
        addresses = [host]
    except ValueError:
        try:
            found = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM), timeout_s)
        except (OSError, TimeoutError, UnicodeError):
            return
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))  # (host, port, ...): host first
    policy.admit(host, addresses)


class GuardedConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that connects only where ``policy`` allows.

    aiohttp turns every connection's host into addresses in ``_resolve_host`` (an IP literal
    there too, without its resolver), then connects to exactly those: the one place where the
    check sees what is connected, for every request and every redirect hop. It is a private
    method (aiohttp has no public hook that sees both the name and the literal addresses);
    ``tests/test_egress.py`` fails if aiohttp stops calling it.
    """

    def __init__(self, policy: EgressPolicy, **kwargs: Any):
        super().__init__(**kwargs)
        self.policy = policy

    async def _resolve_host(self, host: str, port: int, traces: Any = None) -> list[ResolveResult]:
        resolved = await super()._resolve_host(host, port, traces=traces)
        return [resolved[i] for i in self.policy.admit(host, [r["host"] for r in resolved])]


if list(inspect.signature(aiohttp.TCPConnector._resolve_host).parameters)[:3] != ["self", "host", "port"]:
    raise ImportError("parlour's egress guard needs aiohttp's TCPConnector._resolve_host(host, port, traces)")


class EgressSessions:
    """aiohttp sessions, one per distinct policy (a pooled connection is reused only under the
    policy it was opened for): ``sessions.get(policy)``; ``await sessions.aclose()``."""

    def __init__(self, **connector: Any):
        self.connector = connector  # TCPConnector options, e.g. limit=, limit_per_host=
        self._sessions: dict[EgressPolicy, aiohttp.ClientSession] = {}

    def get(self, policy: EgressPolicy, **session: Any) -> aiohttp.ClientSession:
        found = self._sessions.get(policy)
        if found is None or found.closed:
            found = self._sessions[policy] = aiohttp.ClientSession(
                connector=GuardedConnector(policy, **self.connector), **session)
        return found

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
