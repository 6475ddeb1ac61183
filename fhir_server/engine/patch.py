"""The patch interaction: JSON Patch (RFC 6902) or FHIRPath Patch applied to the current
version, then written like any update (validated, versioned, `If-Match` honoured).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import jsonpatch
import jsonpointer
import orjson

from fhir_server.engine.fhirpath_patch import apply_fhirpath_patch
from fhir_server.engine.interactions import Engine, Outcome, check_if_match
from fhir_server.engine.retry import RESOURCE_ATTEMPTS, retrying, version_conflict
from fhir_server.outcome import FhirError
from fhir_server.spec import Spec
from fhir_server.storage.store import Version, VersionConflict
from fhir_server.validation.structural import MAX_DEPTH, too_deep

JSON_PATCH = "application/json-patch+json"
FHIRPATH_PATCH = "fhirpath-patch"  # a Parameters resource


def apply_patch(spec: Spec, resource: dict[str, Any], document: Any, kind: str) -> dict[str, Any]:
    """The patched copy of `resource`; 400 for a bad patch, 422 when it cannot apply."""
    if too_deep(document):
        raise FhirError.of(422, "too-costly", f"The patch nests deeper than {MAX_DEPTH} levels")
    if kind == JSON_PATCH:
        patched = _apply_json_patch(resource, document)
    else:
        patched = apply_fhirpath_patch(spec, resource, document)
    if not isinstance(patched, dict):
        raise FhirError.of(422, "processing", "The patch replaced the whole resource with something that is not one")
    for fixed in ("resourceType", "id"):
        if patched.get(fixed) != resource.get(fixed):
            raise FhirError.of(422, "processing", f"A patch cannot change the resource's {fixed}", expression=fixed)
    return patched


def _apply_json_patch(resource: dict[str, Any], operations: Any) -> Any:
    if not isinstance(operations, list) or not operations:
        raise FhirError.of(400, "invalid", "A JSON Patch is a non-empty JSON array of operations")
    try:
        patch = jsonpatch.JsonPatch(operations)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, AttributeError) as error:
        raise FhirError.of(400, "invalid", f"Invalid JSON Patch: {error}") from None
    try:
        return patch.apply(resource, in_place=False)
    except jsonpatch.JsonPatchTestFailed as error:
        raise FhirError.of(422, "processing", f"JSON Patch test failed: {error}") from None
    except jsonpatch.InvalidJsonPatch as error:
        raise FhirError.of(400, "invalid", f"Invalid JSON Patch: {error}") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, KeyError, IndexError, TypeError) as error:
        raise FhirError.of(422, "processing", f"The JSON Patch cannot apply to this resource: {error}") from None


def patch_from_binary(binary: dict[str, Any]) -> Any:
    """The JSON Patch a transaction entry carries in a Binary resource (R4's way)."""
    if binary.get("contentType") != JSON_PATCH:
        raise FhirError.of(400, "invalid", f"A PATCH entry's Binary must have contentType {JSON_PATCH}")
    try:
        return orjson.loads(base64.b64decode(binary.get("data") or "", validate=True))
    except (binascii.Error, ValueError):
        raise FhirError.of(400, "invalid", "A PATCH entry's Binary.data is not base64 JSON") from None


def patch_kind(document: Any) -> str:
    """How a PATCH body in a Bundle entry is to be read: Binary (JSON Patch) or Parameters."""
    if isinstance(document, dict) and document.get("resourceType") == "Binary":
        return JSON_PATCH
    if isinstance(document, dict) and document.get("resourceType") == "Parameters":
        return FHIRPATH_PATCH
    raise FhirError.of(400, "invalid", "A PATCH entry's resource must be a Parameters (FHIRPath Patch) or a Binary (JSON Patch)")


async def patch(
    engine: Engine, resource_type: str, resource_id: str, document: Any, kind: str, if_match: int | None
) -> Outcome:
    """Apply a patch to the current version and write the result as its next version.

    When another writer commits first, the patch is applied again to what that writer wrote,
    unless the client named the version with `If-Match` (then it is the client's 412).
    """

    async def attempt() -> Outcome:
        current = await engine.read(resource_type, resource_id, to_replace=True)
        check_if_match(current, if_match)
        patched = engine.validate(resource_type, apply_patch(engine.spec, _resource(current), document, kind))
        write = engine.prepare(resource_type, resource_id, patched, "PATCH", current, engine.next_time(current))
        try:
            [version] = await engine.commit(write)
        except VersionConflict:
            raise version_conflict(if_match) from None
        return Outcome(version, created=False)

    return await retrying(attempt, "Too many concurrent writes to this resource; retry", RESOURCE_ATTEMPTS)


def _resource(version: Version) -> dict[str, Any]:
    return orjson.loads(version.raw or b"{}")


__all__ = ["FHIRPATH_PATCH", "JSON_PATCH", "apply_patch", "patch", "patch_from_binary", "patch_kind"]
