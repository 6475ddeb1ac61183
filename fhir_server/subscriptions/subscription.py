"""A Subscription resource read as what the dispatcher must do: which events it wants (R4
criteria, or a Backport IG topic with its filter criteria), where and how to send them.

Two forms are read:
- R4: `criteria` is a search (`Communication?patient=Patient/x`); the channel's `payload`
  says whether the resource is sent (any FHIR JSON type) or the POST is empty;
- the R5 Backport IG for R4: `criteria` is a topic canonical, with `backport-filter-criteria`
  extensions (`Communication?patient=Patient/x`), the payload content (`empty`, `id-only`,
  `full-resource`), heartbeat, timeout and max count extensions on the channel; the
  notifications are history Bundles led by a SubscriptionStatus Parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.outcome import FhirError, Issue
from fhir_server.subscriptions.topics import Topic, load_topics
from fhir_server.subscriptions.vocabulary import (BACKPORT, CHANNEL_TYPES, DEFAULT_PAYLOAD_CONTENT, PAYLOAD_CONTENTS,
                                                  PAYLOAD_MIME_TYPES)

MAX_HEADERS = 10
UNNOTIFIED = frozenset({"AuditEvent"})  # written without events (security/audit.py)
MAX_COUNT = 100  # events per notification, at most


@dataclass(frozen=True)
class Channel:
    type: str  # rest-hook | websocket
    endpoint: str  # empty for a websocket: the subscriber connects
    headers: tuple[tuple[str, str], ...]
    payload: str | None  # the mime type; None: nothing is sent but the ping (R4) or the status (backport empty)
    content: str  # empty | id-only | full-resource
    heartbeat: int | None  # seconds
    timeout: int | None  # seconds
    max_count: int


@dataclass(frozen=True)
class Subscriber:
    """One Subscription version as the dispatcher uses it."""

    id: str
    version: int
    status: str
    topic: Topic | None  # None: an R4 criteria subscription
    filters: dict[str, list[tuple[str, str]]]  # resource type -> search criteria its events must meet
    channel: Channel
    end: str | None

    @property
    def key(self) -> str:
        return f"Subscription/{self.id}"

    @property
    def topic_url(self) -> str | None:
        return self.topic.url if self.topic else None

    def wants(self, resource_type: str) -> bool:
        if self.topic is None:
            return resource_type in self.filters
        return self.topic.trigger_for(resource_type) is not None


def invalid(text: str, expression: str) -> FhirError:
    return FhirError(422, Issue("invalid", text, expression=expression))


def _extension(element: dict[str, Any] | None, url: str) -> list[Any]:
    return [e for e in (element or {}).get("extension", []) if isinstance(e, dict) and e.get("url") == url]


def _value(element: dict[str, Any] | None, url: str, kind: str) -> Any:
    found = _extension(element, url)
    return found[0].get(kind) if found else None


def _search(text: str, known_type: Any, expression: str) -> tuple[str, list[tuple[str, str]]]:
    resource_type, mark, query = text.partition("?")
    if not mark or not known_type(resource_type):
        raise invalid(f"The criteria must be a search on a resource type: Type?parameter=value (not {text[:60]!r})", expression)
    if resource_type in UNNOTIFIED:
        raise invalid(f"{resource_type} writes are not notified", expression)
    params = parse_qsl(query, keep_blank_values=True)
    if not params:
        raise invalid("The criteria need at least one search parameter", expression)
    return resource_type, params


def read_subscription(resource: dict[str, Any], known_type: Any) -> Subscriber:
    """The Subscriber a valid R4 Subscription describes; 422 naming the element otherwise."""
    criteria = resource.get("criteria", "")
    topics = load_topics()
    filters: dict[str, list[tuple[str, str]]] = {}
    topic = topics.get(criteria)
    if topic is not None:
        for extension in _extension(resource.get("_criteria"), BACKPORT["filterCriteria"]):
            text = extension.get("valueString", "")
            resource_type, params = _search(text, known_type, "Subscription.criteria.extension")
            allowed = topic.filters.get(resource_type)
            if topic.trigger_for(resource_type) is None or allowed is None:
                raise invalid(f"The topic {topic.url} has no {resource_type[:40]} events to filter", "Subscription.criteria.extension")
            for name, _ in params:
                if name.partition(":")[0] not in allowed:
                    raise invalid(f"The topic lets subscribers filter by {', '.join(sorted(allowed))}, not {name[:40]!r}",
                                  "Subscription.criteria.extension")
            if resource_type in filters:
                raise invalid(f"One filter criteria per resource type ({resource_type})", "Subscription.criteria.extension")
            filters[resource_type] = params
    elif criteria.startswith(("http://", "https://")):
        raise invalid(f"Unknown subscription topic {criteria[:100]!r}: see the CapabilityStatement for ours", "Subscription.criteria")
    else:
        resource_type, params = _search(criteria, known_type, "Subscription.criteria")
        filters[resource_type] = params
    return Subscriber(
        id=str(resource.get("id", "")),
        version=int((resource.get("meta") or {}).get("versionId", "0") or 0),
        status=str(resource.get("status", "")),
        topic=topic,
        filters=filters,
        channel=_channel(resource.get("channel") or {}, topic is not None),
        end=resource.get("end"),
    )


def _channel(channel: dict[str, Any], backport: bool) -> Channel:
    kind = channel.get("type")
    if kind not in CHANNEL_TYPES:
        raise invalid(f"calipso sends {', '.join(sorted(CHANNEL_TYPES))} notifications, not {str(kind)[:30]!r}",
                      "Subscription.channel.type")
    endpoint = channel.get("endpoint", "")
    if kind == "websocket":
        if endpoint:
            raise invalid("A websocket channel has no endpoint: the subscriber connects to the server", "Subscription.channel.endpoint")
    elif not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise invalid("A rest-hook channel needs an http(s) endpoint", "Subscription.channel.endpoint")
    headers = []
    for number, header in enumerate(channel.get("header", [])):
        name, colon, value = header.partition(":")
        if not colon or not name.strip() or any(c in header for c in "\r\n\0") or not name.strip().isascii():
            raise invalid("A channel header is 'Name: value' on one line", f"Subscription.channel.header[{number}]")
        headers.append((name.strip(), value.strip()))
    if len(headers) > MAX_HEADERS:
        raise invalid(f"At most {MAX_HEADERS} channel headers", "Subscription.channel.header")
    payload = channel.get("payload")
    if payload is not None and payload.split(";")[0].strip() not in PAYLOAD_MIME_TYPES:
        raise invalid(f"calipso sends {' or '.join(sorted(PAYLOAD_MIME_TYPES))} payloads", "Subscription.channel.payload")
    content = _value(channel.get("_payload"), BACKPORT["payloadContent"], "valueCode")
    if not backport:
        content = "full-resource" if payload else "empty"
    elif content is None:
        content = DEFAULT_PAYLOAD_CONTENT
    elif content not in PAYLOAD_CONTENTS:
        raise invalid(f"The payload content is one of {', '.join(sorted(PAYLOAD_CONTENTS))}", "Subscription.channel.payload.extension")
    if backport and payload is None:
        raise invalid("A topic subscription needs a payload mime type (application/fhir+json)", "Subscription.channel.payload")
    max_count = _value(channel, BACKPORT["maxCount"], "valuePositiveInt") or MAX_COUNT
    return Channel(
        type=str(kind),
        endpoint=endpoint,
        headers=tuple(headers),
        payload=payload,
        content=content,
        heartbeat=_value(channel, BACKPORT["heartbeatPeriod"], "valueUnsignedInt") or None,
        timeout=_value(channel, BACKPORT["timeout"], "valueUnsignedInt") or None,
        max_count=min(int(max_count), MAX_COUNT),
    )


def ended(subscriber: Subscriber, now: datetime) -> bool:
    """Whether the subscription's `end` has passed."""
    if not subscriber.end:
        return False
    try:
        end = datetime.fromisoformat(subscriber.end.replace("Z", "+00:00"))
    except ValueError:
        return False
    if end.tzinfo is None:
        return False
    return end <= now


__all__ = ["Channel", "Subscriber", "ended", "invalid", "read_subscription"]
