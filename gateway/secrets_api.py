"""The admin API of a tenant's secrets: ``GET /v1/{tenant}/secrets``, and ``PUT``, ``GET``,
``DELETE /v1/{tenant}/secrets/{name}``, with the tenant's token or the operator's.

A ``PUT`` takes ``{"value": "..."}``; the value is sealed at once (:mod:`parlour.vault`)
and every host reads it again before the answer, so the next call of the tenant's flows uses
it. No answer ever carries a value: a secret shows as ``"set"``, with where it is declared and
when it was set. A secret of the config file is changed there (409 here).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from parlour.config import check_value_name
from parlour.vault import DeclaredInConfig, NoKey, SecretError, SecretInfo

from .errors import ApiError, not_found, unavailable
from .schemas import SecretIn
from .web import parse_body


def secret_json(info: SecretInfo) -> dict[str, Any]:
    return {"name": info.name, "value": "set", "source": info.source, "set_at": info.set_at}


class SecretsApi:
    def __init__(self, gateway):
        self.gateway = gateway

    def routes(self) -> list[web.RouteDef]:
        one = "/v1/{tenant}/secrets/{name}"
        return [web.get("/v1/{tenant}/secrets", self.list_secrets), web.put(one, self.put_secret),
                web.get(one, self.get_secret), web.delete(one, self.delete_secret)]

    def _tenant(self, request: web.Request) -> str:
        tenant = request.match_info["tenant"]
        self.gateway.auth.tenant(request, tenant, known=tenant in self.gateway.tenants)
        return tenant

    def _name(self, request: web.Request) -> str:
        name = request.match_info["name"]
        try:
            return check_value_name(name)
        except ValueError as exc:
            raise ApiError(400, "invalid_request", f"a secret's {exc}") from None

    async def _infos(self, tenant: str) -> list[SecretInfo]:
        vault = self.gateway.vault
        await vault.reload()  # another gateway may have changed them
        return vault.infos(tenant)

    async def list_secrets(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        return web.json_response({"secrets": [secret_json(i) for i in await self._infos(tenant)]})

    async def get_secret(self, request: web.Request) -> web.Response:
        tenant, name = self._tenant(request), self._name(request)
        found = next((i for i in await self._infos(tenant) if i.name == name), None)
        if found is None:
            raise not_found(f"secret {name!r}")
        return web.json_response(secret_json(found))

    async def put_secret(self, request: web.Request) -> web.Response:
        tenant, name = self._tenant(request), self._name(request)
        body: SecretIn = parse_body(await request.read(), SecretIn)
        try:
            info, new = await self.gateway.vault.put(tenant, name, body.value)
        except DeclaredInConfig as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        except NoKey as exc:
            raise unavailable(str(exc), retry_after_s=60) from None
        except SecretError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None
        await self.gateway.runtime.reload_secrets()
        return web.json_response(secret_json(info), status=201 if new else 200)

    async def delete_secret(self, request: web.Request) -> web.Response:
        tenant, name = self._tenant(request), self._name(request)
        try:
            deleted = await self.gateway.vault.delete(tenant, name)
        except DeclaredInConfig as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        if not deleted:
            raise not_found(f"secret {name!r}")
        await self.gateway.runtime.reload_secrets()
        return web.Response(status=204)
