"""Who a request is: ``Authorization: Bearer <token>``, checked against SHA-256 hashes only.

The **operator** token reaches every tenant and manages tenants; a **tenant** token reaches
only its own tenant: another tenant's flows and conversations answer 404, exactly as if they
did not exist, so that a token cannot even learn which tenants there are.

Guessing is throttled: a client address that sent more wrong tokens than ``limits.auth_failures``
allows (10 a minute by default) is answered 429 with ``Retry-After`` for any token, the right one
included, until its window has passed (:class:`FailureThrottle`).
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import limits
from aiohttp import web
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from parlour.config import hash_token

from .errors import ApiError, not_found

OPERATOR = "*"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str  # OPERATOR for the operator
    agent: str | None = None  # an agent of the tenant: its hand-offs only
    queues: frozenset[str] | None = None  # the agent's queues; None: all

    @property
    def operator(self) -> bool:
        return self.tenant == OPERATOR

    def sees(self, queue: str | None) -> bool:
        """Whether a ticket of ``queue`` is visible to this principal."""
        return self.agent is None or self.queues is None or (queue or "") in self.queues


def client_key(remote: str | None) -> str:
    """Whose failures count together: an IPv4 address, or an IPv6 address's /64 (one host
    usually holds a whole /64, and would otherwise have 2**64 fresh addresses to guess from)."""
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or "local"  # a Unix socket has no address: its callers share one budget
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class FailureThrottle:
    """Failed token checks per client, in a moving window (a ``limits`` expression such as
    ``"10/minute"``; None for no throttle).

    >>> throttle = FailureThrottle("3/minute")
    >>> for _ in range(3): throttle.failed("10.0.0.1")
    >>> throttle.check("10.0.0.1")            # ApiError 429, Retry-After: the seconds left
    """

    def __init__(self, expression: str | None, clock: Callable[[], float] = time.time):
        self._items = limits.parse_many(expression) if expression else []
        self._limiter = MovingWindowRateLimiter(MemoryStorage())  # forgets a client when its window passes
        self._clock = clock

    def check(self, client: str) -> None:
        """429 with ``Retry-After`` if ``client`` has used up its failures."""
        for item in self._items:
            if not self._limiter.test(item, client):
                wait_s = max(1, math.ceil(self._limiter.get_window_stats(item, client).reset_time - self._clock()))
                raise ApiError(429, "too_many_failures", f"too many wrong tokens from this address ({item}): "
                               f"try again in {wait_s} s", headers={"Retry-After": str(wait_s)})

    def failed(self, client: str) -> None:
        for item in self._items:
            self._limiter.hit(item, client)


class Auth:
    def __init__(self, operator_hash: str, tenant_hashes: dict[str, list[str]], *, failures: str | None = None):
        self._operator = operator_hash
        self.throttle = FailureThrottle(failures)
        self._tenants: dict[str, str] = {}
        self._agents: dict[str, Principal] = {}
        for tenant, hashes in tenant_hashes.items():
            self.set_tenant(tenant, hashes)

    def set_agents(self, tenant: str, agents: dict[str, tuple[str, list[str] | None]]) -> None:
        """``tenant``'s agents are now ``agents`` (name -> token hash, queues or None)."""
        self._agents = {h: p for h, p in self._agents.items() if p.tenant != tenant}
        for name, (digest, queues) in agents.items():
            self._agents[digest] = Principal(tenant, name, frozenset(queues) if queues is not None else None)

    def set_tenant(self, tenant: str, hashes: list[str]) -> None:
        """``tenant``'s tokens are now ``hashes`` (its earlier ones stop working)."""
        self._tenants = {h: t for h, t in self._tenants.items() if t != tenant}
        self._tenants.update(dict.fromkeys(hashes, tenant))

    def principal(self, request: web.Request) -> Principal:
        """The caller, or 401 when the token is missing or unknown (429 when its address sent
        too many wrong ones)."""
        return self.check(request.headers.get("Authorization", ""), request.remote)

    def check(self, authorization: str, remote: str | None) -> Principal:
        """The principal of an ``Authorization`` header sent from ``remote``."""
        client = client_key(remote)
        self.throttle.check(client)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:  # not a guess: not counted
            raise ApiError(401, "unauthorized", "this needs `Authorization: Bearer <token>`",
                           headers={"WWW-Authenticate": 'Bearer realm="parlour"'})
        digest = hash_token(token)
        if hmac.compare_digest(digest, self._operator):
            return Principal(OPERATOR)
        tenant = self._tenants.get(digest)
        if tenant is not None:
            return Principal(tenant)
        agent = self._agents.get(digest)
        if agent is None:
            self.throttle.failed(client)
            raise ApiError(401, "unauthorized", "the token is not valid",
                           headers={"WWW-Authenticate": 'Bearer realm="parlour", error="invalid_token"'})
        return agent

    def tenant(self, request: web.Request, tenant: str, known: bool, *, agents: bool = False) -> Principal:
        """The caller, if it may act on ``tenant``: 404 for a tenant it cannot see or that is
        not ``known``; 403 for an agent's token, unless the route is one of the hand-offs'
        (``agents``)."""
        principal = self.principal(request)
        if not known or not (principal.operator or principal.tenant == tenant):
            raise not_found(f"tenant {tenant!r}")
        if principal.agent is not None and not agents:
            raise ApiError(403, "forbidden", "an agent's token reaches only the tenant's hand-offs")
        return principal

    def operator(self, request: web.Request) -> Principal:
        principal = self.principal(request)
        if not principal.operator:
            raise ApiError(403, "forbidden", "only the operator's token manages tenants")
        return principal
