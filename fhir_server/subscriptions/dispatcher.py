"""The dispatcher: drains the history's pending events into the subscriptions that want them,
then sends each subscription's events, in number order, to its endpoint.

- One dispatcher at a time over a database: a lease (renewed every turn) decides which API
  node dispatches; another takes over when it lapses (a node killed, a stall). A node that lost
  the lease stops sending.
- Fan-out: pending events, oldest first, are matched against the subscriptions (topic trigger
  and filter criteria, or R4 criteria, evaluated in memory on the version's search index) and
  numbered per subscription in the transaction that takes them out of the pending index.
- Delivery: per subscription one sender at a time, from the last acknowledged number on; a
  failure is tried again after an exponential, jittered back-off up to a cap; after the last
  attempt the subscription goes `error` and its events stay (for `$events`, and for the
  deliveries a new `requested` status restarts). At least once: a send whose answer is lost
  is sent again, with the same event numbers.
- At each send the subscriber's access is decided again from its token claims (a member who
  left the care circle receives nothing more about that patient); an event it no longer
  reaches is left out of the notification.
- Every send and failure goes to the audit trail; logs name subscriptions, never patients.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

import httpx
import orjson

from fhir_server.engine import writes
from fhir_server.engine.interactions import Engine, utc_now
from fhir_server.outcome import FhirError
from fhir_server.security.audit import AuditTrail, notification_event
from fhir_server.security.policy import SYSTEM, Access, acting_as
from fhir_server.security.tokens import Claims
from fhir_server.storage.matching import matches
from fhir_server.storage.reach import NOTHING
from fhir_server.storage.notifications import Event, LeaseLost, NotificationStore, State
from fhir_server.storage.store import Version, history_key
from fhir_server.subscriptions.endpoints import EndpointPolicy, EndpointRefused, origin
from fhir_server.subscriptions.notification import encode, notification_bundle
from fhir_server.subscriptions.signing import signature
from fhir_server.subscriptions.rules import owner_claims
from fhir_server.subscriptions.subscription import Subscriber, ended, read_subscription
from fhir_server.subscriptions.vocabulary import SIGNATURE_HEADER

log = logging.getLogger("calipso.subscriptions")

LEASE = "subscription-dispatcher"
FAN_OUT_BATCH = 500
NUMBERED = ("requested", "active", "error")  # statuses whose subscriptions get their events numbered


@dataclass(frozen=True)
class DispatchSettings:
    base_url: str  # the FHIR base named in notifications
    lease_seconds: float = 10.0
    idle_seconds: float = 0.5  # between two turns when nothing wakes the dispatcher
    gather_seconds: float = 0.05  # after a wake, the commits that follow within it join the same turn
    refresh_seconds: float = 2.0  # subscriptions are read again at least this often (another node may have written one)
    first_retry_seconds: float = 1.0
    max_retry_seconds: float = 600.0
    max_attempts: int = 16  # about 75 minutes of failures before `error`, with the defaults
    timeout_seconds: float = 5.0


class Dispatcher:
    def __init__(self, engine: Engine, notes: NotificationStore, access_of: Callable[[Claims | None], Awaitable[Access]],
                 endpoints: EndpointPolicy, settings: DispatchSettings, audit: AuditTrail | None = None,
                 clock: Callable[[], datetime] = utc_now, transport: httpx.AsyncBaseTransport | None = None):
        self._engine = engine
        self._notes = notes
        self._access_of = access_of
        self._endpoints = endpoints
        self.settings = settings
        self._audit = audit
        self._clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._subscribers: dict[str, Subscriber] | None = None
        self._loaded_at: datetime | None = None
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lease_until: datetime | None = None  # when the lease this node holds lapses
        self._http = httpx.AsyncClient(timeout=settings.timeout_seconds, follow_redirects=False, transport=transport)
        engine.on_commit.append(self.notice)

    # -- running -------------------------------------------------------------------------------

    def notice(self, versions: list[Version]) -> None:
        """On-commit hook: new events to dispatch (and subscriptions to re-read)."""
        if any(v.type == "Subscription" for v in versions):
            self._subscribers = None
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="subscription-dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)
        await self._stop_senders()
        try:
            await self._notes.release_lease(LEASE, self.owner)
        except Exception:  # noqa: BLE001 - the database may be gone at shutdown; the lease lapses
            pass
        await self._http.aclose()

    async def _run(self) -> None:
        while True:
            try:
                await self.turn()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the dispatcher outlives any one failure
                log.error("dispatcher turn failed type=%s", type(error).__name__)
            try:
                async with asyncio.timeout(self.settings.idle_seconds):
                    await self._wake.wait()
                await asyncio.sleep(self.settings.gather_seconds)  # a burst of commits makes one turn
            except TimeoutError:
                pass
            self._wake.clear()

    async def turn(self) -> bool:
        """One pass: hold the lease, number the pending events, start the senders that have work.
        False when another dispatcher holds the lease."""
        if not await self._hold_lease():
            await self._stop_senders()
            return False
        with acting_as(SYSTEM):
            subscribers = await self._load_subscribers()
            if not subscribers:
                return True  # nobody listens: events stay pending (a first subscription starts after them)
            states = await self._notes.states(list(subscribers))
            try:
                while await self._fan_out(subscribers, states):
                    pass
            except LeaseLost:
                self._lease_until = None
                await self._stop_senders()
                return False
            now = self._clock()
            for subscriber in subscribers.values():
                running, state = self._senders.get(subscriber.key), states[subscriber.key]
                if (running is None or running.done()) and _has_work(subscriber, state, now):
                    self._senders[subscriber.key] = asyncio.create_task(self._serve(subscriber, state), name=f"send {subscriber.key}")
        return True

    async def _hold_lease(self) -> bool:
        """Take the lease, or renew it once half of it has run (not on every turn: a turn follows
        every burst of commits)."""
        now = self._clock()
        half = timedelta(seconds=self.settings.lease_seconds / 2)
        if self._lease_until is not None and now < self._lease_until - half:
            return True
        until = now + timedelta(seconds=self.settings.lease_seconds)
        held = await self._notes.take_lease(LEASE, self.owner, now, until)
        self._lease_until = until if held else None
        return held

    async def idle(self) -> None:
        """Until the senders started so far are done (tests, shutdown)."""
        await asyncio.gather(*self._senders.values(), return_exceptions=True)

    async def _stop_senders(self) -> None:
        for task in self._senders.values():
            task.cancel()
        await asyncio.gather(*self._senders.values(), return_exceptions=True)
        self._senders.clear()

    # -- subscriptions -------------------------------------------------------------------------

    async def _load_subscribers(self) -> dict[str, Subscriber]:
        now = self._clock()
        if self._loaded_at is None or (now - self._loaded_at).total_seconds() >= self.settings.refresh_seconds:
            self._subscribers = None
        if self._subscribers is None:
            self._loaded_at = now
            found: dict[str, Subscriber] = {}
            result = await self._engine.searcher.search("Subscription", [("status", ",".join(NUMBERED)), ("_count", "1000")], True,
                                                        self.settings.base_url)
            versions = await self._engine.store.read_many([f"Subscription/{doc['id']}" for doc in result.matches])
            for version in versions.values():
                if version.raw is None:
                    continue
                try:
                    subscriber = read_subscription(orjson.loads(version.raw), self._engine.spec.is_resource_type)
                except FhirError:
                    continue  # written before a rule changed: it gets no events
                found[subscriber.key] = subscriber
            self._subscribers = found
        return self._subscribers

    # -- fan-out -------------------------------------------------------------------------------

    async def _fan_out(self, subscribers: dict[str, Subscriber], states: dict[str, State]) -> bool:
        """Number one batch of pending events (the states' event counts follow); True when more
        may be waiting."""
        events = await self._engine.store.pending_events(FAN_OUT_BATCH)
        if not events:
            return False
        taken = [history_key(v) for v in events]
        wanted: list[tuple[str, dict[str, Any]]] = []
        compiled: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]] = {}
        for event in events:
            documents: dict[int, dict[str, Any] | None] = {}
            for subscriber in subscribers.values():
                since = states[subscriber.key].since
                if since is None or event.updated <= since or not subscriber.wants(event.type):
                    continue
                if await self._wants(subscriber, event, documents, compiled):
                    wanted.append((subscriber.key, {"type": event.type, "id": event.id, "version": event.version,
                                                    "method": event.method or "PUT", "updated": event.updated}))
        if wanted:
            totals = await self._notes.number(taken, wanted)
            for key, total in totals.items():
                states[key] = replace(states[key], events=total)
        else:
            await self._notes.skip(taken)
        return len(events) == FAN_OUT_BATCH

    async def _wants(self, subscriber: Subscriber, event: Version, documents: dict[int, dict[str, Any] | None],
                     compiled: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]]) -> bool:
        current = await self._document(event, event.version, documents) if not event.deleted else None
        previous = await self._document(event, event.version - 1, documents) if event.version > 1 else None
        if subscriber.topic is not None:
            trigger = subscriber.topic.trigger_for(event.type)
            if trigger is None or (event.method or "PUT") not in trigger.methods:
                return False
            current_ok = trigger.result_for_delete if current is None else (
                trigger.current is None or await self._meets(event.type, trigger.current, current, compiled))
            previous_ok = trigger.result_for_create if previous is None else (
                trigger.previous is None or await self._meets(event.type, trigger.previous, previous, compiled))
            if trigger.previous is not None and trigger.current is not None:
                passed = (current_ok and previous_ok) if trigger.require_both else (current_ok or previous_ok)
            else:
                passed = current_ok and previous_ok
            if not passed:
                return False
        elif current is None:
            return False  # an R4 criteria subscription hears of resources that match, not of deletions
        criteria = subscriber.filters.get(event.type)
        subject = current if current is not None else previous
        return criteria is None or (subject is not None and await self._meets(event.type, criteria, subject, compiled))

    async def _document(self, event: Version, number: int, documents: dict[int, dict[str, Any] | None]) -> dict[str, Any] | None:
        """A version as search sees it stored (its index entries), built once per event."""
        if number not in documents:
            if number == event.version and event.raw is None:
                documents[number] = None  # the event is a deletion
            else:
                documents[number] = await self._engine.indexed_version(event.type, event.id, number,
                                                                       event.raw if number == event.version else None)
        return documents[number]

    async def _meets(self, resource_type: str, criteria: list[tuple[str, str]], document: dict[str, Any],
                     compiled: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]]) -> bool:
        key = (resource_type, tuple(criteria))
        if key not in compiled:
            try:
                compiled[key] = (await self._engine.searcher.criteria(resource_type, criteria, self.settings.base_url)).filter()
            except FhirError:
                compiled[key] = NOTHING  # criteria that no longer compile match nothing
        return matches(document, compiled[key])

    # -- delivery ------------------------------------------------------------------------------

    async def _serve(self, subscriber: Subscriber, state: State) -> None:
        """What one subscription's sender does in one turn (`state`: as the turn read it)."""
        try:
            with acting_as(SYSTEM):
                now = self._clock()
                if subscriber.channel.type == "websocket":  # its sockets send (subscriptions/socket.py); here it only starts
                    if subscriber.status == "requested":
                        version = await self._engine.store.read("Subscription", subscriber.id)
                        await self._notes.start(subscriber.key, version.updated if version is not None else now)
                        await self._set_status(subscriber, "active", None)
                    return
                if subscriber.status not in ("requested", "active"):
                    return
                if subscriber.status == "active" and ended(subscriber, now):
                    await self._set_status(subscriber, "off", None)
                    return
                if state.next_at is not None and state.next_at > now and subscriber.status == "active":
                    return
                private = await self._engine.store.private("Subscription", subscriber.id)  # secret and owner
                if subscriber.status == "requested":
                    await self._handshake(subscriber, state, private)
                    return
                while True:
                    events = await self._notes.events(subscriber.key, state.delivered, None, subscriber.channel.max_count)
                    if not events:
                        break
                    if not await self._deliver(subscriber, state, events, private):
                        return
                    state = await self._notes.state(subscriber.key)
                if heartbeat_due(subscriber, state.last_sent, now):
                    body = encode(notification_bundle(subscriber, "heartbeat", state, self.settings.base_url, [], now))
                    if await self._send(subscriber, state, body, "heartbeat", private):
                        await self._notes.sent(subscriber.key, now)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - one subscription's failure stops no other
            log.error("sender failed subscription=%s type=%s", subscriber.key, type(error).__name__)

    async def _handshake(self, subscriber: Subscriber, state: State, private: dict[str, Any]) -> None:
        now = self._clock()
        if subscriber.topic is not None:
            body = encode(notification_bundle(subscriber, "handshake", state, self.settings.base_url, [], now, status="requested"))
        else:
            body = b""
        if await self._send(subscriber, state, body, "handshake", private, final=True):
            version = await self._engine.store.read("Subscription", subscriber.id)
            await self._notes.start(subscriber.key, version.updated if version is not None else now)
            await self._notes.sent(subscriber.key, now)
            await self._set_status(subscriber, "active", None)

    async def _deliver(self, subscriber: Subscriber, state: State, events: list[Event], private: dict[str, Any]) -> bool:
        """Send these events (those the subscriber still reaches); True once acknowledged."""
        shown = await seen_by_owner(self._engine, self._access_of, private, subscriber.channel.content, events)
        last = events[-1].number
        if not shown:
            await self._notes.delivered(subscriber.key, last, self._clock())
            return True
        if subscriber.topic is None:  # R4 criteria: one request per resource, the resource or nothing
            for event, raw in shown:
                if not await self._send(subscriber, state, raw or b"", "event", private):
                    return False
                await self._notes.delivered(subscriber.key, event.number, self._clock())
            await self._notes.delivered(subscriber.key, last, self._clock())
            return True
        body = encode(notification_bundle(subscriber, "event-notification", state_with(state, last), self.settings.base_url, shown,
                                          self._clock()))
        if not await self._send(subscriber, state, body, "event", private):
            return False
        await self._notes.delivered(subscriber.key, last, self._clock())
        return True

    async def _send(self, subscriber: Subscriber, state: State, body: bytes, kind: str, private: dict[str, Any],
                    final: bool = False) -> bool:
        """POST one notification, signed with the secret kept `private`ly; on failure the back-off
        (or `error`) is recorded. `final`: a handshake, which fails the subscription at once."""
        channel = subscriber.channel
        destination = origin(channel.endpoint)
        secret = private.get("secret")
        outcome, status = "", 0
        try:
            await self._endpoints.check_addresses(channel.endpoint)
            if not secret:
                raise EndpointRefused("no signing secret is kept for this subscription")
            headers = {name: value for name, value in channel.headers}
            headers["Content-Type"] = (channel.payload or "application/fhir+json") if body else "text/plain"
            headers[SIGNATURE_HEADER] = signature(secret, body, int(time.time()))
            headers["User-Agent"] = "calipso-subscriptions"
            timeout = min(float(channel.timeout or self.settings.timeout_seconds), self.settings.lease_seconds / 2)
            response = await self._http.post(channel.endpoint, content=body, headers=headers, timeout=timeout)
            status = response.status_code
            outcome = f"{kind}: HTTP {status}"
        except EndpointRefused as refused:
            outcome = f"{kind}: refused, {refused}"
        except httpx.HTTPError as error:
            outcome = f"{kind}: {type(error).__name__}"
        success = 200 <= status < 300
        if self._audit is not None:
            self._audit.record(notification_event(subscriber.key, destination, status or 502, outcome, self._clock()))
        if success:
            log.info("notification sent subscription=%s kind=%s status=%d", subscriber.key, kind, status)
            return True
        log.warning("notification failed subscription=%s %s", subscriber.key, outcome)
        await self._failed(subscriber, state, outcome, final)
        return False

    async def _failed(self, subscriber: Subscriber, state: State, outcome: str, final: bool) -> None:
        attempts = (await self._notes.state(subscriber.key)).attempts + 1
        now = self._clock()
        if final or attempts >= self.settings.max_attempts:
            await self._notes.failed(subscriber.key, attempts, now, outcome)
            await self._set_status(subscriber, "error", f"{outcome} (attempt {attempts})")
            return
        delay = min(self.settings.max_retry_seconds, self.settings.first_retry_seconds * 2 ** (attempts - 1))
        delay *= random.uniform(0.5, 1.0)
        await self._notes.failed(subscriber.key, attempts, now + timedelta(seconds=delay), outcome)

    async def _set_status(self, subscriber: Subscriber, status: str, error: str | None) -> None:
        """The server's own write of the subscription's status (unless a client changed it since)."""
        version = await self._engine.store.read("Subscription", subscriber.id)
        if version is None or version.raw is None or version.version != subscriber.version:
            return
        resource = orjson.loads(version.raw)
        resource["status"] = status
        if error is not None:
            resource["error"] = error
        else:
            resource.pop("error", None)
        try:
            await writes.update(self._engine, "Subscription", subscriber.id, resource, version.version)
        except FhirError as refused:
            if refused.status != 412:
                raise  # 412: the client wrote it meanwhile; its version is read next turn
        self._subscribers = None


async def seen_by_owner(engine: Engine, access_of: Callable[[Claims | None], Awaitable[Access]], private: dict[str, Any],
                        content: str, events: list[Event]) -> list[tuple[Event, bytes | None]]:
    """The events as the subscription's owner reaches them now: its access decided again from
    the token claims kept with the subscription (`private`)."""
    access = await access_of(owner_claims(private))
    with acting_as(access):
        return await reachable_events(engine, access, content, events)


async def reachable_events(engine: Engine, access: Access, content: str, events: list[Event]) -> list[tuple[Event, bytes | None]]:
    """The events whose resource `access` still reaches (run under it), each with its version's
    JSON when the payload carries resources and the scopes read them."""
    shown: list[tuple[Event, bytes | None]] = []
    for event in events:
        if not access.may(event.type, "r") and not access.may(event.type, "s"):
            continue
        try:
            await engine.check_visible(event.type, event.id)
        except FhirError:
            continue
        raw = None
        if content == "full-resource" and event.method != "DELETE" and access.may(event.type, "r"):
            version = await engine.store.read_version(event.type, event.id, event.version)
            raw = version.raw if version is not None else None
        shown.append((event, raw))
    return shown


def _has_work(subscriber: Subscriber, state: State, now: datetime) -> bool:
    """Whether a subscription's sender has something to do this turn (a handshake, events not
    yet acknowledged and no back-off running, a heartbeat due, its end passed)."""
    if subscriber.status == "requested":
        return True
    if subscriber.status != "active":
        return False
    if subscriber.channel.type == "websocket":
        return False  # its sockets send (socket.py)
    if ended(subscriber, now):
        return True  # to turn it off
    if state.next_at is not None and state.next_at > now:
        return False
    return state.events > state.delivered or heartbeat_due(subscriber, state.last_sent, now)


def heartbeat_due(subscriber: Subscriber, last_sent: datetime | None, now: datetime) -> bool:
    """Whether a subscription with a heartbeat period has been quiet that long."""
    period = subscriber.channel.heartbeat
    if not period:
        return False
    return last_sent is None or (now - last_sent).total_seconds() >= period


def state_with(state: State, events: int) -> State:
    """The state as a notification shows it: at least the events it carries."""
    return replace(state, events=max(state.events, events))


__all__ = ["DispatchSettings", "Dispatcher", "heartbeat_due", "reachable_events", "seen_by_owner", "state_with"]
