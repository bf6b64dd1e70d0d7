"""Web security: the headers every page carries, production settings clean under
`check --deploy`, and sign-in throttled on the site and in admin."""

from __future__ import annotations

import random

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from tests.portal.test_settings import PRODUCTION, manage

PASSWORD = "a-long-password-4711"


def address() -> str:
    return f"2001:db8:1::{random.getrandbits(16):x}:{random.getrandbits(16):x}"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/login", "/admin/login/", "/api/v1/docs/"])
def test_pages_carry_the_security_headers(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 200
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    policy = response["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy
    assert (
        "script-src 'self'" in policy
        and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    )


def settings_of(*names: str, **env: str) -> dict[str, str]:
    """The named settings' reprs in a production-like process with `env` on top."""
    code = "from django.conf import settings as s; " + "; ".join(
        f"print({name!r}, repr(s.{name}), sep='=')" for name in names
    )
    result = manage("shell", "-c", code, env={**PRODUCTION, **env})
    assert result.returncode == 0, result.stderr
    lines = (line.partition("=") for line in result.stdout.splitlines() if "=" in line)
    return {name: value for name, _, value in lines if name in names}


def test_production_is_clean_under_check_deploy_with_secure_cookies_and_hsts() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert settings_of(
        "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS",
        "SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT", "TRUSTED_PROXY_COUNT",
    ) == {
        "SESSION_COOKIE_SECURE": "True",
        "CSRF_COOKIE_SECURE": "True",
        "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_PROXY_SSL_HEADER": "('HTTP_X_FORWARDED_PROTO', 'https')",
        "SECURE_SSL_REDIRECT": "True",
        "TRUSTED_PROXY_COUNT": "0",
    }  # fmt: skip


def test_the_ingress_headers_and_hsts_are_configurable() -> None:
    assert settings_of(
        "SECURE_PROXY_SSL_HEADER", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Scheme: https", SECURE_HSTS_SECONDS="600",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="false",
    ) == {
        "SECURE_PROXY_SSL_HEADER": "('HTTP_X_FORWARDED_SCHEME', 'https')",
        "SECURE_HSTS_SECONDS": "600",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "False",
    }  # fmt: skip
    assert settings_of("SECURE_PROXY_SSL_HEADER", SECURE_PROXY_SSL_HEADER="") == {
        "SECURE_PROXY_SSL_HEADER": "None"
    }


# --- sign-in throttling -----------------------------------------------------------------------


def login(client: Client, path: str, email: str, password: str) -> str:
    response = client.post(path, {"username": email, "password": password})
    if response.status_code == 302:
        return "signed in"
    text = response.content.decode()
    # Refused or throttled, the page is whole: the form to try again, and why not now.
    assert 'name="password"' in text
    if response.status_code == 429:
        retry_after = int(response["Retry-After"])
        assert 0 < retry_after <= 15 * 60
        minutes = max(1, round(retry_after / 60))
        assert f"Too many failed sign-ins. Try again in {minutes} minute" in text
        return "throttled"
    assert response.status_code == 200 and "Too many" not in text
    assert "Retry-After" not in response
    return "refused"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/login", "/admin/login/"])
@pytest.mark.usefixtures("whole_rate_window")
@override_settings(LOGIN_FAILURE_RATE_LIMIT="3/15minutes")
def test_failed_sign_ins_are_limited_per_account(path: str) -> None:
    email = f"op{random.getrandbits(32)}@fabrikam.example"
    get_user_model().objects.create_user(email, email, PASSWORD, is_staff=True)
    # A guesser spread over many addresses: each try from another one.
    tries = [login(Client(REMOTE_ADDR=address()), path, email, f"guess-{i}") for i in range(3)]
    assert tries == ["refused"] * 3
    # Now even the right password is refused for the account, from anywhere, for a while.
    assert login(Client(REMOTE_ADDR=address()), path, email, PASSWORD) == "throttled"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/login", "/admin/login/"])
@pytest.mark.usefixtures("whole_rate_window")
@override_settings(LOGIN_FAILURE_RATE_LIMIT="3/15minutes")
def test_failed_sign_ins_are_limited_per_address(path: str) -> None:
    email = f"op{random.getrandbits(32)}@fabrikam.example"
    get_user_model().objects.create_user(email, email, PASSWORD, is_staff=True)
    guesser = Client(REMOTE_ADDR=address())
    names = [f"nobody{random.getrandbits(32)}@fabrikam.example" for _ in range(3)]
    assert [login(guesser, path, name, "guess") for name in names] == ["refused"] * 3
    assert login(guesser, path, email, PASSWORD) == "throttled"
    # The account itself is fine from elsewhere.
    assert login(Client(REMOTE_ADDR=address()), path, email, PASSWORD) == "signed in"


@pytest.mark.django_db
def test_admin_is_behind_staff_sign_in() -> None:
    email = f"c{random.getrandbits(32)}@example.com"
    get_user_model().objects.create_user(email, email, PASSWORD)
    assert Client().get("/admin/").status_code == 302
    customer = Client(REMOTE_ADDR=address())
    assert login(customer, "/admin/login/", email, PASSWORD) == "refused"
