"""Domain errors. Services raise these; one DRF exception handler turns them into HTTP answers.

Domain code never imports DRF: the class says what kind of failure it is, the API layer maps
kinds to status codes.
"""

from __future__ import annotations


class DomainError(Exception):
    """A request that is well-formed but cannot be carried out; `code` is stable for clients."""

    code = "unprocessable"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class Unprocessable(DomainError):
    """Impossible as asked: no drone could ever do it, a latitude of 95, a past pickup time."""


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    """Not possible in the resource's current state (cancel after pickup, idempotency clash)."""

    code = "conflict"


class Unavailable(DomainError):
    """A dependency the request needs is down; the client may retry."""

    code = "unavailable"


class LimitReached(DomainError):
    """The caller holds as much as it may (deliveries under way or booked ahead) until some
    finish; the client may retry later."""

    code = "limit_reached"
