"""The websocket channel. Backport IG: a subscriber asks `$get-ws-binding-token` (an ordinary,
authorized FHIR operation on its own subscription), connects to `[base]/$subscription-websocket`
and sends `bind-with-token <token>`. R4: a subscriber connects with its bearer token on the
upgrade request and sends `bind <id>`; it gets `bound <id>`, then `ping <id>` when there are
events (the token must read the subscription, as a GET would). The one-time token is what decides access on the socket:
it names the subscription, and the subscription's owner claims decide, at each send, what the
notifications show (as for rest-hook). The socket gets a handshake, then the subscription's
numbered events from the token's `eventsSinceNumber` on (missed events are replayed), then
heartbeats when quiet. Any API node serves sockets: events are read from the database, whichever
node numbered them."""

from __future__ import annotations

import asyncio
import hashlib
import logging

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from fhir_server.engine.interactions import utc_now
from fhir_server.outcome import FhirError
from fhir_server.security.permissions import SUBSCRIPTION_STATUS
from fhir_server.security.policy import SYSTEM, acting_as
from fhir_server.storage.notifications import NotificationStore
from fhir_server.subscriptions.dispatcher import heartbeat_due, seen_by_owner, state_with
from fhir_server.subscriptions.notification import encode, notification_bundle
from fhir_server.subscriptions.subscription import Subscriber, read_subscription

log = logging.getLogger("calipso.subscriptions")

BIND_SECONDS = 30  # to send `bind-with-token` after connecting
POLL_SECONDS = 0.25  # how often a bound socket looks for new events
RELOAD_SECONDS = 5.0  # how often it reads its subscription again (status off or error, deleted: it closes)
POLICY_VIOLATION = 1008


def token_hash(token: str) -> str:
    """Binding tokens are kept hashed: the database never holds one that could be replayed."""
    return hashlib.sha256(token.encode()).hexdigest()


async def subscription_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    engine, gate = websocket.app.state.engine, websocket.app.state.gate
    notes = NotificationStore(engine.store)
    try:
        message = await asyncio.wait_for(websocket.receive_text(), BIND_SECONDS)
    except (asyncio.TimeoutError, WebSocketDisconnect):
        await _close(websocket, "no bind-with-token received")
        return
    verb, _, token = message.strip().partition(" ")
    if verb == "bind":
        await _bind_r4(websocket, engine, gate, notes, token.strip())
        return
    bound = await notes.take_binding(token_hash(token.strip()), utc_now()) if verb == "bind-with-token" and token else None
    if bound is None:
        await _close(websocket, "bind-with-token needs a valid, unused token from $get-ws-binding-token")
        return
    key, since = bound
    subscriber = await _subscriber(engine, key)
    if subscriber is None or subscriber.channel.type != "websocket":
        await _close(websocket, "the subscription is not an active websocket subscription")
        return
    base = str(websocket.app.state.settings.public_base_url or f"{websocket.base_url}fhir").replace("ws://", "http://").replace(
        "wss://", "https://").rstrip("/")
    await _run(websocket, engine, gate, notes, subscriber, since, base, key)


async def _run(websocket: WebSocket, engine, gate, notes: NotificationStore, subscriber: Subscriber,  # type: ignore[no-untyped-def]
               since: int | None, base: str, key: str) -> None:
    """Serve a bound socket until the subscriber goes away or the subscription stops."""
    log.info("websocket bound subscription=%s", key)
    serving = asyncio.create_task(_serve(websocket, engine, gate, notes, subscriber, since, base))
    listening = asyncio.create_task(_until_disconnected(websocket))
    await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
    for task in (serving, listening):
        task.cancel()
    for outcome in await asyncio.gather(serving, listening, return_exceptions=True):
        if isinstance(outcome, Exception) and not isinstance(outcome, (WebSocketDisconnect, asyncio.CancelledError)):
            log.error("websocket failed subscription=%s type=%s", key, type(outcome).__name__)
    log.info("websocket closed subscription=%s", key)


async def _bind_r4(websocket: WebSocket, engine, gate, notes: NotificationStore, subscription_id: str) -> None:  # type: ignore[no-untyped-def]
    """R4's `bind <id>`: the upgrade request's bearer token decides, as for a read."""
    try:
        access = await gate.identify(websocket, SUBSCRIPTION_STATUS)
    except FhirError:
        await _close(websocket, "bind needs a valid bearer token on the connection (or use bind-with-token)")
        return
    key = f"Subscription/{subscription_id}"
    try:
        if not access.may("Subscription", "r"):
            raise FhirError.of(403, "forbidden", "no read scope on Subscription")
        with acting_as(access):
            engine.check_id(subscription_id)
            await engine.read("Subscription", subscription_id)
    except FhirError:
        await _close(websocket, f"{key[:80]} is not known")
        return
    subscriber = await _subscriber(engine, key)
    if subscriber is None or subscriber.channel.type != "websocket" or subscriber.topic is not None:
        await _close(websocket, "the subscription is not an active R4 websocket subscription (a topic one binds with a token)")
        return
    await websocket.send_text(f"bound {subscription_id}")
    await _run(websocket, engine, gate, notes, subscriber, None, "", key)


async def _until_disconnected(websocket: WebSocket) -> None:
    """What the subscriber sends after binding is ignored; its going away ends the socket."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _serve(websocket: WebSocket, engine, gate, notes: NotificationStore, subscriber: Subscriber,  # type: ignore[no-untyped-def]
                 since: int | None, base: str) -> None:
    state = await notes.state(subscriber.key)
    r4 = subscriber.topic is None  # R4: `ping <id>` per notification, no Bundles
    if not r4:
        await websocket.send_text(encode(notification_bundle(subscriber, "handshake", state, base, [], utc_now())).decode())
    last = (since - 1) if since is not None else state.events
    last_sent, reloaded = utc_now(), utc_now()
    while True:
        now = utc_now()
        if (now - reloaded).total_seconds() >= RELOAD_SECONDS:
            reloaded = now
            fresh = await _subscriber(engine, subscriber.key)
            if fresh is None:
                await _close(websocket, "the subscription was turned off or deleted")
                return
            subscriber = fresh
        events = await notes.events(subscriber.key, last, None, subscriber.channel.max_count)
        if events:
            private = await engine.store.private("Subscription", subscriber.id)
            shown = await seen_by_owner(engine, gate.access_of, private, subscriber.channel.content, events)
            if shown and r4:
                await websocket.send_text(f"ping {subscriber.id}")
                last_sent = now
            elif shown:
                state = state_with(await notes.state(subscriber.key), events[-1].number)
                await websocket.send_text(encode(notification_bundle(subscriber, "event-notification", state, base, shown, now)).decode())
                last_sent = now
            last = events[-1].number
            continue
        if not r4 and heartbeat_due(subscriber, last_sent, now):
            state = await notes.state(subscriber.key)
            await websocket.send_text(encode(notification_bundle(subscriber, "heartbeat", state, base, [], now)).decode())
            last_sent = now
        await asyncio.sleep(POLL_SECONDS)


async def _subscriber(engine, key: str) -> Subscriber | None:  # type: ignore[no-untyped-def]
    """The subscription as stored, while it is active (or just requested)."""
    with acting_as(SYSTEM):
        version = await engine.store.read("Subscription", key.split("/", 1)[1])
    if version is None or version.raw is None:
        return None
    try:
        subscriber = read_subscription(orjson.loads(version.raw), engine.spec.is_resource_type)
    except FhirError:
        return None
    return subscriber if subscriber.status in ("requested", "active") else None


async def _close(websocket: WebSocket, reason: str) -> None:
    try:
        await websocket.send_text(f"error {reason}")
        await websocket.close(POLICY_VIOLATION, reason)
    except (WebSocketDisconnect, RuntimeError):
        pass


__all__ = ["subscription_socket", "token_hash"]
