"""The hand-off webhook's pure part: the request an event makes, its signature, and a
receiver's check of it against altered bodies, other keys, stale times and malformed headers."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from parlour.channels.base import SignatureError
from parlour.channels.handoff import ADAPTER, SIGNATURE_HEADER, HookSettings, verify
from parlour.config import ConfigError, load_settings
from parlour.errors import ParlourError

T = 1_700_000_000
EVENT = {"schema": 1, "event": "message", "ticket": {"id": "t1"}, "message": {"text": "caf\u00e9 \U0001f370"}, "at": T}


def signed(url: str = "https://desk.example/in?x=1", key: str = "k3y") -> tuple[HookSettings, object]:
    hook = HookSettings.of(url, key)
    [call] = ADAPTER.render(hook, "t1", EVENT)
    return hook, ADAPTER.sign(hook, call, T + 0.9)


def test_an_event_is_one_post_of_its_json_to_the_url_signed_over_time_and_body():
    hook, call = signed()
    assert (hook.api_base, call.method, call.path) == ("https://desk.example", "POST", "/in?x=1")
    assert json.loads(call.content) == EVENT and call.json is None and call.form is None
    assert call.headers["Content-Type"] == "application/json" and call.headers["X-Parlour-Event"] == "message"
    expected = hmac.new(b"k3y", f"{T}.".encode() + call.content, hashlib.sha256).hexdigest()
    assert call.headers[SIGNATURE_HEADER] == f"t={T},v1={expected}"
    assert verify(b"k3y", call.headers[SIGNATURE_HEADER], call.content, now=T + 299) == T


@pytest.mark.parametrize("change, reason", [
    (lambda h, b: (h, b.replace(b"caf", b"cat")), "mismatch"),
    (lambda h, b: (h.replace("v1=", "v1=0"), b), "mismatch"),
    (lambda h, b: (h.replace(f"t={T}", f"t={T + 1}"), b), "mismatch"),  # the time is signed too
    (lambda h, b: (None, b), "missing"),
    (lambda h, b: (h.split(",")[1], b), "malformed"),
    (lambda h, b: (h.replace(f"t={T}", "t=-5"), b), "malformed"),
    (lambda h, b: (f"{h},t={T}", b), "malformed"),
])
def test_a_receiver_refuses_what_was_not_signed_as_it_is(change, reason):
    _, call = signed()
    header, body = change(call.headers[SIGNATURE_HEADER], call.content)
    with pytest.raises(SignatureError) as refused:
        verify(b"k3y", header, body, now=T)
    assert refused.value.reason == reason


def test_another_key_and_an_old_signature_are_refused():
    _, call = signed()
    with pytest.raises(SignatureError, match="does not match"):
        verify(b"other", call.headers[SIGNATURE_HEADER], call.content, now=T)
    with pytest.raises(SignatureError) as stale:
        verify(b"k3y", call.headers[SIGNATURE_HEADER], call.content, now=T + 301)
    assert stale.value.reason == "stale"


def test_each_attempt_is_signed_for_its_own_time():
    hook, call = signed()
    again = ADAPTER.sign(hook, call, T + 600)
    assert again.headers[SIGNATURE_HEADER].startswith(f"t={T + 600},")
    assert verify(b"k3y", again.headers[SIGNATURE_HEADER], again.content, now=T + 600) == T + 600


def test_a_webhook_without_its_secret_cannot_be_rendered_and_answers_are_judged():
    with pytest.raises(ParlourError, match="signing secret is not set"):
        ADAPTER.render(HookSettings.of("https://desk.example/", None), "t1", EVENT)
    assert [ADAPTER.judge(s, {}, b"no").outcome for s in (200, 204, 301, 401, 429, 503)] == [
        "sent", "sent", "failed", "failed", "retry", "retry"]
    assert ADAPTER.judge(500, {}, b"x" * 10_000).reason == "HTTP 500: " + "x" * 200


@pytest.mark.parametrize("webhook, problem", [
    ({"url": "ftp://desk.example/in", "secret": "K"}, "http(s) URL"),
    ({"url": "https://user:pw@desk.example/in", "secret": "K"}, "no credentials"),
    ({"url": "https:///in", "secret": "K"}, "with a host"),
    ({"url": "https://desk.example/in#top", "secret": "K"}, "no fragment"),
    ({"url": "https://desk.example/" + "a" * 3000, "secret": "K"}, "2048"),
    ({"url": "https://desk.example/in", "secret": "not a name"}, "ASCII letters"),
    ({"url": "https://desk.example/in"}, "Field required"),
    ({"url": "https://desk.example/in", "secret": "K", "key": "inline"}, "Extra inputs"),
])
def test_a_bad_webhook_setting_is_named_with_its_place(webhook, problem):
    with pytest.raises(ConfigError) as refused:
        load_settings(tenants={"acme": {"handoff_webhook": webhook}})
    assert "tenants.acme.handoff_webhook" in str(refused.value) and problem in str(refused.value)


def test_the_tenants_with_a_webhook_are_listed_by_url_and_secret_name():
    settings = load_settings(tenants={"acme": {"handoff_webhook": {"url": "https://d.example/in", "secret": "K"}},
                                      "beta": {}})
    assert settings.handoff_webhooks() == {"acme": ("https://d.example/in", "K")}


def test_serve_refuses_a_webhook_whose_secret_its_tenant_does_not_have():
    from parlour.serve import check_webhooks
    settings = load_settings(tenants={"acme": {"handoff_webhook": {"url": "https://d.example/in", "secret": "K"}}})
    check_webhooks(settings, {"acme": {"K"}})
    with pytest.raises(SystemExit, match="tenants.acme.handoff_webhook.secret: tenant 'acme' has no secret 'K'"):
        check_webhooks(settings, {"beta": {"K"}})
