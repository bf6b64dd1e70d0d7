"""Sign-in throttling for the site's /login and admin's /admin/login/.

Failed sign-ins are counted per client address and per user name (portal/limits.py, in Redis);
past LOGIN_FAILURE_RATE_LIMIT either way every sign-in through that address or to that account
is refused, right password or wrong, until the window ends. Per name stops a guesser spread over
many addresses; per address one trying many names.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django_redis import get_redis_connection

from portal.limits import FailureWindow, client_address

SETTING = "LOGIN_FAILURE_RATE_LIMIT"


class LoginThrottleMixin:
    """For an AuthenticationForm: refuse while the address or the name has failed too often,
    and count each failure against both."""

    request: Any
    cleaned_data: dict[str, Any]

    def _windows(self) -> list[FailureWindow]:
        address = client_address(self.request) if self.request is not None else "unknown"
        name = str(self.cleaned_data.get("username") or "").strip().lower()
        windows = [FailureWindow.of("login-address", address, setting=SETTING)]
        if name:
            windows.append(FailureWindow.of("login-name", name, setting=SETTING))
        return windows

    def clean(self) -> dict[str, Any]:
        windows = self._windows()
        counts = get_redis_connection("default").mget([w.key for w in windows])
        exceeded = [w for w, count in zip(windows, counts, strict=True) if w.exceeded(count)]
        if exceeded:
            minutes = max(1, round(max(w.retry_after() for w in exceeded) / 60))
            raise forms.ValidationError(
                f"Too many failed sign-ins. Try again in {minutes} minute"
                f"{'s' if minutes != 1 else ''}.",
                code="throttled",
            )
        try:
            return super().clean()  # type: ignore[misc]
        except forms.ValidationError:
            for window in windows:
                window.record()
            raise


class ThrottledAdminAuthenticationForm(LoginThrottleMixin, AdminAuthenticationForm):
    """Admin's login form (staff only), throttled."""


class ThrottledAuthenticationForm(LoginThrottleMixin, AuthenticationForm):
    """Django's login form, throttled."""
