"""Each channel's round trip through a real node: a webhook built from the channel's conformance
fixture and signed as the channel signs it runs a turn (tenant acme's ``log`` flow answers
``1:<text>``), and the reply arrives at a fake of the channel's API, which checks it against
the channel's spec. A retry of the same webhook moves nothing and sends nothing more.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest

from parlour.actors.delivery import RetryPolicy
from parlour.channels.registry import Cipher
from tests.channels import fake_signal, fake_slack, fake_telegram, fake_twilio, fake_whatsapp
from tests.channels.fake_api import FakeAPI, FakeRequest
from tests.gateway.conftest import start_node, stop_node
from tests.servers import serve

FIXTURES = Path(__file__).parent.parent / "conformance" / "channels" / "fixtures"
_prefixes = itertools.count()


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str]
    query: str = ""


@dataclass(frozen=True)
class Case:
    channel: str
    spec: object
    bot: Callable[[str], dict]  # the bot's settings, given the fake API's URL
    request: Callable[[str], Request]  # the signed webhook, given the URL it is posted to
    address: Callable[[FakeRequest], object]  # where the reply went
    text: Callable[[FakeRequest], str]  # what it said
    to: object
    said: str
    answer: tuple[str, str] | None = None  # the 200's (content type, body), when the channel reads one


def whatsapp_request(url: str) -> Request:
    body = fixture("whatsapp_inbound_text_pywa.json")
    signature = hmac.new(b"wa-app-secret", body, hashlib.sha256).hexdigest()
    return Request(body, {"X-Hub-Signature-256": f"sha256={signature}", "Content-Type": "application/json"})


def slack_request(url: str) -> Request:
    body = fixture("slack_event_callback_message_bolt.json")
    stamp = str(int(time.time()))
    signature = hmac.new(b"slack-signing-secret", f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return Request(body, {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={signature}",
                          "Content-Type": "application/json"})


def twilio_request(url: str) -> Request:
    params = {"MessageSid": "SM0123456789abcdef0123456789abcdef", "AccountSid": "AC" + "1" * 32,
              "From": "+14155550100", "To": "+14155550199", "Body": "hello", "NumMedia": "0"}
    signed = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    signature = base64.b64encode(hmac.new(b"twilio-auth-token", signed.encode(), hashlib.sha1).digest()).decode()
    return Request(urlencode(params).encode(), {"X-Twilio-Signature": signature,
                                                "Content-Type": "application/x-www-form-urlencoded"})


CASES = [
    Case("whatsapp", fake_whatsapp.SPEC,
         lambda api: {"api_base": api, "phone_number_id": "1122334455667", "access_token": "wa-access",
                      "app_secret": "wa-app-secret", "verify_token": "wa-verify"},
         whatsapp_request, lambda r: r.json["to"], lambda r: r.json["text"]["body"], "972987654321", "1:Body Text"),
    Case("telegram", fake_telegram.for_token("42:tg-token"),
         lambda api: {"api_base": api, "token": "42:tg-token", "secret_token": "tg-secret"},
         lambda url: Request(fixture("telegram_update_text_message_official.json"),
                             {"X-Telegram-Bot-Api-Secret-Token": "tg-secret", "Content-Type": "application/json"}),
         lambda r: r.json["chat_id"], lambda r: r.json["text"], 1111111, "1:/start"),
    Case("slack", fake_slack.SPEC,
         lambda api: {"api_base": api, "bot_token": "xoxb-slack-token", "signing_secret": "slack-signing-secret"},
         slack_request, lambda r: r.json["channel"], lambda r: r.json["text"], "C111", "1:Hello World!"),
    Case("twilio", fake_twilio.SPEC,
         lambda api: {"api_base": api, "account_sid": "AC" + "1" * 32, "auth_token": "twilio-auth-token",
                      "from_number": "+14155550199"},
         twilio_request, lambda r: r.form["To"], lambda r: r.form["Body"], "+14155550100", "1:hello",
         # What twilio-python's MessagingResponse() renders: else Twilio logs error 11200.
         ("text/xml", '<?xml version="1.0" encoding="UTF-8"?><Response />')),
    Case("signal", fake_signal.SPEC,
         lambda api: {"api_base": api, "number": "+4915112345678", "url_secret": "signal-url-secret-0123"},
         lambda url: Request(fixture("signal_jsonrpc_receive_datamessage.json"), {"Content-Type": "application/json"},
                             "?token=signal-url-secret-0123"),
         lambda r: r.json["recipients"], lambda r: r.json["message"], ["+33123456789"], "1:foobar"),
]


@pytest.fixture(scope="module")
def secrets_key() -> str:
    return Cipher.new_key()


@pytest.mark.parametrize("case", CASES, ids=[c.channel for c in CASES])
async def test_a_signed_webhook_runs_a_turn_and_the_reply_reaches_the_channel(redis_server, secrets_key, case):
    api = FakeAPI(case.spec)
    async with serve(api.app()) as api_url:
        node = await start_node(f"{redis_server.url}?prefix=ch{next(_prefixes)}:", secrets_key=secrets_key,
                                delivery=RetryPolicy(max_attempts=2, base_s=0.01))
        try:
            async with node.http.put(f"{node.url}/v1/acme/bots/{case.channel}/support", headers=node.auth("acme"),
                                     json=case.bot(api_url)) as answer:
                created = await answer.json()
                assert answer.status == 201, created
            public = ("api_base", "phone_number_id", "account_sid", "from_number", "number")
            secret_values = [v for k, v in case.bot(api_url).items() if k not in public]
            assert not any(value in json.dumps(created) for value in secret_values)  # credentials never come back
            hook = f"{node.url}/v1/acme/channels/{case.channel}/support"
            request = case.request(hook)
            for _ in range(2):  # the second is the channel's retry of the same webhook
                async with node.http.post(hook + request.query, data=request.body, headers=request.headers) as answer:
                    assert answer.status == 200, await answer.text()
                    assert (answer.content_type, await answer.text()) == case.answer or (
                        case.answer is None and await answer.read() == b"")
            if case.answer:  # a refusal is the gateway's JSON error, not the channel's answer
                async with node.http.post(hook, data=request.body + b"&Body=x", headers=request.headers) as refused:
                    assert refused.status == 401 and refused.content_type == "application/json"
                    assert (await refused.json())["error"]["code"] == "bad_signature"
            async with asyncio.timeout(30):
                while not api.delivered and not api.rejected:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # a second reply, if one were coming, would be on its way by now
        finally:
            await stop_node(node)
    assert api.rejected == [], api.rejected
    [sent] = api.delivered
    assert case.address(sent) == case.to and case.text(sent) == case.said


def whatsapp_text(message_id: str, text: str, sent_at: int) -> Request:
    """The pywa fixture with another message id, text and time, signed with the bot's app secret."""
    payload = json.loads(fixture("whatsapp_inbound_text_pywa.json"))
    payload["entry"][0]["changes"][0]["value"]["messages"][0] |= {"id": message_id, "text": {"body": text},
                                                                  "timestamp": str(sent_at)}
    body = json.dumps(payload).encode()
    signature = hmac.new(b"wa-app-secret", body, hashlib.sha256).hexdigest()
    return Request(body, {"X-Hub-Signature-256": f"sha256={signature}", "Content-Type": "application/json"})


async def test_a_whatsapp_replay_after_forty_newer_messages_is_still_a_duplicate(redis_server, secrets_key):
    """Issue 12, finding 7: the dedup window holds 32 ids; WhatsApp retries for 7 days."""
    node = await start_node(f"{redis_server.url}?prefix=ch{next(_prefixes)}:", secrets_key=secrets_key)
    try:
        bot = CASES[0].bot("http://127.0.0.1:9")  # nothing is delivered: no delivery supervisor runs
        async with node.http.put(f"{node.url}/v1/acme/bots/whatsapp/support", headers=node.auth("acme"),
                                 json=bot) as answer:
            assert answer.status == 201
        hook = f"{node.url}/v1/acme/channels/whatsapp/support"
        sent_at = int(time.time()) - 3600
        for n in range(41):
            request = whatsapp_text(f"wamid.{n}", f"m{n}", sent_at + n)
            async with node.http.post(hook, data=request.body, headers=request.headers) as answer:
                assert answer.status == 200, await answer.text()
        replay = whatsapp_text("wamid.0", "m0", sent_at)
        async with node.http.post(hook, data=replay.body, headers=replay.headers) as answer:
            assert answer.status == 200, await answer.text()
        async with node.http.get(f"{node.url}/v1/acme/conversations/whatsapp:support/972987654321",
                                 headers=node.auth("acme")) as answer:
            conversation = await answer.json()
        assert conversation.get("vars", {}).get("log") == [f"m{n}" for n in range(41)], conversation  # m0 once
        [stats] = await node.runtime.stats()
        assert (stats["duplicates"], stats["replay_checks"]) == (1, 1)
        late = whatsapp_text("wamid.late", "late", sent_at)  # as old, never seen: taken, after one read
        async with node.http.post(hook, data=late.body, headers=late.headers) as answer:
            assert answer.status == 200
        [stats] = await node.runtime.stats()
        assert (stats["duplicates"], stats["replay_checks"]) == (1, 2)
    finally:
        await stop_node(node)


def whatsapp_from(message_id: str, text: str, phone: str | None, bsuid: str) -> Request:
    """A WhatsApp text from a user with a business-scoped user id (BSUID), and a phone number
    unless it is hidden (Meta's "Business-scoped user IDs": ``from`` and ``wa_id`` left out)."""
    payload = json.loads(fixture("whatsapp_inbound_text_pywa.json"))
    value = payload["entry"][0]["changes"][0]["value"]
    message = value["messages"][0] | {"id": message_id, "text": {"body": text}, "from_user_id": bsuid}
    contact = {"profile": {"name": "Ada"}, "user_id": bsuid} | ({"wa_id": phone} if phone else {})
    message.pop("from")
    value["messages"], value["contacts"] = [message | ({"from": phone} if phone else {})], [contact]
    body = json.dumps(payload).encode()
    signature = hmac.new(b"wa-app-secret", body, hashlib.sha256).hexdigest()
    return Request(body, {"X-Hub-Signature-256": f"sha256={signature}", "Content-Type": "application/json"})


async def test_a_whatsapp_user_keeps_one_conversation_whether_the_phone_number_comes_or_not(redis_server, secrets_key):
    """Issue 13: a message without ``from`` (a user known by BSUID alone) was refused with 400.
    Ada writes with her phone number, then without it; Bob first without, then with his: each
    has one conversation (the ``log`` flow numbers their messages), and each reply goes where
    Meta wants it: ``to`` a phone number, ``recipient`` for a BSUID."""
    ada, bob = "US.13491208655302741918", "GB.5551212"
    api = FakeAPI(fake_whatsapp.SPEC)
    async with serve(api.app()) as api_url:
        node = await start_node(f"{redis_server.url}?prefix=ch{next(_prefixes)}:", secrets_key=secrets_key,
                                delivery=RetryPolicy(max_attempts=2, base_s=0.01))
        try:
            async with node.http.put(f"{node.url}/v1/acme/bots/whatsapp/support", headers=node.auth("acme"),
                                     json=CASES[0].bot(api_url)) as answer:
                assert answer.status == 201
            hook = f"{node.url}/v1/acme/channels/whatsapp/support"
            for request in (whatsapp_from("wamid.a1", "a1", "16505551234", ada),
                            whatsapp_from("wamid.a2", "a2", None, ada),
                            whatsapp_from("wamid.b1", "b1", None, bob),
                            whatsapp_from("wamid.b2", "b2", "447700900123", bob)):
                async with node.http.post(hook, data=request.body, headers=request.headers) as answer:
                    assert answer.status == 200, await answer.text()
            async with asyncio.timeout(30):
                while len(api.delivered) + len(api.rejected) < 4:
                    await asyncio.sleep(0.05)
            async with node.http.get(f"{node.url}/v1/acme/conversations/whatsapp:support/{bob}",
                                     headers=node.auth("acme")) as answer:
                assert (await answer.json())["vars"]["log"] == ["b1", "b2"]
        finally:
            await stop_node(node)
    assert api.rejected == [], api.rejected
    sent = sorted((r.json.get("to") or r.json["recipient"], "to" in r.json, r.json["text"]["body"])
                  for r in api.delivered)
    assert sent == [("16505551234", True, "1:a1"), ("16505551234", True, "2:a2"),
                    (bob, False, "1:b1"), (bob, False, "2:b2")]
