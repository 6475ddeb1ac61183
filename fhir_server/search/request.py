"""A search's result parameters (`_count`, `_sort`, `_total`, `_summary`, `_elements`,
`_include`, `_revinclude`, the paging cursor), read and checked, and what a search returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_server.search.parameters import Parameters
from fhir_server.search.query import Criteria, bad

DEFAULT_COUNT = 20
MAX_COUNT = 1000
MAX_INCLUDED = 1000
MAX_ITERATE = 3
TOTAL_MODES = ("none", "estimate", "accurate")
SUMMARY_MODES = ("true", "text", "data", "count", "false")


@dataclass
class SearchRequest:
    """The result parameters of a search, read and checked."""

    count: int = DEFAULT_COUNT
    sort: list[tuple[str, int]] = field(default_factory=list)
    total: str = "none"
    summary: str | None = None
    elements: list[str] | None = None
    include: list[tuple[str, str, str | None, bool]] = field(default_factory=list)
    revinclude: list[tuple[str, str, str | None, bool]] = field(default_factory=list)
    cursor: str | None = None
    echoed: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class SearchResult:
    matches: list[dict[str, Any]]
    included: list[dict[str, Any]]
    next_cursor: str | None
    total: int | None
    criteria: Criteria
    request: SearchRequest
    previous_cursor: str | None = None


def _include_spec(value: str, iterate: bool) -> tuple[str, str, str | None, bool]:
    parts = value.split(":")
    if value == "*":
        return "*", "*", None, iterate
    if len(parts) not in (2, 3) or not all(parts):
        raise bad(f"_include/_revinclude take Type:parameter[:TargetType], not {value[:60]!r}")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None, iterate


def read_request(params: list[tuple[str, str]], resource_type: str | None, parameters: Parameters) -> SearchRequest:
    """The result parameters (_count, _sort, _total, _summary, _elements, _include, ...)."""
    request = SearchRequest()
    for name, value in params:
        base, _, modifier = name.partition(":")
        if name == "_count":
            if not value.isdigit():
                raise bad(f"_count must be a whole number from 0 to {MAX_COUNT}")
            request.count = min(int(value), MAX_COUNT)
        elif name == "_sort":
            request.sort = [_sort_key(item.strip(), resource_type, parameters) for item in value.split(",") if item.strip()]
        elif name == "_total":
            if value not in TOTAL_MODES:
                raise bad(f"_total must be one of {', '.join(TOTAL_MODES)}")
            request.total = value
        elif name == "_summary":
            if value not in SUMMARY_MODES:
                raise bad(f"_summary must be one of {', '.join(SUMMARY_MODES)}")
            request.summary = value
        elif name == "_elements":
            request.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif base in ("_include", "_revinclude"):
            if modifier not in ("", "iterate", "recurse"):
                raise bad(f"{base}:{modifier[:20]} is not supported")
            (request.include if base == "_include" else request.revinclude).append(_include_spec(value, bool(modifier)))
        elif name == "_cursor":
            request.cursor = value
            continue
        else:
            continue
        request.echoed.append((name, value))
    if request.count == 0 and request.summary is None:
        request.summary = "count"  # R4 search: _count=0 is treated as _summary=count (the total, no entries)
    return request


def _sort_key(item: str, resource_type: str | None, parameters: Parameters) -> tuple[str, int]:
    direction = -1 if item.startswith("-") else 1
    code = item.lstrip("-")
    if code == "_lastUpdated":
        return "updated", direction
    if code == "_id":
        return "id", direction
    if resource_type is None or code not in parameters.for_type(resource_type):
        raise bad(f"Cannot sort by '{code[:40]}'" + (f" on {resource_type}" if resource_type else " across types"))
    if parameters.for_type(resource_type)[code].type == "reference":
        raise bad(f"Cannot sort by the reference parameter '{code}'")
    return f"so.{code}", direction


__all__ = ["DEFAULT_COUNT", "MAX_COUNT", "MAX_INCLUDED", "MAX_ITERATE", "SearchRequest", "SearchResult", "read_request"]
