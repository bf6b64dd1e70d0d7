from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


class Business(models.Model):
    """A customer account of the API: it owns API keys and deliveries."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    email = models.EmailField(blank=True)
    is_active = models.BooleanField(default=True)
    # The platform's own account, which owns the deliveries customers schedule on the site.
    serves_customers = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "businesses"
        constraints = [
            models.UniqueConstraint(
                fields=["serves_customers"],
                condition=models.Q(serves_customers=True),
                name="business_one_for_customers",
            )
        ]

    def __str__(self) -> str:
        return self.name


class BusinessAPIKey(AbstractAPIKey):
    """An API key of a business: hashed at rest, shown once, identified by its visible prefix."""

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="api_keys")

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "business API key"
        verbose_name_plural = "business API keys"


class BusinessMember(models.Model):
    """A person who signs in to the site for a business: sees its deliveries and manages its API
    keys. A user belongs to one business at most; a user with none is a customer."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="business_membership"
    )
    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="members")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "business member"

    def __str__(self) -> str:
        return f"{self.user} ({self.business})"
