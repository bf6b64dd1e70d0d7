"""Stage emails: recorded with the stage change, claimed and sent by workers after commit.

`notifications_record` runs in the transaction of the change (deliveries.announce): a change
rolled back owes nothing. The emails a change recorded (a round of assignments records many)
are then sent together by one task, published after commit, and by the sweep on beat for those
whose task was lost or whose send failed. Sending first claims the rows with a compare-and-swap
(pending → sending), so that a redelivered or duplicated message never sends an email twice; a
claim older than NOTIFICATIONS_CLAIM_TIMEOUT_SECONDS (its worker died mid-send) may be taken
again.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.core import signing
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from businesses.models import Business
from deliveries.models import Delivery
from deliveries.reasons import customer_reason
from notifications.models import Notification, Subscription

logger = logging.getLogger(__name__)

SEND_TASK = "workers.notifications_send"
UNSUBSCRIBE_SALT = "notifications.unsubscribe"

Status = Delivery.Status
Kind = Notification.Kind

KIND_OF_STAGE: dict[str, str] = {
    Status.ASSIGNED: Kind.ASSIGNED,
    Status.EN_ROUTE_TO_DROPOFF: Kind.PICKED_UP,
    Status.DELIVERED: Kind.DELIVERED,
    Status.CANCELLED: Kind.CANCELLED,
    Status.FAILED: Kind.FAILED,
}


class SubscribeResult:
    SUBSCRIBED = "subscribed"
    FULL = "full"
    FINISHED = "finished"


def _normal(email: str) -> str:
    return email.strip().lower()


def _customer_emails(deliveries: list[Delivery]) -> dict[UUID, list[str]]:
    """Who hears of every stage, per delivery: the recipient, and the site customer who
    scheduled it; the business when neither gave an address. One query per kind of address
    asked for, however many deliveries."""
    customer_ids = {d.customer_id for d in deliveries if d.customer_id is not None}
    users = (
        dict(User.objects.filter(pk__in=customer_ids).values_list("pk", "email"))
        if customer_ids
        else {}
    )
    emails: dict[UUID, list[str]] = {}
    for delivery in deliveries:
        found = [delivery.recipient_email]
        if delivery.customer_id is not None:
            found.append(users.get(delivery.customer_id, ""))
        emails[delivery.pk] = [email for email in found if email]
    orphans = {d.business_id for d in deliveries if not emails[d.pk]}
    if orphans:
        cached = {
            d.business_id: d.business.email for d in deliveries if Delivery.business.is_cached(d)
        }
        missing = orphans - cached.keys()
        if missing:
            cached |= dict(Business.objects.filter(pk__in=missing).values_list("pk", "email"))
        for delivery in deliveries:
            if not emails[delivery.pk] and cached.get(delivery.business_id):
                emails[delivery.pk] = [cached[delivery.business_id]]
    return emails


def notifications_record(delivery: Delivery, *, previous: str) -> list[UUID]:
    """In the stage change's transaction: the emails owed by `delivery`'s new stage, one per
    active subscription (the customer's is made at the first change), published after commit.
    Returns their ids."""
    return notifications_record_many([delivery], previous=previous)


def notifications_record_many(deliveries: list[Delivery], *, previous: str) -> list[UUID]:
    """notifications_record for several deliveries that made the same change together (a round
    of assignments): three statements however many there are."""
    owing = [
        d for d in deliveries if KIND_OF_STAGE.get(d.status) is not None and previous != d.status
    ]
    if not owing:
        return []
    customers = _customer_emails(owing)
    # ignore_conflicts: a customer who unsubscribed stays unsubscribed.
    Subscription.objects.bulk_create(
        [
            Subscription(delivery=d, email=_normal(email), source=Subscription.Source.CUSTOMER)
            for d in owing
            for email in customers[d.pk]
        ],
        ignore_conflicts=True,
    )
    by_id = {d.pk: d for d in owing}
    now = timezone.now()
    rows = [
        Notification(
            delivery=by_id[delivery_id],
            subscription_id=subscription_id,
            kind=KIND_OF_STAGE[by_id[delivery_id].status],
            email=email,
            version=by_id[delivery_id].version,
            next_attempt_at=now,
        )
        for subscription_id, delivery_id, email in Subscription.objects.filter(
            delivery_id__in=by_id, active=True
        ).values_list("id", "delivery_id", "email")
    ]
    Notification.objects.bulk_create(rows, ignore_conflicts=True)
    ids = [row.id for row in rows]
    if ids:
        # robust: the change is committed whatever the broker says; the sweep sends what was
        # not published.
        transaction.on_commit(lambda: _publish(ids), robust=True)
    return ids


def _publish(ids: list[UUID]) -> None:
    from portal import broker

    try:
        # One message for the change's emails, however many: one task sends them all.
        broker.send_task(SEND_TASK, {"notification_ids": [str(i) for i in ids]})
    except Exception as exc:  # noqa: BLE001 - the sweep sends them
        logger.warning("%d notifications not published, the sweep sends them: %s", len(ids), exc)


def _claim(notification_ids: list[UUID], now: datetime) -> int:
    """Take those of `notification_ids` that are due, in one statement; how many were taken.
    The taken are those left SENDING with claimed_at == now."""
    stale = now - timedelta(seconds=settings.NOTIFICATIONS_CLAIM_TIMEOUT_SECONDS)
    due = Q(status=Notification.Status.PENDING, next_attempt_at__lte=now) | Q(
        status=Notification.Status.SENDING, claimed_at__lt=stale
    )
    return Notification.objects.filter(due, pk__in=notification_ids).update(
        status=Notification.Status.SENDING, claimed_at=now, attempts=F("attempts") + 1
    )


def _delay(attempts: int) -> timedelta:
    return timedelta(
        seconds=min(
            settings.NOTIFICATIONS_RETRY_MAX_SECONDS,
            settings.NOTIFICATIONS_RETRY_BASE_SECONDS * 2 ** min(attempts - 1, 12),
        )
    )


def _unreachable(exc: Exception) -> bool:
    """Whether `exc` says the mail server could not be reached or talked to, as against
    refusing one email (SMTP's errors are OSErrors too)."""
    refused = smtplib.SMTPRecipientsRefused | smtplib.SMTPSenderRefused | smtplib.SMTPDataError
    return isinstance(exc, OSError) and not isinstance(exc, refused)


def notification_send(*, notification_id: UUID) -> bool:
    """Claim and send one notification; True when this call sent it."""
    return notifications_send(notification_ids=[notification_id]) == 1


def notifications_send(*, notification_ids: list[UUID]) -> int:
    """Claim and send the notifications of `notification_ids` that are due, oldest first, over
    one connection to the mail server; how many this call sent.

    Two statements claim and read them all, however many; each is then marked sent as soon as
    it is, so that a worker dying mid-batch sends again (after the claim times out) only the
    one it was sending. A batch that takes long renews its claim on the rest before it could
    go stale. A send that fails leaves it pending for a later attempt (with backoff), failed
    after NOTIFICATIONS_MAX_ATTEMPTS. When the mail server refused that one email (it
    answered), the rest go on; when it could not be reached or the connection was lost, the
    rest are put back untried, due when that one is, and the sweep sends them all then."""
    if not notification_ids:
        return 0
    claimed_at = timezone.now()
    if not _claim(notification_ids, claimed_at):
        return 0  # sent, being sent, not yet due again, or gone

    def held(**which: Any) -> QuerySet[Notification]:
        """Those of `which` this call's claim still holds."""
        return Notification.objects.filter(
            status=Notification.Status.SENDING, claimed_at=claimed_at, **which
        )

    def mine() -> QuerySet[Notification]:
        return held(pk__in=notification_ids)

    def this(notification: Notification) -> QuerySet[Notification]:
        return held(pk=notification.pk)  # one email: not the batch's list of ids again

    batch = list(
        mine()
        .select_related("subscription", "delivery", "delivery__business", "delivery__drone")
        .order_by("created_at", "id")
    )
    unsubscribed = [n.pk for n in batch if not n.subscription.active]
    if unsubscribed:
        mine().filter(pk__in=unsubscribed).update(status=Notification.Status.SKIPPED)
    renew_after = timedelta(seconds=settings.NOTIFICATIONS_CLAIM_TIMEOUT_SECONDS / 2)
    connection = get_connection()
    sent = 0
    try:
        for notification in (n for n in batch if n.subscription.active):
            if timezone.now() - claimed_at > renew_after:
                renewed = timezone.now()
                mine().update(claimed_at=renewed)
                claimed_at = renewed
                if not this(notification).exists():
                    continue  # its claim went stale all the same (the worker stalled)
            try:
                message = email_for(notification)
                message.connection = connection
                connection.open()  # once: it stays open for the rest
                message.send()
            except Exception as exc:  # noqa: BLE001 - the mail server's trouble; tried later
                attempts = notification.attempts
                gave_up = attempts >= settings.NOTIFICATIONS_MAX_ATTEMPTS
                retry_at = timezone.now() + _delay(attempts)
                this(notification).update(
                    status=Notification.Status.FAILED if gave_up else Notification.Status.PENDING,
                    claimed_at=None,
                    next_attempt_at=retry_at,
                    last_error=f"{type(exc).__name__}: {exc}"[:300],
                )
                logger.warning(
                    "notification %s not sent (attempt %s): %s", notification.pk, attempts, exc
                )
                if not _unreachable(exc):
                    continue  # this one email was refused (or could not be made): the others go
                # Unreachable: the rest are put back untried (their attempt not counted).
                mine().update(
                    status=Notification.Status.PENDING,
                    claimed_at=None,
                    next_attempt_at=retry_at,
                    attempts=F("attempts") - 1,
                )
                break
            # Marked after sending: a worker dying in between sends it again (after the claim
            # times out) rather than never.
            this(notification).update(status=Notification.Status.SENT, sent_at=timezone.now())
            sent += 1
    finally:
        connection.close()
    return sent


def notifications_sweep(*, batch: int = 200) -> int:
    """Send the notifications that are due: their task was lost, their worker died mid-send
    (the claim timed out) or their last attempt failed, as one batch (notifications_send: it
    stops where the mail server cannot be reached, and the next round tries again). Returns
    how many were sent."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.NOTIFICATIONS_CLAIM_TIMEOUT_SECONDS)
    # A grace for the just-recorded, whose own task is about to send them.
    grace = now - timedelta(seconds=settings.NOTIFICATIONS_SWEEP_GRACE_SECONDS)
    due = list(
        Notification.objects.filter(
            Q(status=Notification.Status.PENDING, next_attempt_at__lte=grace)
            | Q(status=Notification.Status.SENDING, claimed_at__lt=stale)
        )
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:batch]
    )
    return notifications_send(notification_ids=due)


def notifications_prune(*, older_than: timedelta = timedelta(days=30)) -> int:
    """Forget the emails done with (sent, skipped or given up) longer ago than `older_than`."""
    deleted, _ = Notification.objects.filter(
        status__in=[
            Notification.Status.SENT,
            Notification.Status.SKIPPED,
            Notification.Status.FAILED,
        ],
        created_at__lt=timezone.now() - older_than,
    ).delete()
    return deleted


# --- the emails -------------------------------------------------------------------------------


def tracking_url(delivery: Delivery) -> str:
    return f"{settings.PUBLIC_BASE_URL}/track/{delivery.tracking_token}"


def unsubscribe_url(subscription: Subscription) -> str:
    signed = signing.Signer(salt=UNSUBSCRIBE_SALT).sign(subscription.token)
    return f"{settings.PUBLIC_BASE_URL}/notifications/unsubscribe/{signed}"


def _at(moment: datetime | None) -> str:
    return f"{moment:%H:%M} UTC" if moment else "soon"


def message_id(notification: Notification) -> str:
    """The email's Message-ID: the notification's, on the site's domain, whichever pod sends."""
    return f"<notification.{notification.id}@{urlsplit(settings.PUBLIC_BASE_URL).hostname}>"


def email_for(notification: Notification) -> EmailMessage:
    """The email of `notification`, from its delivery as it is now."""
    delivery = notification.delivery
    subscription = notification.subscription
    customer = subscription.source == Subscription.Source.CUSTOMER
    # Someone who only has the tracking link is not told the recipient's name.
    name = (delivery.recipient_name or delivery.business.name) if customer else ""
    lines = [f"Hello {name}," if name else "Hello,", ""]
    kind = notification.kind
    if kind == Kind.ASSIGNED:
        serial = delivery.drone.serial if delivery.drone else ""
        subject = f"Your drone delivery arrives around {_at(delivery.dropoff_eta)}"
        lines += [
            f"Drone {serial} is assigned to delivery {delivery.id}.".replace("  ", " "),
            f"Pickup around {_at(delivery.pickup_eta)}, "
            f"dropoff around {_at(delivery.dropoff_eta)}.",
        ]
    elif kind == Kind.PICKED_UP:
        subject = "Your package is on its way"
        lines += [
            f"The drone has picked up the package of delivery {delivery.id}.",
            f"It should arrive around {_at(delivery.dropoff_eta)}.",
        ]
    elif kind == Kind.DELIVERED:
        subject = "Your package was delivered"
        lines += [f"The package of delivery {delivery.id} was delivered."]
    elif kind == Kind.CANCELLED:
        subject = "Your drone delivery was cancelled"
        lines += [f"Delivery {delivery.id} was cancelled; the package will not be delivered."]
    else:
        subject = "We could not complete your drone delivery"
        reason = customer_reason(delivery.failure_reason)
        lines += [
            f"We could not complete delivery {delivery.id}" + (f": {reason}." if reason else ".")
        ]
    lines += [
        "",
        f"Follow it here: {tracking_url(delivery)}",
        "",
        "--",
        "You get this email about this one delivery from Fabrikam Drone Delivery.",
        f"Stop these emails: {unsubscribe_url(subscription)}",
    ]
    return EmailMessage(
        subject=subject,
        body="\n".join(lines) + "\n",
        from_email=None,
        to=[notification.email],
        headers={
            # The same on every attempt: an email sent again because the mail server's answer
            # was lost (SMTP can do no better) is shown once by the recipient's mail client.
            "Message-ID": message_id(notification),
            # RFC 8058 one-click unsubscribe: mail clients POST to the link.
            "List-Unsubscribe": f"<{unsubscribe_url(subscription)}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


# --- subscriptions ----------------------------------------------------------------------------


def subscription_create(*, delivery: Delivery, email: str) -> str:
    """Someone with the tracking link asks for the delivery's stage emails ("Notify me").

    At most NOTIFY_ME_MAX_PER_DELIVERY addresses per delivery. Returns a SubscribeResult; an
    address already subscribed answers the same, so the answer tells nothing about who else
    is."""
    if delivery.status in (Status.DELIVERED, Status.CANCELLED, Status.FAILED):
        return SubscribeResult.FINISHED
    with transaction.atomic():
        # Serialises the count and the insert of concurrent requests for this delivery.
        Delivery.objects.select_for_update().filter(pk=delivery.pk).values_list("pk").get()
        subscriptions = Subscription.objects.filter(delivery=delivery)
        # Asked again after unsubscribing: subscribed again.
        if subscriptions.filter(email=_normal(email)).update(active=True, unsubscribed_at=None):
            return SubscribeResult.SUBSCRIBED
        added = subscriptions.filter(source=Subscription.Source.NOTIFY_ME).count()
        if added >= settings.NOTIFY_ME_MAX_PER_DELIVERY:
            return SubscribeResult.FULL
        Subscription.objects.create(
            delivery=delivery, email=_normal(email), source=Subscription.Source.NOTIFY_ME
        )
    return SubscribeResult.SUBSCRIBED


def subscription_by_signed_token(signed: str) -> Subscription | None:
    try:
        token = signing.Signer(salt=UNSUBSCRIBE_SALT).unsign(signed)
    except signing.BadSignature:
        return None
    return Subscription.objects.filter(token=token).first()


def subscription_unsubscribe(*, subscription: Subscription) -> None:
    """No more emails to this address about this delivery, including those not yet sent."""
    with transaction.atomic():
        Subscription.objects.filter(pk=subscription.pk, active=True).update(
            active=False, unsubscribed_at=timezone.now()
        )
        Notification.objects.filter(
            subscription=subscription, status=Notification.Status.PENDING
        ).update(status=Notification.Status.SKIPPED)
    subscription.active = False
