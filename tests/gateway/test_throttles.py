"""The throttles in front of the runtime, as pure logic: failed token checks per client address,
messages per web user beside the tenant's rate. (Windows are the ``limits`` library's, on the
wall clock: these tests fill them and never wait for one to pass.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from parlour.config import hash_token
from parlour.gateway.auth import OPERATOR, Auth, client_key
from parlour.gateway.errors import ApiError
from parlour.gateway.ingress import Ingress
from parlour.metrics import GatewayMetrics

OPERATOR_TOKEN, TENANT_TOKEN = "plr_operator", "plr_tenant"


def auth(failures: str | None = "3/minute") -> Auth:
    return Auth(hash_token(OPERATOR_TOKEN), {"acme": [hash_token(TENANT_TOKEN)]}, failures=failures)


def refused(check: Callable[..., object], *args: str) -> ApiError:
    """The error ``check(*args)`` raises (the arguments are passed, not closed over: checks run in loops)."""
    with pytest.raises(ApiError) as caught:
        check(*args)
    return caught.value


def test_wrong_tokens_from_one_address_are_throttled_whatever_comes_next():
    checker = auth()
    for guess in range(3):
        assert refused(checker.check, f"Bearer plr_guess{guess}", "203.0.113.7").status == 401
    for token in ("plr_guess3", OPERATOR_TOKEN, TENANT_TOKEN):  # the right token too: no oracle for guesses
        error = refused(checker.check, f"Bearer {token}", "203.0.113.7")
        assert (error.status, error.code) == (429, "too_many_failures") and 1 <= int(error.headers["Retry-After"]) <= 60
    # other addresses are not held back; IPv4 written as IPv6 is the same address
    assert checker.check(f"Bearer {OPERATOR_TOKEN}", "203.0.113.8").tenant == OPERATOR
    assert refused(checker.check, f"Bearer {TENANT_TOKEN}", "::ffff:203.0.113.7").status == 429


def test_an_ipv6_host_counts_as_its_64_and_a_missing_token_is_no_guess():
    checker = auth()
    for n in range(3):
        refused(checker.check, "Bearer plr_guess", f"2001:db8:1:2::{n + 1}")
    assert refused(checker.check, f"Bearer {TENANT_TOKEN}", "2001:db8:1:2:ffff::9").status == 429
    assert checker.check(f"Bearer {TENANT_TOKEN}", "2001:db8:1:3::1").tenant == "acme"
    for _ in range(10):
        assert refused(checker.check, "", "198.51.100.1").status == 401
        assert refused(checker.check, "Basic abc", "198.51.100.1").status == 401
    assert checker.check(f"Bearer {TENANT_TOKEN}", "198.51.100.1").tenant == "acme"
    assert [client_key(a) for a in (None, "2001:db8::1", "::ffff:10.0.0.1")] == ["local", "2001:db8::/64", "10.0.0.1"]


def test_no_throttle_when_none_is_configured():
    checker = auth(None)
    for _ in range(50):
        refused(checker.check, "Bearer plr_guess", "203.0.113.7")
    assert checker.check(f"Bearer {OPERATOR_TOKEN}", "203.0.113.7").tenant == OPERATOR


async def _never(inbound):  # admission is all these tests look at
    raise AssertionError("nothing is sent")


def test_one_web_user_over_its_rate_leaves_the_tenants_other_users_their_share():
    ingress = Ingress(_never, GatewayMetrics(), max_pending=10, timeout_s=1)
    ingress.set_rate_limit("acme", "5/minute", "2/minute")
    ingress.admit("acme", "greedy")
    ingress.admit("acme", "greedy")
    for _ in range(20):  # refused at the user's limit: none of these spends the tenant's rate
        error = refused(ingress.admit, "acme", "greedy")
        assert (error.status, error.code) == (429, "user_rate_limited") and 1 <= int(error.headers["Retry-After"]) <= 60
    ingress.admit("acme", "polite")
    ingress.admit("acme", "other")
    ingress.admit("acme", "other")
    assert refused(ingress.admit, "acme", "third").code == "rate_limited"  # the tenant's 5 are spent
    ingress.set_rate_limit("beta", "5/minute", None)  # no per-user limit: one user may take the tenant's rate
    for _ in range(5):
        ingress.admit("beta", "one")
