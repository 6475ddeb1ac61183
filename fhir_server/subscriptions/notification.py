"""The bodies sent: for a topic subscription a history Bundle whose first entry is the
SubscriptionStatus (a Parameters, as the Backport IG profiles it for R4), then the focus
resources the payload content asks for; for an R4 criteria subscription the resource itself,
or nothing."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Sequence

import orjson

from fhir_server.engine.interactions import fhir_instant
from fhir_server.storage.notifications import Event, State
from fhir_server.subscriptions.subscription import Subscriber
from fhir_server.subscriptions.vocabulary import BACKPORT

REQUEST = {"POST": "POST", "PUT": "PUT", "PATCH": "PATCH", "DELETE": "DELETE"}
RESPONSE = {"POST": "201", "PUT": "200", "PATCH": "200", "DELETE": "204"}


def status_parameters(subscriber: Subscriber, status: str, kind: str, state: State, base: str,
                      events: Sequence[Event] = (), with_focus: bool = True) -> dict[str, Any]:
    """The SubscriptionStatus of a notification, a $status or an $events answer."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/{subscriber.key}"}},
        {"name": "topic", "valueCanonical": subscriber.topic_url or ""},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(state.events)},
    ]
    for event in events:
        part: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(event.number)},
                                      {"name": "timestamp", "valueInstant": fhir_instant(event.updated)}]
        if with_focus:
            part.append({"name": "focus", "valueReference": {"reference": f"{base}/{event.type}/{event.id}"}})
        parameters.append({"name": "notification-event", "part": part})
    if state.error and kind == "query-status":
        parameters.append({"name": "error", "valueCodeableConcept": {"text": state.error}})
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()), "meta": {"profile": [BACKPORT["statusProfile"]]},
            "parameter": parameters}


def notification_bundle(subscriber: Subscriber, kind: str, state: State, base: str, events: list[tuple[Event, bytes | None]],
                        now: datetime, status: str = "active") -> dict[str, Any]:
    """A history Bundle: the status, then one entry per event when the content is not `empty`
    (with the resource for `full-resource`; `events` pairs each with its version's JSON)."""
    content = subscriber.channel.content
    status_resource = status_parameters(subscriber, status, kind, state, base, [e for e, _ in events], content != "empty")
    entries: list[dict[str, Any]] = [{
        "fullUrl": f"urn:uuid:{status_resource['id']}",
        "resource": status_resource,
        "request": {"method": "GET", "url": f"{base}/{subscriber.key}/$status"},
        "response": {"status": "200"},
    }]
    if content != "empty":
        for event, raw in events:
            url = f"{event.type}/{event.id}" if event.method != "POST" else event.type
            entry: dict[str, Any] = {"fullUrl": f"{base}/{event.type}/{event.id}",
                                     "request": {"method": REQUEST.get(event.method, "PUT"), "url": url},
                                     "response": {"status": RESPONSE.get(event.method, "200"),
                                                  "etag": f'W/"{event.version}"', "lastModified": fhir_instant(event.updated)}}
            if content == "full-resource" and raw is not None:
                entry["resource"] = raw  # the version's bytes, spliced in by `encode`
            entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "meta": {"profile": [BACKPORT["notificationProfile"]]},
            "type": "history", "timestamp": fhir_instant(now), "entry": entries}


def encode(bundle: dict[str, Any]) -> bytes:
    """The Bundle's JSON, resource bytes included as stored (never re-serialised)."""
    pieces: list[bytes] = []
    for entry in bundle["entry"]:
        raw = entry.get("resource")
        if isinstance(raw, bytes):
            without = {k: v for k, v in entry.items() if k != "resource"}
            pieces.append(orjson.dumps(without)[:-1] + b',"resource":' + raw + b"}")
        else:
            pieces.append(orjson.dumps(entry))
    head = orjson.dumps({k: v for k, v in bundle.items() if k != "entry"})[:-1]
    return head + b',"entry":[' + b",".join(pieces) + b"]}"


__all__ = ["encode", "notification_bundle", "status_parameters"]
