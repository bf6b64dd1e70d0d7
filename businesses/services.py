from __future__ import annotations

from django.core.cache import cache
from django.db import transaction

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
    # Authentication caches verified keys for a few seconds; a revoked key stops at once.
    cache.delete(api_key_cache_key(prefix))
    return api_key


def api_key_cache_key(prefix: str) -> str:
    return f"apikey:{prefix}"
