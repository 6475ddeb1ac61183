"""The guide's subscription topics (profiles/topics/: R4B SubscriptionTopic resources, which R4
servers advertise by canonical): which resource types and interactions trigger each, the
search criteria the new and previous versions must meet, and the filters a subscriber may add."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.ig import PROFILES_DIR, read_json_folder

METHODS = {"create": "POST", "update": "PUT", "delete": "DELETE"}  # a history entry's method per interaction


@dataclass(frozen=True)
class Trigger:
    resource_type: str
    methods: frozenset[str]  # history methods (POST, PUT, PATCH, DELETE) that trigger
    current: list[tuple[str, str]] | None  # criteria the new version meets
    previous: list[tuple[str, str]] | None  # criteria the replaced version meets
    result_for_create: bool  # a create passes the `previous` test
    result_for_delete: bool  # a delete passes the `current` test
    require_both: bool


@dataclass(frozen=True)
class Topic:
    url: str
    title: str
    triggers: tuple[Trigger, ...]
    filters: dict[str, frozenset[str]]  # resource type -> filter parameters subscribers may use

    def trigger_for(self, resource_type: str) -> Trigger | None:
        return next((t for t in self.triggers if t.resource_type == resource_type), None)


def _criteria(text: str | None) -> list[tuple[str, str]] | None:
    return parse_qsl(text, keep_blank_values=True) if text else None


def _trigger(data: dict[str, Any]) -> Trigger:
    methods = {METHODS[i] for i in data.get("supportedInteraction", [])}
    if "PUT" in methods:
        methods.add("PATCH")  # a patch is an update
    query = data.get("queryCriteria", {})
    return Trigger(
        resource_type=data["resource"].rsplit("/", 1)[1],
        methods=frozenset(methods),
        current=_criteria(query.get("current")),
        previous=_criteria(query.get("previous")),
        result_for_create=query.get("resultForCreate", "test-passes") == "test-passes",
        result_for_delete=query.get("resultForDelete", "test-passes") == "test-passes",
        require_both=bool(query.get("requireBoth", False)),
    )


@cache
def load_topics() -> dict[str, Topic]:
    """The topics by canonical url."""
    topics = {}
    for resource in read_json_folder(PROFILES_DIR / "topics"):
        filters: dict[str, set[str]] = {}
        for item in resource.get("canFilterBy", []):
            filters.setdefault(item["resource"], set()).add(item["filterParameter"])
        topics[resource["url"]] = Topic(resource["url"], resource.get("title", ""), tuple(_trigger(t) for t in resource["resourceTrigger"]),
                                        {k: frozenset(v) for k, v in filters.items()})
    return topics


__all__ = ["Topic", "Trigger", "load_topics"]
