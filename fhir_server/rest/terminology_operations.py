"""`ValueSet/$expand`, `ValueSet/$validate-code` and `CodeSystem/$lookup` over our guide's terminology."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.engine.interactions import fhir_instant
from fhir_server.ig import Terminology
from fhir_server.outcome import FhirError
from fhir_server.rest.context import engine_of
from fhir_server.rest.negotiation import negotiate
from fhir_server.rest.operation_input import OperationInput, operation_input, parameters_resource
from fhir_server.rest.responses import fhir_response

MAX_EXPANSION = 1000


async def expand(request: Request) -> Response:
    rendering = negotiate(request)
    given = await operation_input(request)
    value_set = await _value_set(request, given)
    terminology = _terminology(request)
    concepts = terminology.expand(value_set["url"])
    if concepts is None:
        raise FhirError.of(422, "not-supported", f"{value_set['url']} cannot be expanded here (filters or unknown code systems)")
    text = (given.text("filter") or "").casefold()
    if text:
        concepts = tuple(c for c in concepts if text in c.code.casefold() or text in (c.display or "").casefold())
    offset, count = _bounded(given, "offset", 0), _bounded(given, "count", MAX_EXPANSION)
    page = concepts[offset : offset + min(count, MAX_EXPANSION)]
    expanded = {k: v for k, v in value_set.items() if k not in ("meta", "text", "compose")}
    expanded["expansion"] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": fhir_instant(datetime.now(timezone.utc)),
        "total": len(concepts),
        "offset": offset,
        **({"contains": [_entry(c.system, c.code, c.display) for c in page]} if page else {}),
    }
    return fhir_response(expanded, 200, rendering=rendering)


async def validate_code(request: Request) -> Response:
    rendering = negotiate(request)
    given = await operation_input(request)
    value_set = await _value_set(request, given)
    terminology = _terminology(request)
    codings = _codings(given)
    concepts = terminology.expand(value_set["url"])
    if concepts is None:
        raise FhirError.of(422, "not-supported", f"{value_set['url']} cannot be enumerated here")
    for system, code, display in codings:
        for concept in concepts:
            if concept.code == code and (system is None or concept.system == system):
                message = None
                if display is not None and concept.display is not None and display != concept.display:
                    message = f"The display for {code} is '{concept.display}', not '{display}'"
                return fhir_response(
                    parameters_resource(("result", "Boolean", message is None), ("message", "String", message), ("display", "String", concept.display)),
                    200,
                    rendering=rendering,
                )
    shown = ", ".join(f"{s or ''}|{c}" for s, c, _ in codings)
    message = f"{shown} is not in {value_set['url']}"
    return fhir_response(parameters_resource(("result", "Boolean", False), ("message", "String", message)), 200, rendering=rendering)


async def lookup(request: Request) -> Response:
    rendering = negotiate(request)
    given = await operation_input(request)
    terminology = _terminology(request)
    codings = _codings(given)
    system, code, _ = codings[0]
    if system is None:
        raise FhirError.of(400, "required", "$lookup needs a system (or a coding with one)")
    code_system = terminology.code_systems.get(system)
    if code_system is None:
        raise FhirError.of(404, "not-found", f"Code system {system} is not known here")
    concept = terminology.lookup(system, code)
    if concept is None:
        raise FhirError.of(404, "not-found", f"{code} is not a code of {system}")
    result = parameters_resource(
        ("name", "String", code_system.get("name")),
        ("version", "String", code_system.get("version")),
        ("display", "String", concept.get("display")),
    )
    if concept.get("definition"):
        result["parameter"].append({"name": "property", "part": [
            {"name": "code", "valueCode": "definition"}, {"name": "value", "valueString": concept["definition"]}]})
    for designation in concept.get("designation", []):
        parts = [{"name": "value", "valueString": designation["value"]}]
        if "language" in designation:
            parts.insert(0, {"name": "language", "valueCode": designation["language"]})
        result["parameter"].append({"name": "designation", "part": parts})
    return fhir_response(result, 200, rendering=rendering)


def _terminology(request: Request) -> Terminology:
    return engine_of(request).guide.terminology


async def _value_set(request: Request, given: OperationInput) -> dict[str, Any]:
    """The ValueSet named by the instance id, the `url` parameter, or sent as `valueSet`."""
    engine = engine_of(request)
    if "id" in request.path_params:
        return orjson.loads((await engine.read("ValueSet", request.path_params["id"])).raw or b"{}")
    sent = given.first("valueSet")
    if isinstance(sent, dict):
        raise FhirError.of(422, "not-supported", "Expanding a ValueSet sent in the request is not supported; use url")
    url = given.text("url")
    if not url:
        raise FhirError.of(400, "required", "Name the value set: ValueSet/[id]/$expand or the url parameter")
    value_set = engine.guide.terminology.value_sets.get(url.split("|", 1)[0])
    if value_set is None:
        raise FhirError.of(404, "not-found", f"Value set {url[:200]} is not known here")
    return value_set


def _codings(given: OperationInput) -> list[tuple[str | None, str, str | None]]:
    """(system, code, display) candidates from code+system, coding or codeableConcept."""
    found: list[tuple[str | None, str, str | None]] = []
    code = given.text("code")
    if code:
        found.append((given.text("system"), code, given.text("display")))
    coding = given.first("coding")
    concept = given.first("codeableConcept")
    for item in ([coding] if isinstance(coding, dict) else []) + (concept.get("coding", []) if isinstance(concept, dict) else []):
        if isinstance(item, dict) and isinstance(item.get("code"), str):
            found.append((item.get("system"), item["code"], item.get("display")))
    if not found:
        raise FhirError.of(400, "required", "Give a code (with its system), a coding or a codeableConcept")
    return found


def _bounded(given: OperationInput, name: str, default: int) -> int:
    value = given.first(name)
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise FhirError.of(400, "invalid", f"{name} must be a whole number") from None
    if number < 0:
        raise FhirError.of(400, "invalid", f"{name} must not be negative")
    return number


def _entry(system: str, code: str, display: str | None) -> dict[str, Any]:
    return {"system": system, "code": code, **({"display": display} if display else {})}


__all__ = ["expand", "lookup", "validate_code"]
