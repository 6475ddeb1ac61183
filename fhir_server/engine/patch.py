"""Patches: JSON Patch (RFC 6902) or FHIRPath Patch applied to a resource. The planner
(transaction.py) applies them to the current version and writes the result like any update
(validated, versioned, `If-Match` honoured).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import jsonpatch
import jsonpointer
import orjson

from fhir_server.engine.fhirpath_patch import apply_fhirpath_patch
from fhir_server.outcome import FhirError
from fhir_server.spec import Spec
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


__all__ = ["FHIRPATH_PATCH", "JSON_PATCH", "apply_patch", "patch_from_binary", "patch_kind"]
