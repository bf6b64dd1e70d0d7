"""The site's people: customers who schedule deliveries for themselves, and business members who
follow their business's deliveries and manage its API keys.

Every page reaches deliveries through `deliveries_visible_to`, the one place a site user's view
starts: a customer sees the deliveries they scheduled, a business member their business's,
nobody else's. Writes go through the same services as the API.
"""

from __future__ import annotations

from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from businesses.models import Business, BusinessMember
from deliveries import services as delivery_services
from deliveries.models import Delivery
from portal.errors import NotFound, Unprocessable

SiteUser = AbstractBaseUser | AnonymousUser


def customers_business() -> Business:
    """The platform's own account, which owns every delivery a customer schedules on the site
    (made on first use)."""
    business = Business.objects.filter(serves_customers=True).first()
    if business is not None:
        return business
    try:
        with transaction.atomic():
            return Business.objects.create(
                name=settings.CUSTOMERS_BUSINESS_NAME, serves_customers=True
            )
    except IntegrityError:  # made by a concurrent first use
        return Business.objects.get(serves_customers=True)


def membership_of(user: SiteUser) -> BusinessMember | None:
    if not user.is_authenticated:
        return None
    try:
        return BusinessMember.objects.select_related("business").get(user_id=user.pk)
    except BusinessMember.DoesNotExist:
        return None


def customer_signup(*, email: str, password: str) -> User:
    """A customer account, signed in by its email address (also its username)."""
    email = email.strip().lower()
    if User.objects.filter(username__iexact=email).exists():
        raise Unprocessable("an account with this email address exists already", field="email")
    return User.objects.create_user(username=email, email=email, password=password)


def deliveries_visible_to(user: SiteUser) -> QuerySet[Delivery]:
    """The deliveries a site user may see: their own, or their business's."""
    if not user.is_authenticated:
        return Delivery.objects.none()
    member = membership_of(user)
    if member is not None:
        return Delivery.objects.filter(business_id=member.business_id)
    return Delivery.objects.filter(customer_id=user.pk)


def site_delivery_get(*, user: SiteUser, delivery_id: UUID) -> Delivery:
    delivery = (
        deliveries_visible_to(user)
        .select_related("drone")
        .prefetch_related("events")
        .filter(pk=delivery_id)
        .first()
    )
    if delivery is None:
        raise NotFound("no such delivery")
    return delivery


def site_delivery_cancel(*, user: SiteUser, delivery_id: UUID) -> Delivery:
    """Cancel through the API's own service, so the same rule holds (until pickup)."""
    delivery = site_delivery_get(user=user, delivery_id=delivery_id)
    who = "customer" if delivery.customer_id == user.pk else "business member"
    return delivery_services.delivery_cancel(
        business_id=delivery.business_id,
        delivery_id=delivery.id,
        note=f"cancelled on the site by {who} {user.get_username()}",
    )
