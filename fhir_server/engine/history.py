"""History at instance, type and system level, with keyset paging.

A page is read newest first on (lastUpdated, history key), and the next page starts strictly
after the last row shown: a cursor, never an offset, so writes made while a client pages
neither repeat nor hide a version already listed.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson

from fhir_server.outcome import FhirError
from fhir_server.storage.store import ResourceStore, Version, history_key


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of versions and the cursor of the next page (None on the last page)."""

    versions: list[Version]
    next_cursor: str | None
    total: int | None


def encode_cursor(version: Version) -> str:
    payload = orjson.dumps([round(version.updated.timestamp() * 1000), history_key(version)])
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (lastUpdated, key) position a cursor stands for; 400 when it was not ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        millis, key = orjson.loads(base64.urlsafe_b64decode(padded))
        if not isinstance(key, str) or not isinstance(millis, (int, float)):
            raise ValueError("bad cursor")
        return datetime.fromtimestamp(round(millis) / 1000, tz=timezone.utc), key
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError, OverflowError, OSError):
        raise FhirError.of(400, "invalid", "The paging cursor is not valid (it may be from another server)") from None


async def read_history(
    store: ResourceStore,
    resource_type: str | None,
    resource_id: str | None,
    since: datetime | None,
    count: int,
    cursor: str | None,
) -> HistoryPage:
    """One page of history; `resource_type`/`resource_id` narrow it to a type or an instance."""
    after = decode_cursor(cursor) if cursor else None
    scope = (resource_type, resource_id)
    rows = await store.history(scope, since, count + 1, after)
    more = len(rows) > count
    rows = rows[:count]
    total = await store.count_history(scope, since) if resource_id is not None else None
    return HistoryPage(rows, encode_cursor(rows[-1]) if more and rows else None, total)


__all__ = ["HistoryPage", "decode_cursor", "encode_cursor", "read_history"]
