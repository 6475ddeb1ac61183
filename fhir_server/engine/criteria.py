"""The criteria of conditional interactions (`If-None-Exist`, `PUT/PATCH/DELETE Type?…`,
conditional references): read once, matched through the search engine, and the guard key that
makes racing creates with the same criteria make one resource."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

from fhir_server.outcome import FhirError
from fhir_server.search.query import RESULT_PARAMETERS

if TYPE_CHECKING:
    from fhir_server.engine.interactions import Engine


def parse_criteria(text: str) -> list[tuple[str, str]]:
    """Search criteria of a conditional interaction (`identifier=sys|val&...`), never empty."""
    params = [(k, v) for k, v in parse_qsl(text.lstrip("?"), keep_blank_values=True) if k not in ("_format", "_pretty")]
    if not params:
        raise FhirError.of(400, "invalid", "A conditional interaction needs search criteria")
    if any(name.partition(":")[0] in RESULT_PARAMETERS for name, _ in params):
        raise FhirError.of(400, "invalid", "Conditional criteria take search parameters only (no _count, _sort, ...)")
    return params


def guard_key(resource_type: str, params: list[tuple[str, str]]) -> str:
    """One key per (type, criteria) whatever the parameter order."""
    canonical = f"{resource_type}?{urlencode(sorted(params))}"
    return hashlib.sha256(canonical.encode()).hexdigest()


async def matching(engine: Engine, resource_type: str, params: list[tuple[str, str]], base_url: str, limit: int) -> list[str]:
    """The "Type/id" of up to `limit` stored resources the criteria match (and the request's
    token reaches: the search applies its access like any other)."""
    result = await engine.searcher.search(resource_type, [*params, ("_count", str(limit))], True, base_url)
    return [f"{doc['type']}/{doc['id']}" for doc in result.matches]


__all__ = ["guard_key", "matching", "parse_criteria"]
