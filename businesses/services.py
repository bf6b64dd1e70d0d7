from __future__ import annotations

from uuid import UUID

from django.db import transaction
from django_redis import get_redis_connection

from businesses.models import Business, BusinessAPIKey
from portal.errors import NotFound


def business_create(*, name: str, email: str = "") -> tuple[Business, str]:
    """Create a business with a first API key; returns the business and the key (shown once)."""
    with transaction.atomic():
        business = Business.objects.create(name=name, email=email)
        _, key = api_key_create(business=business, name="default")
    return business, key


def api_key_create(*, business: Business, name: str) -> tuple[BusinessAPIKey, str]:
    api_key, key = BusinessAPIKey.objects.create_key(business=business, name=name)
    return api_key, key  # type: ignore[return-value]


def api_key_revoke(*, business: Business, prefix: str) -> BusinessAPIKey:
    try:
        api_key = BusinessAPIKey.objects.get(business=business, prefix=prefix)
    except BusinessAPIKey.DoesNotExist:
        raise NotFound(f"no API key with prefix {prefix!r}") from None
    if not api_key.revoked:
        api_key.revoked = True
        api_key.save(update_fields=["revoked"])
    api_key_forget(prefix)
    return api_key


def api_key_cache_key(prefix: str) -> str:
    return f"apikey:{prefix}"


def api_key_forget(*prefixes: str) -> None:
    """Authentication keeps verified keys in Redis for a few seconds: drop them, so that a
    revocation, or their business's deactivation, takes effect at once.

    Dropped now and again once the caller's transaction commits: a request that read the key
    before the commit may have cached it, still valid, in between."""
    if not prefixes:
        return
    keys = [api_key_cache_key(prefix) for prefix in prefixes]
    get_redis_connection("default").delete(*keys)
    transaction.on_commit(lambda: get_redis_connection("default").delete(*keys))


def business_update(*, business_id: UUID, name: str, email: str = "") -> Business:
    """Rename a business or change its email; its keys' cached entries carry the name, so they
    are dropped too."""
    with transaction.atomic():
        business = _business_locked(business_id)
        business.name, business.email = name, email
        business.save(update_fields=["name", "email"])
        api_key_forget(*_prefixes(business))
    return business


def business_deactivate(*, business_id: UUID) -> Business:
    """Stop a business: its API keys are refused from the very next call (their cached entries
    are dropped). Its deliveries go on; its keys are kept, to work again on reactivation."""
    return _business_active_set(business_id, active=False)


def business_activate(*, business_id: UUID) -> Business:
    """Let a deactivated business call the API again, from the very next call (a refusal may
    be cached too)."""
    return _business_active_set(business_id, active=True)


def _business_active_set(business_id: UUID, *, active: bool) -> Business:
    with transaction.atomic():
        business = _business_locked(business_id)
        if business.is_active != active:
            business.is_active = active
            business.save(update_fields=["is_active"])
        api_key_forget(*_prefixes(business))
    return business


def _business_locked(business_id: UUID) -> Business:
    business = Business.objects.select_for_update().filter(pk=business_id).first()
    if business is None:
        raise NotFound(f"no business {business_id}")
    return business


def _prefixes(business: Business) -> list[str]:
    return list(BusinessAPIKey.objects.filter(business=business).values_list("prefix", flat=True))
