"""Password reset throttled: per client address (429 with the form and when to try again) and per
email address asked for (nothing more is sent, and the answer tells nothing), in Redis windows
that end, and expire, on time. Admin offers no password reset of its own."""

from __future__ import annotations

import random
import re
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.urls import NoReverseMatch, reverse
from django_redis import get_redis_connection

from portal import limits
from portal.limits import FailureWindow

PASSWORD = "a-long-password-4711"
RESET = "/password-reset"
SENT = "/password-reset/sent"


def address() -> str:
    return f"2001:db8:2::{random.getrandbits(16):x}:{random.getrandbits(16):x}"


def email() -> str:
    return f"c{random.getrandbits(32)}@example.com"


def account() -> str:
    name = email()
    get_user_model().objects.create_user(name, name, PASSWORD)
    return name


def ask(client: Client, for_email: str) -> Any:
    return client.post(RESET, {"email": for_email})


def sent(response: Any) -> bool:
    """Whether the answer is the usual one: on to "check your email"."""
    return response.status_code == 302 and response["Location"] == SENT


def throttled(response: Any, asked: str, *, within: int) -> bool:
    """Whether the answer is a 429 with Retry-After and the page whole: the form (with what was
    typed) and the message saying when to try again."""
    if response.status_code != 429:
        return False
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= within
    text = response.content.decode()
    minutes = max(1, round(retry_after / 60))
    plural = "s" if minutes != 1 else ""
    message = f"Too many password reset requests from your network. Try again in {minutes} minute"
    assert f"{message}{plural}." in text, text
    assert re.search(rf'<input [^>]*name="email"[^>]*value="{re.escape(asked)}"', text), text
    assert "Email me a link" in text
    return True


@pytest.mark.django_db
@pytest.mark.usefixtures("whole_rate_window")
@override_settings(PASSWORD_RESET_RATE_LIMIT="3/hour", PASSWORD_RESET_EMAIL_RATE_LIMIT="100/hour")
def test_password_resets_are_limited_per_client_address(mailoutbox: list[Any]) -> None:
    asker = Client(REMOTE_ADDR=address())
    accounts = [account() for _ in range(3)]
    assert all(sent(ask(asker, name)) for name in accounts)
    assert sorted(message.to[0] for message in mailoutbox) == sorted(accounts)
    # The fourth from that address is refused, for an account or not, and sends nothing.
    assert throttled(ask(asker, accounts[0]), accounts[0], within=3600)
    unknown = email()
    assert throttled(ask(asker, unknown), unknown, within=3600)
    assert len(mailoutbox) == 3
    # Anyone else may still ask, for the same account too.
    assert sent(ask(Client(REMOTE_ADDR=address()), accounts[0]))
    assert len(mailoutbox) == 4


@pytest.mark.django_db
@pytest.mark.usefixtures("whole_rate_window")
@override_settings(TRUSTED_PROXY_COUNT=1, PASSWORD_RESET_RATE_LIMIT="2/hour")
def test_the_address_is_the_one_the_trusted_proxy_saw_not_what_the_client_claims(
    mailoutbox: list[Any],
) -> None:
    client = address()
    for claimed in ("203.0.113.1", "203.0.113.2"):
        spoofing = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"{claimed}, {client}")
        assert sent(ask(spoofing, account()))
    spoofing = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"203.0.113.3, {client}")
    asked = account()
    assert throttled(ask(spoofing, asked), asked, within=3600)
    assert len(mailoutbox) == 2


@pytest.mark.django_db
@pytest.mark.usefixtures("whole_rate_window")
@override_settings(PASSWORD_RESET_RATE_LIMIT="100/hour", PASSWORD_RESET_EMAIL_RATE_LIMIT="2/hour")
def test_one_email_address_gets_so_many_resets_whoever_asks_and_the_answer_tells_nothing(
    mailoutbox: list[Any],
) -> None:
    victim = account()
    # Asked for from many addresses (the case of the address is not a way round the limit).
    assert sent(ask(Client(REMOTE_ADDR=address()), victim))
    assert sent(ask(Client(REMOTE_ADDR=address()), victim.upper()))
    assert [message.to[0] for message in mailoutbox] == [victim, victim]
    over = [ask(Client(REMOTE_ADDR=address()), victim) for _ in range(3)]
    assert len(mailoutbox) == 2
    # Past the limit the answer is the one for an address without an account, under the limit
    # or over it: the same status, the same page to go on to, the same (empty) body.
    nobody = email()
    for_nobody = [ask(Client(REMOTE_ADDR=address()), nobody) for _ in range(3)]
    assert len(mailoutbox) == 2
    answers = {(r.status_code, r["Location"], r.content, "Retry-After" in r) for r in over}
    assert answers == {(r.status_code, r["Location"], r.content, False) for r in for_nobody}
    assert answers == {(302, SENT, b"", False)}
    page = Client().get(SENT).content.decode()
    assert "If an account has that address, a link to choose a new password is on its way" in page
    # Another account is not affected.
    other = account()
    assert sent(ask(Client(REMOTE_ADDR=address()), other))
    assert mailoutbox[-1].to == [other]


@pytest.mark.django_db
@pytest.mark.usefixtures("whole_rate_window")
@override_settings(PASSWORD_RESET_RATE_LIMIT="2/hour", PASSWORD_RESET_EMAIL_RATE_LIMIT="2/hour")
def test_the_counters_expire_with_their_window(
    mailoutbox: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clock for the windows only: they are counted in the real Redis.
    clock = [1_900_000_000.0 + random.randrange(3600)]
    monkeypatch.setattr(limits, "time", SimpleNamespace(time=lambda: clock[0]))
    who = address()
    asker = Client(REMOTE_ADDR=who)
    victim = account()
    assert sent(ask(asker, victim)) and sent(ask(asker, victim))
    refused = ask(asker, victim)
    assert throttled(refused, victim, within=3600)
    assert sent(ask(Client(REMOTE_ADDR=address()), victim))  # per email: nothing sent
    assert len(mailoutbox) == 2
    # Redis drops both counters when their window is over...
    redis = get_redis_connection("default")
    windows = [
        FailureWindow.of("reset-address", who, setting="PASSWORD_RESET_RATE_LIMIT"),
        FailureWindow.of("reset-email", victim, setting="PASSWORD_RESET_EMAIL_RATE_LIMIT"),
    ]
    assert [int(redis.get(w.key) or 0) for w in windows] == [3, 3]
    for window in windows:
        assert 0 < redis.ttl(window.key) <= 3600 + 1
    # ...and when Retry-After has passed, the same address asks for the same account again.
    clock[0] += int(refused["Retry-After"])
    assert sent(ask(asker, victim))
    assert len(mailoutbox) == 3
    assert mailoutbox[-1].to == [victim]


@pytest.mark.django_db
def test_admin_offers_no_password_reset() -> None:
    # Staff reset their password through the site's form, throttled as anyone's.
    with pytest.raises(NoReverseMatch):
        reverse("admin_password_reset")
    page = Client().get("/admin/login/")
    assert page.status_code == 200
    assert "password" in page.content.decode()  # the login form...
    assert "Forgotten" not in page.content.decode()  # ...without a reset link
    assert Client().get("/admin/password_reset/").status_code in (302, 404)
