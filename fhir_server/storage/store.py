"""MongoDB access for resources: current versions, history, and the events they carry.

Collections (one database per deployment):

- `resources`: the current version of each resource, `_id` = "Type/id";
- `history`: every version ever written, `_id` = "Type/id/version" (so a version can never
  be written twice), tombstones included. A new entry carries `pending: true` until the
  event dispatcher has handed it on: history is the transactional outbox (see
  docs/architecture.md, "Outbox in history").

The resource JSON is stored as the exact bytes served (`raw`), so reads never rebuild it.
A write is one transaction holding one `bulkWrite` (one round trip): the current version,
guarded by the version the writer read (optimistic locking in the database), and the
history entry.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from collections.abc import Mapping
from typing import Any

from bson import Binary
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, InsertOne, ReplaceOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ClientBulkWriteException, DocumentTooLarge, OperationFailure

RESOURCES = "resources"
HISTORY = "history"
GUARDS = "guards"  # one document per conditional-create criteria: racing creators meet here
INBOX = "inbox"  # HL7 v2 messages as received, with their outcome (the bridge's bookkeeping)
PRIVATE = "private"  # what a write keeps but never serves (a subscription's signing secret and owner)

# collections other stores in storage/ keep on this database, created up front as well
EXTRA_COLLECTIONS = ("subscription_state", "subscription_events", "leases", "subscription_bindings", "export_jobs", "export_slots")

# Every index costs every write (measured: bench/RESULTS.md); each one here serves a query.
INDEXES: dict[str, list[tuple[list[tuple[str, int]], dict[str, Any]]]] = {
    RESOURCES: [  # search: one multikey index per kind of entry (fhir_server/search/index.py)
        ([("type", ASCENDING), ("ix.rf", ASCENDING), ("so.sent", ASCENDING), ("_id", ASCENDING)], {"name": "search_rf"}),
        ([("type", ASCENDING), ("ix.tk", ASCENDING)], {"name": "search_tk"}),
        ([("type", ASCENDING), ("ix.sp", ASCENDING)], {"name": "search_sp"}),
        ([("type", ASCENDING), ("ix.sx", ASCENDING)], {"name": "search_sx"}),
        ([("type", ASCENDING), ("ix.ur", ASCENDING)], {"name": "search_ur"}),
        ([("type", ASCENDING), ("ix.dt.p", ASCENDING), ("ix.dt.lo", ASCENDING)], {"name": "search_dt"}),
        ([("type", ASCENDING), ("ix.nm.p", ASCENDING), ("ix.nm.lo", ASCENDING)], {"name": "search_nm"}),
        ([("type", ASCENDING), ("ix.qt.p", ASCENDING), ("ix.qt.v", ASCENDING)], {"name": "search_qt"}),
        ([("type", ASCENDING), ("updated", ASCENDING)], {"name": "search_updated"}),
    ],
    HISTORY: [
        ([("type", ASCENDING), ("updated", ASCENDING), ("_id", ASCENDING)], {}),  # type history
        ([("updated", ASCENDING), ("_id", ASCENDING)], {}),  # system history
        ([("updated", ASCENDING)], {"name": "pending_events", "partialFilterExpression": {"pending": True}}),
    ],
}

WRITE_CONFLICT = 112
DUPLICATE_KEY = 11000
TOO_LARGE = frozenset({10334, 17419})  # BSONObjectTooLarge, and its form when a document grows too large
TRANSIENT_ATTEMPTS = 40
WRITE_CHUNK = 100  # operations per bulk write inside one transaction (see _commit_once)
MAX_BACKOFF_S = 0.05

CURRENT_FIELDS = {"_id": 0, "version": 1, "updated": 1, "deleted": 1}
READ_FIELDS = {"_id": 0, "type": 1, "id": 1, "version": 1, "updated": 1, "deleted": 1, "raw": 1}


ACCESS_FIELDS = {"ix.rf": 1, "ix.tk": 1}
SECURITY_LABEL = "_security\x1f"
ACCESS_TOKENS = (SECURITY_LABEL, "_tag\x1f")  # labels (masking) and tags (the owner of an owned type)


def _error_field(error: Any, name: str) -> Any:
    """A field of one write error of a client bulk write (the driver hands them over as mappings)."""
    return error.get(name) if isinstance(error, Mapping) else getattr(error, name, None)


def access_entries(doc: dict[str, Any]) -> list[str]:
    """What an access decision reads of a stored resource: its reference index entries (the
    patients it is filed under, its author), its security label entries (masking) and its tag
    entries (whose an owned resource is). The kinds of keys never share a prefix, so one list
    holds them all."""
    index = doc.get("ix") or {}
    return list(index.get("rf", [])) + [t for t in index.get("tk", []) if t.startswith(ACCESS_TOKENS)]


class VersionConflict(Exception):
    """Another writer committed a version of this resource first."""


class GuardTaken(Exception):
    """Another writer committed a conditional create with the same criteria first."""


class TooLargeToStore(Exception):
    """A version, once indexed, is larger than the database takes in one document (16 MB)."""


class StorageBusy(Exception):
    """Transient transaction failures went on longer than the retries allow."""


class ConditionFailed(Exception):
    """A bookkeeping update committed with the writes found its document not in the state expected."""


@dataclass(frozen=True, slots=True)
class Bookkeeping:
    """An update of another collection that must commit with the writes, or not at all
    (the bridge marks its inbox message applied in the transaction that applies it)."""

    collection: str
    filter: dict[str, Any]
    update: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Version:
    """One stored version of a resource (the JSON bytes are absent for tombstones)."""

    type: str
    id: str
    version: int
    updated: datetime
    deleted: bool
    raw: bytes | None = None
    method: str | None = None

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> "Version":
        raw = doc.get("raw")
        return cls(
            type=doc["type"],
            id=doc["id"],
            version=doc["version"],
            updated=doc["updated"],
            deleted=doc.get("deleted", False),
            raw=bytes(raw) if raw is not None else None,
            method=doc.get("method"),
        )


@dataclass(frozen=True, slots=True)
class Current:
    """What a writer needs to know about the current version: its number and time."""

    version: int
    updated: datetime
    deleted: bool


@dataclass(frozen=True, slots=True)
class Write:
    """A new version to commit, with the version it replaces (None: the resource is new)."""

    type: str
    id: str
    version: int
    updated: datetime
    method: str
    raw: bytes | None
    replaces: int | None
    index: dict[str, Any] | None = None  # search entries and sort keys: {"ix": ..., "so": ...}
    guard: str | None = None  # conditional create: the criteria key only one writer may take
    # fields kept with the resource, never served (None: leave what is kept as it is); merged
    # into what is kept, in the same transaction
    private: dict[str, Any] | None = None
    event: bool = True  # False: its history entry is no pending event (nothing is notified of it: the audit trail)

    @property
    def deleted(self) -> bool:
        return self.raw is None


class ResourceStore:
    """Reads and writes resource versions; knows nothing of HTTP or FHIR validation."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str):
        self.client = client
        self.db: AsyncDatabase[dict[str, Any]] = client[database]
        self._resources = self.db[RESOURCES]
        self._history = self.db[HISTORY]

    @property
    def current_versions(self) -> Any:
        """The collection search runs on (current versions only)."""
        return self._resources

    async def ensure_indexes(self) -> None:
        """Create the indexes every query relies on (idempotent; run at start-up)."""
        existing = set(await self.db.list_collection_names())
        for collection in (RESOURCES, HISTORY, GUARDS, INBOX, PRIVATE, *EXTRA_COLLECTIONS):
            if collection not in existing:  # created up front: implicit creation conflicts in transactions
                await self.db.create_collection(collection, check_exists=False)
        for collection, indexes in INDEXES.items():
            for keys, options in indexes:
                await self.db[collection].create_index(keys, **options)

    async def current(self, resource_type: str, resource_id: str) -> Current | None:
        doc = await self._resources.find_one({"_id": f"{resource_type}/{resource_id}"}, CURRENT_FIELDS)
        if doc is None:
            return None
        return Current(doc["version"], doc["updated"], doc.get("deleted", False))

    async def read(self, resource_type: str, resource_id: str) -> Version | None:
        """The current version (type and id come from the caller: fewer fields to decode)."""
        version, _ = await self._read(resource_type, resource_id, CURRENT_FIELDS | {"raw": 1})
        return version

    async def read_with_references(self, resource_type: str, resource_id: str) -> tuple[Version | None, list[str]]:
        """The current version and its access entries (see `access_entries`), in one query: what
        an access check needs to tell whether the token reaches the resource."""
        return await self._read(resource_type, resource_id, CURRENT_FIELDS | {"raw": 1, **ACCESS_FIELDS})

    async def _read(self, resource_type: str, resource_id: str, fields: dict[str, int]) -> tuple[Version | None, list[str]]:
        doc = await self._resources.find_one({"_id": f"{resource_type}/{resource_id}"}, fields)
        if doc is None:
            return None, []
        raw = doc.get("raw")
        version = Version(resource_type, resource_id, doc["version"], doc["updated"], doc.get("deleted", False),
                          bytes(raw) if raw is not None else None)
        return version, access_entries(doc)

    async def references(self, resource_type: str, resource_id: str) -> list[str] | None:
        """The access entries of the current version (None: no such resource)."""
        doc = await self._resources.find_one({"_id": f"{resource_type}/{resource_id}"}, {"_id": 1, **ACCESS_FIELDS})
        return None if doc is None else access_entries(doc)

    async def read_many(self, keys: list[str]) -> dict[str, Version]:
        """Current versions by "Type/id" (one query; absent keys are left out)."""
        if not keys:
            return {}
        cursor = self._resources.find({"_id": {"$in": keys}}, READ_FIELDS | {"_id": 1})
        return {doc["_id"]: Version.from_document(doc) async for doc in cursor}

    async def read_version(self, resource_type: str, resource_id: str, version: int) -> Version | None:
        doc = await self._history.find_one(
            {"_id": f"{resource_type}/{resource_id}/{version}"}, READ_FIELDS
        )
        return Version.from_document(doc) if doc else None

    async def commit(self, *writes: Write, also: tuple[Bookkeeping, ...] = ()) -> None:
        """Write the current versions and their history entries (the pending events) atomically.

        Several writes (a transaction Bundle) go in the same database transaction: all land or
        none does. Raises VersionConflict when a version a write replaces is no longer current
        (or a new resource already exists), GuardTaken when a conditional create's criteria were
        taken first, and StorageBusy when transient failures outlast the retries. A transient
        failure (WriteConflict: SecantusDB raises it even between transactions touching
        different documents) retries the *same* writes, so it can never pass for a version
        conflict and give a false 412.
        """
        if not writes and not also:
            return  # (bookkeeping alone still commits: a message whose writes all changed nothing is applied too)
        operations, checks = self._operations(writes)
        for item in also:
            operations.append(UpdateOne(item.filter, item.update, namespace=self._namespace(item.collection)))
            checks.append(("also", item.collection))
        maybe_committed = False
        for attempt in range(TRANSIENT_ATTEMPTS):
            try:
                await self._commit_once(operations, checks)
                return
            except (VersionConflict, GuardTaken):
                if maybe_committed and await self._is_committed(writes[0]):
                    return  # our earlier commit did land; its answer was lost
                raise
            except OperationFailure as error:
                if not is_transient(error):
                    raise
                maybe_committed = maybe_committed or error.has_error_label("UnknownTransactionCommitResult")
                await back_off(attempt)
        raise StorageBusy(f"{writes[0].type}/{writes[0].id}" if writes else also[0].collection)

    def _operations(self, writes: tuple[Write, ...]) -> tuple[list[Any], list[tuple[str, str]]]:
        """The bulk operations, and for each one what a failure of it means: (kind, key)."""
        resources, history, guards, private = (self._namespace(c) for c in (RESOURCES, HISTORY, GUARDS, PRIVATE))
        operations: list[Any] = []
        checks: list[tuple[str, str]] = []
        for write in writes:
            current, entry = _documents(write)
            key = current["_id"]
            if write.guard:
                operations.append(InsertOne({"_id": write.guard, "resource": key, "at": write.updated}, namespace=guards))
                checks.append(("guard", write.guard))
            if write.replaces is None:
                operations.append(InsertOne(current, namespace=resources))
            else:
                operations.append(ReplaceOne({"_id": key, "version": write.replaces}, current, namespace=resources))
            checks.append(("replace" if write.replaces is not None else "insert", key))
            operations.append(InsertOne(entry, namespace=history))
            checks.append(("history", key))
            if write.private is not None:
                operations.append(UpdateOne({"_id": key}, {"$set": write.private}, upsert=True, namespace=private))
                checks.append(("private", key))
        return operations, checks

    async def _commit_once(self, operations: list[Any], checks: list[tuple[str, str]]) -> None:
        """One transaction; its operations sent WRITE_CHUNK at a time: the driver encodes a bulk
        write in one go, and a large Bundle's (1,000 resources: ~60 ms) held every other request."""
        async with self.client.start_session() as session:
            async with await session.start_transaction():
                for start in range(0, len(operations), WRITE_CHUNK):
                    end = start + WRITE_CHUNK
                    await self._bulk_write(operations[start:end], checks[start:end], session)

    async def _bulk_write(self, operations: list[Any], checks: list[tuple[str, str]], session: Any) -> None:
        verbose = any(kind in ("replace", "also") for kind, _ in checks)
        try:
            result = await self.client.bulk_write(operations, session=session, ordered=True, verbose_results=verbose)
        except ClientBulkWriteException as error:
            if any(_error_field(e, "code") in TOO_LARGE for e in error.write_errors or []):
                raise TooLargeToStore(checks[0][1]) from None
            duplicates = [e for e in error.write_errors or [] if _error_field(e, "code") == DUPLICATE_KEY]
            if duplicates:
                kind, key = checks[_error_field(duplicates[0], "idx") or 0]
                raise GuardTaken(key) if kind == "guard" else VersionConflict(key) from error
            raise
        except DocumentTooLarge:  # the driver's own check, before sending
            raise TooLargeToStore(checks[0][1]) from None
        if verbose:
            for index, (kind, key) in enumerate(checks):
                if kind == "replace" and result.update_results[index].matched_count != 1:
                    raise VersionConflict(key)
                if kind == "also" and result.update_results[index].matched_count != 1:
                    raise ConditionFailed(key)

    def _namespace(self, collection: str) -> str:
        return f"{self.db.name}.{collection}"

    async def private(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """What writes of this resource kept without serving it (empty: nothing)."""
        return await self.db[PRIVATE].find_one({"_id": f"{resource_type}/{resource_id}"}, {"_id": 0}) or {}

    async def release_guard(self, guard: str) -> None:
        """Drop a guard whose resource no longer matches its criteria (deleted or changed)."""
        await self.db[GUARDS].delete_one({"_id": guard})

    async def _is_committed(self, write: Write) -> bool:
        key = f"{write.type}/{write.id}/{write.version}"
        return await self._history.count_documents({"_id": key, "updated": write.updated}) == 1

    async def history(
        self,
        scope: tuple[str | None, str | None],
        since: datetime | None,
        limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[Version]:
        """Versions of a type, an instance or everything (`scope`: type, id), updated at or after
        `since`, newest first, strictly after the cursor position."""
        query = _history_query(scope, since)
        if after is not None:
            updated, key = after
            query = {
                **query,
                "$or": [{"updated": {"$lt": updated}}, {"updated": updated, "_id": {"$lt": key}}],
            }
        cursor = self._history.find(query, READ_FIELDS | {"_id": 1, "method": 1})
        cursor = cursor.sort([("updated", DESCENDING), ("_id", DESCENDING)]).limit(limit)
        return [Version.from_document(doc) async for doc in cursor]

    async def count_history(self, scope: tuple[str | None, str | None], since: datetime | None) -> int:
        return await self._history.count_documents(_history_query(scope, since))

    async def pending_events(self, limit: int = 100) -> list[Version]:
        """Versions whose event has not been handed on yet, oldest first."""
        cursor = self._history.find({"pending": True}, READ_FIELDS | {"_id": 1, "method": 1})
        cursor = cursor.sort([("updated", ASCENDING)]).hint("pending_events").limit(limit)
        return [Version.from_document(doc) async for doc in cursor]

    async def mark_dispatched(self, versions: list[Version]) -> None:
        """The dispatcher has handed these events on: take them out of the pending index."""
        keys = [history_key(v) for v in versions]
        await self._history.update_many({"_id": {"$in": keys}}, {"$unset": {"pending": ""}})


def is_transient(error: OperationFailure) -> bool:
    """A failure that retrying the same transaction can cure (labels, or a bulk WriteConflict)."""
    if error.code == WRITE_CONFLICT or any(
        error.has_error_label(label) for label in ("TransientTransactionError", "UnknownTransactionCommitResult")
    ):
        return True
    if isinstance(error, ClientBulkWriteException):
        inner = error.error
        if isinstance(inner, OperationFailure) and is_transient(inner):
            return True
        return any(_error_field(e, "code") == WRITE_CONFLICT for e in error.write_errors or [])
    return False


async def back_off(attempt: int) -> None:
    """Jittered exponential pause after losing a race, so contenders spread out."""
    await asyncio.sleep(random.uniform(0, min(MAX_BACKOFF_S, 0.002 * 2**attempt)))


def _documents(write: Write) -> tuple[dict[str, Any], dict[str, Any]]:
    """The current-version document and its history entry (pending: the event to hand on)."""
    key = f"{write.type}/{write.id}"
    current: dict[str, Any] = {
        "_id": key,
        "type": write.type,
        "id": write.id,
        "version": write.version,
        "updated": write.updated,
        "deleted": write.deleted,
    }
    if write.raw is not None:
        current["raw"] = Binary(write.raw)
    entry = {**current, "_id": f"{key}/{write.version}", "method": write.method}
    if write.event:
        entry["pending"] = True
    if write.index:
        current.update(write.index)  # only the current version is searchable
    return current, entry


def _history_query(scope: tuple[str | None, str | None], since: datetime | None) -> dict[str, Any]:
    resource_type, resource_id = scope
    query: dict[str, Any] = {}
    if resource_id is not None:
        # the versions of one resource are the history keys "Type/id/<n>": an _id range scan
        prefix = f"{resource_type}/{resource_id}/"
        query["_id"] = {"$gt": prefix, "$lt": prefix[:-1] + chr(ord("/") + 1)}
    elif resource_type is not None:
        query["type"] = resource_type
    if since is not None:
        query["updated"] = at_or_after(since)
    return query


def at_or_after(moment: datetime) -> dict[str, datetime]:
    """`updated >= moment` written with a strict bound.

    SecantusDB 0.7.0b3 drops the boundary value of an inclusive bound at the end of an index
    scan (`$gte` on a descending key, `$lte` on an ascending one). Stored times are whole
    milliseconds, so `>= t` is exactly `> ceil_ms(t) - 1 ms`, which every engine answers right.
    """
    whole_ms = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    if whole_ms < moment:
        whole_ms += timedelta(milliseconds=1)
    return {"$gt": whole_ms - timedelta(milliseconds=1)}


def history_key(version: Version) -> str:
    """The history `_id` of a version: the tie-breaker of history paging."""
    return f"{version.type}/{version.id}/{version.version}"


__all__ = ["Bookkeeping", "ConditionFailed", "Current", "GuardTaken", "INBOX", "ResourceStore", "StorageBusy", "back_off", "Version", "VersionConflict", "Write", "at_or_after", "history_key", "is_transient"]
