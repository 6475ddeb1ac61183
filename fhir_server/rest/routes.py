"""The FHIR REST interactions: HTTP in, engine call, FHIR response out.

Plain Starlette endpoints (request -> response) mounted on the FastAPI app: no dependency
injection or response models on the hot paths. Each route declares the CapabilityStatement
interactions it implements, so the statement is generated from what really exists.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fhir_server.engine import Outcome, read_history
from fhir_server.engine import writes
from fhir_server.outcome import FhirError, Issue, operation_outcome
from fhir_server.rest.body import read_body, read_json, read_patch
from fhir_server.rest.bundles import transaction_or_batch
from fhir_server.rest import bulk_export, cdl, subscription_operations
from fhir_server.rest.capability import capability_statement
from fhir_server.rest.context import base_url, engine_of, settings_of
from fhir_server.rest.history_bundle import history_bundle
from fhir_server.rest.hl7v2_ingest import ingest
from fhir_server.rest.negotiation import FORMAT_PARAMETERS, Rendering, negotiate, preferred
from fhir_server.rest.openapi import openapi_document
from fhir_server.rest.preconditions import if_match, not_modified, parse_instant, return_preference, strict_handling
from fhir_server.rest.search_bundle import search_bundle, search_etag, unchanged
from fhir_server.rest.sign_in import authorize_choice, authorize_page
from fhir_server.rest.sign_in import token as sign_in_token
from fhir_server.rest.subrequest import SUBREQUEST
from fhir_server.rest.terminology_operations import expand, lookup, validate_code
from fhir_server.rest.validate_operation import validate_instance, validate_type
from fhir_server.values import key
from fhir_server.rest.responses import fhir_response, outcome_response, version_headers
from fhir_server.security.discovery import rest_security
from fhir_server.security.discovery import smart_configuration as smart_discovery
from fhir_server.security.audit import audit_event
from fhir_server.security.permissions import (BUNDLES, CREATES, DELETES, EVERYTHING, EXPANDS, EXPORT_CANCELS, EXPORT_JOBS, EXPORTS, HL7_INBOX, INSTANCE_HISTORY,
                                              LOOKS_UP, NOTE_DELETES, NOTE_READS, NOTE_SEARCHES, NOTE_UPDATES, PATCHES, PUBLIC,
                                              READS, SEARCHES, SUBSCRIPTION_STATUS, SYSTEM_HISTORY, SYSTEM_SEARCHES, TYPE_HISTORY, UPDATES,
                                              VALIDATES, VREADS, Permission)
from fhir_server.security.policy import NOBODY, Access, acting_as
from fhir_server.storage.reach import compartment_filter
from fhir_server.storage.store import Version
from fhir_server.webapp.serving import app_file, app_root

log = logging.getLogger("calipso.rest")

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class FhirRoute:
    """One URL pattern, its HTTP method, handler, what it asks of the caller's token, and the
    interaction it implements. A route without a permission is refused (security/permissions.py)."""

    path: str
    method: str
    endpoint: Endpoint
    permission: Permission | None
    interaction: str | None = None  # space-separated when one URL implements several
    level: str = "type"  # "type" (per resource type) or "system"


def _location(request: Request, version: Version) -> str:
    return f"{base_url(request)}/{version.type}/{version.id}/_history/{version.version}"


def _write_response(request: Request, outcome: Outcome, rendering: Rendering) -> Response:
    """Status, Location, ETag and the body `Prefer: return=` asks for."""
    version = outcome.version
    status = 201 if outcome.created else 200
    headers = version_headers(version)
    headers["Location"] = _location(request, version)
    preference = return_preference(request)
    if preference == "minimal":
        return fhir_response(None, status, headers)
    if preference == "OperationOutcome":
        verb = "Created" if outcome.created else "Updated"
        issue = Issue("informational", f"{verb} {version.type}/{version.id} version {version.version}", "information")
        return outcome_response(status, [issue], headers, rendering)
    return fhir_response(version.raw, status, headers, rendering)


# -- interactions ------------------------------------------------------------------------------


async def metadata(request: Request) -> Response:
    rendering = negotiate(request)
    return fhir_response(_capability_statement(request), 200, None, rendering)


async def openapi(request: Request) -> Response:
    """The OpenAPI description of what the CapabilityStatement declares (rest/openapi.py)."""
    return JSONResponse(openapi_document(_capability_statement(request)))


def _capability_statement(request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    return capability_statement(
        engine.spec,
        engine.parameters,
        engine.guide,
        base_url(request),
        type_interactions=_interactions("type"),
        system_interactions=_interactions("system"),
        delete_multiple=settings_of(request).conditional_delete_multiple,
        security=rest_security(settings_of(request)),
    )


async def smart_configuration(request: Request) -> Response:
    return JSONResponse(smart_discovery(settings_of(request), base_url(request)))


async def jwks(request: Request) -> Response:
    """The dev issuer's public key (404 when the dev issuer is not trusted)."""
    issuer = request.app.state.dev_issuer
    if issuer is None:
        raise FhirError.of(404, "not-found", "This server runs no dev issuer")
    return JSONResponse(issuer.jwks())




async def create(request: Request) -> Response:
    rendering = negotiate(request)
    given = {name for name, _ in request.query_params.multi_items()} - FORMAT_PARAMETERS
    if given:
        # Silently creating would let a client believe it made a conditional create.
        raise FhirError.of(400, "not-supported", f"POST [type] takes no search parameters ({', '.join(sorted(given))[:80]}): "
                           "for a conditional create, send the criteria in the If-None-Exist header")
    body = await read_json(request, settings_of(request).max_body_bytes)
    resource_type = request.path_params["type"]
    criteria = request.headers.get("if-none-exist")
    outcome = await writes.create(engine_of(request), resource_type, body, criteria, base_url(request))
    return _write_response(request, outcome, rendering)


async def update_conditional(request: Request) -> Response:
    rendering = negotiate(request)
    expected = if_match(request)
    body = await read_json(request, settings_of(request).max_body_bytes)
    outcome = await writes.update_where(
        engine_of(request), request.path_params["type"], request.url.query, body, expected, base_url(request)
    )
    return _write_response(request, outcome, rendering)


async def delete_conditional(request: Request) -> Response:
    rendering = negotiate(request)
    resource_type = request.path_params["type"]
    deleted = await writes.delete_where(
        engine_of(request), resource_type, request.url.query, base_url(request), settings_of(request).conditional_delete_multiple
    )
    text = f"Deleted {len(deleted)} {resource_type}" if deleted else "Nothing matched: nothing deleted"
    headers = {"ETag": f'W/"{deleted[0].version}"'} if len(deleted) == 1 else None
    return outcome_response(200, [Issue("informational", text, "information")], headers, rendering)


async def read(request: Request) -> Response:
    rendering = negotiate(request)
    version = await engine_of(request).read(request.path_params["type"], request.path_params["id"])
    headers = version_headers(version)
    if not_modified(request, version):
        return Response(status_code=304, headers=headers)
    return fhir_response(version.raw, 200, headers, rendering)


async def vread(request: Request) -> Response:
    rendering = negotiate(request)
    params = request.path_params
    version = await engine_of(request).vread(params["type"], params["id"], params["vid"])
    return fhir_response(version.raw, 200, version_headers(version), rendering)


async def update(request: Request) -> Response:
    rendering = negotiate(request)
    expected = if_match(request)
    body = await read_json(request, settings_of(request).max_body_bytes)
    params = request.path_params
    outcome = await writes.update(engine_of(request), params["type"], params["id"], body, expected)
    return _write_response(request, outcome, rendering)


async def delete(request: Request) -> Response:
    rendering = negotiate(request)
    params = request.path_params
    tombstone = await writes.delete(engine_of(request), params["type"], params["id"], if_match(request))
    if tombstone is None:
        issue = Issue("informational", f"{params['type']}/{params['id']} does not exist or is already deleted", "information")
        return outcome_response(200, [issue], None, rendering)
    issue = Issue("informational", f"Deleted {tombstone.type}/{tombstone.id} (version {tombstone.version})", "information")
    return outcome_response(200, [issue], {"ETag": f'W/"{tombstone.version}"'}, rendering)


async def history_system(request: Request) -> Response:
    return await _history(request, None, None)


async def history_type(request: Request) -> Response:
    resource_type = request.path_params["type"]
    engine_of(request).check_type(resource_type)
    return await _history(request, resource_type, None)


async def history_instance(request: Request) -> Response:
    resource_type, resource_id = request.path_params["type"], request.path_params["id"]
    engine = engine_of(request)
    engine.check_type(resource_type)
    engine.check_id(resource_id)
    if await engine.store.current(resource_type, resource_id) is None:
        raise FhirError.of(404, "not-found", f"{resource_type}/{resource_id} is not known")
    await engine.check_visible(resource_type, resource_id)
    return await _history(request, resource_type, resource_id)


async def _history(request: Request, resource_type: str | None, resource_id: str | None) -> Response:
    rendering = negotiate(request)
    settings = settings_of(request)
    params = request.query_params
    if "_at" in params:
        raise FhirError.of(400, "not-supported", "_at is not supported on history; use _since")
    since = parse_instant(params["_since"], "_since") if "_since" in params else None
    count = _count(params.get("_count"), settings.history_page_size, settings.history_max_page_size)
    page = await read_history(
        engine_of(request).store, resource_type, resource_id, since, count, params.get("_cursor")
    )
    path = request.url.path.removeprefix(request.scope.get("root_path", "")).removeprefix("/fhir")
    body = history_bundle(page, base_url(request), path, params.multi_items())
    return fhir_response(body, 200, None, rendering)


def _count(value: str | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    if not value.isdigit():
        raise FhirError.of(400, "invalid", f"_count must be a whole number from 0 to {maximum}")
    return min(int(value), maximum)


async def search_type(request: Request) -> Response:
    resource_type = request.path_params["type"]
    return await _search(request, resource_type, f"/{resource_type}", None)


async def search_compartment(request: Request) -> Response:
    """`Patient/{id}/{type}`: the search, limited to that patient's compartment."""
    compartment, owner, resource_type = (request.path_params[k] for k in ("compartment", "id", "type"))
    engine = engine_of(request)
    engine.check_type(resource_type)
    engine.check_id(owner)
    members = engine.spec.compartments.get(compartment, {}).get(resource_type)
    if compartment not in engine.spec.compartments or members is None:
        raise FhirError.of(404, "not-supported", f"{resource_type} is not in the {compartment[:40]} compartment")
    keys = [key(code, f"{compartment}/{owner}") for code in members]
    extra = compartment_filter(f"{compartment}/{owner}" if resource_type == compartment else None, keys)
    return await _search(request, resource_type, f"/{compartment}/{owner}/{resource_type}", extra)


async def everything(request: Request) -> Response:
    """`Patient/{id}/$everything` (`_type`, `_since`, `_count`, paging)."""
    rendering = negotiate(request)
    engine, patient_id = engine_of(request), request.path_params["id"]
    engine.check_id(patient_id)
    await engine.read("Patient", patient_id)  # 404 / 410 like a read
    params = request.query_params
    types = [t.strip() for t in params["_type"].split(",")] if "_type" in params else None
    for resource_type in types or []:
        engine.check_type(resource_type)
    since = parse_instant(params["_since"], "_since") if "_since" in params else None
    settings = settings_of(request)
    count = _count(params.get("_count"), settings.history_page_size, settings.history_max_page_size)
    result = await engine.searcher.everything(patient_id, types, since, count, params.get("_cursor"))
    result.request.echoed = [(k, v) for k, v in params.multi_items() if k in ("_type", "_since", "_count")]
    body = search_bundle(result, engine.spec, base_url(request), f"/Patient/{patient_id}/$everything")
    return fhir_response(body, 200, None, rendering)


async def search_system(request: Request) -> Response:
    """`/fhir?_type=A,B&...` and `POST /fhir/_search`: common parameters across types."""
    rendering = negotiate(request)
    engine = engine_of(request)
    params = await _search_parameters(request)
    types = [t.strip() for v in (v for k, v in params if k == "_type") for t in v.split(",") if t.strip()]
    for resource_type in types:
        engine.check_type(resource_type)
    result = await engine.searcher.search_system(types or None, params, strict_handling(request), base_url(request))
    result.request.echoed += [("_type", ",".join(types))] if types else []
    return fhir_response(search_bundle(result, engine.spec, base_url(request), ""), 200, None, rendering)


async def _search_parameters(request: Request) -> list[tuple[str, str]]:
    """Query parameters, plus the form body of a POST _search."""
    params = request.query_params.multi_items()
    if request.method == "POST":
        body = await read_body(request, settings_of(request).max_body_bytes)
        try:
            params += parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise FhirError.of(400, "structure", "A _search body must be application/x-www-form-urlencoded UTF-8") from None
    return [(k, v) for k, v in params if k not in FORMAT_PARAMETERS]


async def _search(request: Request, resource_type: str, path: str, extra: dict | None) -> Response:
    rendering = negotiate(request)
    engine = engine_of(request)
    engine.check_type(resource_type)
    params = await _search_parameters(request)
    result = await engine.searcher.search(resource_type, params, strict_handling(request), base_url(request), extra)
    etag = search_etag(result)
    if unchanged(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag})
    body_bytes = search_bundle(result, engine.spec, base_url(request), path)
    return fhir_response(body_bytes, 200, {"ETag": etag}, rendering)


async def patch_instance(request: Request) -> Response:
    rendering = negotiate(request)
    expected = if_match(request)
    document, kind = await read_patch(request, settings_of(request).max_body_bytes)
    params = request.path_params
    outcome = await writes.patch(engine_of(request), params["type"], params["id"], document, kind, expected)
    return _write_response(request, outcome, rendering)


async def patch_conditional(request: Request) -> Response:
    rendering = negotiate(request)
    expected = if_match(request)
    document, kind = await read_patch(request, settings_of(request).max_body_bytes)
    outcome = await writes.patch(engine_of(request), request.path_params["type"], None, document, kind, expected,
                                 request.url.query, base_url(request))
    return _write_response(request, outcome, rendering)


# -- error boundary ----------------------------------------------------------------------------


def guarded(route: FhirRoute) -> Endpoint:
    """The gate (token, the route's permission, care-team policy) before the endpoint, the audit
    trail after it; every outcome becomes a FHIR response; internal errors leak neither trace
    nor data. The endpoint runs under the Access the gate decided, and nothing else."""
    endpoint, permission = route.endpoint, route.permission

    async def handle(request: Request) -> Response:
        access, status = NOBODY, 500
        try:
            gate = request.app.state.gate
            access = await gate.identify(request, permission)
            gate.authorize(request, permission, access)  # after identify: a refusal is audited with its author
            limiter = request.app.state.rate_limiter
            if limiter is not None:
                limiter.check(access.who if access.grant is not None else f"address:{request.client.host if request.client else '?'}")
            with acting_as(access):
                response = await _admitted(request, endpoint)
            status = response.status_code
            return response
        except FhirError as error:
            status = error.status
            return outcome_response(error.status, error.issues, error.headers, preferred(request))
        except Exception as error:  # noqa: BLE001 - the last line of defence
            incident = uuid.uuid4().hex[:12]
            # type and frames only: exception messages may quote request data
            frames = "".join(traceback.format_tb(error.__traceback__, limit=-8))
            log.error("internal error incident=%s type=%s\n%s", incident, type(error).__name__, frames)
            issue = Issue("exception", f"Internal server error (incident {incident})")
            return fhir_response(operation_outcome([issue]), 500)
        finally:
            _audit(request, permission, status, access)

    handle.__name__ = endpoint.__name__
    return handle


async def _admitted(request: Request, endpoint: Endpoint) -> Response:
    """At most CALIPSO_HTTP_CONCURRENCY requests work at once; the others wait their turn here,
    so the HL7 feed's database operations do not queue behind every HTTP client's. A Bundle's
    sub-requests run in their parent's turn."""
    admission = request.app.state.admission
    if request.scope.get(SUBREQUEST):
        return await _within_time(request, endpoint)
    working = engine_of(request).workload.working
    if admission is None:
        with working():
            return await _within_time(request, endpoint)
    async with admission:
        with working():
            return await _within_time(request, endpoint)


async def _within_time(request: Request, endpoint: Endpoint) -> Response:
    """Reads get the configured time; writes run to the end of their transaction (cancelling
    one mid-commit would leave its outcome unknown to the client)."""
    if request.method not in ("GET", "HEAD"):
        return await endpoint(request)
    limit = settings_of(request).request_timeout_seconds
    try:
        return await asyncio.wait_for(endpoint(request), limit)
    except asyncio.TimeoutError:
        raise FhirError(503, Issue("timeout", f"The request took longer than {limit:g} s; narrow it (fewer results, no _total)"),
                        headers={"Retry-After": "5"}) from None


def _audit(request: Request, permission: Permission | None, status: int, access: Access) -> None:
    trail = request.app.state.audit
    if trail is None or (permission is not None and permission.public):
        return
    subtype, action = (permission.subtype, permission.action) if permission is not None else ("operation", "E")
    types = permission.types(request) if permission is not None else []
    resource_type = next((t for t in types if t not in ("", "*")), None)
    client = request.client.host if request.client else None
    event = audit_event(subtype, action, status, access.who, client, resource_type, request.path_params.get("id"),
                        request.url.query or None, hl7=permission is HL7_INBOX)
    trail.record(event)


ROUTES: list[FhirRoute] = [
    FhirRoute("/fhir/metadata", "GET", metadata, PUBLIC, "capabilities", "system"),
    FhirRoute("/fhir/openapi.json", "GET", openapi, PUBLIC),
    FhirRoute("/fhir/.well-known/smart-configuration", "GET", smart_configuration, PUBLIC),
    FhirRoute("/fhir/.well-known/jwks.json", "GET", jwks, PUBLIC),
    FhirRoute("/hl7v2", "POST", ingest, HL7_INBOX),
    # the notebook web app (static, no data) and the dev issuer's sign-in (development only)
    FhirRoute("/app", "GET", app_root, PUBLIC),
    FhirRoute("/app/{path:path}", "GET", app_file, PUBLIC),
    FhirRoute("/dev-auth/authorize", "GET", authorize_page, PUBLIC),
    FhirRoute("/dev-auth/authorize", "POST", authorize_choice, PUBLIC),
    FhirRoute("/dev-auth/token", "POST", sign_in_token, PUBLIC),
    # the ANS Cahier de liaison base: notebook entries seen as CdLDocumentReference (rest/cdl.py)
    FhirRoute("/cdl/metadata", "GET", cdl.metadata, PUBLIC),
    FhirRoute("/cdl", "POST", cdl.transaction, BUNDLES),
    FhirRoute("/cdl/DocumentReference", "GET", cdl.search_notes, NOTE_SEARCHES),
    FhirRoute("/cdl/DocumentReference/{id}", "GET", cdl.read_note, NOTE_READS),
    FhirRoute("/cdl/DocumentReference/{id}", "PUT", cdl.update_note, NOTE_UPDATES),
    FhirRoute("/cdl/DocumentReference/{id}", "DELETE", cdl.delete_note, NOTE_DELETES),
    # operations first: `$name` would otherwise be read as an id
    FhirRoute("/fhir/$export", "GET", bulk_export.kick_off_system, EXPORTS),
    FhirRoute("/fhir/$export", "POST", bulk_export.kick_off_system, EXPORTS),
    FhirRoute("/fhir/Patient/$export", "GET", bulk_export.kick_off_patients, EXPORTS),
    FhirRoute("/fhir/Patient/$export", "POST", bulk_export.kick_off_patients, EXPORTS),
    FhirRoute("/fhir/Group/{id}/$export", "GET", bulk_export.kick_off_group, EXPORTS),
    FhirRoute("/fhir/Group/{id}/$export", "POST", bulk_export.kick_off_group, EXPORTS),
    FhirRoute("/fhir/$export-status/{job}", "GET", bulk_export.status, EXPORT_JOBS),
    FhirRoute("/fhir/$export-status/{job}", "DELETE", bulk_export.cancel, EXPORT_CANCELS),
    FhirRoute("/fhir/$export-file/{job}/{name}", "GET", bulk_export.download, EXPORT_JOBS),
    FhirRoute("/fhir/ValueSet/$expand", "GET", expand, EXPANDS),
    FhirRoute("/fhir/ValueSet/$expand", "POST", expand, EXPANDS),
    FhirRoute("/fhir/ValueSet/{id}/$expand", "GET", expand, EXPANDS),
    FhirRoute("/fhir/ValueSet/$validate-code", "GET", validate_code, EXPANDS),
    FhirRoute("/fhir/ValueSet/$validate-code", "POST", validate_code, EXPANDS),
    FhirRoute("/fhir/ValueSet/{id}/$validate-code", "GET", validate_code, EXPANDS),
    FhirRoute("/fhir/CodeSystem/$lookup", "GET", lookup, LOOKS_UP),
    FhirRoute("/fhir/CodeSystem/$lookup", "POST", lookup, LOOKS_UP),
    FhirRoute("/fhir/{type}/$validate", "POST", validate_type, VALIDATES),
    FhirRoute("/fhir/{type}/{id}/$validate", "POST", validate_instance, VALIDATES),
    FhirRoute("/fhir/{type}/{id}/$validate", "GET", validate_instance, VALIDATES),
    FhirRoute("/fhir/_history", "GET", history_system, SYSTEM_HISTORY, "history-system", "system"),
    FhirRoute("/fhir", "POST", transaction_or_batch, BUNDLES, "transaction batch", "system"),
    FhirRoute("/fhir", "GET", search_system, SYSTEM_SEARCHES, "search-system", "system"),
    FhirRoute("/fhir/_search", "POST", search_system, SYSTEM_SEARCHES),
    FhirRoute("/fhir/{type}/_history", "GET", history_type, TYPE_HISTORY, "history-type"),
    FhirRoute("/fhir/{type}/_search", "POST", search_type, SEARCHES),
    FhirRoute("/fhir/{type}", "POST", create, CREATES, "create"),
    FhirRoute("/fhir/{type}", "GET", search_type, SEARCHES, "search-type"),
    FhirRoute("/fhir/{type}", "PUT", update_conditional, UPDATES),
    FhirRoute("/fhir/{type}", "DELETE", delete_conditional, DELETES),
    FhirRoute("/fhir/{type}/{id}/_history", "GET", history_instance, INSTANCE_HISTORY, "history-instance"),
    FhirRoute("/fhir/{type}/{id}/_history/{vid}", "GET", vread, VREADS, "vread"),
    FhirRoute("/fhir/Patient/{id}/$everything", "GET", everything, EVERYTHING),
    FhirRoute("/fhir/Subscription/{id}/$status", "GET", subscription_operations.status, SUBSCRIPTION_STATUS),
    FhirRoute("/fhir/Subscription/{id}/$events", "GET", subscription_operations.events, SUBSCRIPTION_STATUS),
    FhirRoute("/fhir/Subscription/{id}/$get-ws-binding-token", "GET", subscription_operations.binding_token, SUBSCRIPTION_STATUS),
    FhirRoute("/fhir/Subscription/{id}/$get-ws-binding-token", "POST", subscription_operations.binding_token, SUBSCRIPTION_STATUS),
    FhirRoute("/fhir/{compartment}/{id}/{type}", "GET", search_compartment, SEARCHES),
    FhirRoute("/fhir/{type}/{id}", "GET", read, READS, "read"),
    FhirRoute("/fhir/{type}/{id}", "PUT", update, UPDATES, "update"),
    FhirRoute("/fhir/{type}/{id}", "DELETE", delete, DELETES, "delete"),
    FhirRoute("/fhir/{type}/{id}", "PATCH", patch_instance, PATCHES, "patch"),
    FhirRoute("/fhir/{type}", "PATCH", patch_conditional, PATCHES),
]


def _interactions(level: str) -> list[str]:
    """Interaction codes for the CapabilityStatement (capabilities itself is implied)."""
    codes = [code for r in ROUTES if r.level == level and r.interaction for code in r.interaction.split()]
    return [code for code in codes if code != "capabilities"]


__all__ = ["ROUTES", "FhirRoute", "base_url", "guarded"]
