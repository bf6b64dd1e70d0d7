"""`Authorization: Telemetry-Key <key>`: a drone's or a gateway's credential for telemetry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request
from rest_framework_api_key.crypto import KeyGenerator

from businesses.auth import auth_failure, auth_failures_check, presented_key
from drones.models import TelemetryKey
from drones.telemetry import Reporter
from portal.limits import auth_failures

KEYWORD = "Telemetry-Key"


@dataclass(frozen=True)
class ReporterPrincipal:
    """`request.user` for telemetry: who reports, and for which drones."""

    reporter: Reporter
    is_authenticated: bool = True
    is_anonymous: bool = False

    @property
    def pk(self) -> Any:
        return self.reporter.key_prefix


class TelemetryKeyAuthentication(BaseAuthentication):
    """Verifies the key against its hash; revoked and expired keys are refused. One indexed
    read per batch (a gateway sends one batch a second), so revocation takes effect at once."""

    generator = KeyGenerator()

    def authenticate(self, request: Request) -> tuple[ReporterPrincipal, None] | None:
        presented = presented_key(request, KEYWORD, what="telemetry key")
        if presented is None:
            return None
        prefix, key = presented
        failures = auth_failures(request)
        auth_failures_check(failures, failures.count())
        record = (
            TelemetryKey.objects.filter(prefix=prefix, revoked=False)
            .prefetch_related("bases")
            .first()
        )
        if record is None or not self.generator.verify(key, record.hashed_key):
            auth_failure(request, failures)
            raise exceptions.AuthenticationFailed("invalid or revoked telemetry key")
        if record.expiry_date is not None and record.expiry_date < timezone.now():
            auth_failure(request, failures)
            raise exceptions.AuthenticationFailed("this telemetry key has expired")
        reporter = Reporter(
            key_prefix=prefix,
            drone_id=record.drone_id,
            base_ids=frozenset(base.pk for base in record.bases.all()),
        )
        return ReporterPrincipal(reporter), None

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD
