"""Who a request is: ``Authorization: Bearer <token>``, checked against SHA-256 hashes only.

The **operator** token reaches every tenant and manages tenants; a **tenant** token reaches
only its own tenant: another tenant's flows and conversations answer 404, exactly as if they
did not exist, so that a token cannot even learn which tenants there are.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from parlour.config import hash_token

from .errors import ApiError, not_found

OPERATOR = "*"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str  # OPERATOR for the operator

    @property
    def operator(self) -> bool:
        return self.tenant == OPERATOR


class Auth:
    def __init__(self, operator_hash: str, tenant_hashes: dict[str, list[str]]):
        self._operator = operator_hash
        self._tenants: dict[str, str] = {}
        for tenant, hashes in tenant_hashes.items():
            self.set_tenant(tenant, hashes)

    def set_tenant(self, tenant: str, hashes: list[str]) -> None:
        """``tenant``'s tokens are now ``hashes`` (its earlier ones stop working)."""
        self._tenants = {h: t for h, t in self._tenants.items() if t != tenant}
        self._tenants.update(dict.fromkeys(hashes, tenant))

    def principal(self, request: web.Request) -> Principal:
        """The caller, or 401 when the token is missing or unknown."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "this needs `Authorization: Bearer <token>`",
                           headers={"WWW-Authenticate": 'Bearer realm="parlour"'})
        digest = hash_token(token)
        if hmac.compare_digest(digest, self._operator):
            return Principal(OPERATOR)
        tenant = self._tenants.get(digest)
        if tenant is None:
            raise ApiError(401, "unauthorized", "the token is not valid",
                           headers={"WWW-Authenticate": 'Bearer realm="parlour", error="invalid_token"'})
        return Principal(tenant)

    def tenant(self, request: web.Request, tenant: str, known: bool) -> Principal:
        """The caller, if it may act on ``tenant``: 404 for a tenant it cannot see or that is
        not ``known``."""
        principal = self.principal(request)
        if not known or not (principal.operator or principal.tenant == tenant):
            raise not_found(f"tenant {tenant!r}")
        return principal

    def operator(self, request: web.Request) -> Principal:
        principal = self.principal(request)
        if not principal.operator:
            raise ApiError(403, "forbidden", "only the operator's token manages tenants")
        return principal
