from __future__ import annotations

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


def api_key_forget(prefix: str) -> None:
    """Authentication keeps verified keys in Redis for a few seconds: drop one, so that its
    revocation, or its business's deactivation, takes effect at once."""
    get_redis_connection("default").delete(api_key_cache_key(prefix))
