from __future__ import annotations

import uuid

from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


class Business(models.Model):
    """A customer account of the API: it owns API keys and deliveries."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    email = models.EmailField(blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "businesses"

    def __str__(self) -> str:
        return self.name


class BusinessAPIKey(AbstractAPIKey):
    """An API key of a business: hashed at rest, shown once, identified by its visible prefix."""

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="api_keys")

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "business API key"
        verbose_name_plural = "business API keys"
