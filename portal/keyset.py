"""Pages of a list that grows without bound, newest first, by keyset: a page is the rows older
(or newer) than a position (time, id), so every page costs one index range read of its own size,
however deep it is and however many rows the list holds; nothing counts the rows.

The API (portal.api.Pagination) and the site's lists use it. A cursor is an opaque token naming
a position and a direction; rows with the same time are ordered by id, so none is skipped or
repeated from one page to the next, and rows added meanwhile do not shift the pages.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Model, Q, QuerySet

OLDER = "o"  # the rows after the position, newest first: the next page
NEWER = "n"  # the rows before it: the previous page


class BadCursor(ValueError):
    """A cursor that this list did not hand out."""


@dataclass(frozen=True)
class Page:
    items: list[Any]
    newer: str | None  # the cursor of the page before (newer rows); None at the top
    older: str | None  # the cursor of the page after (older rows); None at the end


def _encode(direction: str, at: datetime, pk: Any) -> str:
    raw = f"{direction} {at.isoformat()} {pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, model: type[Model]) -> tuple[str, datetime, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        direction, at_text, pk_text = raw.split(" ")
        at = datetime.fromisoformat(at_text)
        pk = model._meta.pk.to_python(pk_text)
    except (ValueError, UnicodeDecodeError, binascii.Error, ValidationError):
        raise BadCursor(cursor) from None
    if direction not in (OLDER, NEWER) or at.tzinfo is None:
        raise BadCursor(cursor)
    return direction, at, pk


def page_of(
    queryset: QuerySet[Any], *, cursor: str | None, size: int, by: str = "created_at"
) -> Page:
    """The page of `queryset` (newest first by `by`, then id) that `cursor` names, the first
    when it is None; raises BadCursor for a token this function did not make."""
    if not cursor:
        rows = list(queryset.order_by(f"-{by}", "-pk")[: size + 1])
        items = rows[:size]
        older = _encode(OLDER, getattr(items[-1], by), items[-1].pk) if len(rows) > size else None
        return Page(items, None, older)
    direction, at, pk = _decode(cursor, queryset.model)
    if direction == OLDER:
        # `by <= at` alone is what an index on (..., by) can range over; the rest is a filter
        # on the few rows that share the position's time.
        after = queryset.filter(Q(**{f"{by}__lt": at}) | Q(**{by: at, "pk__lt": pk}))
        rows = list(after.filter(**{f"{by}__lte": at}).order_by(f"-{by}", "-pk")[: size + 1])
        items = rows[:size]
        older = _encode(OLDER, getattr(items[-1], by), items[-1].pk) if len(rows) > size else None
        newer = _encode(NEWER, getattr(items[0], by), items[0].pk) if items else None
        return Page(items, newer, older)
    before = queryset.filter(Q(**{f"{by}__gt": at}) | Q(**{by: at, "pk__gt": pk}))
    rows = list(before.filter(**{f"{by}__gte": at}).order_by(by, "pk")[: size + 1])
    items = rows[:size][::-1]
    newer = _encode(NEWER, getattr(items[0], by), items[0].pk) if len(rows) > size else None
    older = _encode(OLDER, getattr(items[-1], by), items[-1].pk) if items else None
    return Page(items, newer, older)


def page_or_first(
    queryset: QuerySet[Any], *, cursor: str | None, size: int, by: str = "created_at"
) -> Page:
    """As page_of, a cursor it did not hand out meaning the first page: the site's lists,
    where an edited link is worth no error page of its own."""
    try:
        return page_of(queryset, cursor=cursor, size=size, by=by)
    except BadCursor:
        return page_of(queryset, cursor=None, size=size, by=by)
