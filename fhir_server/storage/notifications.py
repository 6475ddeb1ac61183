"""What the subscription dispatcher keeps: a lease (one dispatcher at a time over a database,
whatever the number of API nodes), each subscription's state (events numbered so far, the last
delivered, failed attempts and when to try again), and its numbered events.

Events are numbered in one transaction with taking them out of the history's pending index:
an event is numbered once for each subscription that wants it, numbers of a subscription are
contiguous, and a dispatcher that dies halfway leaves the events pending for the next one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure

from fhir_server.storage.store import HISTORY, ResourceStore, is_transient, back_off

STATES = "subscription_state"
EVENTS = "subscription_events"
LEASES = "leases"
BINDINGS = "subscription_bindings"  # one-time websocket binding tokens
ATTEMPTS = 20


class LeaseLost(Exception):
    """Another dispatcher holds the lease now: this one must stop."""


@dataclass(frozen=True)
class State:
    """Where a subscription's deliveries stand."""

    key: str
    events: int = 0  # events numbered since the subscription started
    delivered: int = 0  # the highest number the endpoint acknowledged
    attempts: int = 0  # failed sends in a row
    next_at: datetime | None = None  # no send before
    since: datetime | None = None  # events committed before are not for it
    last_sent: datetime | None = None  # for heartbeats
    error: str | None = None  # the last failure, for $status

    @classmethod
    def of(cls, doc: dict[str, Any] | None, key: str) -> "State":
        doc = doc or {}
        return cls(key, doc.get("events", 0), doc.get("delivered", 0), doc.get("attempts", 0), doc.get("next_at"), doc.get("since"),
                   doc.get("last_sent"), doc.get("error"))


@dataclass(frozen=True)
class Event:
    """One numbered event of a subscription: the version that triggered it."""

    number: int
    type: str
    id: str
    version: int
    method: str
    updated: datetime


class NotificationStore:
    def __init__(self, store: ResourceStore):
        self._client = store.client
        self._db = store.db
        self._history = store.db[HISTORY]
        self._states = store.db[STATES]
        self._events = store.db[EVENTS]
        self._leases = store.db[LEASES]
        self._bindings = store.db[BINDINGS]

    async def ensure_indexes(self) -> None:
        await self._events.create_index([("subscription", ASCENDING), ("number", ASCENDING)], unique=True, name="by_number")

    # -- the lease ------------------------------------------------------------------------------

    async def take_lease(self, name: str, owner: str, now: datetime, until: datetime) -> bool:
        """Take or renew the lease; False while another owner holds it unexpired."""
        try:
            taken = await self._leases.find_one_and_update(
                {"_id": name, "$or": [{"owner": owner}, {"until": {"$lt": now}}]},
                {"$set": {"owner": owner, "until": until}}, upsert=True, return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:
            return False  # it exists, held by another: the upsert tried to make a second one
        return taken is not None and taken.get("owner") == owner

    async def release_lease(self, name: str, owner: str) -> None:
        await self._leases.delete_one({"_id": name, "owner": owner})

    # -- numbering ------------------------------------------------------------------------------

    async def number(self, taken: list[str], wanted: list[tuple[str, dict[str, Any]]]) -> dict[str, int]:
        """Take the history entries `taken` out of the pending events and number, in order, each
        (subscription key, event fields) of `wanted`; one transaction. The subscriptions' event
        counts after it. LeaseLost when another dispatcher took some of them first."""
        for attempt in range(ATTEMPTS):
            try:
                return await self._number_once(taken, wanted)
            except OperationFailure as error:
                if not is_transient(error):
                    raise
                await back_off(attempt)
        raise LeaseLost("the events could not be numbered: the database kept refusing")

    async def _number_once(self, taken: list[str], wanted: list[tuple[str, dict[str, Any]]]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for key, _ in wanted:
            counts[key] = counts.get(key, 0) + 1
        async with self._client.start_session() as session:
            async with await session.start_transaction():
                result = await self._history.update_many({"_id": {"$in": taken}, "pending": True}, {"$unset": {"pending": ""}},
                                                         session=session)
                if result.modified_count != len(taken):
                    raise LeaseLost("another dispatcher numbered these events")
                totals: dict[str, int] = {}
                for key, count in counts.items():
                    state = await self._states.find_one_and_update({"_id": key}, {"$inc": {"events": count}}, upsert=True,
                                                                   return_document=ReturnDocument.AFTER, session=session)
                    totals[key] = (state or {}).get("events", count)
                next_number = {key: totals[key] - counts[key] + 1 for key in counts}
                documents = []
                for key, fields in wanted:
                    number = next_number[key]
                    next_number[key] += 1
                    documents.append({"_id": f"{key}#{number}", "subscription": key, "number": number, **fields})
                if documents:
                    await self._events.insert_many(documents, session=session)
        return totals

    async def skip(self, taken: list[str]) -> None:
        """History entries no subscription wants: out of the pending index."""
        await self._history.update_many({"_id": {"$in": taken}, "pending": True}, {"$unset": {"pending": ""}})

    # -- websocket binding tokens --------------------------------------------------------------

    async def issue_binding(self, token_hash: str, subscription: str, expires: datetime, since: int | None) -> None:
        await self._bindings.insert_one({"_id": token_hash, "subscription": subscription, "expires": expires, "since": since})

    async def take_binding(self, token_hash: str, now: datetime) -> tuple[str, int | None] | None:
        """The subscription a token binds (and the event number to replay from); once only."""
        found = await self._bindings.find_one_and_delete({"_id": token_hash})
        if found is None or found["expires"] <= now:
            return None
        return found["subscription"], found.get("since")

    # -- states and events ----------------------------------------------------------------------

    async def state(self, key: str) -> State:
        return State.of(await self._states.find_one({"_id": key}), key)

    async def states(self, keys: list[str]) -> dict[str, State]:
        """Several subscriptions' states in one query (those with none get an empty one)."""
        found = {doc["_id"]: doc async for doc in self._states.find({"_id": {"$in": keys}})} if keys else {}
        return {key: State.of(found.get(key), key) for key in keys}

    async def start(self, key: str, since: datetime) -> None:
        """A subscription's first handshake: events from `since` on are its own."""
        await self._states.update_one({"_id": key}, {"$setOnInsert": {"since": since, "events": 0, "delivered": 0}}, upsert=True)

    async def events(self, key: str, after: int, until: int | None, limit: int) -> list[Event]:
        """Its numbered events from after+1, up to `until` (None: the latest), in order."""
        bound: dict[str, int] = {"$gt": after}
        if until is not None:
            bound["$lte"] = until
        cursor = self._events.find({"subscription": key, "number": bound}).sort("number", ASCENDING).limit(limit)
        return [Event(d["number"], d["type"], d["id"], d["version"], d["method"], d["updated"]) async for d in cursor]

    async def delivered(self, key: str, number: int, at: datetime) -> None:
        """The endpoint acknowledged every event up to `number`."""
        await self._states.update_one({"_id": key}, {"$max": {"delivered": number}, "$set": {"attempts": 0, "last_sent": at},
                                                     "$unset": {"next_at": "", "error": ""}}, upsert=True)

    async def sent(self, key: str, at: datetime) -> None:
        """A handshake or heartbeat went through."""
        await self._states.update_one({"_id": key}, {"$set": {"attempts": 0, "last_sent": at}, "$unset": {"next_at": "", "error": ""}},
                                      upsert=True)

    async def failed(self, key: str, attempts: int, next_at: datetime, error: str) -> None:
        await self._states.update_one({"_id": key}, {"$set": {"attempts": attempts, "next_at": next_at, "error": error}}, upsert=True)


__all__ = ["Event", "LeaseLost", "NotificationStore", "State"]
