"""The site's forms: accounts, scheduling a pickup, API keys. Errors are in a customer's words
and sit next to the field they concern."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm

from deliveries.models import Delivery
from deliveries.services import DeliveryRequest, Place
from drones.geo import Point
from portal.errors import DomainError
from portal.logins import LoginThrottleMixin
from portal.places import KNOWN_PLACES, known_place

SIZE_CHOICES = [
    (Delivery.Size.SMALL, "Small: fits in a shoebox"),
    (Delivery.Size.MEDIUM, "Medium: up to a microwave oven"),
    (Delivery.Size.LARGE, "Large: up to a suitcase"),
]


class SignUpForm(forms.Form):
    email = forms.EmailField(
        label="Email address",
        max_length=150,
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
    password1 = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="At least 8 characters, not only digits, not a common password.",
    )
    password2 = forms.CharField(
        label="Password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        one, two = data.get("password1"), data.get("password2")
        if one and two and one != two:
            self.add_error("password2", "The two passwords differ.")
        elif one:
            try:
                password_validation.validate_password(one)
            except forms.ValidationError as exc:
                self.add_error("password1", exc)
        return data


class EmailAuthenticationForm(LoginThrottleMixin, AuthenticationForm):
    """Django's login form, asking for the email address the account was made with; failed
    sign-ins limited per address and per account (portal/logins.py)."""

    username = forms.CharField(
        label="Email address",
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )
    error_messages = {
        "invalid_login": "That email address and password do not match an account.",
        "inactive": "This account is disabled.",
    }

    def clean_username(self) -> str:
        return str(self.cleaned_data.get("username", "")).strip().lower()


def _place_choices() -> list[tuple[str, str]]:
    return [("", "Choose a known place…")] + [(p.slug, p.name) for p in KNOWN_PLACES]


class ScheduleForm(forms.Form):
    """A pickup and a dropoff (on the map, typed, or a known place), the package, the time."""

    pickup_place = forms.ChoiceField(label="Known place", required=False, choices=_place_choices)
    pickup_lat = forms.FloatField(label="Latitude", required=False, min_value=-90, max_value=90)
    pickup_lon = forms.FloatField(label="Longitude", required=False, min_value=-180, max_value=180)
    pickup_address = forms.CharField(label="Address or directions", required=False, max_length=300)
    dropoff_place = forms.ChoiceField(label="Known place", required=False, choices=_place_choices)
    dropoff_lat = forms.FloatField(label="Latitude", required=False, min_value=-90, max_value=90)
    dropoff_lon = forms.FloatField(label="Longitude", required=False, min_value=-180, max_value=180)
    dropoff_address = forms.CharField(label="Address or directions", required=False, max_length=300)
    package_size = forms.ChoiceField(
        label="Package size", choices=SIZE_CHOICES, widget=forms.RadioSelect, initial="small"
    )
    package_weight_kg = forms.FloatField(
        label="Weight (kg)",
        min_value=0.01,
        max_value=1000,
        error_messages={"min_value": "The weight must be more than 0 kg."},
    )
    pickup_time = forms.DateTimeField(
        label="Pickup time",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"],
        help_text="Leave empty for as soon as a drone is free.",
    )
    recipient_name = forms.CharField(label="Recipient's name", required=False, max_length=200)
    recipient_email = forms.EmailField(
        label="Recipient's email", required=False, help_text="We email them the tracking link."
    )

    def _place(self, data: dict[str, Any], end: str) -> Place | None:
        lat, lon = data.get(f"{end}_lat"), data.get(f"{end}_lon")
        address = data.get(f"{end}_address", "")
        if lat is not None and lon is not None:
            return Place(Point(lat=lat, lon=lon), address)
        if f"{end}_lat" in self.errors or f"{end}_lon" in self.errors:
            return None
        slug = data.get(f"{end}_place") or ""
        place = known_place(slug)
        if place is not None:
            return Place(Point(lat=place.lat, lon=place.lon), address or place.name)
        if lat is not None or lon is not None:
            self.add_error(f"{end}_lat", "Give both the latitude and the longitude.")
        else:
            self.add_error(
                f"{end}_lat",
                f"Choose the {end} on the map, pick a known place, or type its coordinates.",
            )
        return None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        data["pickup"] = self._place(data, "pickup")
        data["dropoff"] = self._place(data, "dropoff")
        return data

    def delivery_request(self) -> DeliveryRequest:
        data = self.cleaned_data
        recipient = {"name": data.get("recipient_name", ""), "email": data.get("recipient_email")}
        return DeliveryRequest(
            pickup=data["pickup"],
            dropoff=data["dropoff"],
            package_size=data["package_size"],
            package_weight_kg=data["package_weight_kg"],
            pickup_time=data.get("pickup_time"),
            recipient={k: v for k, v in recipient.items() if v},
        )

    def add_service_error(self, error: DomainError) -> None:
        """A service's refusal, put next to the field it concerns in a customer's words."""
        field, message = customer_words(error)
        self.add_error(field, message)


# Where a service's error field shows on the form.
_FIELDS = {
    "pickup": "pickup_lat",
    "pickup.lat": "pickup_lat",
    "pickup.lon": "pickup_lon",
    "dropoff": "dropoff_lat",
    "dropoff.lat": "dropoff_lat",
    "dropoff.lon": "dropoff_lon",
    "package.weight_kg": "package_weight_kg",
    "pickup_time": "pickup_time",
}


def customer_words(error: DomainError) -> tuple[str | None, str]:
    """(form field or None for the whole form, a sentence a customer understands)."""
    message = error.message
    if error.code == "no_drone_can_do_it":
        if message.startswith("The package weighs"):
            # "The package weighs 40 kg; the most any drone of the fleet carries is 10 kg."
            most = message.rsplit("carries is ", 1)[-1].rstrip(".")
            weight = message.split("weighs ", 1)[1].split(";", 1)[0]
            return "package_weight_kg", (
                f"No drone can carry {weight}: the most ours carry is {most}."
            )
        if message.startswith("The shortest trip"):
            return "dropoff_lat", (
                "That place is out of range: the round trip from our nearest base is longer than "
                "a drone can fly. Choose places closer together or nearer the city."
            )
        return None, "No drone is available for this delivery."
    if error.code == "no_drone_free":
        return None, "Every drone that could carry this is busy. Try again in a few minutes."
    if error.code == "inside_no_fly_zone":
        end = "pickup" if error.field == "pickup" else "dropoff"
        zone = message.split("no-fly zone", 1)[-1].strip()
        return f"{end}_lat", f"That place is inside the no-fly zone {zone}; choose one outside it."
    if error.code == "no_route":
        return "dropoff_lat", "No flight path between these places keeps clear of the no-fly zones."
    if error.code == "same_place":
        return "dropoff_lat", "The pickup and the dropoff are the same place."
    if error.code == "pickup_time_in_past":
        return "pickup_time", "That time has passed; choose a later one."
    if error.code == "pickup_time_too_far":
        return "pickup_time", message[:1].upper() + message[1:].split(" (", 1)[0] + "."
    if error.code in ("quote_expired", "quote_mismatch", "unknown_quote"):
        return None, "The quote has expired. Here is a new one; check it and confirm again."
    field = _FIELDS.get(error.field or "")
    return field, message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        label="Name of the key",
        max_length=50,
        help_text="Where it will be used, e.g. “order system”.",
    )
