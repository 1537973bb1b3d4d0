"""Cursor pagination for lists: newest first, ``limit`` 1-100, ``starting_after`` an object id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, tuple_

from app.errors import ApiError
from app.extensions import db
from app.models.base import sane_id

MAX_LIMIT = 100


@dataclass(frozen=True)
class Page:
    items: list[Any]
    has_more: bool


def paginate(stmt: Select, model: Any, *, limit: int, starting_after: str | None) -> Page:
    """Rows of ``stmt`` ordered (created_at, id) descending, after the cursor row if given.

    The cursor must itself be a row ``stmt`` can see, so another tenant's id is refused.
    """
    if starting_after is not None:
        cursor = db.session.scalar(stmt.where(model.id == starting_after)) if sane_id(starting_after) else None
        if cursor is None:
            raise ApiError("invalid_request", "starting_after is not an object of this list", param="starting_after")
        # A row-value comparison is an index range bound; the equivalent OR is a scan.
        stmt = stmt.where(tuple_(model.created_at, model.id) < tuple_(cursor.created_at, cursor.id))
    rows = list(db.session.scalars(stmt.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)))
    return Page(items=rows[:limit], has_more=len(rows) > limit)
