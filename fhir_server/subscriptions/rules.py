"""What writing a Subscription asks beyond R4 validation (engine TypeRule):
- it must be one calipso can serve (subscription.py), to an endpoint notifications may go to;
- a client sets `requested` or `off`: `active` and `error` are the server's to set;
- the writer's scopes must read what it subscribes to;
- the signing secret (an extension on the channel) is kept privately, with the writer's token
  claims (the subscription sends under that access, re-decided at each send), and never served:
  a client sends it with every write of the subscription.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Any, Callable

from fhir_server.outcome import FhirError, Issue
from fhir_server.security.policy import ACCESS, OWNER_SYSTEM, SYSTEM
from fhir_server.security.tokens import Claims
from fhir_server.subscriptions.endpoints import EndpointPolicy, EndpointRefused
from fhir_server.subscriptions.subscription import invalid, read_subscription
from fhir_server.subscriptions.vocabulary import SIGNING_SECRET

CLIENT_STATUSES = ("requested", "off")
MIN_SECRET = 16


class SubscriptionRule:
    def __init__(self, known_type: Callable[[str], bool], endpoints: EndpointPolicy):
        self._known_type = known_type
        self._endpoints = endpoints

    def admit(self, resource: dict[str, Any]) -> None:
        subscriber = read_subscription(resource, self._known_type)
        access = ACCESS.get()
        if access is SYSTEM:
            return
        if subscriber.status not in CLIENT_STATUSES:
            raise invalid("A client sets the status requested (or off); the server sets active and error", "Subscription.status")
        if subscriber.channel.type == "rest-hook":
            try:
                self._endpoints.check_form(subscriber.channel.endpoint)
            except EndpointRefused as refused:
                raise invalid(str(refused), "Subscription.channel.endpoint") from None
        secret = _secret(resource)
        if subscriber.channel.type == "rest-hook" and (not isinstance(secret, str) or len(secret) < MIN_SECRET):
            raise invalid(f"The channel needs the extension {SIGNING_SECRET} with a secret of {MIN_SECRET} characters or more "
                          "(notifications are signed with it; it is never served back, so send it with every write)",
                          "Subscription.channel.extension")
        for resource_type in subscriber.filters or _topic_types(subscriber):
            if not (access.may(resource_type, "r") or access.may(resource_type, "s")):
                raise FhirError(403, Issue("forbidden", f"The token's scopes do not read {resource_type}: it cannot subscribe to it"))

    def withhold(self, resource: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        access = ACCESS.get()
        if access is SYSTEM:
            return resource, None  # the dispatcher's own writes (status): what is kept stays
        stored = copy.deepcopy(resource)
        channel = stored.get("channel") or {}
        secret = _secret(stored)
        channel["extension"] = [e for e in channel.get("extension", []) if e.get("url") != SIGNING_SECRET]
        if not channel["extension"]:
            del channel["extension"]
        meta = stored.setdefault("meta", {})
        tags = [t for t in meta.get("tag", []) if not (isinstance(t, dict) and t.get("system") == OWNER_SYSTEM)]
        meta["tag"] = [*tags, {"system": OWNER_SYSTEM, "code": access.who}]  # whose it is (policy.OWNED_TYPES)
        owner = asdict(access.claims) if access.claims is not None else None
        return stored, {"secret": secret, "owner": owner}


def owner_claims(private: dict[str, Any]) -> Claims | None:
    """The token claims `withhold` kept with a subscription (None: written with auth off)."""
    owner = private.get("owner")
    return Claims(**owner) if owner else None


def _secret(resource: dict[str, Any]) -> Any:
    for extension in (resource.get("channel") or {}).get("extension", []):
        if isinstance(extension, dict) and extension.get("url") == SIGNING_SECRET:
            return extension.get("valueString")
    return None


def _topic_types(subscriber: Any) -> list[str]:
    return [t.resource_type for t in subscriber.topic.triggers] if subscriber.topic else []


__all__ = ["SubscriptionRule", "owner_claims"]
