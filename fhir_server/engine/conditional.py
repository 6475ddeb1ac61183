"""Conditional create, update and delete: the search engine finds the target, the database
guarantees that racing conditional creates with the same criteria make one resource.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fhir_server.engine.interactions import Engine, Outcome, parse_version
from fhir_server.engine.retry import LostRace, retrying
from fhir_server.outcome import FhirError
from fhir_server.search.query import RESULT_PARAMETERS
from fhir_server.storage.store import GuardTaken, Version, VersionConflict



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


async def _matches(engine: Engine, resource_type: str, params: list[tuple[str, str]], base_url: str) -> list[dict[str, Any]]:
    result = await engine.searcher.search(resource_type, [*params, ("_count", "2")], True, base_url)
    return result.matches


async def _current(engine: Engine, doc: dict[str, Any]) -> Version:
    return await engine.read(doc["type"], doc["id"])


async def conditional_create(engine: Engine, resource_type: str, body: Any, criteria: str, base_url: str) -> Outcome:
    """If-None-Exist: the existing match (not created), or a new resource; 412 on several."""
    engine.check_type(resource_type)
    params = parse_criteria(criteria)
    return await _create_unless_found(engine, resource_type, body, params, base_url, None)


async def _create_unless_found(
    engine: Engine, resource_type: str, body: Any, params: list[tuple[str, str]], base_url: str, resource_id: str | None
) -> Outcome:
    guard = guard_key(resource_type, params)

    async def attempt() -> Outcome:
        found = await _matches(engine, resource_type, params, base_url)
        if len(found) > 1:
            raise FhirError.of(412, "multiple-matches", "The criteria match more than one resource")
        if found:
            return Outcome(await _current(engine, found[0]), created=False)
        try:
            return await engine.create(resource_type, body, guard=guard, resource_id=resource_id)
        except VersionConflict:  # the client's id exists but does not match the criteria: update it
            return await engine.update(resource_type, resource_id or "", body)
        except GuardTaken:
            if not await _matches(engine, resource_type, params, base_url):
                await engine.store.release_guard(guard)  # its resource was deleted or changed since
            raise LostRace() from None

    return await retrying(attempt, "Conditional create kept racing with other writers; retry")


async def conditional_update(
    engine: Engine, resource_type: str, body: Any, criteria: str, if_match: int | None, base_url: str
) -> Outcome:
    """PUT Type?criteria: update the one match, create when none, 412 when several."""
    engine.check_type(resource_type)
    params = parse_criteria(criteria)
    found = await _matches(engine, resource_type, params, base_url)
    if len(found) > 1:
        raise FhirError.of(412, "multiple-matches", "The criteria match more than one resource")
    if found:
        target = found[0]["id"]
        if isinstance(body, dict) and body.get("id", target) != target:
            raise FhirError.of(400, "invalid", "The body's id is not the id of the resource the criteria match")
        return await engine.update(resource_type, target, {**body, "id": target} if isinstance(body, dict) else body, if_match)
    if if_match is not None:
        raise FhirError.of(412, "conflict", "If-Match was given but the criteria match nothing")
    client_id = body.get("id") if isinstance(body, dict) else None
    return await _create_unless_found(engine, resource_type, body, params, base_url, client_id)


async def conditional_target(engine: Engine, resource_type: str, criteria: str, base_url: str) -> str:
    """The id of the one resource the criteria match (conditional patch): 404 none, 412 several."""
    engine.check_type(resource_type)
    found = await _matches(engine, resource_type, parse_criteria(criteria), base_url)
    if len(found) > 1:
        raise FhirError.of(412, "multiple-matches", "The criteria match more than one resource")
    if not found:
        raise FhirError.of(404, "not-found", "The criteria match no resource")
    return found[0]["id"]


async def conditional_delete(
    engine: Engine, resource_type: str, criteria: str, base_url: str, allow_multiple: bool, limit: int = 100
) -> list[Version]:
    """DELETE Type?criteria: delete the match (or every match when allowed); tombstones returned."""
    engine.check_type(resource_type)
    params = parse_criteria(criteria)
    result = await engine.searcher.search(resource_type, [*params, ("_count", str(limit + 1))], True, base_url)
    if len(result.matches) > 1 and not allow_multiple:
        raise FhirError.of(412, "multiple-matches", "The criteria match more than one resource; narrow them")
    if len(result.matches) > limit:
        raise FhirError.of(412, "too-costly", f"The criteria match more than {limit} resources")
    deleted = []
    for doc in result.matches:
        tombstone = await engine.delete(resource_type, doc["id"])
        if tombstone is not None:
            deleted.append(tombstone)
    return deleted


__all__ = ["conditional_create", "conditional_delete", "conditional_target", "conditional_update", "guard_key", "parse_criteria", "parse_version"]
