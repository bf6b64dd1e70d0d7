"""The form of a business's webhook endpoint on the site. The rules (safe URLs, known events) are
the webhooks services', as for the API; this form only puts their refusals in plain words next to
the field they concern."""

from __future__ import annotations

import re
from typing import Any

from django import forms

from portal.errors import DomainError
from webhooks import services
from webhooks.models import WebhookEndpoint

# What each event means to a business, beside its name.
EVENT_LABELS = {
    "delivery.assigned": "a drone is assigned and the delivery has its ETA",
    "delivery.picked_up": "the drone has picked up the package",
    "delivery.delivered": "the package is delivered",
    "delivery.cancelled": "the delivery is cancelled",
    "delivery.failed": "the delivery failed and will not be made",
    "delivery.eta_changed": "the dropoff ETA moved by more than a couple of minutes",
}


def event_choices() -> list[tuple[str, str]]:
    return [(event, EVENT_LABELS.get(event, event)) for event in services.EVENT_TYPES]


_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


class WebhookEndpointForm(forms.Form):
    url = forms.URLField(
        label="URL",
        max_length=2000,
        assume_scheme="https",
        help_text="Where we POST the events, e.g. https://example.com/hooks/fabrikam.",
        error_messages={"invalid": "Enter a whole web address, such as https://example.com/hooks."},
        # A text input keyed for URLs: the site's styles cover text inputs, and the browser's
        # own URL check would stand in the way of the plain-words errors next to the field.
        widget=forms.TextInput(
            attrs={"inputmode": "url", "autocapitalize": "none", "spellcheck": "false"}
        ),
    )
    events = forms.MultipleChoiceField(
        label="Events",
        choices=event_choices,
        widget=forms.CheckboxSelectMultiple,
        error_messages={
            "required": "Choose at least one event.",
            "invalid_choice": "“%(value)s” is not an event we send; choose from the list.",
        },
    )
    description = forms.CharField(
        label="Description",
        max_length=200,
        required=False,
        help_text="For you: what receives these events, e.g. “order system”.",
    )
    active = forms.BooleanField(
        label="Active: send events to this URL",
        required=False,
        initial=True,
    )

    def clean_url(self) -> str:
        # As the API (webhooks.api.UrlField): no whitespace or control character anywhere in
        # the address; Django's URLField lets some through in the path.
        url = str(self.cleaned_data.get("url") or "")
        if _UNSAFE.search(url):
            raise forms.ValidationError(
                "A web address has no spaces or control characters; check what was pasted."
            )
        return url

    def add_service_error(self, error: DomainError) -> None:
        """A service's refusal, next to the field it concerns, in plain words."""
        field, message = plain_words(error)
        self.add_error(field if field in self.fields else None, message)


def plain_words(error: DomainError) -> tuple[str | None, str]:
    """(form field or None, a sentence) for a refusal of the webhooks services."""
    message = error.message
    if error.field == "url":
        if message.startswith("the URL must start with https://"):
            return "url", (
                "Use an address that starts with https://: we send events only over an "
                "encrypted connection."
            )
        if message.startswith("the URL resolves to a private"):
            return "url", (
                "That address leads to a private, local or reserved network, which we do not "
                "send to. Use an address that can be reached from the internet."
            )
        if message.startswith("the host ") and message.endswith(" does not resolve"):
            host = message.removeprefix("the host ").removesuffix(" does not resolve")
            return "url", f"We cannot find the host {host}. Check the address for typos."
        if message.startswith("the URL may not carry"):
            return "url", "Leave the user name and password out of the address."
    if error.field == "events" and message.startswith("unknown events"):
        return "events", "Choose only events from the list."
    text = message[:1].upper() + message[1:]
    return error.field, text if text.endswith(".") else text + "."


def endpoint_initial(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "url": endpoint.url,
        "events": list(endpoint.events),
        "description": endpoint.description,
        "active": endpoint.active,
    }
