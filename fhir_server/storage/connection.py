"""The MongoDB client calipso uses, with the settings every write relies on."""

from __future__ import annotations

from datetime import timezone
from typing import Any

from pymongo import AsyncMongoClient


def connect(uri: str) -> AsyncMongoClient[dict[str, Any]]:
    """A client whose datetimes come back timezone-aware in UTC, and whose writes are
    acknowledged only once journaled on a majority of the replica set (`w: majority, j: true`):
    a 201 or an AA must survive a crash or a failover."""
    return AsyncMongoClient(uri, tz_aware=True, tzinfo=timezone.utc, uuidRepresentation="standard", w="majority", journal=True)


__all__ = ["connect"]
