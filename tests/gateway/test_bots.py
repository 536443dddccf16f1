"""Bots through the admin API: credentials validated, encrypted at rest, never shown; a tenant
reaches only its own; WhatsApp's GET handshake on the webhook URL."""

from __future__ import annotations

import json

import pytest

from parlour.channels.registry import BOTS_META, BotError, Bots, Cipher

WHATSAPP = {"api_base": "http://127.0.0.1:9", "phone_number_id": "1122334455667", "access_token": "EAAG-access-value",
            "app_secret": "app-secret-value", "verify_token": "verify-value"}


async def put(node, path: str, body, tenant: str | None = "acme") -> tuple[int, dict]:
    async with node.http.put(f"{node.url}{path}", headers=node.auth(tenant), json=body) as answer:
        return answer.status, await answer.json()


async def test_a_bots_credentials_are_kept_encrypted_and_never_shown(node):
    status, created = await put(node, "/v1/acme/bots/whatsapp/sales", WHATSAPP)
    assert status == 201 and created["settings"] == {**WHATSAPP, "access_token": "set", "app_secret": "set",
                                                     "verify_token": "set"}
    assert created["webhook_url"].endswith("/v1/acme/channels/whatsapp/sales")
    raw = (await node.store.get_meta(BOTS_META)).decode()
    assert "acme/whatsapp/sales" in raw and not any(v in raw for v in ("EAAG-access-value", "app-secret-value",
                                                                       "verify-value"))
    # A change that leaves the credentials out keeps them.
    status, changed = await put(node, "/v1/acme/bots/whatsapp/sales", {"phone_number_id": "99"})
    assert status == 200
    assert changed["settings"]["phone_number_id"] == "99" and changed["settings"]["app_secret"] == "set"
    settings = await node.gateway.bots.get("acme", "whatsapp", "sales")
    assert settings.app_secret.get_secret_value() == "app-secret-value"
    async with node.http.get(f"{node.url}/v1/acme/bots", headers=node.auth("acme")) as answer:
        listed = await answer.json()
    assert [(b["channel"], b["bot"]) for b in listed["bots"]] == [("whatsapp", "sales")]
    assert "app-secret-value" not in json.dumps(listed)


async def test_bad_bots_are_refused_with_every_problem(node):
    status, body = await put(node, "/v1/acme/bots/whatsapp/sales",
                             {"api_base": "x", "phone_number_id": "1", "bogus": 1})
    assert status == 422 and body["error"]["code"] == "invalid_bot"
    problems = body["error"]["details"]["problems"]
    assert any(p.startswith("access_token:") for p in problems) and any(p.startswith("bogus:") for p in problems)
    assert not any("EAAG" in p for p in problems)
    status, body = await put(node, "/v1/acme/bots/fax/sales", WHATSAPP)
    assert status == 404 and "no channel 'fax'" in body["error"]["message"]
    status, body = await put(node, "/v1/acme/bots/whatsapp/bad name", WHATSAPP)
    assert status == 422 and "a bot's name" in body["error"]["message"]
    status, body = await put(node, "/v1/acme/bots/whatsapp/sales", [1, 2])
    assert status == 400


async def test_a_tenant_reaches_only_its_own_bots(node):
    assert (await put(node, "/v1/acme/bots/whatsapp/sales", WHATSAPP))[0] == 201
    assert (await put(node, "/v1/acme/bots/whatsapp/sales", WHATSAPP, tenant="demo"))[0] == 404
    async with node.http.get(f"{node.url}/v1/acme/bots/whatsapp/sales", headers=node.auth("demo")) as answer:
        assert answer.status == 404
    async with node.http.get(f"{node.url}/v1/demo/bots", headers=node.auth("demo")) as answer:
        assert (await answer.json())["bots"] == []
    async with node.http.delete(f"{node.url}/v1/acme/bots/whatsapp/sales", headers=node.auth("acme")) as answer:
        assert answer.status == 204
    async with node.http.delete(f"{node.url}/v1/acme/bots/whatsapp/sales", headers=node.auth("acme")) as answer:
        assert answer.status == 404


async def test_whatsapps_handshake_answers_the_challenge_only_to_the_right_token(node):
    assert (await put(node, "/v1/acme/bots/whatsapp/sales", WHATSAPP))[0] == 201
    hook = f"{node.url}/v1/acme/channels/whatsapp/sales"
    good = {"hub.mode": "subscribe", "hub.verify_token": "verify-value", "hub.challenge": "1158201444"}
    async with node.http.get(hook, params=good) as answer:
        assert answer.status == 200 and await answer.text() == "1158201444"
    async with node.http.get(hook, params={**good, "hub.verify_token": "wrong"}) as answer:
        assert answer.status == 401 and (await answer.json())["error"]["details"] == {"reason": "mismatch"}
    async with node.http.get(f"{node.url}/v1/acme/channels/whatsapp/nobody", params=good) as answer:
        assert answer.status == 404


async def test_credentials_sealed_under_one_key_do_not_open_under_another(node):
    old = Cipher.new_key()
    await Bots(node.store, Cipher.from_keys(old)).put("acme", "whatsapp", "sales", WHATSAPP)
    rotated = Bots(node.store, Cipher.from_keys(f"{Cipher.new_key()},{old}"))  # a new key first, the old one after
    assert (await rotated.get("acme", "whatsapp", "sales")).verify_token.get_secret_value() == "verify-value"
    stranger = Bots(node.store, Cipher.from_keys(Cipher.new_key()))
    assert await stranger.get("acme", "whatsapp", "sales") is None  # left out, not taken for another
    assert "do not decrypt with the secrets key" in stranger.broken["acme/whatsapp/sales"]
    with pytest.raises(BotError, match="do not decrypt"):  # and not overwritten by a change without the key
        await stranger.put("acme", "whatsapp", "sales", {"phone_number_id": "1"})


async def test_a_bot_that_cannot_be_read_is_left_out_and_the_others_go_on(node):
    assert (await put(node, "/v1/acme/bots/whatsapp/sales", WHATSAPP))[0] == 201
    await Bots(node.store, Cipher.from_keys(Cipher.new_key())).put("acme", "whatsapp", "lost", WHATSAPP)  # another key
    bots = node.gateway.bots
    await bots.reload()
    assert (await bots.get("acme", "whatsapp", "sales")).app_secret.get_secret_value() == "app-secret-value"
    assert await bots.get("acme", "whatsapp", "lost") is None and "do not decrypt" in bots.broken["acme/whatsapp/lost"]


async def test_a_bot_whose_api_base_the_tenants_egress_policy_denies_is_refused(node):
    """acme's config allows loopback (where the suite's fake APIs listen); a tenant made with the
    API has the default policy, which does not (issue 12, finding 3)."""
    async with node.http.put(f"{node.url}/v1/tenants/newco", headers=node.auth()) as answer:
        token = (await answer.json())["token"]
    for api_base, why in [("http://127.0.0.1:9", "127.0.0.1 is a loopback address"),
                          ("http://[::ffff:169.254.169.254]", "a link-local address"),
                          ("http://localhost:9/x", "localhost resolves to 127.0.0.1, a loopback address")]:
        async with node.http.put(f"{node.url}/v1/newco/bots/whatsapp/sales", json={**WHATSAPP, "api_base": api_base},
                                 headers={"Authorization": f"Bearer {token}"}) as answer:
            status, body = answer.status, await answer.json()
        assert status == 422 and body["error"]["code"] == "egress_denied", body
        assert why in body["error"]["message"] and "tenants.newco.egress.allow" in body["error"]["message"]
    assert await node.gateway.bots.get("newco", "whatsapp", "sales") is None
    assert (await put(node, "/v1/acme/bots/whatsapp/sales", WHATSAPP))[0] == 201
