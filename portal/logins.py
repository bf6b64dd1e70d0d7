"""Sign-in throttling for the site's /login and admin's /admin/login/.

Failed sign-ins are counted per client address and per user name (portal/limits.py, in Redis);
past LOGIN_FAILURE_RATE_LIMIT either way every sign-in through that address or to that account
is refused, right password or wrong, until the window ends. Per name stops a guesser spread over
many addresses; per address one trying many names.

A refused sign-in is answered `429 Too Many Requests` with `Retry-After`, the page still whole:
the form, and the message saying when to try again.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django_redis import get_redis_connection

from portal.limits import FailureWindow, client_address

SETTING = "LOGIN_FAILURE_RATE_LIMIT"


class LoginThrottleMixin:
    """For an AuthenticationForm: refuse while the address or the name has failed too often,
    and count each failure against both."""

    request: Any
    cleaned_data: dict[str, Any]
    # Seconds until a sign-in may be tried again, when this one was refused for the failures.
    retry_after: int | None = None

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
            self.retry_after = max(w.retry_after() for w in exceeded)
            minutes = max(1, round(self.retry_after / 60))
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


def throttled_answer(response: HttpResponse, form: Any) -> HttpResponse:
    """The page of a sign-in refused for too many failures as `429` with `Retry-After`; any
    other answer as it is."""
    retry_after = getattr(form, "retry_after", None)
    if retry_after:
        response.status_code = HTTPStatus.TOO_MANY_REQUESTS
        response["Retry-After"] = str(retry_after)
    return response


class ThrottledLoginView(auth_views.LoginView):
    """Django's sign-in view, answering a throttled sign-in with 429 (the form must be one of
    the throttled ones)."""

    def form_invalid(self, form: Any) -> HttpResponse:
        return throttled_answer(super().form_invalid(form), form)


def throttle_admin_login(site: admin.AdminSite) -> None:
    """Admin's sign-in throttled as the site's: its form, and 429 when that refuses."""
    site.login_form = ThrottledAdminAuthenticationForm
    login = site.login

    def throttled_login(request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        response = login(request, extra_context)
        context = getattr(response, "context_data", None) or {}
        return throttled_answer(response, context.get("form"))

    site.login = throttled_login  # type: ignore[method-assign]
