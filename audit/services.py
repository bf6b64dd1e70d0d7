"""Recording the audit trail.

Doors (admin actions, API views, site views) wrap the service call they make in `audited`: the
entry is written in the same transaction as the change, and only when the call succeeds, with
the actor and address read from the request. `audit_record` is the one function that writes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import models, transaction
from django.http import HttpRequest

from audit.models import AuditEntry
from portal import limits

if TYPE_CHECKING:
    from rest_framework.request import Request

    AnyRequest = HttpRequest | Request

Kind = AuditEntry.ActorKind
# A target: a model instance, or (model class or "app_label.model", id[, how it is called]).
Target = (
    models.Model | tuple[type[models.Model] | str, Any] | tuple[type[models.Model] | str, Any, str]
)


@dataclass(frozen=True)
class Actor:
    kind: str
    label: str
    user_id: Any = None
    business_id: Any = None
    key_prefix: str = ""


def actor_of(request: AnyRequest) -> Actor:
    """Who makes the request: a business by its API key (businesses.auth.BusinessPrincipal), an
    operator (a staff user, in admin or the staff API) or a site user (a customer, or a member
    acting for their business)."""
    user: Any = getattr(request, "user", None)
    prefix = getattr(user, "key_prefix", None)
    if prefix is not None:
        return Actor(
            Kind.BUSINESS,
            f"{user.business_name} (key {prefix})",
            business_id=user.business_id,
            key_prefix=prefix,
        )
    if user is None or not user.is_authenticated:
        raise ValueError("an audited action needs an authenticated caller")
    if user.is_staff:
        return Actor(Kind.OPERATOR, user.get_username(), user_id=user.pk)
    membership = getattr(user, "business_membership", None)
    business_id = membership.business_id if membership is not None else None
    return Actor(Kind.USER, user.get_username(), user_id=user.pk, business_id=business_id)


def client_address(request: AnyRequest) -> str | None:
    """The client's address as the failure limits see it (portal.limits: the ingress's
    X-Forwarded-For only behind TRUSTED_PROXY_COUNT proxies); None when it is not an IP address."""
    plain = getattr(request, "_request", request)  # DRF's Request wraps Django's
    try:
        return str(ipaddress.ip_address(limits.client_address(plain)))
    except ValueError:
        return None


def _target(target: Target) -> tuple[str, str, str]:
    """(type, id, description) of a target."""
    if isinstance(target, models.Model):
        return target._meta.label_lower, str(target.pk), str(target)[:200]
    model, pk, *called = target
    label = model if isinstance(model, str) else model._meta.label_lower
    return label, str(pk), str(called[0])[:200] if called else ""


def _named(target: Target) -> Target:
    return target if isinstance(target, tuple) else _target(target)


def audit_record(
    *,
    actor: Actor,
    action: str,
    target: Target,
    changes: dict[str, Any] | None = None,
    request: AnyRequest | None = None,
) -> AuditEntry:
    """Write one entry. `changes`: a small JSON of what changed (never a secret)."""
    target_type, target_id, target_repr = _target(target)
    return AuditEntry.objects.create(
        actor_kind=actor.kind,
        actor=actor.label[:300],
        actor_user_id=actor.user_id,
        business_id=actor.business_id,
        api_key_prefix=actor.key_prefix,
        address=client_address(request) if request is not None else None,
        action=action,
        target_type=target_type,
        target_id=target_id[:64],
        target_repr=target_repr,
        changes=changes or {},
    )


@dataclass
class Audit:
    """What a door fills in when it knows only after the call (a new object's id). A list of
    targets makes one entry each."""

    target: Target | list[Target] | None = None
    changes: dict[str, Any] = field(default_factory=dict)


@contextmanager
def audited(
    request: AnyRequest,
    action: str,
    target: Target | list[Target] | None = None,
    changes: dict[str, Any] | None = None,
) -> Iterator[Audit]:
    """Around a door's service call: one transaction, and in it the entry, written when the
    call returns (a refused call, which raises, changes nothing and leaves none)."""
    # Named now: a deleted object has lost its id by the time the call returns.
    named: Target | list[Target] | None = None
    if isinstance(target, list):
        named = [_named(t) for t in target]
    elif target is not None:
        named = _named(target)
    audit = Audit(named, dict(changes or {}))
    with transaction.atomic():
        yield audit
        if audit.target is None:
            raise ValueError(f"audited {action!r} without a target")
        actor = actor_of(request)
        targets = audit.target if isinstance(audit.target, list) else [audit.target]
        for each in targets:
            audit_record(
                actor=actor, action=action, target=each, changes=audit.changes, request=request
            )


def form_changes(form: Any, *, summarized: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields an admin form changed, with their new values (a model as its id; the fields
    in `summarized`, too big for the trail, as just "changed")."""
    changes: dict[str, Any] = {}
    for name in form.changed_data:
        value = form.cleaned_data.get(name)
        if name in summarized:
            value = "changed"
        elif isinstance(value, models.Model):
            value = str(value.pk)
        elif isinstance(value, models.QuerySet | list | tuple | set):
            value = [str(v.pk) if isinstance(v, models.Model) else v for v in value]
        changes[name] = value
    return changes


def zone_names(collection: Any, *, at_most: int = 50) -> list[str]:
    """The names of the zones of an imported FeatureCollection (it was checked), the first few."""
    return [feature["properties"]["name"] for feature in collection["features"][:at_most]]
