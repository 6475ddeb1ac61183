"""The inbox: every message as received, with its key, hash, status and the ACK sent.

The key is (MSH-3, MSH-4, MSH-10): a unique `_id`, so two bridge processes cannot both take
the same message. Unreadable messages (no usable MSH) are kept under their hash. Status goes
received -> applied | rejected | failed; `applied` is set in the database transaction that
writes the notebook, so a message is applied exactly once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bson import Binary
from pymongo.errors import DuplicateKeyError

from fhir_server.storage.store import INBOX, Bookkeeping, ResourceStore

RECEIVED, APPLIED, REJECTED, FAILED = "received", "applied", "rejected", "failed"
FINAL = (APPLIED, REJECTED)


@dataclass(frozen=True)
class Stored:
    """An inbox entry as found."""

    key: str
    sha256: str
    status: str
    ack: bytes | None


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class Inbox:
    """Inbox operations over the store's database."""

    def __init__(self, store: ResourceStore):
        self._collection = store.db[INBOX]

    async def receive(self, key: str, raw: bytes, sender: str, event: str) -> Stored | None:
        """Keep a new message; None when it is new, else what the inbox already holds for the key."""
        return await self._keep({"_id": key, "sha256": digest(raw), "raw": Binary(raw), "received": datetime.now(timezone.utc),
                                 "sender": sender, "event": event, "status": RECEIVED})

    async def keep_rejected(self, key: str, raw: bytes, sender: str, ack: bytes, error: dict[str, str]) -> Stored | None:
        """Keep a message that was never applicable (unreadable, refused, a key clash) with its
        ACK. A record already under the key is never overwritten: it is returned instead (None:
        this message's record is new)."""
        return await self._keep({"_id": key, "sha256": digest(raw), "raw": Binary(raw), "received": datetime.now(timezone.utc),
                                 "sender": sender, "status": REJECTED, "ack": Binary(ack), "error": error})

    async def _keep(self, document: dict[str, Any]) -> Stored | None:
        """Insert a new record; what is already under its key instead, untouched."""
        key = document["_id"]
        try:
            await self._collection.insert_one(document)
            return None
        except DuplicateKeyError:
            found = await self._collection.find_one({"_id": key}, {"sha256": 1, "status": 1, "ack": 1})
            if found is None:  # deleted meanwhile: take it again
                return await self._keep(document)
            ack = found.get("ack")
            return Stored(key, found["sha256"], found["status"], bytes(ack) if ack is not None else None)

    async def settle(self, key: str, status: str, ack: bytes, error: dict[str, str] | None = None) -> None:
        """Record the outcome of a message that was not applied (rejected or failed)."""
        update: dict[str, Any] = {"status": status, "ack": Binary(ack), "settled": datetime.now(timezone.utc)}
        if error:
            update["error"] = error
        await self._collection.update_one({"_id": key, "status": {"$ne": APPLIED}}, {"$set": update})

    @staticmethod
    def applied(key: str, ack: bytes, bundle_size: int) -> Bookkeeping:
        """The status change that commits with the notebook writes (only from received/failed)."""
        return Bookkeeping(
            INBOX,
            {"_id": key, "status": {"$in": [RECEIVED, FAILED]}},
            {"$set": {"status": APPLIED, "ack": Binary(ack), "settled": datetime.now(timezone.utc), "entries": bundle_size},
             "$unset": {"error": ""}},
        )

    async def reopen(self, key: str) -> None:
        """Make a failed or rejected message applicable again (replay after a mapping fix)."""
        await self._collection.update_one({"_id": key, "status": {"$in": [FAILED, REJECTED]}},
                                          {"$set": {"status": FAILED}, "$unset": {"ack": ""}})

    async def get(self, key: str) -> dict[str, Any] | None:
        return await self._collection.find_one({"_id": key})

    async def listing(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        query = {"status": status} if status else {}
        cursor = self._collection.find(query, {"raw": 0}).sort("received", -1).limit(limit)
        return [doc async for doc in cursor]

    async def raw_of(self, status: str) -> list[tuple[str, bytes]]:
        cursor = self._collection.find({"status": status}, {"raw": 1}).sort("received", 1)
        return [(doc["_id"], bytes(doc["raw"])) async for doc in cursor]


__all__ = ["APPLIED", "FAILED", "FINAL", "Inbox", "RECEIVED", "REJECTED", "Stored", "digest"]
