"""Writes sent on their own — create, update, patch, delete and their conditional forms — as
one-entry plans of the transaction planner (transaction.py). Every write the server makes thus
takes one path: one reading of the conditions (If-Match, If-None-Exist, criteria), one
access check before and after, one retry policy (retry.py), one commit with its hooks.
"""

from __future__ import annotations

from typing import Any

from fhir_server.engine.bundle_entries import BundleLimits, BundleRequest, EntryResult
from fhir_server.engine.interactions import CONTENDED, Engine, Outcome, check_object
from fhir_server.engine.retry import RESOURCE_ATTEMPTS
from fhir_server.engine.transaction import run_transaction
from fhir_server.storage.store import Version

ALONE = BundleLimits()


async def create(engine: Engine, resource_type: str, body: Any, if_none_exist: str | None = None, base_url: str = "") -> Outcome:
    """POST [type], with a server-assigned id (an id in the body is ignored, as R4 says);
    `if_none_exist`: the match when there is one (not created), 412 when several."""
    request = BundleRequest(None, "POST", resource_type, resource_type, resource=body, if_none_exist=if_none_exist)
    return _outcome(await _run(engine, request, base_url))


async def update(engine: Engine, resource_type: str, resource_id: str, body: Any, if_match: int | None = None) -> Outcome:
    """PUT [type]/[id]: the next version, or a create with the client's id."""
    engine.check_id(resource_id)
    request = BundleRequest(None, "PUT", f"{resource_type}/{resource_id}", resource_type, resource_id, resource=body, if_match=if_match)
    return _outcome(await _run(engine, request))


async def update_where(engine: Engine, resource_type: str, criteria: str, body: Any, if_match: int | None, base_url: str) -> Outcome:
    """PUT [type]?criteria: update the one match, create when none (racing creates with the
    same criteria make one resource), 412 when several."""
    request = BundleRequest(None, "PUT", f"{resource_type}?{criteria}", resource_type, criteria=criteria, resource=body,
                            if_match=if_match)
    return _outcome(await _run(engine, request, base_url))


async def patch(engine: Engine, resource_type: str, resource_id: str | None, document: Any, kind: str, if_match: int | None,
                criteria: str | None = None, base_url: str = "") -> Outcome:
    """PATCH [type]/[id] or [type]?criteria (404 when nothing matches, 412 when several): the
    patch applied to the current version; on a lost race, to the version that won."""
    if resource_id is not None:
        engine.check_id(resource_id)
    request = BundleRequest(None, "PATCH", resource_type, resource_type, resource_id, criteria=criteria, resource=document,
                            if_match=if_match, patch_kind=kind)
    return _outcome(await _run(engine, request, base_url))


async def delete(engine: Engine, resource_type: str, resource_id: str, if_match: int | None = None) -> Version | None:
    """DELETE [type]/[id]: the tombstone; None when there was nothing to delete."""
    engine.check_id(resource_id)
    request = BundleRequest(None, "DELETE", f"{resource_type}/{resource_id}", resource_type, resource_id, if_match=if_match)
    return (await _run(engine, request)).version


async def delete_where(engine: Engine, resource_type: str, criteria: str, base_url: str, delete_multiple: bool) -> tuple[Version, ...]:
    """DELETE [type]?criteria: the match (every match, up to a hundred, when allowed) deleted
    in one commit; the tombstones."""
    request = BundleRequest(None, "DELETE", f"{resource_type}?{criteria}", resource_type, criteria=criteria)
    return (await _run(engine, request, base_url, BundleLimits(delete_multiple=delete_multiple))).deleted


async def _run(engine: Engine, request: BundleRequest, base_url: str = "", limits: BundleLimits = ALONE) -> EntryResult:
    engine.check_type(str(request.resource_type))
    if request.method in ("POST", "PUT"):
        check_object(request.resource)
    results = await run_transaction(engine, [request], base_url, limits, attempts=RESOURCE_ATTEMPTS, gave_up=CONTENDED)
    return results[None]


def _outcome(result: EntryResult) -> Outcome:
    assert result.version is not None  # a create, update or patch always has a version
    return Outcome(result.version, created=result.status == 201)


__all__ = ["create", "delete", "delete_where", "patch", "update", "update_where"]
