"""Operation inputs: a FHIR `Parameters` body (POST) or query parameters (GET), as one view."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from fhir_server.outcome import FhirError
from fhir_server.rest.body import read_json
from fhir_server.rest.context import settings_of

VALUE_PREFIX = "value"


@dataclass
class OperationInput:
    """Named inputs of one operation call; a bare resource body is kept as `body`."""

    values: dict[str, list[Any]] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None  # the Parameters body itself, when one was sent

    def first(self, name: str) -> Any:
        found = self.values.get(name)
        return found[0] if found else None

    def text(self, name: str) -> str | None:
        value = self.first(name)
        if value is not None and not isinstance(value, str):
            raise FhirError.of(400, "invalid", f"Parameter '{name}' must be a string")
        return value


async def operation_input(request: Request) -> OperationInput:
    """Query parameters, plus the body of a POST (Parameters, or any other resource as `body`)."""
    found = OperationInput()
    for name, value in parse_qsl(request.url.query, keep_blank_values=True):
        found.values.setdefault(name, []).append(value)
    if request.method != "POST":
        return found
    body = await read_json(request, settings_of(request).max_body_bytes)
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise FhirError.of(400, "structure", "The body must be a FHIR resource (Parameters or the resource itself)")
    if body["resourceType"] != "Parameters":
        found.body = body
        return found
    found.parameters = body
    for parameter in body.get("parameter", []):
        if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
            raise FhirError.of(400, "structure", "Each Parameters.parameter needs a name")
        found.values.setdefault(parameter["name"], []).append(_parameter_value(parameter))
    return found


def _parameter_value(parameter: dict[str, Any]) -> Any:
    if "resource" in parameter:
        return parameter["resource"]
    for key, value in parameter.items():
        if key.startswith(VALUE_PREFIX) and key[len(VALUE_PREFIX) : len(VALUE_PREFIX) + 1].isupper():
            return value
    return None


def parameters_resource(*pairs: tuple[str, str, Any]) -> dict[str, Any]:
    """A Parameters resource from (name, value[x] suffix, value); None values are left out."""
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": name, f"value{kind}": value} for name, kind, value in pairs if value is not None],
    }


__all__ = ["OperationInput", "operation_input", "parameters_resource"]
