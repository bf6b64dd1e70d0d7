"""Times as the API, the live status, webhooks and drones' orders write them."""

from __future__ import annotations

from datetime import datetime
from typing import overload


@overload
def iso(value: datetime) -> str: ...
@overload
def iso(value: None) -> None: ...
def iso(value: datetime | None) -> str | None:
    """ISO 8601, UTC written `Z` (2026-11-30T12:00:00.250000Z); None stays None."""
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text
