"""The ANS "Cahier de liaison" base at `/cdl` (docs/national.md): the notebook's entries read,
searched and written as `CdLDocumentReference`, through the same engine, care-team policy,
masking and audit as `/fhir` (the entries are Communications; the view is computed, never
stored). Its CapabilityStatement instantiates GestionnaireCdL and says what is not supported.

Tokens need their scopes on both DocumentReference (what the client asks for) and
Communication (what is read or written): the view never reaches more than the notebook would.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.engine import writes
from fhir_server.ig import load_guide
from fhir_server.national import NATIONAL_DIR
from fhir_server.national.cdl_view import DOCUMENT, NOTE, is_note, to_communication, to_document_reference, translate_search, view_table
from fhir_server.outcome import FhirError, Issue, operation_outcome
from fhir_server.rest.body import read_json
from fhir_server.rest.bundle import assemble, paging_links
from fhir_server.rest.bundles import apply_bundle
from fhir_server.rest.capability import instance_statement
from fhir_server.rest.context import base_url, engine_of, settings_of
from fhir_server.rest.negotiation import FORMAT_PARAMETERS, negotiate
from fhir_server.rest.preconditions import if_match, not_modified, strict_handling
from fhir_server.rest.responses import fhir_response, outcome_response, version_headers
from fhir_server.security.discovery import rest_security
from fhir_server.security.policy import ACCESS
from fhir_server.security.scopes import CREATE, UPDATE
from fhir_server.storage.store import Version
from fhir_server.validation.profile import ProfileValidator

NATIONAL_CDL = NATIONAL_DIR / "cdl"
SEARCH_PARAMETERS = [("date", "date", "sent"), ("type", "token", "category"), ("security-label", "token", "_security"),
                     ("subject", "reference", "subject"), ("patient", "reference", "subject"), ("author", "reference", "sender"),
                     ("status", "token", "status (current, entered-in-error)"), ("_id", "token", "_id"),
                     ("_lastUpdated", "date", "_lastUpdated")]


@cache
def cdl_validator() -> ProfileValidator:
    """The transcribed CdL definitions (fhir_server/national/cdl, NOTICE)."""
    return ProfileValidator(load_guide(NATIONAL_CDL))


def cdl_base(request: Request) -> str:
    return base_url(request).rsplit("/fhir", 1)[0] + "/cdl"


def _entry_profile(request: Request) -> str:
    return f"{engine_of(request).guide.canonical}/StructureDefinition/notebook-entry"


# -- reads -------------------------------------------------------------------------------------


async def read_note(request: Request) -> Response:
    rendering = negotiate(request)
    version = await engine_of(request).read(NOTE, request.path_params["id"])
    assert version.raw is not None
    entry = orjson.loads(version.raw)
    if not is_note(entry):
        raise FhirError.of(404, "not-found", f"DocumentReference/{request.path_params['id'][:64]} is not known")
    headers = version_headers(version)
    if not_modified(request, version):
        return Response(status_code=304, headers=headers)
    return fhir_response(orjson.dumps(to_document_reference(entry)), 200, headers, rendering)


async def search_notes(request: Request) -> Response:
    rendering = negotiate(request)
    engine, base, cdl = engine_of(request), base_url(request), cdl_base(request)
    asked = [(k, v) for k, v in request.query_params.multi_items() if k not in FORMAT_PARAMETERS]
    translated, unsupported = translate_search(asked)
    if unsupported and strict_handling(request):
        raise FhirError.of(400, "not-supported", f"The CdL view does not support {', '.join(unsupported)[:200]}")
    result = await engine.searcher.search(NOTE, translated, strict_handling(request), base)
    entries = [_search_entry(cdl, orjson.loads(bytes(doc["raw"])), "match") for doc in result.matches]
    entries += [_search_entry(base, orjson.loads(bytes(doc["raw"])), "include") for doc in result.included]
    warnings = [f"Not supported by the CdL view, ignored: {name}" for name in unsupported] + list(result.criteria.ignored)
    if warnings:
        outcome = operation_outcome([Issue("not-supported", text, "warning") for text in warnings])
        entries.append(orjson.dumps({"resource": outcome, "search": {"mode": "outcome"}}))
    echoed = [(k, v) for k, v in asked if k != "_cursor" and k not in {u.split("=")[0] for u in unsupported}]
    links = paging_links(cdl, f"/{DOCUMENT}", echoed + ([("_cursor", result.request.cursor)] if result.request.cursor else []),
                         result.next_cursor, result.previous_cursor)
    return fhir_response(assemble("searchset", links, result.total, entries), 200, None, rendering)


def _search_entry(base: str, resource: dict[str, Any], mode: str) -> bytes:
    if mode == "match":
        resource = to_document_reference(resource)
    return orjson.dumps({"fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}", "resource": resource,
                         "search": {"mode": mode}})


# -- writes ------------------------------------------------------------------------------------


async def update_note(request: Request) -> Response:
    """PUT: the author's new version of its note (a CdL client cannot create with its own id)."""
    rendering = negotiate(request)
    body = await read_json(request, settings_of(request).max_body_bytes)
    note_id = request.path_params["id"]
    if not isinstance(body, dict) or body.get("resourceType") != DOCUMENT:
        raise FhirError.of(400, "invalid", "The body must be a DocumentReference")
    body = engine_of(request).validate(DOCUMENT, body)
    _check_document(body)
    if body.get("id") != note_id:
        raise FhirError.of(400, "invalid", "The body's id must be present and equal to the id in the URL", expression="DocumentReference.id")
    engine = engine_of(request)
    await _check_author(request, note_id)
    outcome = await writes.update(engine, NOTE, note_id, to_communication(body, _entry_profile(request)), if_match(request))
    return _note_response(request, outcome.version, 201 if outcome.created else 200, rendering)


async def delete_note(request: Request) -> Response:
    """DELETE: the note is marked entered-in-error by its author; its history stays."""
    rendering = negotiate(request)
    engine, note_id = engine_of(request), request.path_params["id"]
    entry = await _check_author(request, note_id)
    if entry.get("status") == "entered-in-error":
        return outcome_response(200, [Issue("informational", f"DocumentReference/{note_id} is already entered-in-error", "information")],
                                None, rendering)
    outcome = await writes.update(engine, NOTE, note_id, {**entry, "status": "entered-in-error"}, if_match(request))
    return _note_response(request, outcome.version, 200, rendering)


async def _check_author(request: Request, note_id: str) -> dict[str, Any]:
    """The stored note, if the token may replace it and wrote it (only the author changes a note)."""
    version = await engine_of(request).read(NOTE, note_id, to_replace=True)
    assert version.raw is not None
    entry: dict[str, Any] = orjson.loads(version.raw)
    if not is_note(entry):
        raise FhirError.of(404, "not-found", f"DocumentReference/{note_id[:64]} is not known")
    access = ACCESS.get()
    author = (entry.get("sender") or {}).get("reference")
    if access.patients is not None and author not in access.authors:
        raise FhirError.of(403, "forbidden", "Only the author of a note may change or delete it")
    return entry


def _check_document(document: dict[str, Any]) -> None:
    issues = cdl_validator().validate(document, view_table()["profiles"]["document"])
    if issues:
        raise FhirError(422, issues)


def _note_response(request: Request, version: Version, status: int, rendering: Any) -> Response:
    headers = version_headers(version)
    headers["Location"] = f"{cdl_base(request)}/{DOCUMENT}/{version.id}/_history/{version.version}"
    assert version.raw is not None
    return fhir_response(orjson.dumps(to_document_reference(orjson.loads(version.raw))), status, headers, rendering)


async def transaction(request: Request) -> Response:
    """The CdL creation and update Bundles: checked against their profiles, the note written as
    a notebook entry in the same database transaction as the Patient and people it brings."""
    rendering = negotiate(request)
    body = await read_json(request, settings_of(request).max_bundle_bytes)
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle" or body.get("type") != "transaction":
        raise FhirError.of(400, "invalid", "POST [base]/cdl takes a transaction Bundle (cdl-bundle-creation-note or cdl-bundle-maj-note)")
    body = engine_of(request).validate("Bundle", body)  # R4 first: the profile walk expects well-formed JSON
    entries: list[Any] = body.get("entry") or []
    notes = [e for e in entries if isinstance(e, dict) and (e.get("resource") or {}).get("resourceType") == DOCUMENT]
    method = ((notes[0].get("request") or {}).get("method") if notes else None)
    table = view_table()
    profile = table["profiles"]["update" if method == "PUT" else "creation"]
    issues = cdl_validator().validate(body, profile)
    if issues:
        raise FhirError(422, issues)
    translated = {**body, "entry": [_posted_to_type(_as_note_entry(request, e) if e in notes else e) for e in entries]}
    access = ACCESS.get()
    for entry in notes:
        letter = CREATE if entry["request"]["method"] == "POST" else UPDATE
        if not access.may(DOCUMENT, letter):
            raise FhirError.of(403, "forbidden", f"The token's scopes do not allow this interaction on {DOCUMENT}")
        if entry["request"]["method"] == "PUT":
            await _check_author(request, entry["request"]["url"].split("/", 1)[1].split("?", 1)[0])
    with engine_of(request).workload.long_task() as pacer:
        kind, response_entries = await apply_bundle(request, translated, pacer)
    cdl = cdl_base(request)
    mapped = [_as_document_entry(orjson.loads(raw), cdl) for raw in response_entries]
    return fhir_response(assemble(f"{kind}-response", [], None, [orjson.dumps(e) for e in mapped]), 200, None, rendering)


def _as_note_entry(request: Request, entry: dict[str, Any]) -> dict[str, Any]:
    request_part = dict(entry.get("request") or {})
    url = str(request_part.get("url", ""))
    if url.startswith(DOCUMENT):
        request_part["url"] = NOTE + url[len(DOCUMENT):]
    translated = {**entry, "resource": to_communication(entry["resource"], _entry_profile(request)), "request": request_part}
    full_url = str(entry.get("fullUrl", ""))
    if f"/{DOCUMENT}/" in full_url:
        translated["fullUrl"] = full_url.replace(f"/{DOCUMENT}/", f"/{NOTE}/")
    return translated


def _posted_to_type(entry: dict[str, Any]) -> dict[str, Any]:
    """The guide's own example POSTs to `Type/id`: a create's url is its type (the id is the server's)."""
    request_part = entry.get("request") or {}
    url = str(request_part.get("url", ""))
    if request_part.get("method") == "POST" and "/" in url.split("?", 1)[0]:
        return {**entry, "request": {**request_part, "url": url.split("/", 1)[0]}}
    return entry


def _as_document_entry(entry: dict[str, Any], cdl: str) -> dict[str, Any]:
    response = entry.get("response") or {}
    location = str(response.get("location", ""))
    if not location.startswith(NOTE + "/"):
        return entry
    note_id = location.split("/")[1]
    entry = {**entry, "fullUrl": f"{cdl}/{DOCUMENT}/{note_id}", "response": {**response, "location": DOCUMENT + location[len(NOTE):]}}
    if isinstance(entry.get("resource"), dict):
        entry["resource"] = to_document_reference(entry["resource"])
    return entry


# -- capability --------------------------------------------------------------------------------


async def metadata(request: Request) -> Response:
    return fhir_response(orjson.dumps(capability_statement(request)), 200, None, negotiate(request))


def capability_statement(request: Request) -> dict[str, Any]:
    """What the CdL base really does, as an instance of GestionnaireCdL (and what it does not)."""
    table = view_table()
    guide = load_guide(NATIONAL_CDL)
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": (
            "Gestionnaire de cahier de liaison over calipso's notebook: notes are the notebook's entries (Communication) "
            "seen as CdLDocumentReference. Not supported here: application/fhir+xml; Patient, RelatedPerson, Practitioner, "
            "PractitionerRole, Organization and Device reads and searches at this base (they are at [base]/fhir, and their "
            "FR Core / Annuaire profiles are not checked: only their resource type is); _revinclude and _elements on notes; "
            "conditional delete. DELETE marks the note entered-in-error (history kept); only its author updates or deletes it."),
        "resource": [
            {"type": DOCUMENT, "profile": table["profiles"]["document"],
             "interaction": [{"code": code} for code in ("read", "search-type", "update", "delete")],
             "updateCreate": False, "conditionalDelete": "not-supported",
             "searchInclude": list(table["includes"]),
             "searchParam": [{"name": name, "type": kind, "documentation": f"the notebook entry's {target}"}
                             for name, kind, target in SEARCH_PARAMETERS]},
            {"type": "Bundle", "profile": table["profiles"]["creation"], "supportedProfile": [table["profiles"]["update"]]},
        ],
        "interaction": [{"code": "transaction", "documentation": "cdl-bundle-creation-note and cdl-bundle-maj-note"}],
    }
    security = rest_security(settings_of(request))
    if security:
        rest["security"] = security
    return instance_statement("calipso — vue Cahier de liaison (ANS) du carnet", cdl_base(request),
                              [guide.guide["url"] + "|" + guide.version], rest, instantiates=[table["capability"]])


__all__ = ["capability_statement", "cdl_validator", "delete_note", "metadata", "read_note", "search_notes", "transaction", "update_note"]
