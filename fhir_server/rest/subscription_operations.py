"""The Backport IG's operations on a subscription: `$status` (where its deliveries stand) and
`$events` (its numbered events again, for a subscriber that missed some). Both answer for a
subscription the caller may read, and `$events` shows only what the caller reaches now."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import timedelta

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.engine.interactions import fhir_instant, utc_now
from fhir_server.outcome import FhirError
from fhir_server.rest.bundle import assemble
from fhir_server.rest.context import base_url, engine_of
from fhir_server.rest.negotiation import negotiate
from fhir_server.rest.responses import fhir_response
from fhir_server.security.policy import ACCESS
from fhir_server.storage.notifications import NotificationStore
from fhir_server.subscriptions.dispatcher import reachable_events, state_with
from fhir_server.subscriptions.notification import encode, notification_bundle, status_parameters
from fhir_server.subscriptions.socket import token_hash
from fhir_server.subscriptions.subscription import Subscriber, read_subscription
from fhir_server.subscriptions.vocabulary import PAYLOAD_CONTENTS

MAX_EVENTS = 100
BINDING_SECONDS = 300  # a websocket binding token's life


async def _subscriber(request: Request) -> Subscriber:
    engine = engine_of(request)
    version = await engine.read("Subscription", request.path_params["id"])
    try:
        return read_subscription(orjson.loads(version.raw or b"{}"), engine.spec.is_resource_type)
    except FhirError:
        raise FhirError.of(422, "not-supported", "This subscription is not one calipso dispatches") from None


async def status(request: Request) -> Response:
    """`Subscription/[id]/$status`: a searchset Bundle holding its SubscriptionStatus."""
    rendering = negotiate(request)
    subscriber = await _subscriber(request)
    state = await NotificationStore(engine_of(request).store).state(subscriber.key)
    parameters = status_parameters(subscriber, subscriber.status, "query-status", state, base_url(request))
    entry = orjson.dumps({"fullUrl": f"urn:uuid:{parameters['id']}", "resource": parameters, "search": {"mode": "match"}})
    return fhir_response(assemble("searchset", [], 1, [entry]), 200, None, rendering)


async def events(request: Request) -> Response:
    """`Subscription/[id]/$events?eventsSinceNumber=&eventsUntilNumber=&content=`: a history
    Bundle of type query-event, as a notification of those events would be."""
    rendering = negotiate(request)
    engine = engine_of(request)
    subscriber = await _subscriber(request)
    params = request.query_params
    since = _number(params.get("eventsSinceNumber"), "eventsSinceNumber", 1)
    until = _number(params.get("eventsUntilNumber"), "eventsUntilNumber", None)
    content = params.get("content", subscriber.channel.content)
    if content not in PAYLOAD_CONTENTS:
        raise FhirError.of(400, "invalid", f"content is one of {', '.join(sorted(PAYLOAD_CONTENTS))}", expression="content")
    notes = NotificationStore(engine.store)
    state = await notes.state(subscriber.key)
    found = await notes.events(subscriber.key, (since or 1) - 1, until, MAX_EVENTS)
    shown = await reachable_events(engine, ACCESS.get(), content, found)
    shaped = replace(subscriber, channel=replace(subscriber.channel, content=content))
    bundle = notification_bundle(shaped, "query-event", state_with(state, 0), base_url(request), shown, utc_now(), subscriber.status)
    return fhir_response(encode(bundle), 200, None, rendering)


async def binding_token(request: Request) -> Response:
    """`Subscription/[id]/$get-ws-binding-token[?eventsSinceNumber=n]`: a one-time token to
    bind a websocket to this subscription (replaying its events from n when given)."""
    rendering = negotiate(request)
    engine = engine_of(request)
    subscriber = await _subscriber(request)
    if subscriber.channel.type != "websocket":
        raise FhirError.of(400, "invalid", "This subscription's channel is not a websocket")
    since = _number(request.query_params.get("eventsSinceNumber"), "eventsSinceNumber", None)
    token = secrets.token_urlsafe(32)
    expires = utc_now() + timedelta(seconds=BINDING_SECONDS)
    await NotificationStore(engine.store).issue_binding(token_hash(token), subscriber.key, expires, since)
    socket_url = base_url(request).replace("https://", "wss://").replace("http://", "ws://") + "/$subscription-websocket"
    parameters = {"resourceType": "Parameters", "parameter": [
        {"name": "token", "valueString": token},
        {"name": "expiration", "valueDateTime": fhir_instant(expires)},
        {"name": "subscription", "valueString": subscriber.key},
        {"name": "websocket-url", "valueUrl": socket_url},
    ]}
    return fhir_response(orjson.dumps(parameters), 200, {"Cache-Control": "no-store"}, rendering)


def _number(text: str | None, name: str, default: int | None) -> int | None:
    if text is None:
        return default
    if not text.isdigit() or len(text) > 12:
        raise FhirError.of(400, "invalid", f"{name} is a whole number", expression=name)
    return int(text)


__all__ = ["binding_token", "events", "status"]
