"""`$validate` at type and instance level (R4 Resource-validate).

The answer is always 200 with an OperationOutcome when validation ran: errors in the
resource are the result, not a failure of the call. Nothing is written.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.outcome import FhirError, Issue
from fhir_server.rest.context import engine_of
from fhir_server.rest.negotiation import negotiate
from fhir_server.rest.operation_input import operation_input
from fhir_server.rest.responses import outcome_response

MODES = ("create", "update", "delete", "profile")


async def validate_type(request: Request) -> Response:
    return await _validate(request, None)


async def validate_instance(request: Request) -> Response:
    return await _validate(request, request.path_params["id"])


async def _validate(request: Request, resource_id: str | None) -> Response:
    rendering = negotiate(request)
    engine = engine_of(request)
    resource_type = request.path_params["type"]
    engine.check_type(resource_type)
    given = await operation_input(request)
    mode = given.text("mode")
    if mode is not None and mode not in MODES:
        raise FhirError.of(400, "invalid", f"mode must be one of {', '.join(MODES)}")
    profile = given.text("profile")
    if profile is not None and not engine.validator.knows_profile(profile):
        raise FhirError.of(400, "not-found", f"Unknown profile {profile[:200]}", expression="profile")
    resource: Any = given.first("resource") if given.body is None else given.body
    if resource is None and resource_type == "Parameters" and given.parameters is not None:
        resource = given.parameters  # `Parameters/$validate` of a Parameters with no 'resource' input: that Parameters
    if mode == "delete":
        if resource_id is None:
            raise FhirError.of(400, "invalid", "mode=delete needs an instance: [type]/[id]/$validate")
        await engine.read(resource_type, resource_id)
        return outcome_response(200, [Issue("informational", "The resource can be deleted", "information")], rendering=rendering)
    if resource is None and resource_id is not None:
        resource = orjson.loads((await engine.read(resource_type, resource_id)).raw or b"{}")
    if resource is None:
        raise FhirError.of(400, "required", "Nothing to validate: send the resource, or a Parameters with 'resource'")
    issues = _mode_issues(resource, resource_type, resource_id, mode)
    issues += engine.validator.validate_all(resource, resource_type, profile)
    if not issues:
        issues = [Issue("informational", "No issues: the resource is valid", "information")]
    return outcome_response(200, issues, rendering=rendering)


def _mode_issues(resource: Any, resource_type: str, resource_id: str | None, mode: str | None) -> list[Issue]:
    """What create and update add to plain validation: the id rules of those interactions."""
    if not isinstance(resource, dict):
        return []
    if mode == "update" and resource.get("id") != resource_id:
        return [Issue("invalid", "For an update the resource id must equal the id in the URL", expression=f"{resource_type}.id")]
    return []


__all__ = ["validate_instance", "validate_type"]
