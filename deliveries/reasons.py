"""Why a delivery failed, in words its customer and the public tracking page may read.

A failure reason is written by the workflow (no drone free in time, out of range, no way around
no-fly zones) or by an operator; only the workflow's own reasons are shown to customers, in
their words. Anything else (an operator's note) is shown as no reason at all.
"""

from __future__ import annotations

# The failure reasons the workflow writes that a customer may read, by how they begin, in
# customer words. Any other reason (an error, an operator's note) is never shown.
CUSTOMER_REASONS: tuple[tuple[str, str], ...] = (
    ("no drone became free in time", "no drone was free in time"),
    ("no drone can deliver before the deadline", "no drone could deliver before the deadline"),
    ("no route keeps clear of the no-fly zones", "no flight path keeps clear of no-fly zones"),
    ("There are no drones in the fleet", "no drone was available"),
    ("The package weighs", "the package is too heavy for our drones"),
    ("The shortest trip", "the trip is beyond our drones' range"),
    # The workflow's outages and errors (deliveries.services): their detail is for operators.
    ("a service it needs was unavailable", "a temporary fault on our side kept it from a drone"),
    ("a step of the workflow failed", "a fault on our side kept it from a drone"),
    ("its workflow message was delivered", "a fault on our side kept it from a drone"),
)
GENERIC = "it could not be delivered"


def customer_reason(failure_reason: str) -> str | None:
    """The customer words for a failure reason of ours, None for anything else."""
    for start, words in CUSTOMER_REASONS:
        if failure_reason.startswith(start):
            return words
    return None


def public_reason(failure_reason: str) -> str:
    """What businesses (the API) read: the customer words, or a plain sentence for anything
    else, never an error's text or an operator's note."""
    return customer_reason(failure_reason) or GENERIC
